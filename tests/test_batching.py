"""Batching lines up each word's attention row with the model position that uses it.

The model reads ``<s> w0 .. w(n-1)``; position p (word p-1) predicts word p. A one-row slip in
``with_bos`` or ``collate`` hands position p the row of position p+1, which attends to the very word
p predicts: training then looks brilliant and means nothing. These tests pin every cell.
"""

from __future__ import annotations

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.text import Vocab
from llmcomp.training.batching import collate, encode_example, with_bos

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
# Four different lengths, longest not first, so every kind of padding (none, some, most) occurs.
SENTENCES = [WORDS[:3], WORDS[:7], WORDS[:1], WORDS[2:7]]


def random_causal(h: int, t: int, seed: int) -> torch.Tensor:
    """Random row-stochastic lower-triangular (h, t, t): every row differs from its neighbours."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(h, t, t, generator=g)
    return torch.softmax(logits.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")), -1)


def score(kind: str, words: list[str]) -> torch.Tensor:
    if kind == "hand-made":
        return random_causal(3, len(words), seed=len(words))
    return make_source(kind, n_heads=2).score(words)


def test_with_bos_is_bos_on_itself_then_words_as_lower_right_block():
    att = random_causal(2, 4, seed=0)
    out = with_bos(att)
    assert out.shape == (2, 5, 5) and out.dtype == torch.float32
    expected = torch.zeros(2, 5, 5)
    expected[:, 0, 0] = 1.0  # <s> attends only to itself ...
    expected[:, 1:, 1:] = att  # ... word i (position i+1) uses source row i over words 0..i (positions 1..i+1)
    assert torch.equal(out, expected)


def test_encode_example_shifts_targets_by_one_and_marks_focus_at_the_predicting_position():
    vocab = Vocab(WORDS)
    words = WORDS[:4]
    att = random_causal(1, 4, seed=1)
    ex = encode_example(words, att, vocab, focus_words=[0, 2])
    ids = vocab.encode(words)
    assert ex.x.tolist() == [vocab.bos_id, *ids]
    assert ex.y.tolist() == [*ids, vocab.eos_id]  # position p predicts the input at p+1
    assert torch.equal(ex.att, with_bos(att))
    assert ex.focus.tolist() == [False, True, False, True, False]  # word i predicts word i+1 at position i+1


@pytest.mark.parametrize("kind", ["previous", "gaussian", "random", "hand-made"])
def test_collate_keeps_each_examples_own_block_and_pads_with_zeros(kind):
    vocab = Vocab(WORDS)
    mats = [score(kind, s) for s in SENTENCES]
    assert len({m.shape[-1] for m in mats}) >= 3
    examples = [encode_example(s, m, vocab, focus_words=[len(s) - 1]) for s, m in zip(SENTENCES, mats, strict=True)]
    b = collate(examples, vocab.pad_id)
    t = max(len(s) for s in SENTENCES) + 1
    h = mats[0].shape[0]
    assert b.x.shape == b.y.shape == b.focus.shape == (len(SENTENCES), t)
    assert b.att.shape == (len(SENTENCES), h, t, t)
    for i, (words, m) in enumerate(zip(SENTENCES, mats, strict=True)):
        n = len(words) + 1  # <s> + words
        ids = vocab.encode(words)
        assert b.x[i].tolist() == [vocab.bos_id, *ids] + [vocab.pad_id] * (t - n), f"x of example {i}"
        assert b.y[i].tolist() == [*ids, vocab.eos_id] + [-100] * (t - n), f"y of example {i}"
        assert b.focus[i].tolist() == [False] * (n - 1) + [True] + [False] * (t - n), f"focus of example {i}"
        # exact equality: the block is a copy of the example's own matrix, no row or column moved
        assert torch.equal(b.att[i, :, :n, :n], with_bos(m)), f"attention block of example {i} ({kind})"
        assert torch.allclose(b.att[i, :, :n, :n].sum(-1), torch.ones(h, n), atol=1e-6), "real rows sum to 1"
        assert b.att[i, :, n:, :].abs().sum() == 0, f"padding rows of example {i} are not zero"
        assert b.att[i, :, :, n:].abs().sum() == 0, f"padding columns of example {i} are not zero"
    assert torch.triu(b.att, diagonal=1).abs().sum() == 0, "weight above the diagonal: a position sees a later word"
    assert b.n_tokens == sum(len(s) + 1 for s in SENTENCES)


def test_collate_of_one_full_length_example_changes_nothing():
    vocab = Vocab(WORDS)
    m = random_causal(2, 5, seed=3)
    ex = encode_example(WORDS[:5], m, vocab)
    b = collate([ex], vocab.pad_id)
    assert torch.equal(b.x[0], ex.x) and torch.equal(b.y[0], ex.y) and torch.equal(b.att[0], ex.att)


def test_encode_example_records_the_deciding_column_at_each_decided_position():
    """A task's target j (the word that decides word i+1) is model column j+1, stored at position i+1; every
    other position, and a decided one whose deciding word is unknown, holds -1."""
    vocab = Vocab(WORDS)
    ex = encode_example(
        WORDS[:5], random_causal(1, 5, seed=2), vocab, focus_words=[1, 3, 4], deciding={1: 0, 3: None, 4: 2}
    )
    assert ex.target is not None and ex.target.dtype == torch.long
    assert ex.target.tolist() == [-1, -1, 1, -1, -1, 3]
    assert ex.focus.tolist() == [False, False, True, False, True, True]
    plain = encode_example(WORDS[:3], random_causal(1, 3, seed=2), vocab)
    assert plain.target is not None and plain.target.tolist() == [-1, -1, -1, -1]


def test_collate_pads_inputs_with_the_pad_id_it_is_given():
    vocab = Vocab(WORDS)
    short, long = (encode_example(WORDS[:n], random_causal(1, n, seed=n), vocab) for n in (2, 4))
    b = collate([short, long], pad_id=7)
    assert b.x[0].tolist() == [*short.x.tolist(), 7, 7] and b.x[1].tolist() == long.x.tolist()
    assert b.focus.dtype == torch.bool and not bool(b.focus.any())
