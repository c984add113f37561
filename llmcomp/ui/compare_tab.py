"""Compare tab: validation-loss curves of finished runs overlaid, and one row per run."""

from __future__ import annotations

import gradio as gr

from llmcomp.plots import val_curves_figure
from llmcomp.plots.runs import runs_table
from llmcomp.ui.common import AppContext, note, owner_of
from llmcomp.ui.state import Session
from llmcomp.ui.train_tab import visible_runs


def build(ctx: AppContext, session: gr.State):
    gr.Markdown(
        "Runs trained in this browser, and runs made with the command line (`llmcomp train`, `llmcomp compare`) "
        "in the runs folder. Lower validation loss is better; a source is worth its cost only if it beats the "
        "baselines (uniform, previous, gaussian, random, learned) on the same corpus."
    )
    refresh = gr.Button("↻ Refresh", elem_id="compare-refresh")
    message = gr.HTML(elem_id="compare-message")
    plot = gr.Plot(label="Validation loss", elem_id="compare-plot")
    table = gr.Dataframe(label="Runs", interactive=False, wrap=True, elem_id="compare-table")

    def compare_runs(state: Session, request: gr.Request):
        """Every visible run: overlaid validation-loss curves and a table (source, final validation loss
        and perplexity, tokens/s, API requests)."""
        runs = visible_runs(ctx, owner_of(state, request))
        curves = {f"{r.name} · {r.source}": r.metrics for r in runs}
        msg = (
            note(f"{len(runs)} run(s) in the runs folder", "info")
            if runs
            else note("no finished runs yet: train one in the Train tab", "info")
        )
        return msg, val_curves_figure(curves), runs_table(runs)

    refresh.click(compare_runs, session, [message, plot, table], api_name="compare_runs")
    return compare_runs
