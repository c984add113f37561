"""A comparison's files: runs.csv, table.csv, table.md, curves.html (+ curves.png) and compare.json."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from llmcomp.experiments.tables import runs_frame
from llmcomp.plots.curves import source_curves_figure
from llmcomp.plots.export import write_figure
from llmcomp.text.corpus import Corpus

if TYPE_CHECKING:
    from llmcomp.experiments.compare import CompareConfig, CompareResult


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def _convergence_note(config: CompareConfig) -> str:
    """How to read the best-loss and AUC columns (docs/results.md)."""
    auc = f"val AUC: the mean validation loss over the validations up to step {config.steps} (lower = learned faster)"
    if not config.converge:
        return (
            f"Every run trained {config.steps} steps; best val loss is the lowest validation loss on the way; {auc}.\n"
        )
    return (
        f"Converged: each run trained with early stopping (patience {config.patience} validations) up to "
        f"{config.max_steps} steps; val loss at step {config.steps} is the fixed budget (learning speed), best val "
        f"loss the converged loss (its weights in checkpoint-best/), val loss the last; {auc}.\n"
    )


def training_record(config: CompareConfig) -> dict:
    """How every run of a comparison trained, for its JSON record: seeds, budget, convergence, model, optimiser."""
    return {
        "seeds": list(config.seeds),
        "steps": config.steps,
        "converge": config.converge,
        "max_steps": config.max_steps if config.converge else None,
        "patience": config.patience if config.converge else 0,
        "model": {k: v for k, v in config.model.to_dict().items() if k in ("n_layer", "n_embd", "dropout")},
        "train": asdict(config.train),
    }


def write_outputs(result: CompareResult, corpus: Corpus, config: CompareConfig) -> dict[str, Path]:
    """runs.csv, table.csv, table.md, curves.html (+ curves.png with kaleido) and compare.json."""
    out = result.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("runs.csv", "table.csv", "table.md", "curves.html", "compare.json")}
    runs_frame(result.runs, budget=config.steps).to_csv(files["runs.csv"], index=False)
    result.table.to_csv(files["table.csv"], index=False)
    header = (
        f"Corpus {corpus.name}: {len(corpus.train_idx)} train / {len(corpus.val_idx)} validation sentences; "
        f"{config.steps} steps, seeds {', '.join(map(str, config.seeds))}; final validation loss in nats per word"
        + (
            f"; focus loss, accuracy and target mass on the decided positions of task {result.task}"
            if result.focus
            else ""
        )
        + ".\n"
        + _convergence_note(config)
        + "\n"
    )
    files["table.md"].write_text(header + result.markdown + "\n", encoding="utf-8")
    fig = source_curves_figure(result.runs, title=f"{corpus.name}: validation loss by attention source")
    files.update(write_figure(fig, out, "curves"))
    record = {
        "corpus": corpus.name,
        "corpus_sha256": corpus.sha256,
        "sentences": len(corpus.sentences),
        "train_sentences": len(corpus.train_idx),
        "val_sentences": len(corpus.val_idx),
        "split_seed": corpus.config.seed,
        "sources": result.sources,
        **training_record(config),
        "focus": result.focus,
        "task": result.task,
        "failures": result.failures,
        "notes": result.notes,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv),
    }
    files["compare.json"].write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    return files
