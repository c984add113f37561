"""The task suite in one command: every source on every task, at a fixed budget and converged.

The tasks of docs/tasks.md are the places where the right attention is known, so they are where a
claim about LLM attention can be checked against an upper bound (the oracle) and a control (the
oracle shifted by a word). ``run_suite`` runs one ``compare`` per task corpus (``data/<task>.txt``)
with the same sources, seeds, model and convergence budget, then puts the per-task tables side by
side in one summary. The summary's numbers are copied from the per-task tables, never recomputed,
so the two cannot drift apart.

An output folder holds one compare folder per task (``<task>/``: its runs, ``table.md``,
``table.csv``, ...), ``summary.csv`` and ``summary.md`` (task x source), ``suite.md`` (every table)
and ``suite.json`` (settings, times, machine, commit).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from llmcomp.experiments.compare import CompareConfig, CompareResult, compare
from llmcomp.experiments.labels import CompareError, parse_source
from llmcomp.experiments.report import machine, training_record
from llmcomp.experiments.table_markdown import table_markdown
from llmcomp.settings import DATA_DIR
from llmcomp.text.corpus import load_corpus

#: the suite's tasks, each with its bundled corpus ``data/<task>.txt`` (docs/tasks.md)
SUITE_TASKS = ("induction", "ioi", "agreement", "coreference", "binding")
#: the sources trained on every task; ``{task}`` is replaced by the task's name
SUITE_SOURCES = (
    "uniform",
    "previous",
    "learned",
    "local",
    "local:heads=top:4:{task}",
    "oracle:task={task}",
    "oracle:task={task}:shift=1",
)
#: the summary's columns, copied from each task's compare table (``tables.TABLE_COLUMNS``)
SUMMARY_FROM_TABLE = [
    "source",
    "seeds",
    "val_focus_loss_mean",
    "val_focus_loss_std",
    "val_focus_acc_mean",
    "val_focus_acc_std",
    "target_mass_mean",
    "target_mass_std",
    "budget_val_loss_mean",
    "best_val_loss_mean",
    "best_val_loss_std",
    "best_step_mean",
    "val_loss_mean",
]
SUMMARY_COLUMNS = ["task", *SUMMARY_FROM_TABLE]


class SuiteError(CompareError):
    """A suite that cannot run as asked (an unknown task, a missing corpus, no sources)."""


def _suite_compare() -> CompareConfig:
    # Sized so that 5 tasks x 7 sources x 3 seeds fit in 30 minutes on a busy 2-core CPU with the cache
    # filled (docs/results.md, "The task suite"): 1 layer of 64 dims, budget 150 steps, converged up to 1000.
    return replace(CompareConfig(), steps=150, converge=True, max_steps=1000, patience=3)


@dataclass
class SuiteConfig:
    """Which tasks and sources, how much of each corpus, and the comparison every task shares.

    ``compare.sources``, ``compare.task``, ``compare.out`` and ``compare.max_sentences`` are set per
    task; everything else (seeds, steps, convergence, model, training, cache) is shared."""

    tasks: list[str] = field(default_factory=lambda: list(SUITE_TASKS))
    sources: list[str] = field(default_factory=lambda: list(SUITE_SOURCES))  # ``{task}``: the task's name
    max_sentences: int | None = 1000  # the first N lines of each task corpus (before the split)
    data: Path = DATA_DIR  # where ``<task>.txt`` is read
    compare: CompareConfig = field(default_factory=_suite_compare)
    out: Path | None = None  # None: nothing is written


@dataclass
class SuiteResult:
    results: dict[str, CompareResult]  # task -> its comparison
    summary: pd.DataFrame  # SUMMARY_COLUMNS: one row per task x source
    seconds: dict[str, float]  # task -> wall time of its comparison
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failures(self) -> dict[str, str]:
        return {f"{t}/{label}": why for t, r in self.results.items() for label, why in r.failures.items()}

    @property
    def markdown(self) -> str:
        return suite_markdown(self)


ProgressFn = Callable[[dict[str, Any]], None]


def task_sources(sources: list[str], task: str) -> list[str]:
    """The labels for one task: ``{task}`` filled in, each label checked (a bad one stops before training)."""
    labels = [s.replace("{task}", task) for s in sources if s.strip()]
    if not labels:
        raise SuiteError("no sources for the suite; name at least one, e.g. --sources uniform,oracle:task={task}")
    for label in labels:
        parse_source(label)
    return labels


def check_tasks(config: SuiteConfig) -> list[Path]:
    """Each task's corpus path, or a one-line SuiteError for an unknown task or a missing file."""
    if not config.tasks:
        raise SuiteError(f"no tasks to run; name some of {', '.join(SUITE_TASKS)}")
    paths = []
    for task in config.tasks:
        if task not in SUITE_TASKS:
            raise SuiteError(f"unknown suite task {task!r}; the suite's tasks are {', '.join(SUITE_TASKS)}")
        path = Path(config.data) / f"{task}.txt"
        if not path.is_file():
            raise SuiteError(f"{path} not found; write it with: llmcomp tasks make {task} --out {path}")
        paths.append(path)
    return paths


def run_suite(config: SuiteConfig | None = None, progress: ProgressFn | None = None) -> SuiteResult:
    """Compare the sources on each task in turn; return (and write) the per-task tables and the summary.

    ``progress`` gets ``{"event": "task", "task", "index", "total"}`` before each task, every event of
    ``compare`` with ``"task"`` added, and ``{"event": "task_done", "task", "seconds"}`` after it."""
    config = config or SuiteConfig()
    paths = check_tasks(config)
    labels = {task: task_sources(config.sources, task) for task in config.tasks}
    out = Path(config.out) if config.out else None
    if out is not None and out.is_dir() and any(out.iterdir()):
        raise SuiteError(f"{out} already holds files; give the suite a new or empty folder")
    emit = progress or (lambda _event: None)
    results: dict[str, CompareResult] = {}
    seconds: dict[str, float] = {}
    for index, (task, path) in enumerate(zip(config.tasks, paths, strict=True)):
        emit({"event": "task", "task": task, "index": index, "total": len(config.tasks)})
        cfg = replace(config.compare, sources=labels[task], task=task, out=out / task if out else None,
                      max_sentences=config.max_sentences)  # fmt: skip
        corpus = load_corpus(path, cfg.corpus)
        t0 = time.perf_counter()
        results[task] = compare(corpus, cfg, progress=lambda e, task=task: emit({**e, "task": task}))
        seconds[task] = time.perf_counter() - t0
        emit({"event": "task_done", "task": task, "seconds": seconds[task]})
    result = SuiteResult(results, summary_frame(results), seconds, out)
    if out is not None:
        result.files = write_suite(result, config)
    return result


def summary_frame(results: dict[str, CompareResult]) -> pd.DataFrame:
    """Task x source rows, each a copy of the cells of that task's compare table (no recomputation)."""
    rows = []
    for task, r in results.items():
        for row in r.table.to_dict("records"):
            rows.append({"task": task, **{c: row[c] for c in SUMMARY_FROM_TABLE}})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.{nd}f}"


def _pm(row: dict[str, Any], name: str) -> str:
    mean, std = row[f"{name}_mean"], row.get(f"{name}_std")
    return _f(mean) if std is None or pd.isna(std) else f"{_f(mean)} ± {_f(std)}"


def summary_markdown(summary: pd.DataFrame, budget: int | None) -> str:
    """The summary as GitHub markdown: per task and source, mean ± sample std over seeds."""
    at = f"val loss at step {budget}" if budget else "val loss at the budget"
    head = ["task", "source", "seeds", "focus loss", "focus acc", "target mass", at, "best val loss", "best step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary.to_dict("records"):
        cells = [r["task"], r["source"], str(r["seeds"]), _pm(r, "val_focus_loss"), _pm(r, "val_focus_acc"),
                 _pm(r, "target_mass"), _f(r["budget_val_loss_mean"]), _pm(r, "best_val_loss"),
                 _f(r["best_step_mean"], 0)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def suite_markdown(result: SuiteResult) -> str:
    """Every task's table (as compare prints it), then the summary across tasks."""
    parts = []
    budget = None
    for task, r in result.results.items():
        budget = r.budget
        parts += [f"### {task}", "", table_markdown(r.table, budget=r.budget), ""]
        parts += [f"{label} left out: {why}" for label, why in r.failures.items()]
    parts += ["### Summary across tasks", "", summary_markdown(result.summary, budget)]
    return "\n".join(parts)


def commit() -> str | None:
    """The repository's commit (with ``+dirty`` when files are modified), or None outside a checkout."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=DATA_DIR.parent, capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "--short", "HEAD").stdout.strip()
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def write_suite(result: SuiteResult, config: SuiteConfig) -> dict[str, Path]:
    """summary.csv, summary.md, suite.md and suite.json in the suite's folder."""
    out = result.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("summary.csv", "summary.md", "suite.md", "suite.json")}
    c = config.compare
    budget = c.steps if c.converge else None
    result.summary.to_csv(files["summary.csv"], index=False)
    files["summary.md"].write_text(summary_markdown(result.summary, budget) + "\n", encoding="utf-8")
    files["suite.md"].write_text(result.markdown + "\n", encoding="utf-8")
    record = {
        "tasks": list(config.tasks),
        "sources": list(config.sources),
        "max_sentences": config.max_sentences,
        **training_record(c),
        "cache": str(c.cache) if c.cache else None,
        "seconds": result.seconds,
        "scoring_seconds": {
            t: {s: float(v) for s, v in zip(r.table["source"], r.table["attention_seconds"], strict=True)}
            for t, r in result.results.items()
        },  # fmt: skip
        "failures": result.failures,
        "machine": machine(),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    files["suite.json"].write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    return files
