"""Issue 11 item 8: on a public server the shared attention cache must not tell one visitor what another
scored. Each visitor (browser) scores through their own view of the cache: a sentence someone else scored
is a miss for them (0 cached, requests sent, as slow as a new one), their own sentences are hits. On a
private server (loopback, or behind a login) the cache stays shared, as before.

The source is the real OpenAI-compatible one against the fake server on 127.0.0.1, so requests are counted
by the server itself; nothing of ours is mocked.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from llmcomp.app import scoring
from llmcomp.app.jobs import JobManager
from llmcomp.app.sources import SourceSettings, build_source
from llmcomp.settings import Paths

SENTENCES = [
    ["the", "vault", "code", "is", "4711", "."],
    ["meet", "me", "at", "dawn", "."],
    ["bring", "the", "map", "."],
]
ADDRESS = "203.0.113.9"  # both visitors share one address (an office, a proxy): only the browser tells them apart


@pytest.fixture
def env(monkeypatch, tmp_path):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMCOMP_OPENAI_MODEL", "LLMCOMP_AUTH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMCOMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")  # the fake server is on 127.0.0.1
    return monkeypatch


def app_context(tmp_path: Path):
    from llmcomp.ui.common import AppContext

    home = tmp_path / "app-home"
    return AppContext.create(Paths(home=home, cache=home / "cache.sqlite", runs=home / "runs"), JobManager())


def request(session_hash: str) -> SimpleNamespace:
    """What a handler knows of who is calling: gradio's request (no login, one address, its session)."""
    return SimpleNamespace(username=None, client=SimpleNamespace(host=ADDRESS), session_hash=session_hash)


class Visitor:
    """One browser on the app: its session (browser id, typed key, form) and what scoring costs it."""

    def __init__(self, ctx, fake, browser: str, mode: str):
        from llmcomp.ui.state import Session

        form = SourceSettings(kind="openai", base_url=fake.url, model="fake-model", mode=mode)
        self.ctx, self.fake, self.request = ctx, fake, request(f"gradio-{browser}")
        self.session = Session(owner=f"browser-id-{browser}", api_key=f"sk-{browser}", settings=form)

    def _source(self):
        keys = self.ctx.keys(self.session, self.request)
        return build_source(self.session.settings.description(), keys=keys, cache=self.ctx.cache()), keys

    def estimate(self) -> scoring.CostEstimate:
        source, keys = self._source()
        try:
            return scoring.estimate(source, SENTENCES, keys)
        finally:
            source.close()

    def score(self) -> tuple[int, int]:
        """(sentences served from the cache, requests that reached the server) for scoring SENTENCES."""
        source, keys = self._source()
        before = self.fake.requests
        try:
            result = scoring.score(source, SENTENCES, keys)
        finally:
            source.close()
        assert result.stats.failed == 0 and all(isinstance(m, torch.Tensor) for m in result.matrices)
        return result.stats.cached, self.fake.requests - before


@pytest.mark.parametrize("mode", ["sentence", "prefix", "pair"])  # sentence entries, prefix rows, pair records
def test_on_a_public_server_a_visitor_hits_only_entries_they_scored(env, tmp_path, fake_openai, mode):
    ctx = app_context(tmp_path)
    ctx.expose("0.0.0.0", None)  # no login, every interface: public
    assert ctx.public
    a, b = Visitor(ctx, fake_openai, "a", mode), Visitor(ctx, fake_openai, "b", mode)
    n = len(SENTENCES)
    try:
        assert a.estimate().cached == 0
        cached, sent_a = a.score()
        assert cached == 0 and sent_a > 0
        # A sees its own entries (honest numbers, not "not shown")
        assert a.estimate().cached == n and a.estimate().requests == 0
        # B guesses A's sentences: the estimate, the run's counts and the server's tally all say "new"
        est_b = b.estimate()
        assert est_b.cached == 0 and est_b.requests == sent_a, est_b
        cached, sent_b = b.score()
        assert cached == 0, f"B was served {cached} of A's sentences from the cache"
        assert sent_b == sent_a, f"B sent {sent_b} requests where A sent {sent_a}: some came from A's entries"
        # each now hits only their own entries
        assert a.score() == (n, 0) and b.score() == (n, 0)
    finally:
        ctx.close()


@pytest.mark.parametrize("host,auth", [("127.0.0.1", None), ("0.0.0.0", [("ann", "pw")])])
def test_on_a_private_server_visitors_share_the_cache(env, tmp_path, fake_openai, host, auth):
    ctx = app_context(tmp_path)
    ctx.expose(host, auth)  # this machine only, or behind a login: the cache is the owner's and shared
    assert not ctx.public
    a, b = Visitor(ctx, fake_openai, "a", "sentence"), Visitor(ctx, fake_openai, "b", "sentence")
    n = len(SENTENCES)
    try:
        assert a.score()[0] == 0
        assert b.estimate().cached == n
        assert b.score() == (n, 0)  # B hits A's entries: no request
    finally:
        ctx.close()
    # and the entries are the plain shared ones: the command line, on the same file, hits them too
    from llmcomp.attention.cache import AttentionCache

    cache = AttentionCache(tmp_path / "app-home" / "cache.sqlite")
    try:
        cli = build_source(a.session.settings.description(), cache=cache)
        cli_keys = [cli.cache_key(s) for s in SENTENCES]
        cli.close()
        assert all(k in cache for k in cli_keys)
    finally:
        cache.close()


def test_a_cache_view_keeps_each_tag_to_itself(tmp_path):
    from llmcomp.app.cache_view import CacheView, visitor_tag
    from llmcomp.attention.cache import AttentionCache

    shared = AttentionCache(tmp_path / "c.sqlite")
    a, b = CacheView(shared, visitor_tag("browser-a")), CacheView(shared, visitor_tag("browser-b"))
    m = torch.full((1, 2, 2), 0.5).tril()
    m = m / m.sum(-1, keepdim=True)
    a.put("k", m)
    a.put_json("row:1", {"h": [1]})
    a.put_many_json([("pair:1", {"h": [2]}), ("pair:2", {"h": [3]})])
    a.commit()
    assert "k" in a and "k" not in b and "k" not in shared
    assert a.get("k", 2, 1) is not None and b.get("k", 2, 1) is None
    assert a.get_json("row:1") == {"h": [1]} and b.get_json("row:1") is None
    assert a.get_many_json(["pair:1", "pair:2", "pair:3"]) == {"pair:1": {"h": [2]}, "pair:2": {"h": [3]}}
    assert b.get_many_json(["pair:1", "pair:2"]) == {}
    assert len(a) == 4 and len(b) == 0 and len(shared) == 4
    assert (a.hits, a.misses) == (4, 1) and (b.hits, b.misses) == (0, 4)  # each view counts its own lookups
    assert a.hit_rate == 0.8 and a.path == shared.path
    assert visitor_tag("browser-a") != visitor_tag("browser-b") and "browser-a" not in visitor_tag("browser-a")
    a.close()  # a view does not close the shared cache it looks through
    assert b.get_json("row:1") is None and shared.get_json("row:1") is None
    shared.close()


def test_a_source_given_the_shared_cache_on_a_public_server_is_estimated_as_if_it_were_empty(
    env, tmp_path, fake_openai
):
    """Defence in depth: a source built without the visitor's policy (so with the shared cache itself) is
    not estimated against it on a public server; the estimate counts every sentence and says why."""
    ctx = app_context(tmp_path)
    ctx.expose("0.0.0.0", None)
    a, b = Visitor(ctx, fake_openai, "a", "sentence"), Visitor(ctx, fake_openai, "b", "sentence")
    try:
        shared = build_source(a.session.settings.description(), cache=ctx.cache())  # no key policy: no view
        shared.score_many(SENTENCES)
        est = scoring.estimate(shared, SENTENCES, ctx.keys(b.session, b.request))
        shared.close()
        assert est.cached is None and est.requests == len(SENTENCES) and scoring.HIDDEN_NOTE in est.detail
    finally:
        ctx.close()


@pytest.mark.slow  # loads the local LLM (about 15 s)
def test_the_compare_view_scores_through_the_visitors_own_view_too(env, tmp_path):
    """The Attention tab's "other source" (here the local LLM, a cached kind) must not read or write the
    shared cache on a public server: its timing would tell a visitor that someone scored a sentence."""
    from llmcomp.app.attention_view import other_matrix
    from llmcomp.ui.state import Session

    ctx = app_context(tmp_path)
    ctx.expose("0.0.0.0", None)
    session = Session(owner="browser-id-a")
    keys = ctx.keys(session, request("gradio-a"))
    words = ["the", "cat", "sat", "."]
    m, _ = other_matrix("local", words, ctx.cache(), keys)
    assert m.shape == (1, 4, 4)
    cache = ctx.cache()
    cache.commit()
    stored = [k for k, _ in cache.items()]
    assert stored and all(k.startswith(f"visitor-{keys.cache_tag()}/") for k in stored), stored
