"""Compare tab: validation-loss curves of finished runs overlaid, one row per run, and one row per
source (mean and spread across seeds, computed as ``llmcomp compare`` computes them)."""

from __future__ import annotations

import math

import gradio as gr
import pandas as pd

from llmcomp.plots import val_curves_figure
from llmcomp.training.run_summary import RunSummary, runs_table
from llmcomp.ui.common import AppContext, log, note, owner_of
from llmcomp.ui.runs import visible_runs
from llmcomp.ui.state import Session

SOURCE_COLUMNS = {
    "source": "source",
    "seeds": "seeds",
    "best_val_loss_mean": "best val loss (mean)",
    "best_val_loss_std": "best val loss (std)",
    "best_step_mean": "best step (mean)",
    "val_loss_mean": "final val loss (mean)",
    "val_loss_std": "val loss (std)",
    "val_ppl_mean": "perplexity (mean)",
    "val_loss_seen_mean": "† val loss, training-time rows (mean)",  # only where rows may see later words
    "val_focus_loss_mean": "focus loss (mean)",  # at a task's decided positions (docs/tasks.md), when measured
    "val_focus_acc_mean": "focus accuracy (mean)",
    "target_mass_mean": "target mass (mean)",
    "tokens_per_s_mean": "tokens/s",
    "requests": "API requests",
    "tokens": "API tokens",
}


def per_source_table(runs: list[RunSummary]) -> pd.DataFrame | None:
    """Mean and spread across seeds per source, as ``llmcomp compare`` reports it (None if no runs)."""
    from llmcomp.experiments.compare import runs_frame, summary_table

    if not runs:
        return None
    try:
        table = summary_table(runs_frame(runs))
    except Exception:  # noqa: BLE001 - the per-run table is enough to go on
        log.exception("summary_table failed")
        return None
    table = table.sort_values("best_val_loss_mean", kind="stable")  # ranked by the converged loss, not the last
    unmeasured = [c for c in ("val_focus_loss_mean", "val_focus_acc_mean", "target_mass_mean") if c in table.columns
                  and table[c].isna().all()]  # fmt: skip
    table = table.drop(columns=unmeasured)
    table = table[[c for c in SOURCE_COLUMNS if c in table.columns]].rename(columns=SOURCE_COLUMNS)
    rounded = table.round(4).astype(object)
    return rounded.map(lambda v: None if isinstance(v, float) and math.isnan(v) else v)


def build(ctx: AppContext, session: gr.State):
    gr.Markdown(
        "Runs trained in this browser, and runs made with the command line (`llmcomp train`, `llmcomp compare`) "
        "in the runs folder, ranked by best validation loss (each run's lowest: the last one may be past an overfit). "
        "Lower is better; a source is worth its cost only if it beats the "
        "baselines (uniform, previous, gaussian, random, learned) on the same corpus."
    )
    refresh = gr.Button("↻ Refresh", elem_id="compare-refresh")
    message = gr.HTML(elem_id="compare-message")
    plot = gr.Plot(label="Validation loss", elem_id="compare-plot")
    table = gr.Dataframe(label="Runs", interactive=False, wrap=True, elem_id="compare-table")
    by_source = gr.Dataframe(
        label="Per source (mean and spread across seeds)", interactive=False, wrap=True, elem_id="compare-sources"
    )

    def compare_runs(state: Session, request: gr.Request):
        """Every visible run: overlaid validation-loss curves, a table per run (source, final validation
        loss and perplexity, tokens/s, API requests) and a table per source across seeds."""
        runs = visible_runs(ctx, owner_of(state, request))
        curves = {f"{r.name} · {r.source}": r.metrics for r in runs}
        if runs:
            msg = note(f"{len(runs)} run(s) in the runs folder", "info")
        else:
            msg = note("no finished runs yet: train one in the Train tab", "info")
        sources = per_source_table(runs)
        if sources is None:
            sources = pd.DataFrame(columns=list(SOURCE_COLUMNS.values()))
        ranked = runs_table(runs).sort_values("best val loss", kind="stable", na_position="last").reset_index(drop=True)
        return msg, val_curves_figure(curves), ranked, sources

    outputs = [message, plot, table, by_source]
    refresh.click(compare_runs, session, outputs, api_name="compare_runs")
    return compare_runs, outputs
