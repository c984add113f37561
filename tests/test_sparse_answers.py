"""Sparse answers of the OpenAI-compatible source (issue 16, item 3), over real HTTP with the fake server.

``answer="sparse"`` asks, per word and head, for only its ``top_k`` earlier words with scores: the answer must
become exactly the matrix the fake server meant (its dense answer cut to each row's top k, the rest at the floor),
a malformed one fails its sentence with a one-line reason, and the two formats never share a cache entry while
dense keys stay what they were before the option existed.
"""

from __future__ import annotations

import json

import pytest
import torch

from llmcomp.attention import AttentionCache
from llmcomp.attention.base import normalize_scores
from llmcomp.attention.openai_config import OpenAIConfigError
from llmcomp.attention.openai_source import OpenAISource
from llmcomp.testing import fake_server
from llmcomp.testing.behaviours import answer_for
from llmcomp.testing.faults import CORRUPTIONS
from llmcomp.testing.sparse import sparsify

HEADS = ["meaning", "syntax"]
SENTENCES = [
    ["the", "cat", "sat", "on", "the", "mat", "because", "the", "cat", "was", "tired"],
    ["hello"],
    ["a", "dog", "saw", "a", "dog", "and", "a", "cat"],
]


def source(url: str, **kw) -> OpenAISource:
    options = {"base_url": url, "api_key": "sk-test", "model": "fake-model", "heads": HEADS, "answer": "sparse"}
    return OpenAISource(**(options | kw))


def meant(words: list[str], top_k: int, floor: float) -> torch.Tensor:
    """What the fake server means by its sparse answer: its own pairs placed in a matrix, then the floor."""
    data = {"task": "sentence", "heads": HEADS, "score_max": 9, "words": words}
    scores = torch.zeros(len(HEADS), len(words), len(words))
    for h, rows in enumerate(sparsify(answer_for(data), top_k).values()):
        for i, row in enumerate(rows):
            for j, s in row:
                scores[h, i, j] = s
    return normalize_scores(scores, floor=floor)


@pytest.mark.parametrize("top_k", [1, 3])
def test_sparse_answers_become_the_matrices_the_fake_server_meant(fake_openai, top_k):
    with source(fake_openai.url, top_k=top_k, floor=0.5) as src:
        got = src.score_many(SENTENCES).require_all()
    assert fake_openai.requests == len(SENTENCES)  # one request per sentence, as dense
    for words, m in zip(SENTENCES, got, strict=True):
        assert m.shape == (len(HEADS), len(words), len(words))
        assert torch.allclose(m.sum(-1), torch.ones(len(HEADS), len(words)))  # row-stochastic
        assert torch.all(m.triu(1) == 0)  # causal
        assert torch.allclose(m, meant(words, top_k, 0.5))
        causal = torch.ones(len(words), len(words), dtype=torch.bool).tril()
        lowest = torch.where(causal, m, torch.inf).min(-1, keepdim=True).values  # the floor's share of each row
        assert int(((m > lowest + 1e-6) & causal).sum(-1).max()) <= top_k  # at most k words above the floor


def test_the_request_asks_for_the_sparse_shape(fake_openai, monkeypatch):
    seen: list[dict] = []

    def spy(data):
        seen.append(data)
        return answer_for(data)

    monkeypatch.setattr(fake_server, "answer_for", spy)
    with source(fake_openai.url, top_k=2) as src:
        src.score_many(SENTENCES[:1]).require_all()
    assert seen[0]["answer"] == "sparse" and seen[0]["top_k"] == 2
    assert fake_openai.by_format == {"json_schema": 1}


#: a defect -> what the reason must say (one line); faults of the fake server, or a spoiled sparsify below
DEFECTS = {
    "wrong_shape": "must have 11 lists (one per word); got 10",
    "nan": "not finite",
    "negative": "is negative",
    "out_of_range": "above the maximum 9",
    "later": "word 0 names word 1, a later word",
    "too_many": "at most 3 [j, score] pairs; got 4",
    "duplicate": "names word 10 more than once",
    "not_a_pair": "not a [j, score] pair",
    "no_word_index": "index is",
}


def spoil(kind: str):
    """A sparsify that spoils the answer of the sentence with "tired" in one way the fake server has no fault for."""

    def spoiled(answer, top_k):
        out = sparsify(answer, top_k)
        rows = out["meaning"]
        if len(rows) != 11:
            return out
        last = rows[-1]
        if kind == "too_many":
            rows[-1] = [[j, 1] for j in range(top_k + 1)]
        elif kind == "duplicate":
            rows[-1] = [[10, 5], [10, 4]]
        elif kind == "not_a_pair":
            rows[-1] = [[last[0][0], last[0][1], 7]]
        elif kind == "no_word_index":
            rows[-1] = [["tired", 5]]
        return out

    return spoiled


@pytest.mark.parametrize("kind", list(DEFECTS))
def test_a_malformed_sparse_answer_fails_its_sentence_with_one_line(fake_openai, monkeypatch, kind):
    if kind in CORRUPTIONS:
        fake_openai.add_fault(kind, times=None, match="tired")
    else:
        monkeypatch.setattr(fake_server, "sparsify", spoil(kind))
    with source(fake_openai.url, max_corrective_retries=1) as src:
        result = src.score_many(SENTENCES)
    assert result.matrices[0] is None and result.matrices[1] is not None and result.matrices[2] is not None
    reason = result.failures[0]
    assert DEFECTS[kind] in reason and "\n" not in reason, reason
    assert reason.startswith("invalid answer after 2 attempt(s)")


def test_cache_keys_differ_between_formats_and_dense_keys_are_unchanged(fake_openai, tmp_path):
    words = ["the", "cat"]
    fixed = {"base_url": "http://127.0.0.1:9/v1", "api_key": "x", "model": "m", "heads": HEADS}
    keys = {}
    for name, kw in {"dense": {}, "sparse": {"answer": "sparse"}, "sparse5": {"answer": "sparse", "top_k": 5}}.items():
        with OpenAISource(**fixed, **kw) as src:
            keys[name] = src.cache_key(words)
    assert len(set(keys.values())) == 3
    # the key main computed for this source before the option existed: dense caches stay valid
    assert keys["dense"] == "58c58541d12ca4e0f1283e803f727ce5c9003ef11f5d8fd8ada939ca0caf3a04"
    with OpenAISource(**fixed, answer="dense", top_k=7) as src:  # k means nothing to a dense answer
        assert src.cache_key(words) == keys["dense"]

    cache = AttentionCache(tmp_path / "attn.sqlite")
    with source(fake_openai.url, answer="dense", cache=cache) as dense:
        dense.score_many(SENTENCES).require_all()
    assert fake_openai.requests == len(SENTENCES)
    with source(fake_openai.url, cache=cache) as sparse:
        first = sparse.score_many(SENTENCES).require_all()  # not the dense entries
    assert fake_openai.requests == 2 * len(SENTENCES)
    with source(fake_openai.url, cache=cache) as sparse:
        again = sparse.score_many(SENTENCES).require_all()  # its own entries
    assert fake_openai.requests == 2 * len(SENTENCES)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    cache.close()


def test_sparse_is_sentence_mode_only_and_shows_in_spec_and_estimates(fake_openai):
    with pytest.raises(OpenAIConfigError, match="sparse \\(sentence mode only\\)"):
        source(fake_openai.url, mode="prefix")
    with pytest.raises(OpenAIConfigError, match="top_k must be 1..64"):
        source(fake_openai.url, top_k=0)
    long = [f"w{i}" for i in range(40)]
    with source(fake_openai.url) as src:
        spec = src.spec()
        assert (spec["answer"], spec["top_k"]) == ("sparse", 3)
        estimates = src.estimate_all([long])  # the other modes are estimated dense
        with OpenAISource(**{k: v for k, v in spec.items() if k not in ("kind", "n_heads")}) as rebuilt:
            assert rebuilt.cache_key(long) == src.cache_key(long)
    with source(fake_openai.url, answer="dense") as dense:
        assert "answer" not in dense.spec()  # dense specs are as they were
        assert estimates["sentence"].completion_tokens < dense.estimate([long]).completion_tokens / 2
    assert fake_openai.requests == 0
    assert json.loads(json.dumps(spec)) == spec


def test_the_bench_target_sparse_tokens_grow_with_t_not_t_squared():
    """bench/sparse.py's target on one long sentence: at most 10·T completion tokens a head, far below dense."""
    from bench.sparse import TARGET_PER_WORD, sentences_of_length, tokens_per_sentence
    from llmcomp.testing.fake_server import FakeOpenAIServer

    sentences = sentences_of_length(64, 1)
    with FakeOpenAIServer() as server:
        dense = tokens_per_sentence(server.url, "dense", sentences)[0] / 3
        sparse = tokens_per_sentence(server.url, "sparse", sentences)[0] / 3
    assert sparse <= TARGET_PER_WORD * 64 and sparse < dense / 3, (sparse, dense)
