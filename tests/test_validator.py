"""The attention contract at its edges: the validator, normalize_scores and score_many's bookkeeping.

tests/test_attention_contract.py shows that each kind of fault is refused and that the baselines keep
the contract; this file pins the boundaries (tolerance, tiny leaks, empty matrices), the messages a
user reads, and how score_many validates, caches, counts and falls back.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from llmcomp.attention import AttentionCache, make_source
from llmcomp.attention.base import (
    AttentionError,
    AttentionSource,
    PerSentenceSource,
    ScoreResult,
    ScoreStats,
    normalize_scores,
    validate_attention,
)


def uniform(t: int, h: int = 1) -> torch.Tensor:
    """Row i spreads its weight evenly over words 0..i: a matrix that keeps the contract."""
    return normalize_scores(torch.ones(h, t, t))


# --- validate_attention ----------------------------------------------------------------------


def test_valid_matrix_comes_back_as_detached_float32():
    m = uniform(3).double().requires_grad_()
    out = validate_attention(m, 3, 1)
    assert out.dtype == torch.float32 and not out.requires_grad
    assert torch.equal(out, uniform(3))


def test_head_count_is_only_checked_when_given():
    assert validate_attention(uniform(3, h=4), 3).shape == (4, 3, 3)
    with pytest.raises(AttentionError, match=r"^attention has 4 heads, expected 2$"):
        validate_attention(uniform(3, h=4), 3, 2)


@pytest.mark.parametrize(
    "m, message",
    [
        ([[1.0]], "attention must be a tensor, got list"),
        (torch.ones(3, 3), r"attention shape \(3, 3\) is not \(heads, 3, 3\)"),
        (torch.ones(1, 1, 3, 3), r"attention shape \(1, 1, 3, 3\) is not \(heads, 3, 3\)"),
        (torch.ones(1, 2, 3), r"attention shape \(1, 2, 3\) is not \(heads, 3, 3\)"),
        (torch.ones(1, 3, 2), r"attention shape \(1, 3, 2\) is not \(heads, 3, 3\)"),
    ],
    ids=["not-a-tensor", "2-d", "4-d", "too-few-rows", "too-few-columns"],
)
def test_wrong_type_or_shape_is_named(m, message):
    with pytest.raises(AttentionError, match=message):
        validate_attention(m, 3, 1)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_weights_are_refused(bad):
    m = uniform(3)
    m[0, 1, 0] = bad
    with pytest.raises(AttentionError, match="^attention has NaN or infinite values$"):
        validate_attention(m, 3, 1)


def test_a_tiny_negative_weight_is_refused_even_if_rows_sum_to_one():
    m = uniform(3)
    m[0, 1, 0] = -1e-6
    m[0, 1, 1] = 1 + 1e-6  # the row still sums to 1
    with pytest.raises(AttentionError, match="^attention has negative weights$"):
        validate_attention(m, 3, 1)


def test_a_tiny_leak_to_a_later_word_is_refused_even_if_rows_sum_to_one():
    m = uniform(3)
    m[0, 1, 2] = 1e-3
    m[0, 1, 1] -= 1e-3  # the row still sums to 1, well inside the tolerance
    with pytest.raises(
        AttentionError, match=r"^attention gives weight to later words \(non-zero above the diagonal\)$"
    ):
        validate_attention(m, 3, 1)


def test_rows_must_sum_to_one_within_the_tolerance():
    m = uniform(3)
    m[0, 2, 2] += 5e-5  # inside the default 1e-4
    assert torch.equal(validate_attention(m, 3, 1), m)
    m[0, 2, 2] += 1e-4  # now 1.5e-4 off
    with pytest.raises(AttentionError, match="sum to 1"):
        validate_attention(m, 3, 1)
    assert torch.equal(validate_attention(m, 3, 1, atol=2e-4), m)  # a caller may loosen it


def test_a_row_exactly_the_tolerance_away_is_accepted():
    m = torch.tensor([[[1.0, 0.0], [0.5, 1.0]]])  # the second row sums to exactly 1.5 (no rounding)
    assert torch.equal(validate_attention(m, 2, 1, atol=0.5), m)
    with pytest.raises(AttentionError, match="sum to 1"):
        validate_attention(m, 2, 1, atol=0.25)


@pytest.mark.parametrize("low, high, worst", [(0.7, 1.5, "1.5000"), (0.2, 1.5, "0.2000")])
def test_the_message_names_the_row_furthest_from_one(low, high, worst):
    m = uniform(3, h=2)
    m[0, 1] *= low
    m[1, 2] *= high
    with pytest.raises(AttentionError, match=rf"^attention rows do not sum to 1 \(worst row sums to {worst}\)$"):
        validate_attention(m, 3, 2)


def test_empty_matrices_are_valid():
    """The 'learned' source supplies zero heads; a zero-word sentence has nothing to check either."""
    assert validate_attention(torch.zeros(0, 4, 4), 4, 0).shape == (0, 4, 4)
    assert validate_attention(torch.zeros(2, 0, 0), 0, 2).shape == (2, 0, 0)


# --- normalize_scores ------------------------------------------------------------------------


def test_normalize_drops_later_words_and_divides_by_the_row_sum():
    scores = torch.tensor([[[2.0, 9.0, 9.0], [1.0, 3.0, 9.0], [0.5, 0.25, 0.25]]])
    expected = torch.tensor([[[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.5, 0.25, 0.25]]])
    w = normalize_scores(scores)
    assert torch.allclose(w, expected) and w.dtype == torch.float32
    validate_attention(w, 3, 1)


def test_normalize_treats_negative_scores_as_zero():
    w = normalize_scores(torch.tensor([[-1.0, 0.0], [-1.0, 3.0]]))
    assert torch.allclose(w, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_normalize_adds_the_floor_to_allowed_cells_only():
    scores = torch.tensor([[[0.0, 5.0], [1.0, 0.0]]])
    w = normalize_scores(scores, floor=1.0)
    assert torch.allclose(w, torch.tensor([[[1.0, 0.0], [2 / 3, 1 / 3]]]))


def test_normalize_falls_back_to_self_attention_for_an_empty_row_only():
    w = normalize_scores(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 6.0]]))
    assert torch.allclose(w, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.25, 0.75]]))


def test_normalize_returns_float32_whatever_the_default_dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # a caller's global setting must not leak into the weights
    try:
        w = normalize_scores(torch.zeros(1, 3, 3, dtype=torch.float64))  # all rows fall back to the identity
    finally:
        torch.set_default_dtype(old)
    assert w.dtype == torch.float32 and torch.equal(w, torch.eye(3)[None])


def test_normalize_keeps_small_scores_and_batch_dimensions():
    scores = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 1e-3  # rows summing far below 1
    w = normalize_scores(scores)
    assert w.shape == (2, 3, 4, 4) and w.dtype == torch.float32
    for batch in w:
        validate_attention(batch, 4, 3)


# --- ScoreResult, ScoreStats, describe ----------------------------------------------------------


def test_require_all_names_the_first_missing_sentence_and_why():
    ok = uniform(2)
    res = ScoreResult(matrices=[ok, None, None], failures={1: "timed out", 2: "bad JSON"})
    with pytest.raises(AttentionError, match=r"^2 sentence\(s\) could not be scored; first #1: timed out$"):
        res.require_all()
    with pytest.raises(AttentionError, match=r"first #0: unknown reason$"):
        ScoreResult(matrices=[None]).require_all()
    assert ScoreResult(matrices=[ok, ok]).require_all() == [ok, ok]


def test_score_stats_add_every_counter_and_done_counts_finished_sentences():
    a = ScoreStats(1, 2, 3, 4, 5, 6, 7, 8)
    a.add(ScoreStats(10, 20, 30, 40, 50, 60, 70, 80))
    assert a == ScoreStats(11, 22, 33, 44, 55, 66, 77, 88)
    assert a.done == 22 + 33 + 44  # scored + cached + failed; fallbacks are among the failed


def test_describe_spec_and_fingerprint():
    assert make_source("uniform").describe() == "uniform (1 head)"
    assert make_source("gaussian").describe() == "gaussian (2 heads)"
    assert make_source("learned").describe() == "learned (0 heads)"
    src = make_source("uniform", n_heads=3)
    assert src.spec() == src.fingerprint() == {"kind": "uniform", "n_heads": 3}


# --- cache keys ----------------------------------------------------------------------------


class Fixed(AttentionSource):
    """A source whose fingerprint is given; it scores nothing."""

    kind = "fixed"

    def __init__(self, fp: dict, **kw):
        super().__init__(**kw)
        self.fp = fp

    def fingerprint(self):
        return self.fp

    def _score_batch(self, sentences, stats, progress):
        raise AssertionError("not used")


def test_cache_key_format_is_stable():
    """Caches outlive the code (exported, imported, kept on disk), so the key format must not drift:
    sha256 of the UTF-8 JSON of {source fingerprint, words}, keys sorted, non-ASCII kept as is."""
    fp = {"kind": "fixed", "model": "m", "a": 1}  # deliberately not in sorted order
    words = ["the", "café", "."]
    blob = '{"source": {"a": 1, "kind": "fixed", "model": "m"}, "words": ["the", "café", "."]}'
    assert Fixed(fp).cache_key(words) == hashlib.sha256(blob.encode("utf-8")).hexdigest()


def test_cache_key_depends_on_content_not_on_dict_order():
    a = Fixed({"kind": "fixed", "x": 1, "y": 2})
    b = Fixed({"y": 2, "x": 1, "kind": "fixed"})  # e.g. a spec read back from JSON in another order
    assert a.cache_key(["w"]) == b.cache_key(["w"])
    assert a.cache_key(["w"]) != a.cache_key(["v"])
    assert a.cache_key(["w"]) != Fixed({"kind": "fixed", "x": 1, "y": 3}).cache_key(["w"])
    assert a.cache_key(["a b"]) != a.cache_key(["a", "b"])


# --- score_many -------------------------------------------------------------------------------


class Scripted(AttentionSource):
    """Answers from a script: sentence text -> matrix or failure reason; records every batch it is asked."""

    kind = "scripted"

    def __init__(self, script: dict[str, torch.Tensor | str], **kw):
        super().__init__(**kw)
        self.script = script
        self.batches: list[list[list[str]]] = []

    def _score_batch(self, sentences, stats, progress):
        self.batches.append(sentences)
        stats.requests += 1
        return [self.script[" ".join(words)] for words in sentences]


def test_score_many_validates_every_result_and_reports_each_failure():
    leaky = torch.ones(1, 2, 2) / 2  # weight on a later word
    src = Scripted({"a b": uniform(2), "c d": leaky, "e f": "rate limited", "g h i": uniform(3).double()})
    res = src.score_many([("a", "b"), ["c", "d"], ["e", "f"], ["g", "h", "i"]])
    assert src.batches == [[["a", "b"], ["c", "d"], ["e", "f"], ["g", "h", "i"]]]  # one batch, lists of words
    assert torch.equal(res.matrices[0], uniform(2))
    assert res.matrices[1] is None and res.matrices[2] is None
    assert res.matrices[3].dtype == torch.float32  # validated results, not the raw ones
    assert res.failures.keys() == {1, 2}
    assert "later words" in res.failures[1] and res.failures[2] == "rate limited"
    assert res.stats == ScoreStats(sentences=4, scored=2, failed=2, requests=1)


def test_score_many_counts_every_failure():
    leaky, negative = torch.ones(1, 2, 2) / 2, -uniform(2)
    src = Scripted({"a b": leaky, "c d": negative, "e f": "refused", "g h": "refused"})
    res = src.score_many([["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]])
    assert res.stats.failed == 4 and res.failures.keys() == {0, 1, 2, 3}


def test_a_source_that_answers_too_few_sentences_is_a_bug_not_a_silent_gap():
    class Short(Scripted):
        def _score_batch(self, sentences, stats, progress):
            return super()._score_batch(sentences, stats, progress)[:-1]

    with pytest.raises(ValueError, match="zip"):
        Short({"a": uniform(1), "b": uniform(1)}).score_many([["a"], ["b"]])


def test_score_many_hands_progress_to_the_source():
    class Reporting(Scripted):
        def _score_batch(self, sentences, stats, progress):
            stats.requests += 1
            progress(stats)  # a network source reports after each request
            return super()._score_batch(sentences, stats, progress)

    seen: list[int] = []
    Reporting({"a": uniform(1)}).score_many([["a"]], progress=lambda s: seen.append(s.requests))
    assert seen == [0, 1, 2]


def test_score_many_checks_the_head_count():
    src = Scripted({"a b": uniform(2, h=2)}, n_heads=1)
    res = src.score_many([["a", "b"]])
    assert res.matrices == [None] and "2 heads, expected 1" in res.failures[0]


def test_score_many_reports_progress_before_and_after():
    seen: list[ScoreStats] = []
    src = Scripted({"a b": uniform(2), "c": "nope"})
    src.score_many([["a", "b"], ["c"]], progress=lambda s: seen.append(ScoreStats(**vars(s))))
    assert seen == [ScoreStats(sentences=2), ScoreStats(sentences=2, scored=1, failed=1, requests=1)]


def test_score_many_of_nothing_asks_nothing():
    src = Scripted({})
    res = src.score_many([])
    assert res.matrices == [] and res.failures == {} and src.batches == []


def test_cache_serves_valid_matrices_and_never_stores_failures(tmp_path):
    path = tmp_path / "c.sqlite"
    script = {"a b": uniform(2), "c d": "server error", "e f g": uniform(3)}
    src = Scripted(script, cache=AttentionCache(path))
    first = src.score_many([["a", "b"], ["c", "d"]])
    assert first.stats == ScoreStats(sentences=2, scored=1, failed=1, requests=1)
    # Another process opening the same cache sees the new matrix at once: score_many commits.
    other = AttentionCache(path)
    assert torch.equal(other.get(src.cache_key(["a", "b"]), 2, 1), uniform(2))
    assert src.cache_key(["c", "d"]) not in other
    other.close()
    second = src.score_many([["a", "b"], ["c", "d"], ["e", "f", "g"]])
    assert src.batches[-1] == [["c", "d"], ["e", "f", "g"]]  # the cached sentence is not asked again
    assert second.stats == ScoreStats(sentences=3, scored=1, cached=1, failed=1, requests=1)
    assert torch.equal(second.matrices[0], uniform(2)) and second.failures.keys() == {1}
    third = src.score_many([["a", "b"], ["e", "f", "g"]])
    assert len(src.batches) == 2 and third.stats == ScoreStats(sentences=2, cached=2)  # nothing left to ask
    src.cache.close()


@pytest.mark.parametrize("stored", [uniform(3), uniform(2, h=2)], ids=["3x3", "2-heads"])
def test_a_cached_matrix_of_the_wrong_shape_is_not_served(tmp_path, stored):
    """An imported or damaged cache may hold anything under a key: it must fit the sentence and the heads."""
    cache = AttentionCache(tmp_path / "c.sqlite")
    src = Scripted({"a b": uniform(2)}, cache=cache)
    cache.put(src.cache_key(["a", "b"]), stored)
    res = src.score_many([["a", "b"]])
    assert torch.equal(res.matrices[0], uniform(2)) and res.stats.cached == 0 and res.stats.scored == 1
    cache.close()


def test_fallback_fills_failures_and_matches_the_head_count():
    two_heads = torch.stack([uniform(3)[0], normalize_scores(torch.eye(3))])  # uniform head, self head
    src = Scripted({"a b c": "refused", "d e f": uniform(3, h=2)}, n_heads=2, fallback=Scripted({"a b c": uniform(3)}))
    res = src.score_many([["a", "b", "c"], ["d", "e", "f"]])
    assert torch.equal(res.matrices[0], uniform(3, h=2))  # one fallback head copied to both heads
    assert res.failures == {0: "refused"}  # still reported as failed
    assert res.stats == ScoreStats(sentences=2, scored=1, failed=1, fallbacks=1, requests=1)
    one_head = Scripted({"a b c": "refused"}, n_heads=1, fallback=Scripted({"a b c": two_heads}, n_heads=2))
    m = one_head.score_many([["a", "b", "c"]]).matrices[0]
    assert m.shape == (1, 3, 3) and torch.allclose(m[0], two_heads.mean(0))  # heads averaged
    validate_attention(m, 3, 1)


def test_fallback_head_count_is_compared_with_the_heads_not_the_words():
    three_words = ["a", "b", "c"]
    one = Scripted({"a b c": "refused"}, n_heads=3, fallback=Scripted({"a b c": uniform(3)}))  # 3 heads, 3 words
    assert one.score_many([three_words]).matrices[0].shape == (3, 3, 3)
    two_heads = torch.stack([uniform(3)[0], normalize_scores(torch.eye(3))])
    same = Scripted({"a b c": "refused"}, n_heads=2, fallback=Scripted({"a b c": two_heads}, n_heads=2))
    assert torch.equal(same.score_many([three_words]).matrices[0], two_heads)  # same head count: kept as is


def test_a_fallback_that_drops_sentences_is_a_bug_not_a_silent_gap():
    class Dropping(Scripted):
        def score_many(self, sentences, progress=None):
            res = super().score_many(sentences, progress)
            return ScoreResult(matrices=res.matrices[:-1], failures=res.failures, stats=res.stats)

    src = Scripted({"a": "refused", "b": "refused"}, fallback=Dropping({"a": uniform(1), "b": uniform(1)}))
    with pytest.raises(ValueError, match="zip"):
        src.score_many([["a"], ["b"]])


def test_a_failing_fallback_raises():
    src = Scripted({"a": "refused"}, fallback=Scripted({"a": "also refused"}))
    with pytest.raises(AttentionError, match="first #0: also refused"):
        src.score_many([["a"]])


def test_score_returns_the_matrix_or_raises_the_reason():
    src = Scripted({"a b": uniform(2), "c": "no key"})
    assert torch.equal(src.score(["a", "b"]), uniform(2))
    with pytest.raises(AttentionError, match="no key"):
        src.score(["c"])


def test_per_sentence_sources_turn_contract_errors_into_failures_only():
    class Picky(PerSentenceSource):
        kind = "picky"

        def matrix(self, words):
            if words == ["bad"]:
                raise AttentionError("cannot score 'bad'")
            if words == ["bug"]:
                raise KeyError("a bug, not a refusal")
            return uniform(len(words))

    res = Picky().score_many([["bad"], ["ok", "fine"]])
    assert res.failures == {0: "cannot score 'bad'"} and torch.equal(res.matrices[1], uniform(2))
    with pytest.raises(KeyError):
        Picky().score_many([["bug"]])  # a programming error is not hidden as a failed sentence


def test_spec_is_plain_json_of_the_constructor_options():
    assert json.loads(json.dumps(Scripted({}, n_heads=2).spec())) == {"kind": "scripted", "n_heads": 2}
