"""The model is causal in every mode: nothing at position < j depends on position j."""

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.model import GPT, GPTConfig
from llmcomp.text import Vocab
from llmcomp.training.batching import collate, encode_example, with_bos

MODES = {"external": (2, 0), "learned": (0, 4), "mixed": (2, 2)}


def causal_att(h, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, h, t, t, generator=g).masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -1e9)
    return torch.softmax(logits, -1)


@pytest.mark.parametrize("mode", MODES)
def test_changing_token_j_changes_no_logit_before_j(mode):
    ext, learned = MODES[mode]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, n_external_heads=ext, n_learned_heads=learned, n_embd=32)).eval()
    t = 10
    x = torch.randint(4, 40, (1, t))
    att = causal_att(ext, t) if ext else None
    base = model(x, att)
    for j in range(1, t):
        x2 = x.clone()
        x2[0, j] = (x2[0, j] + 1) % 40
        att2 = att.clone() if ext else None
        if ext:  # a causal source may also change rows >= j when word j changes
            att2[:, :, j:, :] = causal_att(ext, t, seed=j)[:, :, j:, :]
        out = model(x2, att2)
        assert torch.allclose(out[0, :j], base[0, :j], atol=1e-6), f"position < {j} changed"
        assert not torch.allclose(out[0, j:], base[0, j:])  # and the change is visible from j on


def test_model_requires_the_supplied_heads():
    model = GPT(GPTConfig(vocab_size=10, n_external_heads=1))
    with pytest.raises(ValueError, match="expects 1 supplied"):
        model(torch.zeros(1, 3, dtype=torch.long), None)


def test_uneven_head_split_still_builds():
    model = GPT(GPTConfig(vocab_size=10, n_embd=64, n_external_heads=3))
    assert model(torch.zeros(1, 3, dtype=torch.long), causal_att(3, 3)).shape == (1, 3, 10)


def test_supplied_weights_are_actually_used():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, n_external_heads=1, n_embd=32)).eval()
    x = torch.randint(4, 20, (1, 6))
    a = model(x, causal_att(1, 6, seed=1))
    b = model(x, causal_att(1, 6, seed=2))
    assert torch.allclose(a[0, 0], b[0, 0])  # position 0 can only attend to itself either way
    assert not torch.allclose(a[0, 1:], b[0, 1:])


def test_bos_alignment_and_padding():
    vocab = Vocab(["a", "b", "c"])
    words = ["a", "b", "c"]
    att = make_source("previous").score(words)
    ex = encode_example(words, att, vocab, focus_words=[1])
    assert ex.x.tolist() == [vocab.bos_id, 4, 5, 6] and ex.y.tolist() == [4, 5, 6, vocab.eos_id]
    full = with_bos(att)
    assert full[0, 0].tolist() == [1, 0, 0, 0]
    assert torch.equal(full[0, 1:, 1:], att[0])  # word i at position i+1 uses source row i
    assert ex.focus.tolist() == [False, False, True, False]  # word 1 predicts word 2 at position 2
    short = encode_example(["a"], make_source("previous").score(["a"]), vocab)
    b = collate([ex, short], vocab.pad_id)
    assert b.x.shape == (2, 4) and b.y[1].tolist() == [4, vocab.eos_id, -100, -100]
    assert b.att[1, 0, 2:].abs().sum() == 0 and b.n_tokens == 6
