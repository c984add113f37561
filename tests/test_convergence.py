"""Runs to convergence: early stopping stops, the best checkpoint is the lowest validation loss, resume keeps
the best, and ``compare --converge`` reports the fixed-budget loss, the converged loss and the AUC as read
from each run's own curve."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from llmcomp.attention import make_source
from llmcomp.experiments.compare import CompareConfig, compare
from llmcomp.model import GPTConfig
from llmcomp.settings import EXAMPLE_CORPUS
from llmcomp.text import load_corpus
from llmcomp.text.corpus import Corpus
from llmcomp.training import TrainConfig, Trainer, load_checkpoint
from llmcomp.training.config import TrainConfigError
from llmcomp.training.convergence import EARLY_STOP, EarlyStopping, val_at, val_auc
from llmcomp.training.data import evaluate
from llmcomp.training.run_folder import checkpoint_dir, checkpoint_to_use
from llmcomp.training.run_summary import read_run

SMALL = GPTConfig(n_layer=1, n_embd=32)
# a fast learning rate on 120 sentences: the validation loss bottoms out within ~30 steps, then rises
OVERFIT = TrainConfig(steps=400, batch_size=16, lr=1e-2, eval_every=10, patience=2, threads=1)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    full = load_corpus(EXAMPLE_CORPUS)
    return Corpus(full.sentences[:120], name="example-120", config=full.config)


def vals(metrics: list[dict]) -> list[tuple[int, float]]:
    return [(m["step"], m["val_loss"]) for m in metrics if "val_loss" in m]


@pytest.fixture(scope="module")
def overfit_run(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("overfit")
    trainer = Trainer(corpus, make_source("uniform"), SMALL, OVERFIT, run_dir=run_dir)
    return trainer, trainer.run(), run_dir


def test_early_stopping_stops_when_validation_stops_improving(overfit_run):
    trainer, result, run_dir = overfit_run
    curve = vals(result.metrics)
    best_step, best = min(curve, key=lambda sv: sv[1])
    assert result.stop_reason == EARLY_STOP and not result.stopped
    assert result.step < OVERFIT.steps  # it stopped well before the cap
    # it stopped at the patience-th validation after the best, no sooner, no later
    after = [v for s, v in curve if s > best_step]
    assert len(after) == OVERFIT.patience and all(v >= best for v in after)
    assert result.step == curve[-1][0] == best_step + OVERFIT.patience * OVERFIT.eval_every
    assert (result.best_val_loss, result.best_step) == (best, best_step)
    assert result.metrics[-1]["stop_reason"] == EARLY_STOP
    assert result.metrics[-1]["best_val_loss"] == best and result.metrics[-1]["best_step"] == best_step
    summary = read_run(run_dir)
    assert summary is not None and summary.stop_reason == EARLY_STOP and summary.status == "finished"
    assert (summary.best_val_loss, summary.best_step) == (best, best_step)


def test_early_stopping_changes_nothing_before_it_stops(corpus, overfit_run):
    """The same run without patience draws the same batches: its curve matches up to the early stop."""
    _, result, _ = overfit_run
    cfg = TrainConfig(**{**OVERFIT.__dict__, "patience": 0})
    full = Trainer(corpus, make_source("uniform"), SMALL, cfg).run(stop_at=result.step)
    assert full.stop_reason != EARLY_STOP and full.step == result.step
    assert [s for s, _ in vals(full.metrics)] == [s for s, _ in vals(result.metrics)]
    assert [v for _, v in vals(full.metrics)] == pytest.approx([v for _, v in vals(result.metrics)])


def test_best_checkpoint_holds_the_lowest_validation_loss(overfit_run):
    trainer, result, run_dir = overfit_run
    best_dir = checkpoint_dir(run_dir, best=True)
    assert result.best_checkpoint == best_dir and checkpoint_to_use(run_dir) == best_dir
    assert checkpoint_to_use(run_dir, best=False) == checkpoint_dir(run_dir)
    best_ck, last_ck = load_checkpoint(best_dir), load_checkpoint(checkpoint_dir(run_dir))
    assert best_ck.step == result.best_step and last_ck.step == result.step
    pad, examples = trainer.vocab.pad_id, trainer.val_examples
    best_loss = evaluate(best_ck.model, examples, pad, 64)["loss"]
    last_loss = evaluate(last_ck.model, examples, pad, 64)["loss"]
    lowest = min(v for _, v in vals(result.metrics))
    assert best_loss == pytest.approx(lowest, abs=1e-5) and best_loss == pytest.approx(result.best_val_loss, abs=1e-5)
    assert last_loss == pytest.approx(result.final_val_loss, abs=1e-5) and last_loss > best_loss + 0.01
    assert not (best_dir / "optimizer.safetensors").exists()  # runs resume from the last, never the best


def test_resume_keeps_the_best_so_far(corpus, overfit_run, tmp_path):
    """Stopped after its best and resumed, a run stops where the unbroken one did, with the same best."""
    _, unbroken, _ = overfit_run
    assert unbroken.best_step is not None
    cut = unbroken.best_step + OVERFIT.eval_every  # one validation past the best
    first = Trainer(corpus, make_source("uniform"), SMALL, OVERFIT, run_dir=tmp_path).run(stop_at=cut)
    assert first.stopped and first.step == cut
    resumed = Trainer(corpus, make_source("uniform"), SMALL, OVERFIT, run_dir=tmp_path,
                      resume_from=checkpoint_dir(tmp_path))  # fmt: skip
    assert (resumed.best.best_val_loss, resumed.best.best_step) == (unbroken.best_val_loss, unbroken.best_step)
    result = resumed.run()
    assert result.stop_reason == EARLY_STOP and result.step == unbroken.step
    assert (result.best_val_loss, result.best_step) == pytest.approx((unbroken.best_val_loss, unbroken.best_step))
    assert load_checkpoint(checkpoint_dir(tmp_path, best=True)).step == unbroken.best_step


def test_early_stopping_counts_only_improvements_beyond_min_delta():
    tracker = EarlyStopping(patience=2, min_delta=0.1)
    assert tracker.update(10, 3.0) and not tracker.update(20, 2.95)  # 0.05 better: not enough
    assert not tracker.exhausted and not tracker.update(30, 2.99) and tracker.exhausted
    assert (tracker.best_val_loss, tracker.best_step) == (3.0, 10)
    assert not EarlyStopping(patience=0).exhausted  # 0: never stops
    metrics = [
        {"step": 10, "val_loss": 3.0},
        {"step": 15},
        {"step": 20, "val_loss": 2.5},
        {"step": 30, "val_loss": 2.6},
    ]
    again = EarlyStopping.from_metrics(metrics, patience=1)
    assert (again.best_val_loss, again.best_step, again.bad, again.exhausted) == (2.5, 20, 1, True)


@pytest.mark.parametrize("bad", [{"patience": -1}, {"patience": 1.5}, {"min_delta": -0.1}, {"min_delta": math.nan}])
def test_convergence_settings_are_validated(bad):
    with pytest.raises(TrainConfigError):
        TrainConfig(**bad)


def test_compare_converge_reports_budget_loss_converged_loss_and_auc(corpus, tmp_path):
    budget = 30
    config = CompareConfig(
        sources=["uniform", "previous"], seeds=[0], steps=budget, converge=True, max_steps=400, patience=2,
        model=SMALL, train=TrainConfig(batch_size=16, lr=1e-2, eval_every=10, threads=1), out=tmp_path / "cmp",
    )  # fmt: skip
    result = compare(corpus, config)
    assert not result.failures and result.budget == budget
    rows = {r["source"]: r for r in csv.DictReader((tmp_path / "cmp" / "runs.csv").open())}
    for label in ("uniform", "previous"):
        run_dir = Path(rows[label]["path"])
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        curve = [(m["step"], m["val_loss"]) for m in map(json.loads, lines) if "val_loss" in m]
        up_to_budget = [v for s, v in curve if s <= budget]
        best = min(v for _, v in curve)
        row = rows[label]
        assert row["stop_reason"] == EARLY_STOP and int(row["steps"]) < config.max_steps
        assert float(row["budget_val_loss"]) == pytest.approx(dict(curve)[budget])
        assert float(row["val_auc"]) == pytest.approx(sum(up_to_budget) / len(up_to_budget))
        assert float(row["best_val_loss"]) == pytest.approx(best)
        assert int(row["best_step"]) == min(curve, key=lambda sv: sv[1])[0]
        assert len(curve) > len(up_to_budget)  # trained past the budget: the AUC is not over the whole curve
    table = result.table.set_index("source")
    assert table.loc["uniform", "best_val_loss_mean"] == pytest.approx(float(rows["uniform"]["best_val_loss"]))
    assert table.loc["uniform", "early_stops"] == 1
    md = (tmp_path / "cmp" / "table.md").read_text()
    assert f"val loss at step {budget}" in md and "best val loss" in md and f"val AUC to step {budget}" in md
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["converge"] is True


def test_val_at_and_auc_read_the_curve_up_to_the_budget():
    metrics = [{"step": 5}, {"step": 10, "val_loss": 4.0}, {"step": 20, "val_loss": 3.0}, {"step": 30, "val_loss": 2.0}]
    assert val_at(metrics, 25) == 3.0 and val_at(metrics, 5) is None and val_at(metrics, 30) == 2.0
    assert val_auc(metrics, 20) == pytest.approx(3.5) and val_auc(metrics) == pytest.approx(3.0)
    assert val_auc(metrics, 29) == pytest.approx(3.5) and val_auc(metrics, 10) == 4.0 and val_auc([]) is None


def test_cli_reports_best_and_generate_uses_the_best_checkpoint(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    run = tmp_path / "run"

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "llmcomp", *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=300)

    r = cli("train", "--corpus", "data/example.txt", "--attention", "uniform", "--steps", "300", "--eval-every", "10",
            "--patience", "2", "--lr", "0.01", "--n-embd", "32", "--batch-size", "16", "--run-dir", str(run),
            "--no-cache")  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = read_run(run)
    assert summary is not None and summary.stop_reason == EARLY_STOP and summary.steps < 300
    assert f"best val loss {summary.best_val_loss:.4f} at step {summary.best_step}; ended: early stop" in r.stdout
    assert f"best checkpoint: {checkpoint_dir(run, best=True)}" in r.stdout
    best = cli("generate", "--checkpoint", str(run), "--prompt", "the", "--seed", "1")
    last = cli("generate", "--checkpoint", str(run), "--prompt", "the", "--seed", "1", "--last")
    assert best.returncode == last.returncode == 0, best.stderr + last.stderr
    assert f"checkpoint: {checkpoint_dir(run, best=True)}" in best.stderr
    assert f"checkpoint: {checkpoint_dir(run)}\n" in last.stderr
