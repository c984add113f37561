"""Generation: causal, reproducible, honest about unknown words."""

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.generation import GenerateConfig, GenerationError, Generator
from llmcomp.model import GPT, GPTConfig
from llmcomp.text import Vocab
from llmcomp.training.batching import with_bos

WORDS = ["the", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "sat", "on", "the", "cat", "."]


@pytest.fixture(params=["uniform", "gaussian", "learned"])
def generator(request):
    torch.manual_seed(0)
    source = make_source(request.param)
    vocab = Vocab.build([WORDS])
    model = GPT(
        GPTConfig(
            vocab_size=len(vocab),
            n_external_heads=source.n_heads,
            n_learned_heads=2 if source.n_heads == 0 else 0,
            n_embd=32,
        )
    )
    return Generator(model, vocab, source)


def test_step_logits_match_full_sequence_and_ignore_later_words(generator):
    """The logits used to pick word k are those of the full sequence at k, whatever follows."""
    g = generator
    ids = torch.tensor([[g.vocab.bos_id, *g.vocab.encode(WORDS)]])
    att = with_bos(g.source.score(WORDS))[None] if g.source.n_heads else None
    full = g.model(ids, att)[0]
    for k in range(1, len(WORDS)):
        step, _ = g.next_logits(WORDS[:k])
        assert torch.allclose(step, full[k], atol=1e-5)
        later = WORDS[:k] + ["dog"] * 3
        ids2 = torch.tensor([[g.vocab.bos_id, *g.vocab.encode(later)]])
        att2 = with_bos(g.source.score(later))[None] if g.source.n_heads else None
        assert torch.allclose(g.model(ids2, att2)[0, k], step, atol=1e-5)


def test_seeded_generation_is_reproducible_and_attention_has_a_row_per_word(generator):
    cfg = GenerateConfig(seed=3, max_words=8, stop_at_sentence_end=False)
    a = generator.generate("the cat", cfg)
    b = generator.generate("the cat", cfg)
    assert a.words == b.words and a.stopped_by == b.stopped_by
    assert len(a.words) == 8 or a.stopped_by == "end of sentence"
    t = len(a.all_words)
    assert a.attention.shape == (generator.source.n_heads, t, t)
    if generator.source.n_heads:
        assert torch.allclose(a.attention, generator.source.score(a.all_words), atol=1e-6)


def test_unknown_prompt_words_are_reported(generator):
    out = generator.generate("the purple cat", GenerateConfig(seed=0, max_words=2))
    assert out.unknown == ["purple"]
    with pytest.raises(GenerationError, match="none of the prompt words"):
        generator.generate("purple elephants", GenerateConfig(seed=0))


def test_greedy_and_stop_at_sentence_end(generator):
    out = generator.generate("the", GenerateConfig(temperature=0, max_words=50))
    assert out.stopped_by in {"end of sentence", "length", "block size"}
    if out.stopped_by == "end of sentence" and out.words:
        assert out.words[-1] in {".", "!", "?"} or len(out.words) < 50
    with pytest.raises(GenerationError, match="temperature"):
        generator.generate("the", GenerateConfig(temperature=-1))


def test_progress_is_reported_before_each_word(generator):
    seen = []
    out = generator.generate(
        "the cat", GenerateConfig(max_words=6, seed=3, stop_at_sentence_end=False), progress=lambda *a: seen.append(a)
    )
    assert seen[: len(out.words)] == [(k, 6) for k in range(len(out.words))]
    assert len(seen) in (len(out.words), len(out.words) + 1)  # one more if it stopped at </s>
