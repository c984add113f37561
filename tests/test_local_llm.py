"""The local LLM source: exact word alignment, causality, aggregation, caching, offline loading.

The real SmolLM2 GGUF model is loaded once for the whole module (about 20 s); every test runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from llmcomp.attention import AttentionCache, make_source, validate_attention
from llmcomp.attention.local_align import align_words, word_texts
from llmcomp.attention.local_llm import LocalLLMError, LocalLLMSource, resolve_layers
from llmcomp.attention.local_model import load_model
from llmcomp.text import tokenize

ROOT = Path(__file__).resolve().parents[1]
TRICKY = tokenize("the unbelievably photosynthetic daughter's well-known cat , meanwhile , slept .")
SENTENCES = [
    tokenize("The cat that the dog chased ran up the tall tree."),
    tokenize("My mother wakes up early every morning."),
    TRICKY,
    tokenize("We ate 3.14 pies at seven o'clock — naïve, weren't we?"),
    tokenize("Hi."),
]


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def source(model):
    return LocalLLMSource()


# --- word alignment ---------------------------------------------------------------------------
def test_alignment_maps_every_piece_to_its_word(model):
    al = align_words(model, TRICKY)
    assert al.ids[0] == model.bos_id and al.word_of_piece[0] == -1
    assert al.n_words == len(TRICKY) == 11
    tok = model.tokenizer
    texts = word_texts(TRICKY)
    for j, word in enumerate(TRICKY):
        pieces = [k for k, w in enumerate(al.word_of_piece) if w == j]
        assert pieces, f"word {word!r} has no piece"
        assert pieces == list(range(pieces[0], pieces[-1] + 1)), "a word's pieces must be contiguous"
        assert al.last_piece[j] == pieces[-1]
        piece_texts = [tok.decode([al.ids[k]]) for k in pieces]
        assert "".join(piece_texts) == texts[j]
        assert "".join(piece_texts).strip() == word
    multi = {TRICKY[j] for j in range(11) if al.word_of_piece.count(j) > 1}
    assert {"unbelievably", "daughter's", "well-known"} <= multi
    # word 0 is bare, the others carry their leading space, as in the sentence joined by single spaces
    assert "".join(texts) == " ".join(TRICKY)
    # and for this sentence it is exactly how the tokenizer splits the whole text
    assert al.ids[1:] == tok(" ".join(TRICKY), add_special_tokens=False)["input_ids"]


def test_alignment_of_non_ascii_words(model):
    words = tokenize("A naïve café — 3.14 señoras!")
    al = align_words(model, words)
    for j, text in enumerate(word_texts(words)):
        ids = [al.ids[k] for k, w in enumerate(al.word_of_piece) if w == j]
        assert model.tokenizer.decode(ids) == text


def test_a_words_pieces_never_depend_on_later_words(model):
    for words in SENTENCES:
        full = align_words(model, words)
        for k in range(1, len(words)):
            prefix = align_words(model, words[:k])
            assert prefix.ids == full.ids[: len(prefix.ids)]
            assert prefix.word_of_piece == full.word_of_piece[: len(prefix.ids)]


def test_empty_word_is_a_failure_not_a_crash(source):
    res = source.score_many([["the", "", "cat"], ["a", "cat"]])
    assert 0 in res.failures and "empty word" in res.failures[0]
    assert res.matrices[1] is not None


# --- the matrices -------------------------------------------------------------------------------
def test_matrices_are_causal_and_row_stochastic(source):
    res = source.score_many(SENTENCES)
    for words, m in zip(SENTENCES, res.require_all(), strict=True):
        assert m.shape == (1, len(words), len(words))
        validate_attention(m, len(words), 1, atol=1e-5)
        assert torch.triu(m, diagonal=1).abs().max() == 0
        assert torch.allclose(m.sum(-1), torch.ones(1, len(words)), atol=1e-5)
        allowed = torch.ones(len(words), len(words), dtype=torch.bool).tril()
        assert (m[:, allowed] > 0).all(), "the floor keeps every allowed cell positive"


def test_later_words_never_change_earlier_rows():
    src = LocalLLMSource(layers="all", n_heads=3, batch_size=4)
    base = tokenize("The old man who lives next door walked his dog")
    k = 5
    variants = [
        base,
        base[:k],
        base[:k] + ["quickly"],
        base[:k] + tokenize("sang loudly in the rain with unbelievably photosynthetic friends ."),
        base + tokenize("and then it rained ."),
    ]
    ms = src.score_many(variants).require_all()
    ref = ms[1]
    for m in ms:
        torch.testing.assert_close(m[:, :k, :k], ref, atol=1e-5, rtol=0)
    # the rows after the prefix do differ, so the comparison above is not vacuous
    assert (ms[3][:, k, : k + 1] - ms[2][:, k, : k + 1]).abs().max() > 1e-3


def test_a_growing_sentence_runs_only_its_new_pieces_and_matches_a_full_pass(monkeypatch):
    """Generation scores a sentence one word longer each time: the source keeps the model's keys and
    values for the prefix, runs only the new word's pieces, and gives what a full pass gives."""
    from llmcomp.attention import local_llm  # the source looks extend_piece_attention up here

    words = tokenize("The old man who lives next door walked his unbelievably photosynthetic dog .")
    run: list[int] = []  # pieces sent through the model, per pass
    real = local_llm.extend_piece_attention

    def counting(model, new_ids, *rest):  # layers, past, precision
        run.append(len(new_ids))
        return real(model, new_ids, *rest)

    monkeypatch.setattr(local_llm, "extend_piece_attention", counting)
    growing = LocalLLMSource(layers="all", n_heads=2)
    rows = [growing.score(words[:n]) for n in range(1, len(words) + 1)]
    al = align_words(growing.model(), words)
    pieces_per_word = [al.word_of_piece.count(j) for j in range(len(words))]
    assert run == [1 + pieces_per_word[0], *pieces_per_word[1:]]  # <s> and the first word, then one word each
    assert growing.score(words) is not None and len(run) == len(words)  # the same sentence again: no pass
    full = LocalLLMSource(layers="all", n_heads=2).score_many([words, words[:3]]).require_all()[0]  # padded batch
    for n, m in enumerate(rows, start=1):
        torch.testing.assert_close(m, full[:, :n, :n], atol=1e-5, rtol=0)


def test_batched_equals_one_by_one():
    batched = LocalLLMSource(batch_size=8).score_many(SENTENCES).require_all()
    single = LocalLLMSource(batch_size=1).score_many(SENTENCES).require_all()
    for a, b in zip(batched, single, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_layer_selection_changes_the_result(source):
    words = SENTENCES[0]
    early = LocalLLMSource(layers="first-2").score(words)
    late = LocalLLMSource(layers="last-2").score(words)
    assert (early - late).abs().max() > 0.05
    # the same selection written differently gives the same matrix
    torch.testing.assert_close(LocalLLMSource(layers="0-1").score(words), early, atol=1e-6, rtol=0)
    torch.testing.assert_close(LocalLLMSource(layers=[0, 1]).score(words), early, atol=1e-6, rtol=0)


def test_one_output_head_per_layer_matches_single_layer_runs():
    """n_heads = number of layers groups the heads layer by layer; running only up to layer k gives the same."""
    words = SENTENCES[2]
    per_layer = LocalLLMSource(layers="all", n_heads=30).score(words)
    for k in (0, 3, 29):
        alone = LocalLLMSource(layers=[k]).score(words)
        torch.testing.assert_close(per_layer[k : k + 1], alone, atol=1e-5, rtol=0)


def test_model_heads_average_to_the_single_head(model):
    words = SENTENCES[1]
    heads = LocalLLMSource(layers=[7], n_heads=model.n_model_heads).score(words)
    assert heads.shape[0] == 9
    assert (heads[0] - heads[1]).abs().max() > 1e-3, "the model's heads differ"
    torch.testing.assert_close(heads.mean(0, keepdim=True), LocalLLMSource(layers=[7]).score(words), atol=1e-5, rtol=0)


def test_sink_policies_are_valid_and_differ():
    words = SENTENCES[0]
    out = {p: LocalLLMSource(layers="last-4", sink=p).score(words) for p in ("drop", "pool", "self")}
    for m in out.values():
        validate_attention(m, len(words), 1, atol=1e-5)
    # moving the sink mass to the diagonal makes each word attend to itself far more
    assert out["self"][0].diagonal()[1:].mean() > out["drop"][0].diagonal()[1:].mean() + 0.1
    assert (out["pool"] - out["drop"]).abs().max() > 1e-3


def test_torch_threads_apply_while_scoring_only():
    words = SENTENCES[0]
    before = torch.get_num_threads()
    one = LocalLLMSource(layers="first-4", torch_threads=1).score(words)
    assert torch.get_num_threads() == before
    two = LocalLLMSource(layers="first-4", torch_threads=2).score(words)
    assert torch.get_num_threads() == before
    torch.testing.assert_close(one, two, atol=1e-5, rtol=0)


def test_long_sentences_get_smaller_batches_and_too_long_ones_fail(monkeypatch):
    from llmcomp.attention import local_llm

    words = SENTENCES[0]  # 12 words, 13 tokens with BOS
    data = [words] * 5
    full = LocalLLMSource(layers="first-2").score_many(data)
    assert full.stats.requests == 1
    # room for two such sentences per pass (2 layers x 9 heads, 13 x 13 float32 each)
    monkeypatch.setattr(local_llm, "ATTENTION_BUDGET", 2 * 18 * 13 * 13 * 4)
    small = LocalLLMSource(layers="first-2").score_many(data)
    assert small.stats.requests == 3
    for a, b in zip(full.require_all(), small.require_all(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    res = LocalLLMSource(max_pieces=10).score_many([words, ["a", "cat"]])
    assert "limit is 10" in res.failures[0] and res.matrices[1] is not None


def test_bad_options_fail_with_clear_errors(source):
    with pytest.raises(LocalLLMError, match="layer selection"):
        LocalLLMSource(layers="middle")
    with pytest.raises(LocalLLMError, match="sink"):
        LocalLLMSource(sink="ignore")
    with pytest.raises(LocalLLMError, match="unknown option"):
        LocalLLMSource(temperature=0.5)
    with pytest.raises(LocalLLMError, match="no GGUF model file"):
        LocalLLMSource(gguf_path="/nonexistent/model.gguf")
    with pytest.raises(LocalLLMError, match="out of range"):
        LocalLLMSource(layers=[30]).score(["a", "cat"])
    with pytest.raises(LocalLLMError, match="pairs"):
        LocalLLMSource(layers=[0], n_heads=10).score(["a", "cat"])
    assert resolve_layers("last-3", 30) == [27, 28, 29]
    assert resolve_layers([-1, 0, 0], 30) == [0, 29]
    assert resolve_layers("2,5", 30) == [2, 5]


def test_empty_sentence(source):
    assert source.score([]).shape == (1, 0, 0)


# --- cache and spec ------------------------------------------------------------------------------
def test_results_are_cached(tmp_path):
    cache = AttentionCache(tmp_path / "att.sqlite")
    src = LocalLLMSource(layers="last-8", cache=cache)
    first = src.score_many(SENTENCES)
    assert first.stats.scored == len(SENTENCES) and first.stats.cached == 0 and first.stats.requests == 1
    second = src.score_many(SENTENCES)
    assert second.stats.cached == len(SENTENCES) and second.stats.scored == 0 and second.stats.requests == 0
    for a, b in zip(first.require_all(), second.require_all(), strict=True):
        assert torch.equal(a, b)
    # another layer selection or sink policy is another key: no false hits
    other = LocalLLMSource(layers="last-4", cache=cache).score_many(SENTENCES[:1])
    assert other.stats.cached == 0
    assert LocalLLMSource(sink="pool").cache_key(SENTENCES[0]) != LocalLLMSource().cache_key(SENTENCES[0])
    cache.close()


def test_fingerprint_identifies_the_model_file(source, model):
    fp = source.fingerprint()
    assert fp["kind"] == "local" and fp["aggregation"] >= 1
    assert fp["model"]["name"] == model.path.name
    assert fp["model"]["size"] == model.path.stat().st_size
    assert len(fp["model"]["sha256_1mib"]) == 64


def test_spec_round_trips(source):
    src = LocalLLMSource(layers="last-8", n_heads=4, sink="pool", batch_size=8)
    spec = json.loads(json.dumps(src.spec()))
    assert spec["kind"] == "local" and spec["gguf_path"] is None  # portable: no machine-specific path
    again = make_source(**spec)
    assert isinstance(again, LocalLLMSource)
    assert again.spec() == src.spec() and again.fingerprint() == src.fingerprint()
    assert isinstance(make_source("local"), LocalLLMSource)
    words = SENTENCES[1]
    torch.testing.assert_close(again.score(words), src.score(words), atol=0, rtol=0)


# --- offline ---------------------------------------------------------------------------------------
OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, socket, time
    attempts = []

    class NoSocket(socket.socket):
        def __init__(self, *a, **k):
            attempts.append("socket")
            raise OSError("network disabled by the test")

    def refuse(name):
        def f(*a, **k):
            attempts.append(name)
            raise OSError("network disabled by the test")
        return f

    socket.socket = NoSocket
    socket.create_connection = refuse("create_connection")
    socket.getaddrinfo = refuse("getaddrinfo")

    from llmcomp.attention import local_llm, local_model
    before = local_model.is_loaded()
    t = time.perf_counter()
    thread = local_model.preload_in_background()
    returned_after = time.perf_counter() - t
    state = local_model.load_state()
    thread.join(300)
    m = local_llm.LocalLLMSource().score(["the", "cat", "sat", "."])
    print(json.dumps({"before": before, "returned_after": returned_after, "state": state,
                      "after": local_model.is_loaded(), "final_state": local_model.load_state(),
                      "shape": list(m.shape), "attempts": attempts}))
    """
)


@pytest.mark.slow
def test_loads_and_scores_with_the_network_unavailable():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["attempts"] == [], f"the network was touched: {out['attempts']}"
    assert out["before"] is False and out["state"] == "loading"
    assert out["returned_after"] < 1.0, "preload_in_background must return at once"
    assert out["after"] is True and out["final_state"] == "loaded"
    assert out["shape"] == [1, 4, 4]
