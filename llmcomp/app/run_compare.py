"""The runs compared as a researcher reads them: grouped by corpus (never ranked across corpora), one
row per run with its status, losses, hyperparameters, source settings and corpus, one row per source
across distinct seeds, and numbers formatted for people. The web app's Compare tab and ``llmcomp runs
list`` show this; ``llmcomp.plots.curves.runs_curves_figure`` draws the curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmcomp.app.run_list import title
from llmcomp.training.run_summary import SEEN_COLUMN, RunSummary, group_by_corpus

if TYPE_CHECKING:
    import pandas as pd

UNKNOWN_CORPUS = "unknown"  # the picker's value for runs whose corpus was not recorded with a content hash
#: hyperparameters shown as columns: (column, where, key)
HYPER = [("total steps", "train", "steps"), ("batch", "train", "batch_size"), ("lr", "train", "lr"),
         ("n_layer", "model", "n_layer"), ("n_embd", "model", "n_embd"), ("n_head", "model", "n_head"),
         ("patience", "train", "patience")]  # fmt: skip
#: source settings shown as columns (the spec's keys); "kind" first
SOURCE_SETTINGS = ["kind", "model", "mode", "heads", "layers", "n_heads", "task", "shift", "sigma"]


# --- numbers for people ---------------------------------------------------------------------------
def fmt_int(x: float | None) -> str:
    """22901.1877 -> "22,901"; None -> "" (a blank cell, not "nan")."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{round(x):,}"


def fmt_loss(x: float | None) -> str:
    """A loss to 3 decimals: 3.14159 -> "3.142"."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def fmt_duration(seconds: float | None) -> str:
    """65 -> "1 min 05 s", 3725 -> "1 h 02 min", 4.2 -> "4.2 s"."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def fmt_value(x: Any) -> str:
    """A setting for a table cell: lists joined, floats short (0.003 -> "0.003", 3e-05 -> "3e-05")."""
    if x is None:
        return ""
    if isinstance(x, list | tuple):
        return ", ".join(map(str, x))
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


# --- corpora --------------------------------------------------------------------------------------
@dataclass
class CorpusGroup:
    """The runs of one corpus (same sentences and split): the only runs ranked together."""

    value: str  # the picker's value: the corpus key, or UNKNOWN_CORPUS
    runs: list[RunSummary]

    @property
    def name(self) -> str:
        c = self.runs[0].corpus
        return c.name if c else "unrecorded corpus"

    @property
    def describe(self) -> str:
        """Name, sentences and hash: what a person checks before reading the numbers."""
        c = self.runs[0].corpus
        if self.value == UNKNOWN_CORPUS or c is None:
            return "runs whose corpus was not recorded with a content hash: compare them with care"
        split = f", split seed {c.split_seed}, {c.val_fraction:g} held out" if c.val_fraction is not None else ""
        return f"{c.name}: {c.sentences:,} sentences{split}; content hash {(c.sha256 or '')[:12]}"

    @property
    def label(self) -> str:
        n = len(self.runs)
        short = "" if self.value == UNKNOWN_CORPUS else f" · {self.value[:8]}"
        return f"{self.name}{short} · {n} run{'s' if n != 1 else ''}"


def corpus_groups(runs: list[RunSummary]) -> list[CorpusGroup]:
    """The runs split by corpus, the corpus of the newest run first."""
    groups = [CorpusGroup(k or UNKNOWN_CORPUS, rs) for k, rs in group_by_corpus(runs).items()]
    return sorted(groups, key=lambda g: max(newest(r) for r in g.runs), reverse=True)


def newest(run: RunSummary) -> float:
    return max(run.started_at or 0.0, run.modified)


def pick_group(groups: list[CorpusGroup], value: str | None) -> CorpusGroup | None:
    """The group picked (by value), else the newest run's; None when there are no runs."""
    return next((g for g in groups if g.value == value), groups[0] if groups else None)


# --- tables ---------------------------------------------------------------------------------------
def ranked(runs: list[RunSummary]) -> list[RunSummary]:
    """Runs of one corpus by best validation loss (lowest first); runs with none yet last."""
    return sorted(runs, key=lambda r: (r.best_val_loss is None, r.best_val_loss or 0.0))


def run_row(r: RunSummary) -> dict[str, str]:
    """One run as a table row: every number formatted for people."""
    status = r.status if r.stop_reason != "early_stop" else f"{r.status} (early stop)"
    row = {
        "run": title(r),
        "status": status,
        "source": r.source,
        "seed": fmt_value(r.seed),
        "steps": f"{r.steps:,}/{r.total_steps:,}",
        "best val loss": fmt_loss(r.best_val_loss),
        "best step": fmt_int(r.best_step),
        "final val loss": fmt_loss(r.final_val_loss),
        SEEN_COLUMN: fmt_loss(r.final_val_loss_seen),  # only for a source whose rows may see later words
        "val perplexity": "" if r.final_val_ppl is None else f"{r.final_val_ppl:,.2f}",
        "tokens/s": fmt_int(r.tokens_per_s),
        "training time": fmt_duration(r.train_seconds),
        "API requests": fmt_int(r.api_requests),
    }
    configs = {"train": r.train_config, "model": r.model_config}
    row.update({col: fmt_value(configs[where].get(key)) for col, where, key in HYPER})
    row.update({key: fmt_value(r.spec.get(key)) for key in SOURCE_SETTINGS})
    c = r.corpus
    row.update({"corpus": c.name if c else "", "sentences": fmt_int(c.sentences) if c else "",
                "corpus hash": (c.sha256 or "")[:12] if c else "", "folder": r.name})  # fmt: skip
    return row


def runs_table(runs: list[RunSummary]) -> pd.DataFrame:
    """One row per run, ranked; source settings no run has (all blank) are left out."""
    import pandas as pd

    table = pd.DataFrame([run_row(r) for r in ranked(runs)])
    if table.empty:
        return pd.DataFrame(columns=["run", "status", "source", "best val loss", "final val loss"])
    blank = [c for c in [*SOURCE_SETTINGS[1:], SEEN_COLUMN] if (table[c] == "").all()]
    return table.drop(columns=blank)


SOURCE_COLUMNS = {
    "source": "source",
    "seeds": "seeds",
    "best_val_loss_mean": "best val loss (mean)",
    "best_val_loss_std": "best val loss (std)",
    "val_loss_mean": "final val loss (mean)",
    "val_loss_std": "final val loss (std)",
    "val_loss_seen_mean": "† val loss, training-time rows (mean)",  # only where rows may see later words
    "val_focus_loss_mean": "focus loss (mean)",  # at a task's decided positions (docs/tasks.md), when measured
    "val_focus_acc_mean": "focus accuracy (mean)",
    "target_mass_mean": "target mass (mean)",
    "tokens_per_s_mean": "tokens/s",
    "requests": "API requests",
}


def sources_table(runs: list[RunSummary]) -> pd.DataFrame:
    """One row per source of one corpus: mean and spread across its runs, seeds counted once each
    (``llmcomp compare``'s ``summary_table``); runs still training are left out of it."""
    import pandas as pd

    from llmcomp.experiments.tables import runs_frame, summary_table

    done = [r for r in runs if r.status != "training" and r.best_val_loss is not None]
    if not done:
        return pd.DataFrame(columns=list(SOURCE_COLUMNS.values()))
    table = summary_table(runs_frame(done)).sort_values("best_val_loss_mean", kind="stable")
    table = table[[c for c in SOURCE_COLUMNS if c in table.columns]]
    out = pd.DataFrame({"source": table["source"], "seeds": table["seeds"].astype(int)})
    for col in SOURCE_COLUMNS:
        if col in ("source", "seeds"):
            continue
        fmt = fmt_int if col in ("tokens_per_s_mean", "requests") else fmt_loss
        out[col] = [fmt(None if pd.isna(v) else float(v)) for v in table[col]]
    unmeasured = [c for c in ("val_loss_seen_mean", "val_focus_loss_mean", "val_focus_acc_mean", "target_mass_mean")
                  if c in out.columns and (out[c] == "").all()]  # fmt: skip
    out = out.drop(columns=unmeasured)
    return out.rename(columns=SOURCE_COLUMNS).reset_index(drop=True)


def curves(runs: list[RunSummary], shown: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Title -> metrics of the runs to draw: those named in ``shown`` (folder names), all when None."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if shown is None or r.name in shown:
            name = title(r) + (" (training)" if r.status == "training" else "")
            out[name if name not in out else f"{name} [{r.name}]"] = r.metrics
    return out
