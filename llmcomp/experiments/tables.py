"""The comparison's tables: one row per run, then per source the mean and spread across seeds.

A table ranks sources only on one corpus: runs whose corpus (content hash and split) differs are
never put in one summary table. ``summary_table`` refuses such a frame with a one-line reason and
``summary_tables`` gives one table per corpus. No torch: the web app's Compare tab reads these.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from llmcomp.experiments.labels import CompareError
from llmcomp.training.convergence import val_at, val_auc
from llmcomp.training.run_summary import RunSummary, read_run, run_folders

RUN_COLUMNS = [
    "run",
    "source",
    "kind",
    "seed",
    "steps",
    "final_val_loss",
    "final_val_ppl",
    "final_val_focus_loss",
    "final_val_focus_acc",  # top-1 accuracy at the task's decided positions
    "final_val_target_mass",  # supplied attention weight on the task's deciding word
    "best_val_loss",  # the converged loss: the lowest validation loss of the run (its checkpoint-best/)
    "best_step",
    "budget_val_loss",  # validation loss at the fixed budget (the last validation at or before it): learning speed
    "val_auc",  # mean validation loss over the validations up to the fixed budget (convergence.val_auc)
    "stop_reason",  # steps, early_stop or stopped (convergence.STOP_REASONS); empty when not recorded
    "final_val_loss_seen",  # under the training-time rows; set only when they may see later words (leaky)
    "tokens_per_s",
    "train_seconds",
    "attention_seconds",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached",
    "failed_sentences",
    "path",
    "corpus",  # the corpus's name, for people
    "corpus_key",  # content hash, split seed and validation share: runs rank together only when it is equal
]


def runs_frame(runs: Iterable[RunSummary], budget: int | None = None) -> pd.DataFrame:
    """One row per run with the columns of ``RUN_COLUMNS`` (what ``runs.csv`` holds). ``budget``: the fixed
    budget in steps that ``budget_val_loss`` and ``val_auc`` read the curve up to; None: each run's own length."""
    rows = []
    for r in runs:
        a = r.attention or {}
        upto = budget if budget is not None else r.total_steps
        rows.append(
            {
                "run": r.name,
                "source": r.label,
                "kind": r.kind,
                "seed": r.seed,
                "steps": r.steps,
                "final_val_loss": r.final_val_loss,
                "final_val_ppl": r.final_val_ppl,
                "final_val_focus_loss": r.final_val_focus_loss,
                "final_val_focus_acc": r.final_val_focus_acc,
                "final_val_target_mass": r.final_val_target_mass,
                "best_val_loss": r.best_val_loss,
                "best_step": r.best_step,
                "budget_val_loss": val_at(r.metrics, upto),
                "val_auc": val_auc(r.metrics, upto),
                "stop_reason": r.stop_reason,
                "final_val_loss_seen": r.final_val_loss_seen,
                "tokens_per_s": r.tokens_per_s,
                "train_seconds": r.train_seconds,
                "attention_seconds": r.attention_seconds,
                "requests": a.get("requests", 0),
                "prompt_tokens": a.get("prompt_tokens", 0),
                "completion_tokens": a.get("completion_tokens", 0),
                "cached": a.get("cached", 0),
                "failed_sentences": a.get("failed", 0),
                "path": str(r.path),
                "corpus": r.corpus.name if r.corpus else None,
                "corpus_key": r.corpus_key,
            }
        )
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def distinct_seeds(seeds: Iterable[object]) -> int:
    """How many different seeds: two runs of seed 0 are one seed repeated, not two. Runs whose seed was
    not recorded count as one seed between them (they cannot be told apart)."""
    known = {int(s) for s in seeds if s is not None and not pd.isna(s)}
    unknown = any(s is None or pd.isna(s) for s in seeds)
    return len(known) + unknown


def _stats(values: list[float]) -> tuple[float, float, float, float]:
    """mean, sample std (NaN for one value), min, max."""
    if not values:
        return (math.nan,) * 4
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), std, min(values), max(values)


TABLE_COLUMNS = [
    "source",
    "seeds",
    "val_loss_mean",
    "val_loss_std",
    "val_loss_min",
    "val_loss_max",
    "delta_vs_reference_mean",  # final val loss minus the reference's (uniform), paired by seed
    "delta_vs_reference_std",
    "val_ppl_mean",
    "val_ppl_std",
    "best_val_loss_mean",  # converged: each run's lowest validation loss (see docs/results.md)
    "best_val_loss_std",
    "best_step_mean",
    "budget_val_loss_mean",  # at the fixed budget: learning speed
    "budget_val_loss_std",
    "val_auc_mean",  # mean validation loss up to the fixed budget
    "val_auc_std",
    "early_stops",  # runs that stopped because patience ran out
    "val_focus_loss_mean",
    "val_focus_loss_std",
    "val_focus_loss_min",
    "val_focus_loss_max",
    "val_focus_acc_mean",
    "val_focus_acc_std",
    "target_mass_mean",
    "target_mass_std",
    "val_loss_seen_mean",  # NaN unless the source's training rows may see later words (marked † in markdown)
    "tokens_per_s_mean",
    "attention_seconds",
    "requests",
    "tokens",
    "cached",
    "failed_sentences",
]


def _paired_delta(runs: pd.DataFrame, label: str, reference: str) -> tuple[float, float]:
    """Mean and sample std over seeds of (this source's final val loss - the reference's), same seed."""
    ref = {s: v for s, v in zip(runs.loc[runs["source"] == reference, "seed"],
                                runs.loc[runs["source"] == reference, "final_val_loss"], strict=True)}  # fmt: skip
    g = runs[runs["source"] == label]
    diffs = [
        float(v) - float(ref[s])
        for s, v in zip(g["seed"], g["final_val_loss"], strict=True)
        if s in ref and not pd.isna(v) and not pd.isna(ref[s])
    ]
    mean, std, _, _ = _stats(diffs)
    return mean, std


def _corpus_keys(runs: pd.DataFrame) -> pd.Series:
    """Each run's corpus key; "" where it is not known (runs recorded before corpora were hashed)."""
    if "corpus_key" not in runs.columns:
        return pd.Series([""] * len(runs), index=runs.index, dtype=object)
    return runs["corpus_key"].map(lambda k: k if isinstance(k, str) else "")


def by_corpus(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A runs frame split by corpus (same sentences and split), in first-seen order; "": corpus unknown."""
    keys = _corpus_keys(runs)
    return {key: runs[keys == key] for key in dict.fromkeys(keys)}


def _corpus_name(group: pd.DataFrame, key: str) -> str:
    names = [n for n in group["corpus"].tolist() if isinstance(n, str)] if "corpus" in group.columns else []
    if not key:
        return f"{names[0]} (no content hash recorded)" if names else "an unrecorded corpus"
    return f"{names[0] if names else 'corpus'} [{key[:8]}]"


def check_one_corpus(runs: pd.DataFrame) -> None:
    """CompareError (one line) when the runs trained on more than one corpus: they cannot be ranked."""
    groups = by_corpus(runs)
    if len(groups) > 1:
        names = ", ".join(_corpus_name(g, k) for k, g in groups.items())
        raise CompareError(
            f"these runs trained on {len(groups)} different corpora or splits ({names}); "
            "a table ranks runs of one corpus only, so summarise each apart (summary_tables)"
        )


def summary_tables(
    runs: pd.DataFrame, order: Sequence[str] | None = None, reference: str = "uniform"
) -> dict[str, pd.DataFrame]:
    """``summary_table`` for each corpus in the runs frame, keyed as ``by_corpus``."""
    return {key: summary_table(group, order, reference) for key, group in by_corpus(runs).items()}


def summary_table(runs: pd.DataFrame, order: Sequence[str] | None = None, reference: str = "uniform") -> pd.DataFrame:
    """One row per source from a runs frame (``runs_frame`` or ``summarize_runs``): mean, sample std,
    min and max across seeds of the final validation loss, perplexity and focus loss (mean and std of
    the focus accuracy and target mass, docs/tasks.md); the difference
    from ``reference`` paired by seed (same initialisation and batches, so it is less noisy than the
    means); mean tokens/s; and the attention cost summed over the runs (a comparison scores each
    source once, so the seeds after the first add nothing).

    Runs of different corpora (content hash or split) are refused with CompareError: a loss on other
    sentences says nothing about a source. ``summary_tables`` gives one table per corpus instead."""
    check_one_corpus(runs)
    labels = list(dict.fromkeys([*(order or []), *runs["source"].tolist()]))
    has_reference = reference in set(runs["source"])
    rows = []
    for label in labels:
        g = runs[runs["source"] == label]
        if g.empty:
            continue

        def col(name: str, g: pd.DataFrame = g) -> list[float]:
            return [float(v) for v in g[name].tolist() if v is not None and not pd.isna(v)]

        speed = col("tokens_per_s")
        lm, ls, lmin, lmax = _stats(col("final_val_loss"))
        pm, ps, _, _ = _stats(col("final_val_ppl"))
        bm, bs, _, _ = _stats(col("best_val_loss"))
        um, us, _, _ = _stats(col("budget_val_loss")) if "budget_val_loss" in g.columns else (math.nan,) * 4
        cm, cs, _, _ = _stats(col("val_auc")) if "val_auc" in g.columns else (math.nan,) * 4
        best_steps = col("best_step") if "best_step" in g.columns else []
        fm, fs, fmin, fmax = _stats(col("final_val_focus_loss"))
        am, as_, _, _ = _stats(col("final_val_focus_acc"))
        mm, ms, _, _ = _stats(col("final_val_target_mass"))
        dm, ds = _paired_delta(runs, label, reference) if has_reference else (math.nan, math.nan)
        seen = col("final_val_loss_seen") if "final_val_loss_seen" in g.columns else []
        rows.append(
            {
                "source": label,
                "seeds": distinct_seeds(g["seed"].tolist()),
                "val_loss_mean": lm,
                "val_loss_std": ls,
                "val_loss_min": lmin,
                "val_loss_max": lmax,
                "delta_vs_reference_mean": dm,
                "delta_vs_reference_std": ds,
                "val_ppl_mean": pm,
                "val_ppl_std": ps,
                "best_val_loss_mean": bm,
                "best_val_loss_std": bs,
                "best_step_mean": statistics.fmean(best_steps) if best_steps else math.nan,
                "budget_val_loss_mean": um,
                "budget_val_loss_std": us,
                "val_auc_mean": cm,
                "val_auc_std": cs,
                "early_stops": int((g["stop_reason"] == "early_stop").sum()) if "stop_reason" in g.columns else 0,
                "val_focus_loss_mean": fm,
                "val_focus_loss_std": fs,
                "val_focus_loss_min": fmin,
                "val_focus_loss_max": fmax,
                "val_focus_acc_mean": am,
                "val_focus_acc_std": as_,
                "target_mass_mean": mm,
                "target_mass_std": ms,
                "val_loss_seen_mean": statistics.fmean(seen) if seen else math.nan,
                "tokens_per_s_mean": statistics.fmean(speed) if speed else math.nan,
                "attention_seconds": sum(col("attention_seconds")),
                "requests": int(sum(col("requests"))),
                "tokens": int(sum(col("prompt_tokens")) + sum(col("completion_tokens"))),
                "cached": int(sum(col("cached"))),
                "failed_sentences": int(sum(col("failed_sentences"))),
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


# --- reading run folders back ---------------------------------------------------------------------
def load_run(run_dir: str | Path) -> RunSummary:
    """``read_run``, with a one-line CompareError for a folder that is not a readable finished run."""
    run = read_run(run_dir)
    if run is None:
        raise CompareError(
            f"{run_dir} is not a finished run (no readable checkpoint/checkpoint.json and metrics.jsonl)"
        )
    return run


def summarize_runs(run_dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per run (columns ``RUN_COLUMNS``) for run folders, or for comparison folders (their runs).

    This is what ``runs.csv`` of a comparison holds, read back from the folders, so the app's Compare
    tab and ``llmcomp compare`` show the same numbers. Folders without a readable checkpoint are
    skipped. Pass the result to ``summary_table`` for mean and spread across seeds per source; runs of
    several corpora stay apart by their ``corpus_key`` column (``summary_tables`` gives one table each).
    """
    if isinstance(run_dirs, str | Path):
        run_dirs = [run_dirs]
    runs: list[RunSummary] = []
    for d in map(Path, run_dirs):
        folders = [d] if (d / "checkpoint").is_dir() else run_folders(d) if d.is_dir() else []
        runs += [r for r in map(read_run, folders) if r is not None]
    return runs_frame(runs)
