"""A generator rebuilt from a checkpoint (the source it was trained with, or one given), the one-call
``generate``, and the model's own learned heads over a generation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.attention.base import AttentionSource
from llmcomp.generation import GenerateConfig, Generator, generate
from llmcomp.model import GPT, GPTConfig
from llmcomp.text import Vocab
from llmcomp.training.batching import with_bos
from llmcomp.training.checkpoint import Checkpoint, save_checkpoint

WORDS = ["the", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "sat", "on", "the", "cat", "."]
CFG = GenerateConfig(seed=4, max_words=6, stop_at_sentence_end=False)


def make_model(source: AttentionSource, learned: int, seed: int = 0) -> tuple[GPT, Vocab]:
    """An untrained two-layer model over WORDS' vocabulary with ``learned`` heads beside the source's."""
    torch.manual_seed(seed)
    vocab = Vocab.build([WORDS])
    cfg = GPTConfig(vocab_size=len(vocab), n_external_heads=source.n_heads, n_learned_heads=learned, n_embd=32)
    return GPT(cfg), vocab


def saved_run(tmp_path: Path, source: AttentionSource, learned: int = 0) -> tuple[Path, Generator]:
    """A checkpoint of an untrained model trained 'with' ``source``, and a generator over the same model."""
    model, vocab = make_model(source, learned)
    ckpt = Checkpoint(model, vocab, 1, source.spec(), source.fingerprint(), {"steps": 1})
    return save_checkpoint(ckpt, tmp_path / "checkpoint"), Generator(model, vocab, source)


def test_from_checkpoint_rebuilds_the_source_it_was_trained_with(tmp_path):
    source = make_source("gaussian", sigma=1.5)
    folder, original = saved_run(tmp_path, source)
    g = Generator.from_checkpoint(folder)
    assert g.source.spec() == source.spec() and type(g.source) is type(source)
    assert g.generate("the cat", CFG).words == original.generate("the cat", CFG).words
    words = ["the", "cat", "sat"]
    assert torch.equal(g.next_logits(words)[0], original.next_logits(words)[0])


def test_from_checkpoint_applies_overrides_over_the_stored_spec(tmp_path):
    folder, _ = saved_run(tmp_path, make_source("gaussian", sigma=1.5))
    g = Generator.from_checkpoint(folder, sigma=3.0)
    assert g.source.spec() == make_source("gaussian", sigma=3.0).spec()
    assert torch.allclose(g.source.score(WORDS), make_source("gaussian", sigma=3.0).score(WORDS))


def test_from_checkpoint_uses_a_given_source_as_is(tmp_path):
    folder, _ = saved_run(tmp_path, make_source("gaussian", sigma=1.5))
    mine = make_source("gaussian", sigma=0.7)
    assert Generator.from_checkpoint(folder, mine).source is mine


def test_one_call_generate_is_a_generator_from_the_checkpoint(tmp_path):
    source = make_source("gaussian", sigma=1.5)
    folder, original = saved_run(tmp_path, source)
    out = generate(folder, "the cat", CFG)
    want = original.generate("the cat", CFG)
    assert out.words == want.words and out.stopped_by == want.stopped_by
    assert torch.equal(out.attention, want.attention)
    other = make_source("gaussian", sigma=0.4)  # a given source is the one whose rows are used
    with_other = generate(folder, "the cat", CFG, source=other)
    assert torch.allclose(with_other.attention, other.score(with_other.all_words))
    assert not torch.allclose(with_other.attention, source.score(with_other.all_words))


# --- the model's own heads --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["learned", "gaussian"])
def test_learned_attention_is_the_last_layers_causal_heads_over_the_generation(tmp_path, kind):
    """(learned heads, T+1, T+1) over <s> + words, rows summing to 1, nothing above the diagonal;
    with supplied heads beside them, computed with the rows the text was generated with."""
    _, g = saved_run(tmp_path, make_source(kind), learned=3)
    gen = g.generate("the cat", CFG)
    t = len(gen.all_words) + 1
    weights = g.learned_attention(gen)
    assert weights.shape == (3, t, t)
    assert torch.triu(weights, diagonal=1).abs().max() == 0
    assert torch.allclose(weights.sum(-1), torch.ones(3, t))
    x = torch.tensor([[g.vocab.bos_id, *g.vocab.encode(gen.all_words)]])
    supplied = with_bos(gen.attention)[None] if gen.attention.shape[0] else None
    assert torch.equal(weights, g.model.learned_attention(x, supplied)[0])
    if supplied is not None:  # the supplied rows shape the first layer, so they matter here
        other = with_bos(make_source("uniform", n_heads=2).score(gen.all_words))[None]
        assert not torch.allclose(weights, g.model.learned_attention(x, other)[0])


def test_learned_attention_is_none_without_learned_heads(tmp_path):
    _, g = saved_run(tmp_path, make_source("gaussian"), learned=0)
    assert g.learned_attention(g.generate("the cat", CFG)) is None
