"""Whose key goes where, and what one visitor can learn or spend (issue 11, items 1, 6, 7, 8 and 15).

Real HTTP throughout: the fake OpenAI-compatible server (tests/conftest.py) stands in for a capture
server that a crafted checkpoint or a visitor names, and records every Authorization header it gets.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmcomp.app import scoring
from llmcomp.app.budget import BudgetError, OwnerKeyBudget
from llmcomp.app.jobs import JobManager
from llmcomp.app.keys import KeyPolicy, KeyPolicyError
from llmcomp.app.sources import SourceSettings, build_source
from llmcomp.attention import make_source
from llmcomp.cli import main
from llmcomp.settings import BudgetCaps, Paths

PLANTED = "planted-checkpoint-victim-31337"  # not shaped like a real key (the repo scan flags sk-...)
OWNER_KEY = "owner-planted-budget-4242"
WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "my", "mother", "saw", "it"]
CORPUS = "\n".join(f"{WORDS[i % 13]} {WORDS[(i * 5 + 1) % 13]} {WORDS[(i * 7 + 2) % 13]} ." for i in range(40))
SENTENCES = [[f"w{i}", "saw", f"x{i}", "."] for i in range(8)]
OTHERS = [[f"y{i}", "met", f"z{i}", "."] for i in range(8)]
TINY = ["--steps", "1", "--n-layer", "1", "--n-embd", "16", "--batch-size", "4", "--eval-every", "1", "--no-cache"]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No OpenAI settings, no .env, no allowance for private addresses: each test sets what it needs."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMCOMP_OPENAI_MODEL", "LLMCOMP_ALLOW_PRIVATE_URLS",
                "LLMCOMP_AUTH", "LLMCOMP_HOST", "GRADIO_SERVER_NAME", "LLMCOMP_DAILY_MAX_REQUESTS",
                "LLMCOMP_DAILY_MAX_TOKENS", "LLMCOMP_SESSION_MAX_REQUESTS", "LLMCOMP_SESSION_MAX_TOKENS"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMCOMP_HOME", str(tmp_path / "home"))
    return monkeypatch


@pytest.fixture(scope="module")
def uniform_run(tmp_path_factory) -> Path:
    """A tiny run trained by the command line (one step, uniform attention): copied and crafted per test."""
    root = tmp_path_factory.mktemp("trained")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    run = root / "run"
    assert main(["train", "--corpus", str(corpus), "--attention", "uniform", "--run-dir", str(run), *TINY]) == 0
    return run


def crafted(uniform_run: Path, tmp_path: Path, base_url: str) -> Path:
    """The run, its checkpoint claiming it was scored by an OpenAI-compatible server at ``base_url``."""
    run = tmp_path / "crafted-run"
    shutil.copytree(uniform_run, run)
    src = make_source("openai", base_url=base_url, api_key="unused", heads=["meaning"])
    spec = src.spec()
    src.close()
    for meta_path in run.glob("checkpoint*/checkpoint.json"):  # the last and the best
        meta = json.loads(meta_path.read_text())
        meta["source_spec"] = spec
        meta_path.write_text(json.dumps(meta))
    return run


def app_context(tmp_path: Path):
    from llmcomp.ui.common import AppContext

    home = tmp_path / "app-home"
    return AppContext.create(Paths(home=home, cache=home / "cache.sqlite", runs=home / "runs"), JobManager())


def visitor(host: str = "203.0.113.9", user: str | None = None) -> SimpleNamespace:
    """What a handler knows of who is calling: gradio's request, its login name and address."""
    return SimpleNamespace(username=user, client=SimpleNamespace(host=host))


# --- item 1: a checkpoint cannot send your key to its author ---------------------------------------
def test_a_checkpoint_cannot_send_the_environments_key_to_its_author(clean_env, uniform_run, tmp_path, fake_openai,
                                                                     capsys):  # fmt: skip
    clean_env.setenv("OPENAI_API_KEY", PLANTED)  # the user's key, for OpenAI (no OPENAI_BASE_URL)
    corpus = uniform_run.parent / "corpus.txt"
    run = crafted(uniform_run, tmp_path, fake_openai.url)
    gen = ["generate", "--checkpoint", str(run), "--prompt", "the cat", "--max-words", "2", "--seed", "1"]
    capsys.readouterr()
    code = main(gen)
    assert not any(PLANTED in h for h in fake_openai.auth_headers)  # the capture server never sees the key
    assert code == 2
    refusal = (
        f"error: this checkpoint was scored at {fake_openai.url}; pass --base-url {fake_openai.url} "
        "to send your key there"
    )
    assert capsys.readouterr().err.strip().splitlines()[-1] == refusal  # after the line naming the checkpoint
    # resuming goes through the same factory: refused before any scoring
    assert main(["train", "--corpus", str(corpus), "--resume", str(run), *TINY[:-1], "--steps", "3"]) == 2
    assert capsys.readouterr().err.strip() == refusal
    assert fake_openai.requests == 0 and fake_openai.auth_headers == []  # the capture server got nothing
    # naming the endpoint is how to allow it: the flag, or the environment; then the key does go there
    assert main([*gen, "--base-url", fake_openai.url]) == 0
    assert fake_openai.auth_headers and set(fake_openai.auth_headers) == {f"Bearer {PLANTED}"}
    clean_env.setenv("OPENAI_BASE_URL", fake_openai.url)
    fake_openai.reset_counts()
    assert main(gen) == 0 and set(fake_openai.auth_headers) == {f"Bearer {PLANTED}"}


def test_without_a_key_in_the_environment_a_checkpoints_endpoint_is_used_keyless(clean_env, uniform_run, tmp_path,
                                                                                 fake_openai):  # fmt: skip
    run = crafted(uniform_run, tmp_path, fake_openai.url)  # nothing to protect: the command works as before
    assert main(["generate", "--checkpoint", str(run), "--prompt", "the", "--max-words", "1"]) == 0
    assert fake_openai.requests > 0 and set(fake_openai.auth_headers) == {"Bearer sk-no-key-required"}


def test_a_visitors_typed_key_goes_only_to_the_base_url_they_named(clean_env, uniform_run, tmp_path, fake_openai):
    from llmcomp.ui import train_actions
    from llmcomp.ui.state import Session

    clean_env.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")  # the capture server is on 127.0.0.1
    ctx = app_context(tmp_path)
    run = crafted(uniform_run, tmp_path, fake_openai.url)
    shutil.copytree(run, ctx.paths.runs / "made-outside")  # listed for every visitor, as CLI runs are
    spec = json.loads((run / "checkpoint" / "checkpoint.json").read_text())["source_spec"]
    state = Session(owner="browser-a", api_key=PLANTED, settings=SourceSettings(kind="openai"))
    hint = f"this checkpoint was scored at {fake_openai.url}; enter {fake_openai.url} as the Base URL"
    with pytest.raises(KeyPolicyError, match=hint):  # what the Generate tab builds from a listed run
        build_source(spec, keys=ctx.keys(state), cache=ctx.cache())
    form = {**train_actions.form_defaults(), "steps": 3, "batch_size": 4, "lr": 1e-3, "eval_every": 1, "seed": 0,
            "n_layer": 1, "n_embd": 16, "n_learned_heads": 0, "dropout": 0.0}  # fmt: skip
    started = train_actions.start(ctx, state, None, form, "made-outside")  # resume that run
    assert "llmc-error" in started and hint in started and ctx.jobs.active() is None
    assert fake_openai.requests == 0 and fake_openai.auth_headers == []
    state.settings = SourceSettings(kind="openai", base_url=fake_openai.url)  # the visitor names it
    src = build_source(spec, keys=ctx.keys(state), cache=ctx.cache())
    try:
        assert not src.score_many([["the", "cat", "."]]).failures
    finally:
        src.close()
        ctx.close()
    assert set(fake_openai.auth_headers) == {f"Bearer {PLANTED}"}


# --- item 6: owner-key caps hold under concurrency and across clients ------------------------------
@pytest.fixture
def owner_env(clean_env, fake_openai):
    clean_env.setenv("OPENAI_API_KEY", OWNER_KEY)
    clean_env.setenv("OPENAI_BASE_URL", fake_openai.url)
    clean_env.setenv("LLMCOMP_OPENAI_MODEL", "fake-model")
    return fake_openai


def test_concurrent_work_on_the_owner_key_never_crosses_the_daily_cap(owner_env):
    budget = OwnerKeyBudget(BudgetCaps(daily_requests=12))
    owner_env.latency = 0.05  # both passes are in flight together
    outcomes: list[str] = []

    def one_visitor(sentences: list[list[str]]) -> None:
        keys = KeyPolicy(budget=budget)  # two visitors, each with a session allowance of their own
        try:
            src = build_source({"kind": "openai"}, keys=keys)
            job = scoring.start_scoring(src, sentences, keys)
        except BudgetError as e:
            outcomes.append(f"refused: {e}")
            return
        job.wait(60)
        outcomes.append(job.snapshot().status)

    threads = [threading.Thread(target=one_visitor, args=(s,)) for s in (SENTENCES, OTHERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    # each needs 8 of the 12: they cannot both run (before, each was checked against all 12 left: 16 spent)
    assert budget.today().requests == owner_env.requests <= 12, outcomes
    assert sorted(outcomes)[0] == "finished" and "refused" in sorted(outcomes)[1]
    assert budget.today().held_requests == 0  # the finished pass gave back what it did not use

    budget = OwnerKeyBudget(BudgetCaps(daily_requests=12))
    first, second = (KeyPolicy(budget=budget, usage=budget.visitor(n)) for n in "ab")
    a, b = build_source({"kind": "openai"}, keys=first), build_source({"kind": "openai"}, keys=second)
    try:
        scoring.check_budget(a, SENTENCES, first)  # 8 estimated: 12 held (with headroom) while it runs
        with pytest.raises(BudgetError, match="needs about 8 requests but the server's key allows 0 more"):
            scoring.check_budget(b, SENTENCES, second)
        owner_env.reset_counts()
        a.score_many(SENTENCES)
        b.score_many(SENTENCES)  # never reserved: nothing may be sent
        assert owner_env.requests == 8
        first.charge(a)
        assert budget.remaining(second.usage) == (4, None)  # the unused 4 went back
    finally:
        a.close()
        b.close()


def test_a_reservation_goes_back_when_its_source_is_dropped_unused(owner_env):
    budget = OwnerKeyBudget(BudgetCaps(daily_requests=10))
    keys = KeyPolicy(budget=budget)
    usage = keys.usage
    src = build_source({"kind": "openai"}, keys=keys)
    scoring.check_budget(src, SENTENCES[:2], keys)  # an estimate shown to the visitor, then nothing scored
    assert budget.remaining(usage) == (5, None)  # 2 estimated: 5 held (headroom for retries)
    src.close()
    del src, keys  # the estimate's source and policy go away, as they do after /estimate_cost
    assert budget.today().held_requests == 0 and budget.remaining(usage) == (10, None)


def test_a_new_client_from_the_same_visitor_gets_no_fresh_allowance(owner_env, tmp_path):
    from llmcomp.ui.state import Session

    ctx = app_context(tmp_path)
    ctx.budget = OwnerKeyBudget(BudgetCaps(session_requests=4, daily_requests=100))
    first = ctx.keys(Session(), visitor("203.0.113.9"))
    src = build_source({"kind": "openai"}, keys=first)
    try:
        scoring.score(src, SENTENCES[:3], first)
    finally:
        src.close()
    again = ctx.keys(Session(), visitor("203.0.113.9"))  # a new gradio Client: a new session, same address
    assert ctx.budget.remaining(again.usage) == (1, None)
    src = build_source({"kind": "openai"}, keys=again)
    with pytest.raises(BudgetError, match="needs about 3 requests but the server's key allows 1 more"):
        scoring.check_budget(src, SENTENCES[:3], again)
    src.close()
    assert ctx.budget.remaining(ctx.keys(Session(), visitor("198.51.100.7")).usage) == (4, None)  # someone else
    logged_in = ctx.keys(Session(), visitor("198.51.100.7", user="ann")).usage  # a login is who, wherever from
    assert logged_in is ctx.keys(Session(), visitor("203.0.113.50", user="ann")).usage
    ctx.close()


def test_a_public_app_on_the_owner_key_without_a_daily_cap_warns_at_launch(clean_env, tmp_path, caplog):
    from llmcomp.ui.app import build_app, launch_options
    from llmcomp.ui.state import Session

    clean_env.setenv("OPENAI_API_KEY", OWNER_KEY)
    paths = Paths(home=tmp_path, cache=tmp_path / "c.sqlite", runs=tmp_path / "runs")
    demo = build_app(paths=paths, jobs=JobManager())
    with caplog.at_level(logging.WARNING, logger="llmcomp.ui"):
        launch_options(demo, host="0.0.0.0")
    assert "no daily cap" in caplog.text and "LLMCOMP_DAILY_MAX_REQUESTS" in caplog.text
    header = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "llmc-launch-warning")
    on_load = next(f for f in demo.fns.values() if header in f.outputs)
    assert "no daily cap" in on_load.fn(None, Session())[-1]  # the page's header says it too
    quiet = {
        "loopback": lambda: launch_options(demo, host="127.0.0.1"),
        "login": lambda: (clean_env.setenv("LLMCOMP_AUTH", "ann:pw"), launch_options(demo, host="0.0.0.0")),
    }
    for why, launch in quiet.items():
        caplog.clear()
        launch()
        assert not demo.llmcomp_context.launch_warning and "no daily cap" not in caplog.text, why
    clean_env.delenv("LLMCOMP_AUTH")
    assert demo.llmcomp_context.expose("127.0.0.1", None, share=True)  # a share link is public
    clean_env.setenv("LLMCOMP_DAILY_MAX_REQUESTS", "500")
    capped = build_app(paths=paths, jobs=JobManager())
    launch_options(capped, host="0.0.0.0")
    assert capped.llmcomp_context.public and not capped.llmcomp_context.launch_warning


# --- item 7: the owner's base URL reaches no browser with its credentials --------------------------
def test_the_owners_base_url_is_sent_to_browsers_redacted(clean_env, tmp_path):
    from llmcomp.ui.app import build_app

    clean_env.setenv("OPENAI_BASE_URL", "https://owner:pa55w0rd@llm.example.net:8443/v1?api-key=sk-in-the-url#frag")
    demo = build_app(paths=Paths(home=tmp_path, cache=tmp_path / "c.sqlite", runs=tmp_path / "r"), jobs=JobManager())
    config = json.dumps(demo.get_config_file(), default=str)  # what /config sends every browser
    for secret in ("pa55w0rd", "owner:", "sk-in-the-url", "api-key", "frag"):
        assert secret not in config, secret
    assert "https://llm.example.net:8443/v1" in config  # the endpoint is still shown, as a placeholder


# --- item 8: on a public server, estimates do not tell what other visitors scored --------------------
def test_on_a_public_server_estimates_do_not_reveal_others_cache_entries(clean_env, tmp_path, fake_openai):
    from llmcomp.text import Corpus
    from llmcomp.ui.attention_actions import estimate_cost
    from llmcomp.ui.state import Session

    clean_env.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")
    ctx = app_context(tmp_path)
    form = SourceSettings(kind="openai", base_url=fake_openai.url, model="fake-model")
    private, guess = ["zanzibar", "is", "where", "we", "meet", "."], ["a", "guess", "."]
    other = Session(api_key="sk-other", settings=form)
    src = build_source(form.description(), keys=ctx.keys(other), cache=ctx.cache())
    src.score_many([private])  # someone else's corpus, now in the shared cache
    src.close()
    me = Session(api_key="sk-me", settings=form, corpus=Corpus([private, guess] * 6, name="mine"))

    def my_estimate(max_sentences: int = 2) -> str:
        return estimate_cost(ctx, me, max_sentences)

    ctx.expose("127.0.0.1", None)  # this machine only: the cache is the user's own, and worth showing
    assert "1 of 2 sentences to score, 1 requests" in my_estimate()
    for host, auth in (("0.0.0.0", None), ("203.0.113.9", None)):
        ctx.expose(host, auth)
        assert ctx.public
        shown = my_estimate()
        assert "2 of 2 sentences to score, 2 requests" in shown  # my own view of the cache: nothing of theirs
    keys = ctx.keys(me)
    src = build_source(form.description(), keys=keys, cache=ctx.cache())
    est = scoring.estimate(src, [private], keys)
    src.close()
    assert est.cached == 0 and est.requests == 1 and est.to_score == 1
    ctx.expose("0.0.0.0", [("ann", "pw")])  # behind a login the visitors are the owner's people
    assert not ctx.public and "1 of 2 sentences to score" in my_estimate()
    ctx.close()


# --- item 15: visitors cannot make the server call into its own network ----------------------------
BLOCKED = [
    "http://127.0.0.1:{port}/v1",
    "http://localhost:{port}/v1",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]:{port}/v1",
    "http://[::ffff:127.0.0.1]:{port}/v1",
    "http://[64:ff9b::7f00:1]/v1",  # NAT64 of 127.0.0.1
    "http://[2002:a9fe:a9fe::1]/v1",  # 6to4 of 169.254.169.254
    "http://0.0.0.0:{port}/v1",
    "http://10.1.2.3/v1",
    "http://172.16.0.1/v1",
    "http://192.168.1.1/v1",
    "http://100.64.0.1/v1",
    "http://[fe80::1]/v1",
    "http://[fd00::1]/v1",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_visitors_cannot_point_the_server_at_private_addresses(clean_env, fake_openai, url):
    url = url.format(port=fake_openai.port)
    for typed in ("", "sk-visitor-own"):
        policy = KeyPolicy(typed_key=typed, named_url=url)
        with pytest.raises(KeyPolicyError, match="loopback, link-local or private address.*LLMCOMP_ALLOW_PRIVATE_URLS"):
            build_source({"kind": "openai", "base_url": url}, keys=policy)
    assert fake_openai.requests == 0


def test_every_resolved_address_is_checked_and_the_owner_decides_the_exceptions(clean_env, fake_openai, monkeypatch):
    real = socket.getaddrinfo

    def two_answers(host, *args, **kwargs):  # a name with a public and a private address (DNS we do not control)
        if host == "mixed.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 443))]  # fmt: skip
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    with pytest.raises(KeyPolicyError, match="mixed.example is a loopback, link-local or private address"):
        build_source({"kind": "openai", "base_url": "https://mixed.example/v1"}, keys=KeyPolicy())
    public = build_source({"kind": "openai", "base_url": "https://93.184.216.34/v1"}, keys=KeyPolicy())
    public.close()  # a public address is fine (nothing is sent by building)
    with pytest.raises(KeyPolicyError, match="cannot find the server"):
        build_source({"kind": "openai", "base_url": "http://no-such-host.invalid/v1"}, keys=KeyPolicy())
    # the command line is the owner: no block
    build_source({"kind": "openai", "base_url": fake_openai.url}, keys=KeyPolicy.command_line()).close()
    # the owner's own endpoint is the owner's choice, even on loopback
    clean_env.setenv("OPENAI_BASE_URL", fake_openai.url)
    own = build_source({"kind": "openai", "base_url": fake_openai.url}, keys=KeyPolicy())
    try:
        assert not own.score_many([["the", "cat", "."]]).failures
    finally:
        own.close()
    clean_env.delenv("OPENAI_BASE_URL")
    clean_env.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")  # and the owner may open the rest
    build_source({"kind": "openai", "base_url": "http://169.254.169.254/v1"}, keys=KeyPolicy()).close()


def test_generating_on_the_owner_key_reserves_first_and_is_charged(clean_env, uniform_run, tmp_path, fake_openai):
    from llmcomp.ui.app import build_app
    from llmcomp.ui.state import Session

    clean_env.setenv("OPENAI_API_KEY", OWNER_KEY)
    clean_env.setenv("OPENAI_BASE_URL", fake_openai.url)  # the owner's endpoint, where the run was scored
    home = tmp_path / "gen-home"
    demo = build_app(paths=Paths(home=home, cache=home / "c.sqlite", runs=home / "runs"), jobs=JobManager())
    ctx = demo.llmcomp_context
    shutil.copytree(crafted(uniform_run, tmp_path, fake_openai.url), ctx.paths.runs / "made-outside")
    generate = next(f.fn for f in demo.fns.values() if f.api_name == "generate")
    state = Session(owner="browser-b")  # no key typed: the owner's key pays
    ctx.budget = OwnerKeyBudget(BudgetCaps(daily_requests=4))
    _, notes, *_ = generate("made-outside", "the cat", 0.0, 0, 5, 1, state, None)
    # 2 prompt words + 5 new ones: about 7 prefixes to score, refused before any request (before: 4 were sent)
    assert "needs about 7 requests" in notes and fake_openai.requests == 0
    ctx.budget = OwnerKeyBudget(BudgetCaps(daily_requests=40))
    text, notes, *_ = generate("made-outside", "the cat", 0.0, 0, 3, 1, state, None)
    assert text.startswith("the cat") and "generated" in notes, notes
    today = ctx.budget.today()
    assert today.requests == fake_openai.requests > 0 and today.held_requests == 0  # charged, nothing left held
    assert set(fake_openai.auth_headers) == {f"Bearer {OWNER_KEY}"}
    ctx.close()


# --- the library below the app: a spec's endpoint never gets the environment's key -------------------
def test_the_python_api_rebuilds_a_checkpoints_source_without_the_environments_key(clean_env, uniform_run, tmp_path,
                                                                                   fake_openai):  # fmt: skip
    """``Generator.from_checkpoint`` (no CLI, no app) rebuilds the spec's source: the key in the
    environment belongs to the environment's endpoint, so the crafted endpoint gets none."""
    from llmcomp.generation import GenerateConfig, Generator

    clean_env.setenv("OPENAI_API_KEY", PLANTED)  # meant for OpenAI (no OPENAI_BASE_URL)
    gen = Generator.from_checkpoint(crafted(uniform_run, tmp_path, fake_openai.url) / "checkpoint")
    try:
        gen.generate("the cat", GenerateConfig(max_words=1, seed=0))
    finally:
        gen.source.close()
    assert fake_openai.requests > 0 and set(fake_openai.auth_headers) == {"Bearer sk-no-key-required"}
    # the environment's own endpoint does get it, and a key passed with the URL goes with it
    clean_env.setenv("OPENAI_BASE_URL", fake_openai.url)
    fake_openai.reset_counts()
    src = make_source("openai", base_url=fake_openai.url, heads=["meaning"])
    try:
        src.score(["the", "cat"])
    finally:
        src.close()
    assert set(fake_openai.auth_headers) == {f"Bearer {PLANTED}"}


def test_a_redirect_is_not_followed(clean_env):
    """A server a visitor names cannot bounce the request to an address the URL check refused."""
    import http.server

    hits: list[str] = []

    class Target(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            hits.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    class Bouncer(Target):
        def do_POST(self):  # noqa: N802
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{target.server_port}/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

    target = http.server.HTTPServer(("127.0.0.1", 0), Target)
    bouncer = http.server.HTTPServer(("127.0.0.1", 0), Bouncer)
    for server in (target, bouncer):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = make_source("openai", base_url=f"http://127.0.0.1:{bouncer.server_port}/v1", api_key=PLANTED,
                          heads=["meaning"], max_retries=0)  # fmt: skip
        try:
            result = src.score_many([["the", "cat"]])
        finally:
            src.close()
    finally:
        for server in (target, bouncer):
            server.shutdown()
            server.server_close()
    assert hits == [] and result.matrices == [None] and result.failures
