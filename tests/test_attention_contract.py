"""The attention contract: one validator, baseline sources, the cache."""

import json
import sqlite3

import pytest
import torch

from llmcomp.app.sources import build_source
from llmcomp.attention import (
    AttentionCache,
    AttentionError,
    make_source,
    normalize_scores,
    validate_attention,
)

WORDS = ["the", "old", "man", "saw", "the", "old", "dog", "and", "the", "dog", "saw", "him", "."]
BASELINES = ["uniform", "previous", "gaussian", "random"]


def good(t=4, h=1):
    return normalize_scores(torch.rand(h, t, t))


@pytest.mark.parametrize(
    "bad, reason",
    [
        (torch.ones(1, 4, 4) / 4, "later words"),
        (good().squeeze(0), "shape"),
        (good(t=3), "shape"),
        (good().masked_fill(torch.eye(4, dtype=torch.bool), float("nan")), "NaN"),
        (good() * 2, "sum to 1"),
        (good() - torch.eye(4) * 2, "negative"),
    ],
)
def test_validator_rejects_each_fault(bad, reason):
    with pytest.raises(AttentionError, match=reason):
        validate_attention(bad, 4, 1)


def test_validator_checks_head_count():
    with pytest.raises(AttentionError, match="heads"):
        validate_attention(good(h=2), 4, 1)
    assert validate_attention(good(h=2), 4, 2).shape == (2, 4, 4)


def test_normalize_scores_floor_keeps_rows_alive():
    w = normalize_scores(torch.zeros(1, 3, 3), floor=0.1)
    assert torch.allclose(w[0, 2], torch.full((3,), 1 / 3))
    assert torch.equal(normalize_scores(torch.zeros(1, 2, 2)), torch.eye(2)[None])


@pytest.mark.parametrize("kind", BASELINES)
def test_baseline_is_valid_and_causal(kind):
    src = make_source(kind)
    m = src.score(WORDS)
    validate_attention(m, len(WORDS), src.n_heads)
    for j in range(len(WORDS)):
        changed = list(WORDS)
        changed[j] = "zebra"
        m2 = src.score(changed)
        assert torch.equal(m2[:, :j, :], m[:, :j, :]), f"changing word {j} changed an earlier row"
    prefix = src.score(WORDS[:5])
    assert torch.allclose(prefix, m[:, :5, :5])  # appending words never changes earlier rows


def test_baselines_look_like_their_names():
    assert torch.allclose(make_source("uniform").score(WORDS[:3])[0, 2], torch.full((3,), 1 / 3))
    prev = make_source("previous").score(WORDS[:3])[0]
    assert prev[2].tolist() == [0.0, 0.5, 0.5] and prev[0, 0] == 1
    gauss = make_source("gaussian").score(WORDS)
    assert gauss.shape[0] == 2
    assert gauss[0, 6].argmax() == 5 and gauss[1, 6].argmax() == 6  # previous word, current word
    r1, r2 = make_source("random", seed=1), make_source("random", seed=2)
    assert torch.equal(r1.score(WORDS), make_source("random", seed=1).score(WORDS))  # frozen
    assert not torch.equal(r1.score(WORDS), r2.score(WORDS))
    assert make_source("learned").score(WORDS).shape == (0, len(WORDS), len(WORDS))


def test_every_head_has_a_name_one_per_head_in_order():
    assert make_source("uniform").head_labels() == ["head 0"]
    assert make_source("gaussian", n_heads=3).head_labels() == ["head 0", "head 1", "head 2"]
    assert make_source("learned").head_labels() == []


@pytest.mark.parametrize("kind", BASELINES + ["learned"])
def test_spec_round_trip(kind):
    src = make_source(kind)
    again = make_source(**json.loads(json.dumps(src.spec())))
    assert again.fingerprint() == src.fingerprint()
    assert torch.equal(again.score(WORDS), src.score(WORDS))


def test_unknown_source_and_option_errors():
    with pytest.raises(AttentionError, match="unknown attention source 'magic'"):
        make_source("magic")
    with pytest.raises(AttentionError, match="do not apply"):
        build_source({"kind": "uniform", "mode": "prefix"})


def test_fallback_replaces_failed_sentences_and_counts_them():
    class Flaky(type(make_source("uniform"))):
        kind = "flaky"

        def matrix(self, words):
            if "bad" in words:
                return torch.ones(1, len(words), len(words))  # breaks the contract
            return super().matrix(words)

    src = Flaky()
    res = src.score_many([["a", "b"], ["a", "bad"]])
    assert res.matrices[1] is None and "later words" in res.failures[1]
    with pytest.raises(AttentionError, match="1 sentence"):
        res.require_all()
    src.fallback = make_source("previous")
    res = src.score_many([["a", "b"], ["a", "bad"]])
    assert res.stats.fallbacks == 1 and 1 in res.failures
    assert torch.equal(res.matrices[1], make_source("previous").score(["a", "bad"]))


def test_cache_round_trip_survives_reopen_and_counts_hits(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = AttentionCache(path)
    m = good(5, 2)
    cache.put("k", m)
    cache.put_json("j", {"a": [1, 2]})
    cache.commit()
    cache.close()
    cache = AttentionCache(path)
    assert torch.equal(cache.get("k", 5, 2), m)
    assert cache.get("k", 4, 2) is None  # wrong shape is a miss, never served
    assert cache.get("missing", 5) is None
    assert cache.get_json("j") == {"a": [1, 2]}
    assert cache.hits == 2 and cache.misses == 2 and cache.hit_rate == 0.5
    cache.close()


def test_cache_stores_no_pickle_and_rejects_damaged_entries(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = AttentionCache(path)
    cache.put("k", good(3))
    cache.commit()
    cache.close()
    con = sqlite3.connect(path)
    (blob,) = con.execute("select value from attention where key='k'").fetchone()
    assert bytes(blob)[:1] == b"T" and b"\x80\x04" not in bytes(blob)[:2]  # not a pickle stream
    con.execute("update attention set value=? where key='k'", (bytes(blob)[:-4],))  # truncate the payload
    con.commit()
    con.close()
    cache = AttentionCache(path)
    assert cache.get("k", 3) is None
    cache.close()


def test_export_import_validates_every_line(tmp_path):
    src_cache = AttentionCache(tmp_path / "a.sqlite")
    src_cache.put("good", good(4))
    src_cache.put_json("meta", {"x": 1})
    src_cache.commit()
    out = tmp_path / "share.jsonl"
    assert src_cache.export_jsonl(out) == 2
    with open(out, "a") as f:
        f.write(json.dumps({"key": "evil", "shape": [1, 2, 2], "data": [0.5, 0.5, 0.5, 0.5]}) + "\n")  # future weight
        f.write("not json\n")
        f.write(json.dumps({"key": "nan", "shape": [1, 1, 1], "data": [float("nan")]}) + "\n")
    dst = AttentionCache(tmp_path / "b.sqlite")
    assert dst.import_jsonl(out) == (2, 3)
    assert torch.allclose(dst.get("good", 4), src_cache.get("good", 4))
    assert "evil" not in dst and "nan" not in dst


def test_cached_source_hits_cache_on_second_pass(tmp_path):
    class Counting(type(make_source("uniform"))):
        kind = "counting"
        calls = 0

        def matrix(self, words):
            Counting.calls += 1
            return super().matrix(words)

    src = Counting(cache=AttentionCache(tmp_path / "c.sqlite"))
    sents = [WORDS[:k] for k in range(2, 8)]
    first = src.score_many(sents)
    assert Counting.calls == 6 and first.stats.cached == 0
    second = src.score_many(sents)
    assert Counting.calls == 6 and second.stats.cached == 6
    assert all(torch.equal(a, b) for a, b in zip(first.matrices, second.matrices, strict=True))
