"""Generation as a playground: each sampled word's probability and the likeliest alternatives (read
from the very distribution it was drawn from), the unknown-word hint, and the copy check."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.generation import GenerateConfig, GenerationError, Generator
from llmcomp.generation.copies import find_copy, training_corpus
from llmcomp.model import GPT, GPTConfig
from llmcomp.text import Vocab
from llmcomp.text.corpus import Corpus
from llmcomp.training.batching import with_bos
from llmcomp.training.run_folder import CorpusInfo

WORDS = ["the", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "sat", "on", "the", "cat", "."]


def make_generator(kind: str = "uniform", seed: int = 0, words: list[str] = WORDS) -> Generator:
    torch.manual_seed(seed)
    source = make_source(kind)
    vocab = Vocab.build([words])
    cfg = GPTConfig(vocab_size=len(vocab), n_external_heads=source.n_heads, n_learned_heads=0, n_embd=32)
    return Generator(GPT(cfg), vocab, source)


def expected_probs(g: Generator, words: list[str], temperature: float, top_k: int) -> torch.Tensor:
    """The distribution a step should sample from, computed here from one fresh pass over ``words``."""
    att = torch.zeros(g.source.n_heads, len(words), len(words))
    for i in range(len(words)):
        att[:, i, : i + 1] = g.source.score(words[: i + 1])[:, i]
    x = torch.tensor([[g.vocab.bos_id, *g.vocab.encode(words)]])
    with torch.no_grad():
        logits = g.model(x, with_bos(att)[None])[0, -1].clone()
    logits[[g.vocab.pad_id, g.vocab.unk_id, g.vocab.bos_id]] = -torch.inf
    if temperature == 0:
        return torch.softmax(logits, -1)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    return torch.softmax(logits, -1)


@pytest.mark.parametrize(("temperature", "top_k"), [(0.7, 0), (1.3, 4), (0.0, 0)])
def test_each_choice_reports_the_distribution_it_was_sampled_from(temperature, top_k):
    g = make_generator("previous")
    cfg = GenerateConfig(max_words=6, temperature=temperature, top_k=top_k, seed=3, stop_at_sentence_end=False)
    gen = g.generate("the cat", cfg)
    assert len(gen.choices) == len(gen.words) + (gen.stopped_by == "end of sentence")
    assert gen.choices, "nothing was sampled"
    for i, choice in enumerate(gen.choices):
        probs = expected_probs(g, gen.all_words[: len(gen.prompt_words) + i], temperature, top_k)
        taken = g.vocab.stoi[choice.word]
        assert choice.prob == pytest.approx(float(probs[taken]), abs=1e-6)
        want = [(g.vocab.itos[int(j)], float(v)) for v, j in zip(*torch.topk(probs, 5), strict=True) if v > 0]
        assert [w for w, _ in choice.top] == [w for w, _ in want]
        assert [p for _, p in choice.top] == pytest.approx([p for _, p in want], abs=1e-6)
        assert sum(p for _, p in choice.top) <= 1 + 1e-6
        assert all(a >= b for (_, a), (_, b) in zip(choice.top, choice.top[1:], strict=False))
        if temperature == 0:
            assert choice.top[0][0] == choice.word  # greedy takes the likeliest
        if 0 < top_k <= 5:
            assert choice.word in [w for w, _ in choice.top]  # the top-k cover the word taken
            assert len(choice.top) <= top_k + 1  # only ties at the k-th logit pass the filter


def test_the_end_of_text_is_a_choice_too():
    g = make_generator()
    head = torch.nn.Linear(g.model.config.n_embd, len(g.vocab), bias=True)
    head.weight = g.model.lm_head.weight
    with torch.no_grad():
        head.bias.zero_()
        head.bias[g.vocab.eos_id] = 50.0
    g.model.lm_head = head
    gen = g.generate("the cat", GenerateConfig(seed=0))
    assert gen.words == [] and gen.stopped_by == "end of sentence"
    assert [c.word for c in gen.choices] == ["</s>"] and gen.choices[0].prob == pytest.approx(1.0)


def test_the_unknown_word_hint_offers_words_never_punctuation():
    words = [".", ",", ".", ",", "!", "?", "42", "the", "cat", "don't", "well-known", "."]
    g = make_generator(words=words)
    with pytest.raises(GenerationError) as err:
        g.generate("zebra", GenerateConfig(seed=0))
    hint = str(err.value).split("e.g. ")[1]
    assert hint.split(", ") == ["cat", "don't", "the", "well-known"]


# --- the copy check ---------------------------------------------------------------------------
SENTENCES = [f"pet {i} likes fish .".split() for i in range(20)]


def corpus() -> Corpus:
    return Corpus([list(s) for s in SENTENCES], "pets.txt")


def test_a_recited_training_sentence_is_named():
    c = corpus()
    i = c.train_idx[3]
    words = SENTENCES[i]
    check = find_copy(words, 2, c)
    assert check.checked and check.index == i and "copies training sentence" in check.note and "pets.txt" in check.note
    # inside a longer text too, as long as a generated word is part of it
    assert find_copy(["so", *words, "and"], 1, c).index == i


def test_no_copy_when_the_prompt_holds_it_or_it_was_held_out():
    c = corpus()
    train, val = SENTENCES[c.train_idx[0]], SENTENCES[c.val_idx[0]]
    assert find_copy([*train, "more"], len(train), c).index is None  # the prompt was the sentence
    held_out = find_copy(val, 1, c)
    assert held_out.checked and held_out.index is None and held_out.note == ""
    assert find_copy(train[:-1], 1, c).index is None  # a prefix is not the sentence


def test_the_training_corpus_is_found_by_hash_and_split_as_the_run_split_it():
    c = corpus()
    other = Corpus([["a", "b", "."]] * 10, "other.txt")
    info = CorpusInfo("pets.txt", c.sha256, len(c.sentences), 7, 0.25)
    found = training_corpus(info, [other, c])
    assert found is not None and found.sentences == c.sentences
    again = Corpus(c.sentences, "x", dataclasses.replace(c.config, seed=7, val_fraction=0.25))
    assert found.train_idx == again.train_idx != c.train_idx
    assert training_corpus(info, [other]) is None
    assert training_corpus(dataclasses.replace(info, sha256=None), [c]) is None
    unchecked = find_copy(SENTENCES[0], 1, None, "pets.txt")
    assert not unchecked.checked and "not checked" in unchecked.note and "pets.txt" in unchecked.note
