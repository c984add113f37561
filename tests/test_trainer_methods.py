"""The Trainer's data methods: prepare() scores for it, use() refuses what does not fit, batch() is seeded, and
validate() measures exactly the held-out sentences, token by token.

Each loss here is recomputed independently: one sentence at a time, no padding, no batching, straight from the
corpus's held-out sentences. A validation loss that included padding, weighted batches instead of tokens, or
read one training sentence would differ from it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from llmcomp.attention import make_source
from llmcomp.attention.baselines import UniformSource
from llmcomp.model import GPTConfig
from llmcomp.settings import EXAMPLE_CORPUS
from llmcomp.text import Corpus, load_corpus
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.batching import encode_example
from llmcomp.training.data import evaluate
from llmcomp.training.trainer import TrainingError

MODEL = GPTConfig(n_layer=1, n_embd=32)


def first_and_last(words: list[str]) -> list[int]:
    """Measure the first word's next word and the end of the sentence (the last word predicts </s>)."""
    return [0, len(words) - 1]


@pytest.fixture(scope="module")
def small() -> Corpus:
    full = load_corpus(EXAMPLE_CORPUS)
    return Corpus(full.sentences[:60], name="example-60", config=full.config)


def trainer_for(corpus: Corpus, source=None, focus=None, **cfg) -> Trainer:
    config = TrainConfig(**{"steps": 4, "batch_size": 4, "seed": 3, **cfg})
    return Trainer(corpus, source or make_source("uniform"), MODEL, config, focus=focus)


def reference_losses(trainer: Trainer, sentences: list[list[str]], focus=None) -> tuple[float, float | None]:
    """Mean cross-entropy over every predicted token of ``sentences`` (and over the focus positions), one
    unpadded sentence at a time, with the trainer's source scoring each sentence afresh."""
    vocab, model = trainer.vocab, trainer.model
    was_training = model.training
    model.eval()
    tokens, focus_losses = [], []
    with torch.no_grad():
        for words in sentences:
            x = torch.tensor([[vocab.bos_id, *vocab.encode(words)]])
            y = torch.tensor([*vocab.encode(words), vocab.eos_id])
            att = torch.zeros(1, 1, len(words) + 1, len(words) + 1)
            att[0, :, 0, 0] = 1.0
            att[0, :, 1:, 1:] = trainer.source.score(words)
            losses = F.cross_entropy(model(x, att)[0], y, reduction="none")
            tokens += losses.tolist()
            focus_losses += [float(losses[i + 1]) for i in (focus(words) if focus else [])]
    model.train(was_training)
    return sum(tokens) / len(tokens), (sum(focus_losses) / len(focus_losses) if focus_losses else None)


def test_validation_is_the_token_weighted_loss_of_exactly_the_held_out_sentences(small):
    trainer = trainer_for(small, focus=first_and_last, batch_size=2)  # validates in batches of 4: padding
    trainer.prepare()
    loss, focus_loss = reference_losses(trainer, small.val, first_and_last)
    trainer.model.train()
    val = trainer.validate()
    # to five digits: a loss that read a training sentence, a padded position or weighted batches is another
    assert val["loss"] == pytest.approx(loss, rel=1e-5)
    assert val["focus_loss"] == pytest.approx(focus_loss, rel=1e-5)
    assert trainer.model.training  # validation hands the model back in training mode (dropout on)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_evaluate_weights_every_token_alike_whatever_the_batching(small, batch_size):
    """Sentences of 6 to 13 words: a mean of per-batch or per-sentence means would weight short ones more."""
    trainer = trainer_for(small, focus=first_and_last)
    trainer.prepare()
    loss, focus_loss = reference_losses(trainer, small.val, first_and_last)
    out = evaluate(trainer.model, trainer.val_examples, trainer.vocab.pad_id, batch_size)
    assert out["loss"] == pytest.approx(loss, rel=1e-5) and out["focus_loss"] == pytest.approx(focus_loss, rel=1e-5)
    assert "focus_loss" not in evaluate(trainer.model, trainer_for(small).prepare().val_examples, 0, batch_size)


def test_use_refuses_another_corpus_source_or_focus_in_one_plain_line(small):
    prepared = trainer_for(small).prepare()
    others = [
        trainer_for(Corpus(small.sentences[:59], name=small.name, config=small.config)),
        trainer_for(small, source=make_source("previous")),
        trainer_for(small, focus=first_and_last),
    ]
    for other in others:
        with pytest.raises(TrainingError) as refused:
            other.use(prepared)
        assert str(refused.value) == "prepared examples come from another corpus, split, source or focus; prepare anew"
        assert other.prepared is None  # nothing of the refused examples is kept
    focused = trainer_for(small, focus=first_and_last)
    with pytest.raises(TrainingError, match="another corpus"):
        trainer_for(small).use(focused.prepare())  # focus given where none was asked for


def test_use_refuses_examples_too_few_to_train_and_says_why(small):
    trainer = trainer_for(small)
    prepared = trainer.prepare()
    no_held_out = dataclasses.replace(prepared, val_examples=[])
    with pytest.raises(TrainingError) as refused:
        trainer.use(no_held_out)
    assert str(refused.value) == (
        "attention could not be obtained for enough sentences to train (0 failed; first: no sentences); "
        "choose a fallback baseline or fix the source"
    )
    assert trainer.prepared is no_held_out  # kept: its stats and failures say why
    reasons = dataclasses.replace(no_held_out, failures={4: "the server said no", 9: "timed out"})
    with pytest.raises(TrainingError, match=r"\(2 failed; first: the server said no\)"):
        trainer.use(reasons)


class ThreadsAndCalls(UniformSource):
    """Uniform attention that records the torch thread count it is scored under."""

    def matrix(self, words):
        self.threads = torch.get_num_threads()
        return super().matrix(words)


def test_prepare_scores_on_the_configured_threads_and_reports_progress(small):
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        source = ThreadsAndCalls()
        trainer = trainer_for(small, source=source, threads=2)
        seen: list[int] = []
        prepared = trainer.prepare(progress=lambda stats: seen.append(stats.scored))
        assert source.threads == 2 and torch.get_num_threads() == 3
        assert seen and seen[-1] == len(small.sentences)
        assert trainer.prepared is prepared and prepared.usable
    finally:
        torch.set_num_threads(before)


def test_the_batch_of_a_step_depends_on_the_seed_and_the_step_alone(small):
    prepared = trainer_for(small).prepare()

    def batch(seed: int, step: int) -> list[list[int]]:
        trainer = trainer_for(small, seed=seed)
        trainer.use(prepared)
        return trainer.batch(step).x.tolist()

    assert batch(3, 5) == batch(3, 5)  # another trainer, same seed and step: the same sentences
    draws = [batch(seed, step) for seed in (3, 4) for step in range(4)]
    assert all(len(b) == 4 for b in draws)
    assert len({str(b) for b in draws}) == len(draws)  # every (seed, step) its own batch


def decided_examples(trainer: Trainer, sentences: list[list[str]]) -> list:
    """Each sentence's first word decided by itself, its last word's successor by its second word, the middle
    word measured with no known deciding word; every third example built without targets at all."""
    out = []
    for k, words in enumerate(sentences):
        last, middle = len(words) - 1, len(words) // 2
        deciding = {0: 0, last: 1, middle: None}
        ex = encode_example(words, trainer.source.score(words), trainer.vocab, sorted(deciding), deciding)
        out.append(dataclasses.replace(ex, target=None) if k % 3 == 2 else ex)
    return out


def test_evaluate_measures_accuracy_and_the_weight_on_the_deciding_word_at_the_decided_positions(small):
    trainer = trainer_for(small, source=make_source("gaussian"), steps=40, lr=1e-2)  # two supplied heads
    trainer.run()  # enough to predict some decided words (</s> after ".") and miss others
    examples = decided_examples(trainer, small.sentences[:9])
    model = trainer.model.eval()
    right = decided = 0
    masses = []
    with torch.no_grad():
        for ex in examples:
            logits = model(ex.x[None], ex.att[None])[0]
            for p in ex.focus.nonzero().flatten().tolist():
                decided += 1
                right += int(logits[p].argmax() == ex.y[p])
                if ex.target is not None and ex.target[p] >= 0:
                    masses.append(float(ex.att[:, p, ex.target[p]].mean()))  # averaged over the heads
    assert 0 < right < decided
    for batch_size in (1, 4, 64):
        out = evaluate(model, examples, trainer.vocab.pad_id, batch_size)
        assert out["focus_acc"] == pytest.approx(right / decided)
        assert out["target_mass"] == pytest.approx(sum(masses) / len(masses), rel=1e-5)
        assert len(masses) == 2 * 6 and 0 < out["target_mass"] < 1
    assert "target_mass" not in evaluate(model, [dataclasses.replace(e, target=None) for e in examples], 0)


def test_a_model_without_supplied_heads_reports_no_target_mass(small):
    trainer = trainer_for(small, source=make_source("learned"))
    examples = decided_examples(trainer, small.sentences[:4])
    out = evaluate(trainer.model, examples, trainer.vocab.pad_id)
    assert "focus_acc" in out and "target_mass" not in out


def test_validation_pads_with_the_vocabularys_pad_id_even_when_batches_outnumber_the_vocabulary():
    # 14 distinct words: twice the batch size (64) is far past the last token id, so padding with anything
    # but the pad id would index outside the embedding
    words = ["the", "cat", "dog", "saw", "a", "big", "red", "small", "bird", "ran", "up", "down", "fast", "slow"]
    sentences = [words[: 3 + i % 9] for i in range(40)]  # mixed lengths: every batch is padded
    trainer = trainer_for(Corpus(sentences, name="tiny"), batch_size=32)
    trainer.prepare()
    assert len(trainer.vocab) < 2 * 32 and len({len(e.x) for e in trainer.val_examples}) > 1
    expected, _ = reference_losses(trainer, [sentences[i] for i in trainer.corpus.val_idx])
    assert trainer.validate()["loss"] == pytest.approx(expected, abs=1e-5)
    trainer.prepared = dataclasses.replace(trainer.prepared, val_seen_examples=trainer.val_examples)  # the seen path
    assert trainer.validate()["seen_loss"] == pytest.approx(expected, abs=1e-5)
