"""The cache tag (issue 16, item 5): part of every OpenAI-compatible cache key when set, so two servers
behind one URL and model name never share scores; unset, the keys are those of before tags existed."""

from __future__ import annotations

import pytest

from llmcomp.attention.cache import AttentionCache
from llmcomp.attention.openai_config import OpenAIConfigError
from llmcomp.attention.openai_source import OpenAISource
from llmcomp.cli import main

WORDS = ["the", "cat", "sat"]
#: keys computed by the code before cache tags existed (base_url 127.0.0.1:9, model "m", the defaults)
OLD_SENTENCE_KEY = "de21a12193f31022cfcd5393cb1493a298b30fdd2c057323c642c8d2fdae6c68"
OLD_ROW_KEY = "row:f5e0fd20daae6d0f96dc9783be973fd77d37d2990b6edbe8e24b9662ee75ab70"
OLD_PAIR_KEY = "pair:ef17d3478b6a14fcfbfafcab6fa4ecca031185a595da038f2055158d0b49270e"


def _source(**options) -> OpenAISource:
    return OpenAISource(base_url="http://127.0.0.1:9/v1", model="m", api_key="x", **options)


def test_no_tag_keeps_the_old_keys_and_spec():
    with _source() as s:
        assert s.cache_key(WORDS) == OLD_SENTENCE_KEY
        assert s._row_key(["the", "cat"]) == OLD_ROW_KEY
        assert s._pair_key("cat", "the") == OLD_PAIR_KEY
        assert "cache_tag" not in s.spec() and "cache_tag" not in s.fingerprint()


def test_a_tag_changes_every_key_and_rebuilds_from_the_spec():
    with _source(cache_tag="vllm-a") as a, _source(cache_tag="vllm-b") as b:
        for key in ("cache_key", "_row_key"):
            ka, kb = getattr(a, key)(WORDS), getattr(b, key)(WORDS)
            assert len({ka, kb, OLD_SENTENCE_KEY, OLD_ROW_KEY}) == 4
        assert a._pair_key("cat", "the") not in (b._pair_key("cat", "the"), OLD_PAIR_KEY)
        assert a.spec()["cache_tag"] == "vllm-a" and a.fingerprint()["cache_tag"] == "vllm-a"
        with OpenAISource(**{k: v for k, v in a.spec().items() if k not in ("kind", "n_heads")}) as again:
            assert again.cache_key(WORDS) == a.cache_key(WORDS)


def test_a_tag_with_control_characters_is_refused():
    with pytest.raises(OpenAIConfigError, match="cache_tag"):
        _source(cache_tag="a\nb")


@pytest.mark.parametrize("mode", ["sentence", "prefix"])
def test_two_servers_behind_one_url_never_share_scores(fake_openai, tmp_path, monkeypatch, mode):
    """Scored with tag a, the same URL and model under tag b is asked again; tag a and no tag hit their own."""
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"the cat {n} sat on the mat\n" for n in range(10)), encoding="utf-8")
    cache = tmp_path / "cache.sqlite"
    common = ["score", "--corpus", str(corpus), "--attention", "openai", "--base-url", fake_openai.url]
    common += ["--model", "fake-model", "--mode", mode, "--cache", str(cache)]
    assert main([*common, "--cache-tag", "a"]) == 0
    first = fake_openai.requests
    assert first > 0
    assert main([*common, "--cache-tag", "b"]) == 0
    assert fake_openai.requests == 2 * first  # nothing of tag a's was reused
    assert main([*common, "--cache-tag", "a"]) == 0
    assert fake_openai.requests == 2 * first  # tag a's own entries hit
    assert main(common) == 0
    assert fake_openai.requests == 3 * first  # no tag: its own keys, as before tags existed
    c = AttentionCache(cache)
    try:
        assert len(c) > 0
    finally:
        c.close()
