"""The local source's lean batched pass (``local_forward``) and its passes at once: as exact as the hook path.

The real SmolLM2 GGUF model runs in every test. What is pinned: the lean pass gives the hook path's
piece attention; a batch gives what one sentence at a time gives; a sentence's matrix does not depend
on the sentences it shares a batch with (padding never leaks); later words never change earlier rows;
two passes really run at once; BOS runs once per model and nothing runs after the deepest layer's weights.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from llmcomp.attention import local_forward, local_llm
from llmcomp.attention.local_align import align_words
from llmcomp.attention.local_llm import LocalLLMSource, cpu_workers
from llmcomp.attention.local_model import load_model, piece_attention
from llmcomp.text import tokenize

SENTENCES = [
    tokenize("The cat that the dog chased ran up the tall tree."),
    tokenize("My mother wakes up early every morning."),
    tokenize("the unbelievably photosynthetic daughter's well-known cat , meanwhile , slept ."),
    tokenize("We ate 3.14 pies at seven o'clock — naïve, weren't we?"),
    tokenize("Hi."),
    tokenize("Rain."),
]
HEADS = "21.4,29.4,0.1"  # two heads that need all 30 layers, one from the first


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_the_lean_pass_gives_the_hook_paths_piece_attention(model):
    batch = [align_words(model, words).ids for words in SENTENCES]
    for layers in (list(range(30)), [0, 21, 29]):
        lean = local_forward.batch_attention(model, batch, layers)
        hook = piece_attention(model, batch, layers)
        assert lean.shape == hook.shape
        for b, ids in enumerate(batch):  # real rows and columns; padding's own rows are never read
            n = len(ids)
            torch.testing.assert_close(lean[b, :, :n, :n], hook[b, :, :n, :n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", [{}, {"heads": HEADS}, {"layers": "last-4", "n_heads": 2, "sink": "pool"}])
def test_batched_equals_one_at_a_time(options):
    batched = LocalLLMSource(batch_size=2, **options)  # three lean passes, two at once
    assert batched.score_many(SENTENCES).stats.requests == 3
    single = LocalLLMSource(batch_size=1, **options).score_many(SENTENCES).require_all()  # hook path
    for a, b in zip(batched.score_many(SENTENCES).require_all(), single, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_a_sentences_matrix_is_the_same_whatever_batch_it_shares():
    """Padding never leaks: the middle-length sentence padded to a long neighbour, or setting the width."""
    target = SENTENCES[1]
    src = LocalLLMSource(heads=HEADS, batch_size=8)
    with_long = src.score_many([target, SENTENCES[2], SENTENCES[3]]).require_all()[0]  # padded to 20+ pieces
    with_short = src.score_many([SENTENCES[4], target, SENTENCES[5]]).require_all()[1]  # the others padded
    other_short = src.score_many([tokenize("Oh no !"), target]).require_all()[1]
    torch.testing.assert_close(with_long, with_short, atol=1e-5, rtol=0)
    torch.testing.assert_close(with_long, other_short, atol=1e-5, rtol=0)


def test_later_words_never_change_earlier_rows_in_a_batch():
    base = tokenize("The old man who lives next door walked his dog")
    k = 5
    variants = [base[:k], base, base[:k] + ["quickly"], base[:k] + tokenize("sang loudly in the rain .")]
    ms = LocalLLMSource(heads=HEADS, batch_size=4).score_many(variants).require_all()
    for m in ms:
        assert m.triu(1).abs().max() == 0
        torch.testing.assert_close(m[:, :k, :k], ms[0], atol=1e-5, rtol=0)
    assert (ms[2][:, k, : k + 1] - ms[3][:, k, : k + 1]).abs().max() > 1e-3  # the rows after do differ


def test_two_passes_run_at_once_and_give_what_one_at_a_time_gives(monkeypatch):
    in_flight, most = [0], [0]
    lock = threading.Lock()
    real = local_forward.batch_attention

    def counting(*args):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            time.sleep(0.2)  # room for the other worker to start its pass
            return real(*args)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(local_forward, "batch_attention", counting)
    data = SENTENCES * 2
    one = LocalLLMSource(heads=HEADS, batch_size=3)
    one.workers = 1
    alone = one.score_many(data).require_all()
    assert most[0] == 1
    two = LocalLLMSource(heads=HEADS, batch_size=3)
    two.workers = 2
    together = two.score_many(data).require_all()
    assert most[0] == 2
    for a, b in zip(alone, together, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # the same passes, whichever thread runs them


def test_workers_fit_the_cores(monkeypatch):
    monkeypatch.setattr(local_llm.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert cpu_workers(1) == 2
    assert cpu_workers(2) == 1  # two passes of two threads would crowd two cores
    assert cpu_workers(None) == 1  # torch's own setting: a thread per core already
    monkeypatch.setattr(local_llm.os, "sched_getaffinity", lambda _pid: {0})
    assert cpu_workers(1) == 1


def test_bos_runs_once_and_nothing_after_the_deepest_layers_weights(model):
    src = LocalLLMSource(heads="21.4,29.4", batch_size=8)
    src.score_many(SENTENCES[:2])  # BOS's keys and values are now known
    widths: list[int] = []
    ran_after: list[str] = []
    deepest = model.decoder.layers[29]
    handles = [
        model.decoder.embed_tokens.register_forward_hook(lambda _m, args, _o: widths.append(args[0].shape[1])),
        deepest.mlp.register_forward_pre_hook(lambda *_a: ran_after.append("mlp")),
        deepest.self_attn.v_proj.register_forward_pre_hook(lambda *_a: ran_after.append("v_proj")),
        deepest.self_attn.o_proj.register_forward_pre_hook(lambda *_a: ran_after.append("o_proj")),
    ]
    try:
        src.score_many(SENTENCES[:3]).require_all()
    finally:
        for h in handles:
            h.remove()
    longest = max(len(align_words(model, w).ids) for w in SENTENCES[:3])
    assert widths == [longest - 1]  # one pass, without the BOS column
    assert ran_after == []


def test_the_hook_path_stays_available_and_agrees():
    lean = LocalLLMSource(heads=HEADS, batch_size=8)
    hook = LocalLLMSource(heads=HEADS, batch_size=8)
    hook.fast = False
    for a, b in zip(lean.score_many(SENTENCES).require_all(), hook.score_many(SENTENCES).require_all(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# --- bf16 on the CPU (opt-in): the lean pass on a bf16 copy of the projection weights --------------
def test_bf16_stays_near_fp32_and_its_weights_are_made_once(model):
    """Measured on these sentences: word matrices within ~1.5e-2 of fp32 (piece rows of single heads ~4e-2)."""
    fp32 = LocalLLMSource(heads=HEADS, batch_size=8).score_many(SENTENCES).require_all()
    bf16 = LocalLLMSource(heads=HEADS, batch_size=8, precision="bf16")
    half = bf16.score_many(SENTENCES).require_all()
    gaps = [(a - b).abs().max().item() for a, b in zip(fp32, half, strict=True)]
    assert max(gaps) < 2.5e-2, gaps
    assert max(gaps) > 1e-4, gaps  # bf16 really ran: fp32 again would match to float error
    weights = local_forward._HALF[model.decoder]
    assert weights[0]["q"][0].dtype == torch.bfloat16 and len(weights) == len(model.decoder.layers)
    bf16.score_many(SENTENCES[:3]).require_all()
    assert local_forward._HALF[model.decoder] is weights  # one copy per model, not one per call
    assert set(local_forward._BOS[model.decoder]) >= {"fp32", "bf16"}  # BOS's keys and values, one set each


def test_bf16_rows_sum_to_one_and_later_pieces_never_change_earlier_rows(model):
    base = align_words(model, tokenize("The old man who lives next door walked his dog")).ids
    k = 6
    batch = [base[:k], base, base[:k] + base[-2:]]
    att = local_forward.batch_attention(model, batch, [0, 21, 29], "bf16")
    for b, ids in enumerate(batch):
        n = len(ids)
        torch.testing.assert_close(att[b, :, :n, :n].sum(-1), torch.ones(att.shape[1], n), atol=1e-5, rtol=0)
        assert att[b, :, :n, :n].triu(1).abs().max() == 0
        torch.testing.assert_close(att[b, :, :k, :k], att[0, :, :k, :k], atol=1e-5, rtol=0)
    assert (att[1, :, k, : k + 1] - att[2, :, k, : k + 1]).abs().max() > 1e-3  # the rows after do differ
