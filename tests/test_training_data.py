"""Prepared training data: one scoring pass shared by several trainers, refused where it does not fit."""

from __future__ import annotations

import pytest

from llmcomp.attention import AttentionError, make_source
from llmcomp.attention.baselines import UniformSource
from llmcomp.model import GPTConfig
from llmcomp.settings import EXAMPLE_CORPUS
from llmcomp.text import Corpus, CorpusConfig, load_corpus
from llmcomp.training import TrainConfig, Trainer
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
