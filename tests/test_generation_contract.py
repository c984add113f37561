"""Generation's contract beyond the sampling loop: what is scored (each prefix once, nothing later),
the sampling knobs (temperature, top-k, the private seed), the model's limits, the model's own heads,
and rebuilding a generator from a checkpoint."""

from __future__ import annotations

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.attention.base import AttentionSource
from llmcomp.attention.openai_source import OpenAISource
from llmcomp.generation import GenerateConfig, GenerationError, Generator
from llmcomp.model import GPT, GPTConfig
from llmcomp.text import Vocab
from llmcomp.training.batching import with_bos

WORDS = ["the", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "sat", "on", "the", "cat", "."]
SPECIAL = ("<pad>", "<unk>", "<s>", "</s>")
NO_END = {"stop_at_sentence_end": False}


def make_generator(source: AttentionSource, seed: int = 0, learned: int | None = None, **model) -> Generator:
    """An untrained, seeded two-layer model over WORDS' vocabulary, shaped for ``source``."""
    torch.manual_seed(seed)
    vocab = Vocab.build([WORDS])
    learned = (2 if source.n_heads == 0 else 0) if learned is None else learned
    cfg = GPTConfig(vocab_size=len(vocab), n_external_heads=source.n_heads, n_learned_heads=learned, n_embd=32)
    for name, value in model.items():
        setattr(cfg, name, value)
    return Generator(GPT(cfg), vocab, source)


def bias_end(g: Generator, bias: float) -> None:
    """Add ``bias`` to the logit of </s> (the output head, sharing its weights, gains a bias), so a test
    can make the text end at once (+50) or never (-1e4: its probability underflows to exactly 0)."""
    head = torch.nn.Linear(g.model.config.n_embd, len(g.vocab), bias=True)
    head.weight = g.model.lm_head.weight
    with torch.no_grad():
        head.bias.zero_()
        head.bias[g.vocab.eos_id] = bias
    g.model.lm_head = head


def never_end(g: Generator) -> None:
    bias_end(g, -1e4)


def fresh_logits(g: Generator, words: list[str]) -> torch.Tensor:
    """Logits after ``words`` from one pass over those words alone, specials masked, rows scored per prefix."""
    att = torch.zeros(g.source.n_heads, len(words), len(words))
    for i in range(len(words)):
        att[:, i, : i + 1] = g.source.score(words[: i + 1])[:, i]
    x = torch.tensor([[g.vocab.bos_id, *g.vocab.encode(words)]])
    with torch.no_grad():
        logits = g.model(x, with_bos(att)[None] if g.source.n_heads else None)[0, -1].clone()
    logits[[g.vocab.pad_id, g.vocab.unk_id, g.vocab.bos_id]] = -float("inf")
    return logits


def spy_on_scoring(g: Generator) -> list[list[str]]:
    """Record every word list the source is asked to score (the real source still scores it)."""
    scored: list[list[str]] = []
    real = g.source.score

    def recording(words):
        scored.append(list(words))
        return real(words)

    g.source.score = recording
    return scored


@pytest.fixture(params=["uniform", "gaussian", "learned"])
def generator(request):
    return make_generator(make_source(request.param))


# --- what is scored ---------------------------------------------------------------------------
@pytest.fixture
def sentence_source(fake_openai, monkeypatch, tmp_path):
    """An OpenAI-compatible ``sentence``-mode source on the fake server: rows may see later words."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMCOMP_OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    src = OpenAISource(base_url=fake_openai.url, model="fake-model", api_key="dummy", mode="sentence", n_heads=2)
    try:
        yield src
    finally:
        src.close()


def test_a_whole_sentence_source_scores_each_prefix_exactly_once(sentence_source):
    """Row i is scored from words 0..i; a step reuses the rows it has, so one new prefix per word."""
    g = make_generator(sentence_source)
    never_end(g)
    scored = spy_on_scoring(g)
    out = g.generate(["the", "cat", "sat"], GenerateConfig(seed=2, max_words=4, **NO_END))
    words = out.all_words
    assert len(words) == 7 and out.stopped_by == "length"
    assert scored == [words[: k + 1] for k in range(len(words))]


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
def test_a_causal_source_scores_each_prefix_once_and_never_a_later_word(kind):
    """A causal source's matrix of the words so far is scored once per step, and never again once
    every row is known (here: generation ends at </s>, so no new word needs a row)."""
    g = make_generator(make_source(kind))
    bias_end(g, 50.0)  # </s> always wins: the text ends at the first step
    scored = spy_on_scoring(g)
    out = g.generate("the cat", GenerateConfig(temperature=0))
    assert out.words == [] and out.stopped_by == "end of sentence"
    assert scored == [["the", "cat"]]
    assert torch.allclose(out.attention, g.source.score(["the", "cat"]))


# --- the sampling knobs -----------------------------------------------------------------------
def greedy_words(g: Generator, prompt: list[str], n: int) -> list[str]:
    return greedy_path(g, prompt, n)[0]


def greedy_path(g: Generator, prompt: list[str], n: int) -> tuple[list[str], float]:
    """The n argmax words after ``prompt`` from fresh passes, and the smallest lead of a best word."""
    words, lead = list(prompt), float("inf")
    for _ in range(n):
        top = torch.topk(fresh_logits(g, words), 2)
        lead = min(lead, float(top.values[0] - top.values[1]))
        words.append(g.vocab.itos[int(top.indices[0])])
    return words[len(prompt) :], lead


def test_top_k_one_and_a_cold_temperature_both_give_the_greedy_words(generator):
    g = generator
    never_end(g)
    want, lead = greedy_path(g, ["the"], 6)
    assert lead > 0
    cold = lead / 40  # the runner-up is at most exp(-40) as likely as the best word
    for cfg in (GenerateConfig(temperature=1.0, top_k=1), GenerateConfig(temperature=cold, top_k=0)):
        for seed in range(4):
            cfg.seed, cfg.max_words, cfg.stop_at_sentence_end = seed, 6, False
            assert g.generate("the", cfg).words == want, (cfg, seed)


def test_top_k_samples_only_among_the_k_most_likely_words_and_all_of_them(generator):
    """With near-flat logits, top_k=3 over many draws gives each of the three best words, and no other."""
    g = generator
    best = torch.topk(fresh_logits(g, ["the", "cat"]), 3).indices.tolist()
    drawn = set()
    for seed in range(60):
        cfg = GenerateConfig(temperature=1.0, top_k=3, seed=seed, max_words=1, **NO_END)
        drawn.add(g.vocab.stoi[g.generate("the cat", cfg).words[0]])
    assert drawn == set(best)


def test_a_hot_temperature_spreads_the_draws_and_a_seed_ignores_the_global_rng(generator):
    g = generator
    with torch.no_grad():
        g.model.lm_head.weight *= 400  # at temperature 1 the best word nearly always wins
    cfg = {"max_words": 1, "top_k": 0, **NO_END}
    cold = {tuple(g.generate("the", GenerateConfig(temperature=1.0, seed=s, **cfg)).words) for s in range(20)}
    hot = {tuple(g.generate("the", GenerateConfig(temperature=500.0, seed=s, **cfg)).words) for s in range(20)}
    assert len(cold) <= 2 < len(hot)
    seeded = GenerateConfig(temperature=500.0, seed=11, max_words=8, top_k=0, **NO_END)
    torch.manual_seed(0)
    first = g.generate("the", seeded)
    torch.manual_seed(1)
    assert g.generate("the", seeded).words == first.words


# --- limits, prompts and progress -------------------------------------------------------------
def test_the_text_never_outgrows_the_model_and_long_prompts_are_refused():
    """A model of block size 8 reads <s> + 7 words: the text stops at 7 words; a prompt must leave room."""
    g = make_generator(make_source("uniform"), block_size=8)
    never_end(g)
    out = g.generate("the cat sat", GenerateConfig(seed=0, max_words=30, **NO_END))
    assert len(out.all_words) == 7 and out.stopped_by == "block size"
    assert out.attention.shape == (1, 7, 7)
    assert len(g.generate("the cat sat on the mat", GenerateConfig(seed=0, **NO_END)).all_words) == 7
    with pytest.raises(GenerationError, match="the prompt has 7 words; this model reads at most 6"):
        g.generate("the cat sat on the mat and", GenerateConfig(seed=0))


def test_an_empty_prompt_starts_a_sentence_and_max_words_zero_generates_nothing(generator):
    g = generator
    never_end(g)
    out = g.generate("", GenerateConfig(temperature=0, max_words=3, **NO_END))
    assert out.prompt_words == [] and out.words == greedy_words(g, [], 3) and out.unknown == []
    seen = []
    none = g.generate("the cat", GenerateConfig(max_words=0), progress=lambda *a: seen.append(a))
    assert none.words == [] and none.stopped_by == "length" and seen == []
    h = g.source.n_heads
    assert none.attention.shape == (h, 2, 2) and torch.allclose(none.attention, fresh_attention(g, ["the", "cat"]))


def fresh_attention(g: Generator, words: list[str]) -> torch.Tensor:
    return g.source.score(words) if g.source.n_heads else torch.zeros(0, len(words), len(words))


def test_an_unknown_prompt_names_its_words_and_suggests_real_ones():
    g = make_generator(make_source("uniform"))
    with pytest.raises(GenerationError) as err:
        g.generate("one two three four five six seven", GenerateConfig(seed=0))
    message = str(err.value)
    assert "(one, two, three, four, five)" in message and "six" not in message
    real_words = [w for w in g.vocab.itos if w not in SPECIAL and w.isalpha()]  # never "." (a word it is not)
    assert message.endswith("use words from the training corpus, e.g. " + ", ".join(real_words[:6]))


def test_progress_counts_every_word_up_to_max_words(generator):
    never_end(generator)
    seen = []
    generator.generate("the", GenerateConfig(seed=1, max_words=5, **NO_END), progress=lambda *a: seen.append(a))
    assert seen == [(k, 5) for k in range(5)]


def test_a_source_with_the_wrong_number_of_heads_is_refused():
    g = make_generator(make_source("gaussian"))  # two heads
    with pytest.raises(GenerationError, match="source gives 1 heads but the model was trained with 2"):
        Generator(g.model, g.vocab, make_source("uniform"))


def test_the_generator_puts_the_model_in_eval_mode():
    """Dropout would make the same prompt give different logits; a generator's model never drops."""
    g = make_generator(make_source("uniform"), dropout=0.5)
    model = g.model.train()
    g = Generator(model, g.vocab, g.source)
    assert not g.model.training
    a, _ = g.next_logits(["the", "cat"])
    assert torch.equal(a, g.next_logits(["the", "cat"])[0])


def test_a_source_without_supplied_heads_is_never_asked_to_score():
    g = make_generator(make_source("learned"))
    scored = spy_on_scoring(g)
    out = g.generate("the cat", GenerateConfig(seed=0, max_words=3, **NO_END))
    assert scored == [] and out.attention.shape == (0, len(out.all_words), len(out.all_words))


@pytest.mark.parametrize("threads", [1, 2])
def test_generation_runs_on_the_configured_threads_and_restores_the_callers(generator, threads):
    before = torch.get_num_threads()
    inside = []
    generator.generate(
        "the",
        GenerateConfig(seed=0, max_words=2, threads=threads),
        progress=lambda *_: inside.append(torch.get_num_threads()),
    )
    assert set(inside) == {threads} and torch.get_num_threads() == before


def test_a_negative_temperature_is_refused_with_what_zero_means(generator):
    with pytest.raises(
        GenerationError, match=r"^temperature must be >= 0 \(0 means always take the most likely word\)$"
    ):
        generator.generate("the", GenerateConfig(temperature=-0.5))
