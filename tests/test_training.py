"""Training end to end: the CLI, held-out validation, learning, checkpoints, resume, determinism, bad input."""

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmcomp.attention import make_source
from llmcomp.model import GPTConfig
from llmcomp.settings import EXAMPLE_CORPUS
from llmcomp.text import load_corpus, parse_corpus
from llmcomp.training import CheckpointError, TrainConfig, Trainer, load_checkpoint
from llmcomp.training.batching import Example, encode_example
from llmcomp.training.trainer import evaluate

ROOT = Path(__file__).resolve().parent.parent
SMALL = GPTConfig(n_layer=1, n_embd=32)


def cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "llmcomp", *args], capture_output=True, text=True, cwd=ROOT, timeout=300, **kw
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    r = cli(
        "train",
        "--corpus",
        "data/example.txt",
        "--attention",
        "uniform",
        "--steps",
        "120",
        "--eval-every",
        "40",
        "--n-embd",
        "32",
        "--batch-size",
        "16",
        "--run-dir",
        str(run),
        "--no-cache",
    )
    assert r.returncode == 0, r.stderr
    return run, r


def test_cli_train_lowers_validation_loss_and_writes_a_checkpoint(trained):
    run, r = trained
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [m["val_loss"] for m in metrics if "val_loss" in m]
    vocab = len(load_corpus(EXAMPLE_CORPUS).vocab())
    assert len(vals) == 3 and vals[-1] < vals[0] and vals[-1] < math.log(vocab) - 1.5
    # 120 steps of honest next-word prediction on held-out sentences end near 4.5 nats; a model that sees
    # the word it predicts (inputs equal to targets) is down to about 1.9 by then, so under 3 means a leak
    assert vals[-1] > 3.0
    assert {"step", "train_loss", "tokens_per_s", "elapsed"} <= set(metrics[0])
    ck = run / "checkpoint"
    for name in ("model.safetensors", "optimizer.safetensors", "checkpoint.json", "vocab.json", "metrics.jsonl"):
        assert (ck / name).is_file()
    meta = json.loads((ck / "checkpoint.json").read_text())
    assert meta["step"] == 120 and meta["source_spec"]["kind"] == "uniform"
    assert "checkpoint:" in r.stdout
    # The reported loss is the saved model's loss on the corpus's held-out sentences, not on training ones
    # (the two differ by far more than the 1e-4 tolerance after 120 steps).
    saved = load_checkpoint(ck)
    corpus = load_corpus(EXAMPLE_CORPUS)
    assert saved.train_config["split_seed"] == corpus.config.seed
    held_out = examples_for(corpus, corpus.val_idx, "uniform", saved.vocab)
    assert evaluate(saved.model, held_out, saved.vocab.pad_id)["loss"] == pytest.approx(vals[-1], abs=1e-4)


def test_cli_generate_in_a_new_process(trained):
    run, _ = trained
    r = cli("generate", "--checkpoint", str(run / "checkpoint"), "--prompt", "the dog", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("the dog") and len(r.stdout.strip()) > len("the dog")
    again = cli("generate", "--checkpoint", str(run / "checkpoint"), "--prompt", "the dog", "--seed", "1")
    assert again.stdout == r.stdout


def test_cli_interactive_generate(trained):
    run, _ = trained
    r = cli(
        "generate", "--checkpoint", str(run / "checkpoint"), "-i", "--seed", "2", input="the cat\nzzzz\nmy friend\n\n"
    )
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("the cat") and lines[1].startswith("my friend")
    assert "none of the prompt words" in r.stderr


def test_cli_reports_prompt_of_unknown_words(trained):
    run, _ = trained
    r = cli("generate", "--checkpoint", str(run / "checkpoint"), "--prompt", "xylophone quux")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "none of the prompt words" in r.stderr


def examples_for(corpus, indices, source, vocab) -> list[Example]:
    """The corpus's sentences at ``indices`` encoded independently of the Trainer, to check what it measured."""
    matrices = make_source(source).score_many(corpus.sentences).matrices
    return [encode_example(corpus.sentences[i], matrices[i], vocab) for i in indices]


def metrics_without_timing(metrics):
    return [{k: v for k, v in m.items() if k not in ("tokens_per_s", "elapsed")} for m in metrics]


def small_trainer(corpus, run_dir=None, resume=None, steps=40, source="gaussian", batch_size=8):
    cfg = TrainConfig(steps=steps, batch_size=batch_size, eval_every=10, log_every=5, warmup_steps=5)
    return Trainer(corpus, make_source(source), SMALL, cfg, run_dir=run_dir, resume_from=resume)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(EXAMPLE_CORPUS)


def test_resume_ends_where_a_straight_run_ends(corpus, tmp_path):
    straight = small_trainer(corpus).run()
    first = small_trainer(corpus, run_dir=tmp_path / "a").run(stop_at=20)
    assert first.step == 20 and first.stopped
    second = small_trainer(corpus, run_dir=tmp_path / "b", resume=first.checkpoint).run()
    assert second.step == 40
    assert second.final_val_loss == pytest.approx(straight.final_val_loss, abs=1e-4)
    a, b = metrics_without_timing(second.metrics), metrics_without_timing(straight.metrics)
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for ma, mb in zip(a, b, strict=True):
        assert ma == pytest.approx(mb, abs=1e-4)


def test_seeded_runs_are_deterministic(corpus):
    a = small_trainer(corpus, steps=20).run()
    b = small_trainer(corpus, steps=20).run()
    assert metrics_without_timing(a.metrics) == metrics_without_timing(b.metrics)


def test_stop_flag_stops_and_saves(corpus, tmp_path):
    trainer = small_trainer(corpus, run_dir=tmp_path)

    def stop_early(m):
        if m["step"] >= 10:
            trainer.stop()

    result = trainer.run(on_metric=stop_early)
    assert result.stopped and result.step == 10
    assert load_checkpoint(result.checkpoint).step == 10


def test_learned_heads_alone_learn(corpus):
    learned = small_trainer(corpus, steps=60, source="learned", batch_size=16)
    assert learned.model.config.n_external_heads == 0 and learned.model.config.n_learned_heads == 4
    # An untrained model sits at ln(vocab) = 6.55 (so does lr=0 or a skipped optimizer step); 60 steps of
    # 16 sentences reach about 4.97, so learning means at least 1.25 nats below ln(vocab) (5.30).
    final = learned.run().final_val_loss
    assert final < math.log(len(learned.vocab)) - 1.25


def test_mixed_heads_learn_and_train_both_kinds_of_head(corpus):
    cfg = TrainConfig(steps=60, batch_size=16, eval_every=20, log_every=20, warmup_steps=5)
    mixed = Trainer(corpus, make_source("gaussian"), GPTConfig(n_layer=1, n_embd=32, n_learned_heads=2), cfg)
    # the gaussian source supplies two heads; the model adds two learned ones beside them
    assert mixed.model.config.n_external_heads == 2 and mixed.model.config.n_head == 4
    attn = mixed.model.blocks[0].attn
    supplied_before, learned_before = attn.value.weight.detach().clone(), attn.qkv.weight.detach().clone()
    mixed.prepare()
    start = evaluate(mixed.model, mixed.val_examples, mixed.vocab.pad_id)["loss"]
    final = mixed.run().final_val_loss
    # untrained about 6.57 (unchanged with lr=0); 60 steps reach about 4.96, so "learns" means a fall of over 1.25
    assert final < start - 1.25
    # both the supplied head's value projection and the learned heads' q/k/v moved: gradient reaches each kind
    assert (attn.value.weight - supplied_before).abs().max() > 1e-3
    assert (attn.qkv.weight - learned_before).abs().max() > 1e-3


def recording(real: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
    """``real``, with the examples of every call kept in ``calls``."""
    calls: list[list[Example]] = []

    def wrapper(model, examples, *args, **kwargs):
        calls.append(list(examples))
        return real(model, examples, *args, **kwargs)

    wrapper.calls = calls
    return wrapper


@pytest.fixture(scope="module")
def overfit():
    """A small model trained on 36 sentences long enough to fit them far better than the 4 held out,
    with every ``evaluate`` call the Trainer made recorded."""
    lines = EXAMPLE_CORPUS.read_text(encoding="utf-8").splitlines()[:40]
    small = parse_corpus("\n".join(lines))
    cfg = TrainConfig(steps=100, batch_size=16, eval_every=50, log_every=50, warmup_steps=5)
    trainer = Trainer(small, make_source("gaussian"), SMALL, cfg)
    record = recording(evaluate)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("llmcomp.training.trainer.evaluate", record)
        result = trainer.run()
    return small, trainer, result, record.calls


def token_ids(examples: list[Example]) -> list[tuple[list[int], list[int]]]:
    return [(e.x.tolist(), e.y.tolist()) for e in examples]


def test_validation_sees_exactly_the_held_out_sentences(overfit):
    small, trainer, result, calls = overfit
    assert len(small.val_idx) == 4 and not set(small.val_idx) & set(small.train_idx)
    assert len(calls) == 2  # steps 50 and 100
    vocab = trainer.vocab
    # inputs are <s> + words, targets are words + </s>: the model never gets the word it predicts as input
    held_out = [([vocab.bos_id, *vocab.encode(w)], [*vocab.encode(w), vocab.eos_id]) for w in small.val]
    for examples in calls:
        assert token_ids(examples) == held_out
    training = [([vocab.bos_id, *vocab.encode(w)], [*vocab.encode(w), vocab.eos_id]) for w in small.train]
    assert token_ids(trainer.train_examples) == training


def test_trained_model_fits_its_training_split_better_than_the_held_out_one(overfit):
    small, trainer, result, _ = overfit
    model, pad = trainer.model, trainer.vocab.pad_id
    held_out = evaluate(model, examples_for(small, small.val_idx, "gaussian", trainer.vocab), pad)["loss"]
    training = evaluate(model, examples_for(small, small.train_idx, "gaussian", trainer.vocab), pad)["loss"]
    # the reported validation loss is the loss on the held-out sentences ...
    assert result.final_val_loss == pytest.approx(held_out, abs=1e-5)
    # ... which, after 100 steps on 36 sentences, is far above the training loss (about 4.3 against 2.3):
    # measuring validation on training sentences would close this gap (to 0)
    assert held_out - training > 1.0
    # and stays where honest prediction of unseen sentences can be: with inputs equal to targets (a leak)
    # it is about 1.6 here
    assert held_out > 3.0


@pytest.fixture
def checkpoint(corpus, tmp_path):
    return small_trainer(corpus, run_dir=tmp_path / "run", steps=5).run().checkpoint


def test_corrupt_checkpoint_is_a_clear_error_and_is_left_alone(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(checkpoint)
    r = cli("generate", "--checkpoint", str(checkpoint), "--prompt", "the")
    assert r.returncode == 2 and "corrupt or truncated" in r.stderr and r.stderr.count("\n") == 1
    assert weights.read_bytes() == b"\x00garbage" * 100  # nothing was overwritten


def test_truncated_checkpoint(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(checkpoint)


def test_missing_or_damaged_metadata(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "empty")
    (checkpoint / "vocab.json").write_text('{"itos": ["<pad>", "<unk>", "<s>", "</s>", "other"]}')
    with pytest.raises(CheckpointError, match="vocab.json does not match"):
        load_checkpoint(checkpoint)


def test_resume_with_a_different_vocabulary_is_refused(checkpoint):
    other = parse_corpus("\n".join(f"a completely different corpus line {i} ." for i in range(30)))
    with pytest.raises(CheckpointError, match="vocabulary"):
        small_trainer(other, resume=checkpoint)


def test_resume_with_a_different_source_is_refused(corpus, checkpoint):
    with pytest.raises(CheckpointError, match="same source"):
        small_trainer(corpus, resume=checkpoint, source="uniform")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"\x00\x01" * 100, "binary"),
        (b"\xff\xfe bad bytes here." * 30, "not UTF-8"),
        (b"one.\ntwo.\n", "at least"),
    ],
)
def test_cli_bad_corpus_is_one_line(tmp_path, content, message):
    path = tmp_path / "c.txt"
    path.write_bytes(content)
    r = cli("train", "--corpus", str(path), "--steps", "1", "--run-dir", str(tmp_path / "r"))
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1
    assert path.read_bytes() == content
