"""Generation: causal, reproducible, honest about unknown words."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmcomp.attention import make_source
from llmcomp.attention.base import AttentionSource
from llmcomp.attention.openai_source import OpenAISource
from llmcomp.generation import GenerateConfig, GenerationError, Generator
from llmcomp.model import GPT, GPTConfig
from llmcomp.testing import fake_server
from llmcomp.text import Vocab
from llmcomp.text.tokenizer import SENTENCE_END
from llmcomp.training.batching import with_bos

WORDS = ["the", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "sat", "on", "the", "cat", "."]
NEVER = -1e4  # an output bias that makes a word's probability exactly 0 in float32 (exp(-1e4) underflows)


def make_generator(source: AttentionSource, seed: int = 0) -> Generator:
    """An untrained, seeded model over WORDS' vocabulary, shaped for ``source``."""
    torch.manual_seed(seed)
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


@pytest.fixture(params=["uniform", "gaussian", "learned"])
def generator(request):
    return make_generator(make_source(request.param))


def set_output_bias(g: Generator, bias: dict[str, float]) -> None:
    """Add a constant to the logit of some words (the output layer has no bias of its own), so a
    test can make a word the argmax at a chosen step, or impossible to sample."""
    head = nn.Linear(g.model.config.n_embd, len(g.vocab), bias=True)
    head.weight = g.model.lm_head.weight  # the model's own head: every other logit is unchanged
    with torch.no_grad():
        head.bias.zero_()
        for word, b in bias.items():
            head.bias[g.vocab.stoi[word]] = b
    g.model.lm_head = head


@torch.no_grad()
def prefix_rows(g: Generator, words: list[str]) -> torch.Tensor:
    """(H, T, T) with row i scored from words 0..i alone: the attention generation may use."""
    att = torch.zeros(g.source.n_heads, len(words), len(words))
    for i in range(len(words)):
        att[:, i, : i + 1] = g.source.score(words[: i + 1])[:, i]
    return att


def fresh_logits(g: Generator, words: list[str]) -> torch.Tensor:
    """The model's logits for the word after ``words``, from one pass that sees those words only,
    each row scored from its own prefix."""
    x = torch.tensor([[g.vocab.bos_id, *g.vocab.encode(words)]])
    att = with_bos(prefix_rows(g, words))[None] if g.source.n_heads else None
    return g.model(x, att)[0, -1]


def argmax_path(
    g: Generator, prompt: list[str], steps: int, ban: str | None = None
) -> tuple[list[str], list[torch.Tensor]]:
    """Greedy decoding done by hand from fresh passes: never a special word nor ``ban``; </s> ends it
    (kept as the last element); sentence ends are ignored. Also returns each step's logits (specials
    masked, ``ban`` not)."""
    words, chosen, logits_seen = list(prompt), [], []
    for _ in range(steps):
        logits = fresh_logits(g, words).clone()
        logits[[g.vocab.pad_id, g.vocab.unk_id, g.vocab.bos_id]] = -float("inf")
        logits_seen.append(logits)
        pick = logits.clone()
        if ban is not None:
            pick[g.vocab.stoi[ban]] = -float("inf")
        word = g.vocab.itos[int(pick.argmax())]
        chosen.append(word)
        if word == "</s>":
            break
        words.append(word)
    return chosen, logits_seen


def bias_to_win_at_a_later_step(g: Generator, prompt: list[str], word: str, steps: int = 12) -> tuple[int, float]:
    """A bias for ``word`` that makes it the argmax first at some step k >= 1 (not the first word), and k.

    Until ``word`` first wins, the greedy path is the one with ``word`` banned; a bias below its gap to
    the best other word at every earlier step and above the gap at step k makes step k its first win."""
    _, logits = argmax_path(g, prompt, steps, ban=word)
    wid = g.vocab.stoi[word]
    gaps = []
    for lg in logits:
        others = lg.clone()
        others[wid] = -float("inf")
        gaps.append(float(others.max() - lg[wid]))
    for k in range(1, len(gaps)):
        low = min(gaps[:k])
        if gaps[k] < low - 0.02:  # margin: the chosen bias is >= 0.01 from both gaps
            return k, (gaps[k] + low) / 2
    pytest.fail(f"no step after the first where {word!r} gets closer to winning; gaps {gaps}")


# --- causality ---------------------------------------------------------------------------------
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


_PLAIN_ANSWER = fake_server.answer_for  # the fake's own rule, kept before the fixture swaps it


def _whole_sentence_answer(data: dict) -> dict:
    """The fake server's own answer, plus one more way for later words to shape earlier rows: in the
    sentence task, row i's score of the first word is the number of words after i (capped). Its own
    rule (a word seen again later gains) misses a look-ahead that repeats the last word, since a
    word already scores the maximum against itself."""
    out = _PLAIN_ANSWER(data)
    if data["task"] == "sentence":
        after = len(data["words"]) - 1
        for rows in out.values():
            for i, row in enumerate(rows[1:], start=1):
                row[0] = min(int(data.get("score_max", 9)), after - i)
    return out


@pytest.fixture
def sentence_mode(fake_openai, monkeypatch, tmp_path):
    """A generator whose source is an OpenAI-compatible ``sentence``-mode source on the fake server,
    so a row may depend on words after it (prefix_causal is False), with no cache to hide anything."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMCOMP_OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env from the developer's checkout
    monkeypatch.setattr(fake_server, "answer_for", _whole_sentence_answer)
    src = OpenAISource(
        base_url=fake_openai.url, model="fake-model", api_key="dummy", mode="sentence", n_heads=2, timeout=5.0
    )
    g = make_generator(src)
    set_output_bias(g, {"</s>": NEVER})  # exactly max_words words, so every step is checked
    try:
        yield g
    finally:
        src.close()


def test_generation_with_a_whole_sentence_source_never_looks_ahead(sentence_mode):
    """Each generated word's row is the one scored from the words up to it, and the logits behind each
    choice are a fresh pass on the prefix alone, even with a source whose rows see later words."""
    g = sentence_mode
    assert g.source.prefix_causal is False
    calls: list[torch.Tensor] = []
    real = g.next_logits

    def recording(words, known=None):  # a spy around the real method: records what generation used
        logits, att = real(words, known)
        calls.append(logits.clone())
        return logits, att

    g.next_logits = recording
    prompt = ["the", "cat", "sat"]
    out = g.generate(prompt, GenerateConfig(seed=5, max_words=6, stop_at_sentence_end=False))
    words, p = out.all_words, len(prompt)
    assert out.prompt_words == prompt and len(out.words) == 6 and out.stopped_by == "length"
    # the source really is shaped by later words here, or this test could not see a look-ahead
    for i in range(1, len(words) - 1):
        seen_later = g.source.score(words[: i + 2])[:, i, : i + 1]
        assert not torch.allclose(seen_later, g.source.score(words[: i + 1])[:, i]), i
    # every row, prompt words included, is the one scored from the words up to it alone
    for i in range(len(words)):
        assert torch.allclose(out.attention[:, i, : i + 1], g.source.score(words[: i + 1])[:, i], atol=1e-6), i
    assert torch.triu(out.attention, diagonal=1).abs().max() == 0
    # one model pass per word, each on the prefix before it only
    assert len(calls) == len(out.words)
    for s, logits in enumerate(calls):
        assert torch.allclose(logits, fresh_logits(g, words[: p + s]), atol=1e-5), f"step {s}"


# --- sampling ----------------------------------------------------------------------------------
def test_seeded_generation_is_reproducible_and_attention_has_a_row_per_word(generator):
    set_output_bias(generator, {"</s>": NEVER})  # </s> cannot be drawn, so the length is exact
    cfg = GenerateConfig(seed=3, max_words=8, stop_at_sentence_end=False)
    a = generator.generate("the cat", cfg)
    b = generator.generate("the cat", cfg)
    assert a.words == b.words and a.stopped_by == b.stopped_by == "length"
    assert len(a.words) == 8
    t = len(a.all_words)
    assert a.attention.shape == (generator.source.n_heads, t, t)
    if generator.source.n_heads:
        assert torch.allclose(a.attention, generator.source.score(a.all_words), atol=1e-6)


def test_different_seeds_sample_different_words(generator):
    """Sampling samples: over 8 seeds an untrained model (near-flat logits) cannot give one sequence
    unless the seed is ignored or the choice is greedy."""
    cfg = {"max_words": 8, "stop_at_sentence_end": False}
    outs = {
        tuple(generator.generate("the cat", GenerateConfig(seed=s, temperature=1.0, **cfg)).words) for s in range(8)
    }
    assert len(outs) > 1
    greedy = tuple(generator.generate("the cat", GenerateConfig(temperature=0, **cfg)).words)
    assert outs != {greedy}


# --- greedy decoding and stopping -------------------------------------------------------------
def test_greedy_takes_the_argmax_every_step_and_needs_no_seed(generator):
    g = generator
    cfg = GenerateConfig(temperature=0, max_words=12, stop_at_sentence_end=False)
    out = g.generate("the", cfg)
    path, _ = argmax_path(g, ["the"], 12)
    if path[-1] == "</s>":
        assert out.words == path[:-1] and out.stopped_by == "end of sentence"
    else:
        assert out.words == path and out.stopped_by == "length"
    torch.manual_seed(1234)  # a different global RNG state changes nothing
    again = g.generate("the", cfg)
    assert again.words == out.words and again.stopped_by == out.stopped_by
    with pytest.raises(GenerationError, match="temperature"):
        g.generate("the", GenerateConfig(temperature=-1))


def test_stop_at_sentence_end_stops_right_after_the_first_sentence_end(generator):
    """'.' is made the argmax at a later step k: generation ends exactly there when asked, and goes
    on past it when not."""
    g = generator
    set_output_bias(g, {"</s>": NEVER})  # only '.' can end the text
    k, b = bias_to_win_at_a_later_step(g, ["the"], ".")
    set_output_bias(g, {"</s>": NEVER, ".": b})
    path, _ = argmax_path(g, ["the"], k + 3)
    assert path[k] == "." and not SENTENCE_END & set(path[:k])  # the situation is as built
    out = g.generate("the", GenerateConfig(temperature=0, max_words=k + 3))
    assert out.words == path[: k + 1] and out.stopped_by == "end of sentence"
    on = g.generate("the", GenerateConfig(temperature=0, max_words=k + 3, stop_at_sentence_end=False))
    assert on.words == path and on.stopped_by == "length"


def test_end_of_sentence_token_ends_generation_and_is_not_a_word(generator):
    """</s> chosen at step k ends the text there, even with stop_at_sentence_end off; it is never
    shown as a word, and the attention has exactly one row per shown word."""
    g = generator
    k, b = bias_to_win_at_a_later_step(g, ["the", "cat"], "</s>")
    set_output_bias(g, {"</s>": b})
    path, _ = argmax_path(g, ["the", "cat"], k + 2)
    assert len(path) == k + 1 and path[-1] == "</s>"
    for stop in (True, False):
        out = g.generate("the cat", GenerateConfig(temperature=0, max_words=20, stop_at_sentence_end=stop))
        assert out.words == path[:k] and out.stopped_by == "end of sentence"
        assert "</s>" not in out.all_words
        t = len(out.all_words)
        assert out.attention.shape == (g.source.n_heads, t, t)
        if g.source.n_heads:  # the last word's row is filled, not left empty
            assert torch.allclose(out.attention, g.source.score(out.all_words), atol=1e-6)


def test_unknown_prompt_words_are_reported_and_special_words_never_generated(generator):
    g = generator
    # the special ids made the most likely by far: greedy and sampling must still skip them
    set_output_bias(g, {"<unk>": 50.0, "<pad>": 50.0, "<s>": 50.0, "</s>": NEVER})
    for cfg in (GenerateConfig(temperature=0), GenerateConfig(seed=0)):
        cfg.max_words, cfg.stop_at_sentence_end = 6, False
        out = g.generate("the purple cat", cfg)
        assert out.unknown == ["purple"] and out.prompt_words == ["the", "purple", "cat"]
        assert len(out.words) == 6 and out.stopped_by == "length"
        assert all(w in g.vocab.stoi and w not in ("<unk>", "<pad>", "<s>", "</s>") for w in out.words)
    with pytest.raises(GenerationError, match="none of the prompt words"):
        g.generate("purple elephants", GenerateConfig(seed=0))


def test_progress_is_reported_before_each_word(generator):
    seen = []
    out = generator.generate(
        "the cat", GenerateConfig(max_words=6, seed=3, stop_at_sentence_end=False), progress=lambda *a: seen.append(a)
    )
    assert seen[: len(out.words)] == [(k, 6) for k in range(len(out.words))]
    assert len(seen) in (len(out.words), len(out.words) + 1)  # one more if it stopped at </s>
