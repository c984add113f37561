"""Prepared training data: one scoring pass shared by several trainers, refused where it does not fit."""

from __future__ import annotations

import json

import pytest
import torch

from llmcomp.attention import AttentionError, make_source
from llmcomp.attention.base import AttentionSource, PerSentenceSource
from llmcomp.attention.baselines import UniformSource
from llmcomp.model import GPTConfig
from llmcomp.settings import EXAMPLE_CORPUS
from llmcomp.text import Corpus, CorpusConfig, load_corpus
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.batching import Batch
from llmcomp.training.data import PreparedData, data_key, prepare_data
from llmcomp.training.trainer import TrainingError

MODEL = GPTConfig(n_layer=1, n_embd=32)


def cfg(seed: int) -> TrainConfig:
    return TrainConfig(steps=12, batch_size=8, eval_every=6, log_every=3, warmup_steps=2, seed=seed)


@pytest.fixture(scope="module")
def small() -> Corpus:
    full = load_corpus(EXAMPLE_CORPUS)
    return Corpus(full.sentences[:60], name="example-60", config=full.config)


def losses(metrics: list[dict]) -> list[tuple]:
    return [(m["step"], m["train_loss"], m.get("val_loss")) for m in metrics]


def test_a_second_seed_trains_on_the_first_seeds_examples_exactly_as_on_its_own(small):
    source = make_source("uniform")
    first = Trainer(small, source, MODEL, cfg(0))
    prepared = first.prepare()
    shared = Trainer(small, source, MODEL, cfg(1), prepared=prepared)
    assert shared.prepared is prepared and shared.train_examples is prepared.train_examples
    result = shared.run()
    assert shared.prepared is prepared  # run() trained on them: no second scoring pass
    own = Trainer(small, make_source("uniform"), MODEL, cfg(1)).run()
    # the same seed on the same examples: the same batches, dropout and losses, to the last bit
    assert losses(result.metrics) == losses(own.metrics)
    assert result.attention == prepared.stats and prepared.stats.scored == len(small.sentences)


def test_examples_prepared_for_another_corpus_split_source_or_focus_are_refused(small):
    prepared = Trainer(small, make_source("uniform"), MODEL, cfg(0)).prepare()
    fewer = Corpus(small.sentences[:50], name=small.name, config=small.config)  # other sentences, same name
    resplit = Corpus(small.sentences, name=small.name, config=CorpusConfig(val_fraction=0.3))  # other held-out set
    for corpus, source, focus in [
        (fewer, make_source("uniform"), None),
        (resplit, make_source("uniform"), None),
        (small, make_source("gaussian"), None),
        (small, make_source("uniform", n_heads=2), None),
        (small, make_source("uniform"), lambda words: [0]),
    ]:
        with pytest.raises(TrainingError, match="another corpus, split, source or focus"):
            Trainer(corpus, source, MODEL, cfg(1), focus=focus, prepared=prepared)
    # a fresh source of the same kind and options is the same source
    assert Trainer(small, make_source("uniform"), MODEL, cfg(1), prepared=prepared).prepared is prepared


class FailingSource(UniformSource):
    """A uniform source that cannot score any sentence (as a dead endpoint without a fallback)."""

    kind = "uniform"

    def matrix(self, words):
        raise AttentionError(f"no attention for {words[0]!r}")


def test_a_source_that_fails_every_sentence_stops_training_and_keeps_the_reasons(small):
    trainer = Trainer(small, FailingSource(), MODEL, cfg(0))
    with pytest.raises(TrainingError, match=r"60 failed; first: no attention for"):
        trainer.run()
    # the reasons and counts stay readable after the refusal (the app's job record shows them)
    assert len(trainer.failed_sentences) == 60 and trainer.attention_stats.failed == 60
    assert trainer.step == 0 and not trainer.train_examples


# --- the seeded batch draw and its length windows ------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(small) -> PreparedData:
    """54 distinct training sentences of 6 to 13 words under uniform attention."""
    data = prepare_data(small, make_source("uniform"), small.vocab())
    assert len(data.train_examples) == 54 and len({tuple(e.x.tolist()) for e in data.train_examples}) == 54
    return data


_RANKS: dict[int, dict[tuple[int, ...], int]] = {}


def drawn_ranks(data: PreparedData, batch: Batch) -> list[int]:
    """Each row of ``batch`` as its training example's rank by length (0: shortest), checking the row is that
    example unchanged."""
    if id(data) not in _RANKS:
        _RANKS[id(data)] = {tuple(data.train_examples[j].x.tolist()): r for r, j in enumerate(data.by_length)}
    rank_of = _RANKS[id(data)]
    ranks = []
    for row in range(len(batch.x)):
        n = int((batch.y[row] != -100).sum())
        rank = rank_of[tuple(batch.x[row, :n].tolist())]
        example = data.train_examples[data.by_length[rank]]
        assert torch.equal(batch.y[row, :n], example.y) and torch.equal(batch.att[row, :, :n, :n], example.att)
        ranks.append(rank)
    return ranks


@pytest.mark.parametrize("length_window", [1, 2])
def test_a_batch_is_drawn_by_its_seed_alone(prepared, small, length_window):
    pad = small.vocab().pad_id
    for seed in range(10):
        torch.manual_seed(0)
        first = prepared.batch(seed, 8, length_window, pad)
        torch.manual_seed(1)  # the global generator (dropout's) has no say in which sentences are drawn
        torch.rand(5)
        again = prepared.batch(seed, 8, length_window, pad)
        assert len(first.x) == 8
        assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y) and torch.equal(first.att, again.att)
    others = {tuple(drawn_ranks(prepared, prepared.batch(seed, 8, length_window, pad))) for seed in range(20)}
    assert len(others) == 20  # another seed, another batch


def test_without_a_window_every_sentence_can_be_drawn_with_any_other(prepared, small):
    pad, n = small.vocab().pad_id, len(prepared.train_examples)
    ranks = [drawn_ranks(prepared, prepared.batch(seed, 4, 1, pad)) for seed in range(300)]
    assert {r for batch in ranks for r in batch} == set(range(n))  # the shortest and the longest too
    assert max(max(b) - min(b) for b in ranks) > n // 2  # one batch mixes short and long sentences


@pytest.mark.parametrize(("batch_size", "length_window"), [(4, 2), (3, 5), (8, 10)])
def test_a_length_window_draws_neighbours_in_length_and_still_reaches_every_sentence(
    prepared, small, batch_size, length_window
):
    """Windows of ``batch_size * length_window`` sentences in length order (the whole set when that is more),
    clamped at both ends, so the shortest and the longest sentences are drawn too."""
    pad, n = small.vocab().pad_id, len(prepared.train_examples)
    window = min(n, batch_size * length_window)
    lengths = sorted(len(e.x) for e in prepared.train_examples)
    seen: set[int] = set()
    for seed in range(2000):  # the two ends are rarely drawn (clamped windows): enough draws to reach them
        batch = prepared.batch(seed, batch_size, length_window, pad)
        ranks = drawn_ranks(prepared, batch)
        assert len(ranks) == batch_size
        assert max(ranks) - min(ranks) < window, f"seed {seed}: ranks {ranks} span more than a window"
        assert batch.x.shape[1] <= lengths[min(min(ranks) + window, n) - 1]  # padded at most to a window's longest
        seen.update(ranks)
        if len(seen) == n:
            break
    assert seen == set(range(n))


# --- preparing the examples ------------------------------------------------------------------------------------


class SomeFailSource(UniformSource):
    """Uniform attention, except for the sentences in ``fail``, which it cannot score (a flaky endpoint)."""

    def __init__(self, fail: set[tuple[str, ...]], fallback=None):
        super().__init__(fallback=fallback)
        self.fail = fail

    def matrix(self, words):
        if tuple(words) in self.fail:
            raise AttentionError(f"cannot score {' '.join(words)!r}")
        return super().matrix(words)


def sentences_of(examples: list) -> list[list[int]]:
    return [e.x.tolist() for e in examples]


def encoded(small: Corpus, indices) -> list[list[int]]:
    vocab = small.vocab()
    return [[vocab.bos_id, *vocab.encode(small.sentences[i])] for i in indices]


def test_sentences_without_attention_are_left_out_and_their_reasons_kept(small):
    failing = [small.train_idx[0], small.train_idx[5], small.train_idx[-1], small.val_idx[1]]
    source = SomeFailSource({tuple(small.sentences[i]) for i in failing})
    data = prepare_data(small, source, small.vocab())
    # every other sentence stays, in split order, each under its own attention
    assert sentences_of(data.train_examples) == encoded(small, [i for i in small.train_idx if i not in failing])
    assert sentences_of(data.val_examples) == encoded(small, [i for i in small.val_idx if i not in failing])
    assert sorted(data.failures) == sorted(failing)
    assert all(data.failures[i] == f"cannot score {' '.join(small.sentences[i])!r}" for i in failing)
    assert data.stats.failed == len(failing) and data.stats.scored == len(small.sentences) - len(failing)
    assert data.usable


def test_a_fallback_fills_the_failed_sentences_and_leaves_no_failure_behind(small):
    failing = [small.train_idx[2], small.val_idx[0]]
    source = SomeFailSource({tuple(small.sentences[i]) for i in failing}, fallback=make_source("previous"))
    data = prepare_data(small, source, small.vocab())
    assert sentences_of(data.train_examples) == encoded(small, small.train_idx)
    assert sentences_of(data.val_examples) == encoded(small, small.val_idx)
    assert data.failures == {} and data.stats.fallbacks == 2  # "failures" lists only sentences left out
    filled = data.train_examples[2].att[0, 1:, 1:]  # the fallback's matrix, not the source's
    assert torch.equal(filled, make_source("previous").score(small.sentences[failing[0]])[0])


def test_focus_positions_mark_the_word_before_each_measured_word(small):
    def focus(words: list[str]) -> list[int]:
        return [0, len(words) - 2]

    data = prepare_data(small, make_source("uniform"), small.vocab(), focus=focus)
    assert data.focus is focus  # kept, so a trainer asked for another focus refuses these examples
    for example in [*data.train_examples, *data.val_examples]:
        n_words = len(example.x) - 1  # the model reads <s> + words: word i sits at position i + 1
        assert example.focus.tolist() == [p in (1, n_words - 1) for p in range(n_words + 1)]
    plain = prepare_data(small, make_source("uniform"), small.vocab())
    assert not any(bool(e.focus.any()) for e in [*plain.train_examples, *plain.val_examples])


def test_training_examples_are_indexed_shortest_first(small):
    prepared = prepare_data(small, make_source("uniform"), small.vocab())  # here, not in a shared fixture:
    # mutmut runs only the tests that call prepare_data themselves
    assert sorted(prepared.by_length) == list(range(len(prepared.train_examples)))
    lengths = [len(prepared.train_examples[i].x) for i in prepared.by_length]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


def test_scoring_reports_progress(small):
    seen: list[int] = []
    prepare_data(small, make_source("uniform"), small.vocab(), progress=lambda stats: seen.append(stats.scored))
    assert seen and seen[-1] == len(small.sentences)


class ThreadsSeen(UniformSource):
    """Records the torch thread count it is scored under."""

    def matrix(self, words):
        self.threads = torch.get_num_threads()
        return super().matrix(words)


class HeavyThreadsSeen(AttentionSource):
    """Not a per-sentence source (as the local LLM): it scores a whole batch and picks its own threads."""

    kind = "uniform"

    def _score_batch(self, sentences, stats, progress):
        self.threads = torch.get_num_threads()
        return [make_source("uniform").score(words) for words in sentences]


def test_per_sentence_sources_score_on_the_threads_asked_for_and_heavy_ones_on_their_own(small):
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        per_sentence, heavy = ThreadsSeen(), HeavyThreadsSeen()
        prepare_data(small, per_sentence, small.vocab(), threads=1)
        prepare_data(small, heavy, small.vocab(), threads=1)
        assert per_sentence.threads == 1 and heavy.threads == 3
        assert torch.get_num_threads() == 3  # the caller's setting is back
    finally:
        torch.set_num_threads(before)


def test_prepared_data_is_usable_only_with_examples_in_both_splits(prepared):
    some = prepared.train_examples[:1]
    assert PreparedData(some, some).usable
    assert not PreparedData(some, []).usable and not PreparedData([], some).usable


def test_the_data_key_changes_with_the_corpus_its_split_and_the_source(small):
    uniform = make_source("uniform")
    key = data_key(small, uniform)
    assert key == data_key(Corpus(list(small.sentences), name="renamed", config=small.config), make_source("uniform"))
    assert key != data_key(Corpus(small.sentences[:50], name=small.name, config=small.config), uniform)
    assert key != data_key(Corpus(small.sentences, name=small.name, config=CorpusConfig(val_fraction=0.3)), uniform)
    assert key != data_key(small, make_source("uniform", n_heads=2))
    json.dumps(key)  # plain data: it can be shown and compared anywhere


def test_a_focus_that_names_the_deciding_words_puts_them_in_the_examples(small):
    """A task's ``{i: j}``: word j decides word i+1; the example holds model column j+1 at position i+1."""
    data = prepare_data(small, make_source("uniform"), small.vocab(), focus=lambda words: {1: 0, len(words) - 1: 1})
    for example in [*data.train_examples, *data.val_examples]:
        n_words = len(example.x) - 1
        expected = [-1] * (n_words + 1)
        expected[2], expected[n_words] = 1, 2
        assert example.target is not None and example.target.tolist() == expected
        assert example.focus.tolist() == [p in (2, n_words) for p in range(n_words + 1)]


class Peeking(PerSentenceSource):
    """Rows that may see later words: row i attends to the earlier copy of word i+1 when there is one
    (the leak), else to itself. A one-word sentence starting with ``fails`` has no attention."""

    kind = "uniform"  # a registered kind, so that spec() and the data key work
    prefix_causal = False

    def __init__(self, fails: str):
        super().__init__(n_heads=1)
        self.fails = fails

    def matrix(self, words):
        if words == [self.fails]:
            raise AttentionError(f"cannot score {self.fails!r} alone")
        t = len(words)
        m = torch.eye(t)
        for i in range(t - 1):
            earlier = [j for j in range(i + 1) if words[j] == words[i + 1]]
            if earlier:
                m[i] = 0.0
                m[i, earlier[-1]] = 1.0
        return m[None]


def test_a_leaky_sources_validation_is_its_prefix_rows_and_a_failed_prefix_fails_its_sentence():
    n = 40
    val = Corpus([["x"]] * n).val_idx  # the held-out indices depend on the count alone
    first_val = val[0]
    sentences = [["a", "b", "c", "a", "b"] for _ in range(n)]
    sentences[first_val] = ["zebra", "b", "c", "a", "b"]  # its one-word prefix is the first prefix scored
    corpus = Corpus(sentences)
    assert corpus.val_idx == val
    source = Peeking(fails="zebra")
    trainer = Trainer(corpus, source, MODEL, cfg(0), focus=lambda words: [2])  # position 2 measured
    prepared = trainer.prepare()
    assert prepared.val_scored_by_prefix and prepared.val_seen_examples
    # the sentence whose prefix failed is one failure, under its own index, with the prefix's reason
    assert prepared.failures == {first_val: "prefix of 1 word(s): cannot score 'zebra' alone"}
    assert len(prepared.val_examples) == len(val) - 1 and len(prepared.train_examples) == n - len(val)
    words = sentences[val[1]]  # every held-out sentence but the first is this one
    for e in prepared.val_examples:  # row i from words 0..i alone: no leak to the next word
        for i in range(len(words)):
            assert torch.equal(e.att[0, i + 1, 1 : i + 2], source.matrix(words[: i + 1])[0, i]), i
        assert bool(e.focus[3]) and int(e.focus.sum()) == 1  # the focus survives the prefix rows
    leaky = prepared.val_seen_examples[1].att[0]  # val[1]'s training-time rows
    assert leaky[1 + 2, 1 + 0] == 1.0  # the training-time row 2 ("c") peeks at the next word "a"
    assert prepared.val_examples[0].att[0, 1 + 2, 1 + 0] != 1.0


def test_a_validation_record_names_the_leak_free_loss_and_caps_the_perplexity():
    from llmcomp.training.data import validation_record

    rec = validation_record({"loss": 2.0, "seen_loss": 1.0, "focus_loss": 3.0, "focus_acc": 0.5, "target_mass": 0.25})
    assert rec == {"val_loss": 2.0, "val_ppl": pytest.approx(7.389056), "val_loss_seen": 1.0, "val_focus_loss": 3.0,
                   "val_focus_acc": 0.5, "val_target_mass": 0.25}  # fmt: skip
    assert validation_record({"loss": 80.0}) == {"val_loss": 80.0, "val_ppl": pytest.approx(5.184705528587072e21)}
