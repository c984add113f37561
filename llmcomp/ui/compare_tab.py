"""Compare tab: the runs of one corpus at a time (``llmcomp.app.run_compare``): loss curves (smoothed,
train and validation, against step or time, runs shown or hidden), a table per run and per source,
and rename / delete (with a confirm step). Layout and wiring only."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from llmcomp.app import run_compare, run_list
from llmcomp.app.jobs import owner_tag
from llmcomp.plots.curves import runs_curves_figure
from llmcomp.training.run_summary import RunSummary
from llmcomp.ui.common import USER_ERRORS, AppContext, failed, note, owner_of
from llmcomp.ui.runs import run_label, visible_runs
from llmcomp.ui.state import Session

INTRO = (
    "Runs in the runs folder (trained here or with `llmcomp train` / `llmcomp compare`), **one corpus at a "
    "time**: a loss on other sentences says nothing about a source, so runs of different corpora are never "
    "ranked together. Ranked by best validation loss (each run's lowest); lower is better. A source is worth "
    "its cost only if it beats the baselines (uniform, previous, gaussian, random, learned) on the same corpus."
)
X_AXES = [("step", "step"), ("training time (s)", "time")]


@dataclass
class Choices:
    """What the curve controls say: the corpus picked, smoothing, x-axis, train curves, runs shown."""

    corpus: str | None = None
    smoothing: float = 0.0
    x_axis: str = "step"
    train: bool = True
    shown: list[str] | None = None


def build(ctx: AppContext, session: gr.State):
    gr.Markdown(INTRO)
    with gr.Row():
        corpus = gr.Dropdown([], label="Corpus", elem_id="compare-corpus", scale=4, allow_custom_value=True)
        refresh = gr.Button("↻ Refresh", elem_id="compare-refresh", scale=0, min_width=120)
    corpus_info = gr.HTML(label="Corpus compared (name, sentences, split, content hash)", elem_id="compare-corpus-info")
    message = gr.HTML(label="Compare status", elem_id="compare-message")
    with gr.Row():
        smoothing = gr.Slider(0.0, 0.99, value=0.0, step=0.01, label="Smoothing (EMA weight; 0 = raw)",
                              elem_id="compare-smoothing")  # fmt: skip
        x_axis = gr.Radio(X_AXES, value="step", label="x-axis", elem_id="compare-x")
        train = gr.Checkbox(True, label="Train loss (dashed)", elem_id="compare-train")
    shown = gr.CheckboxGroup([], label="Runs shown in the plot", elem_id="compare-shown")
    plot = gr.Plot(label="Loss curves (validation solid, train dashed)", elem_id="compare-plot")
    # no wrapping: a wide table scrolls sideways instead of breaking its headers letter by letter
    table = gr.Dataframe(label="Runs on this corpus, ranked by best validation loss", interactive=False,
                         wrap=False, elem_id="compare-table")  # fmt: skip
    by_source = gr.Dataframe(label="Per source on this corpus (mean and spread; seeds counted once each)",
                             interactive=False, wrap=True, elem_id="compare-sources")  # fmt: skip
    with gr.Accordion("Rename or delete a run", open=False, elem_id="compare-edit"):
        with gr.Row():
            run = gr.Dropdown([], label="Run", elem_id="compare-run", scale=3, allow_custom_value=True)
            new_name = gr.Textbox(label="Display name (empty: the folder's name)", elem_id="compare-name", scale=3)
            rename_btn = gr.Button("Rename", elem_id="compare-rename", scale=0, min_width=100)
            delete_btn = gr.Button("Delete…", variant="stop", elem_id="compare-delete", scale=0, min_width=100)
        with gr.Group(visible=False, elem_id="compare-confirm") as confirm:
            confirm_text = gr.HTML(label="Delete: confirm", elem_id="compare-confirm-text")
            with gr.Row():
                yes = gr.Button("Yes, delete this run", variant="stop", elem_id="compare-delete-yes")
                no = gr.Button("Cancel", elem_id="compare-delete-no")
        edit_message = gr.HTML(label="Rename or delete: result", elem_id="compare-edit-message")
    tick = gr.State(0.0)  # set when the tab is shown: its change refreshes with the controls' values

    def runs_of(state: Session | None, request: gr.Request | None, live: bool = True) -> list[RunSummary]:
        return visible_runs(ctx, owner_of(state or Session(), request), live=live)

    def figure(group: run_compare.CorpusGroup | None, c: Choices):
        curves = run_compare.curves(group.runs if group else [], c.shown)
        return runs_curves_figure(curves, float(c.smoothing or 0), c.x_axis or "step", bool(c.train))

    def compare_runs(
        corpus_key: str | None = None,
        smoothing_w: float = 0.0,
        x: str = "step",
        train_on: bool = True,
        state: Session | None = None,
        request: gr.Request = None,
    ):
        """Every visible run of one corpus (default: the newest run's), in progress included: message,
        corpus picker, corpus description, runs shown, loss curves, runs table, sources table, run picker."""
        groups = run_compare.corpus_groups(runs_of(state, request))
        group = run_compare.pick_group(groups, corpus_key or None)
        picker = gr.update(choices=[(g.label, g.value) for g in groups], value=group.value if group else None)
        if group is None:
            msg = note("no runs yet: train one in the Train tab (or with llmcomp train)", "info")
            empty = pd.DataFrame(columns=["run", "status", "source", "best val loss", "final val loss"])
            return (msg, picker, "", gr.update(choices=[], value=[]), figure(None, Choices()), empty,
                    run_compare.sources_table([]), gr.update(choices=[], value=None))  # fmt: skip
        live = sum(r.status == "training" for r in group.runs)
        others = len(groups) - 1
        text = f"{len(group.runs)} run(s) on this corpus" + (f", {live} training now" if live else "")
        text += f"; {others} other corpus(es) in the picker" if others else ""
        names = [(run_compare.title(r), r.name) for r in run_compare.ranked(group.runs)]
        c = Choices(group.value, smoothing_w, x, train_on, None)
        return (note(text, "info"), picker, note(group.describe, "info"), gr.update(choices=names, value=[v for _, v in names]),
                figure(group, c), run_compare.runs_table(group.runs), run_compare.sources_table(group.runs),
                gr.update(choices=[(run_label(r), r.name) for r in run_compare.ranked(group.runs)], value=names[0][1]))  # fmt: skip

    def compare_curves(
        corpus_key: str | None = None,
        smoothing_w: float = 0.0,
        x: str = "step",
        train_on: bool = True,
        shown_runs: list[str] | None = None,
        state: Session | None = None,
        request: gr.Request = None,
    ):
        """The loss curves alone, redrawn for new controls: smoothing, x-axis, train curves, runs shown."""
        groups = run_compare.corpus_groups(runs_of(state, request))
        group = run_compare.pick_group(groups, corpus_key or None)
        shown_list = None if shown_runs is None else list(shown_runs)
        return figure(group, Choices(corpus_key, smoothing_w, x, train_on, shown_list))

    def refresh_keeping(corpus_key, smoothing_w, x, train_on, picked, shown_runs, state: Session, request: gr.Request):
        """compare_runs after a rename or delete, keeping the run picked and the runs hidden from the plot."""
        out = list(compare_runs(corpus_key, smoothing_w, x, train_on, state, request))
        names = [v for _, v in out[3].get("choices", [])]
        keep = [n for n in names if n in (shown_runs or [])]
        if keep:
            out[3] = gr.update(choices=out[3]["choices"], value=keep)
            out[4] = compare_curves(corpus_key, smoothing_w, x, train_on, keep, state, request)
        if picked in names:
            out[7] = gr.update(choices=out[7]["choices"], value=picked)
        return tuple(out)

    def editable(state: Session, request: gr.Request) -> list[RunSummary]:
        owner = owner_of(state, request)
        return run_list.editable(runs_of(state, request), owner_tag(owner), ctx.public)

    def rename_run(name, display_name, state: Session, request: gr.Request):
        """Give a run a display name (its folder keeps its name); an empty name clears it."""
        try:
            r = run_list.rename(editable(state, request), name or "", display_name or "")
        except USER_ERRORS as e:
            return failed(e)
        return note(f"{r.name} is now shown as {run_list.title(r)}", "ok")

    def ask_delete(name, state: Session, request: gr.Request):
        try:
            r = run_list.find(editable(state, request), name or "")
        except USER_ERRORS as e:
            return gr.update(visible=False), "", failed(e)
        text = note(f"Delete {run_list.title(r)} ({r.name})? Its folder is removed for good; the attention cache "
                    "and other runs stay.", "warn")  # fmt: skip
        return gr.update(visible=True), text, ""

    def delete_run(name, state: Session, request: gr.Request):
        """Delete a run's folder (never the attention cache); refused for a run in progress."""
        try:
            job = ctx.jobs.active()
            path = run_list.delete(editable(state, request), name or "", ctx.paths.runs, protect=[ctx.paths.cache],
                                   busy=[job.snapshot().run_dir] if job else [])  # fmt: skip
        except USER_ERRORS as e:
            return failed(e)
        return note(f"deleted {path.name}", "ok")

    inputs = [corpus, smoothing, x_axis, train, session]
    outputs = [message, corpus, corpus_info, shown, plot, table, by_source, run]
    refresh.click(compare_runs, inputs, outputs, api_name="compare_runs")
    corpus.input(compare_runs, inputs, outputs, api_visibility="private")
    tick.change(compare_runs, inputs, outputs, api_visibility="private")
    curve_inputs = [corpus, smoothing, x_axis, train, shown, session]
    gr.on([smoothing.change, x_axis.input, train.input, shown.input], compare_curves, curve_inputs, plot,
          api_name="compare_curves", show_progress="hidden")  # fmt: skip
    kept = [corpus, smoothing, x_axis, train, run, shown, session]
    rename_btn.click(rename_run, [run, new_name, session], edit_message, api_name="rename_run").then(
        refresh_keeping, kept, outputs, api_visibility="private"
    )
    delete_btn.click(ask_delete, [run, session], [confirm, confirm_text, edit_message], api_visibility="private")
    no.click(lambda: (gr.update(visible=False), note("nothing deleted", "info")), None, [confirm, edit_message],
             api_visibility="private")  # fmt: skip
    yes.click(delete_run, [run, session], edit_message, api_name="delete_run").then(
        lambda: gr.update(visible=False), None, confirm, api_visibility="private"
    ).then(refresh_keeping, kept, outputs, api_visibility="private")
    return (lambda state: time.time()), [tick]
