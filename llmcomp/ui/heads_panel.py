"""The Attention tab's Heads section (a panel the tab builds, not a tab): every head of the local LLM
(or of a free multi-head source) mapped as a clickable layer x head grid, one head's heatmap for a
corpus sentence or a typed one, and picked heads made the session's source for training.

Layout, wiring and wording only: ``llmcomp.app.model_view`` does the work. ``gr.Plot`` delivers no
plotly click events in Gradio 6, so the grid is HTML: each cell is a button whose click the panel's
``js_on_load`` sends to the server as a ``select`` event carrying the head's label.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator
from typing import Any

import gradio as gr
from plotly.colors import sample_colorscale

from llmcomp.app import model_view as mv
from llmcomp.plots.heatmap import WEIGHTS_SCALE, attention_heatmap
from llmcomp.text.tokenizer import detokenize
from llmcomp.ui import attention_actions as act
from llmcomp.ui.common import USER_ERRORS, AppContext, error, failed, note, progress_bar
from llmcomp.ui.state import Session

CONFIG = mv.ModelViewConfig()
REMAP = "the source or corpus changed: press Map all heads (instant if these heads were mapped before)"
NOT_MAPPED = "the heads of this source are not mapped yet for this corpus; press Map all heads"
#: a click on a cell becomes a 'select' event with the cell's head label (event delegation: the grid redraws)
CLICK_JS = (
    "element.addEventListener('click', (e) => { const b = e.target.closest('button[data-head]'); "
    "if (b) trigger('select', {head: b.dataset.head}); });"
)


def colour(score: float) -> str:
    """The heatmaps' own colour scale (``WEIGHTS_SCALE``) at ``score`` (clamped to 0..1)."""
    return sample_colorscale(WEIGHTS_SCALE, [min(max(score, 0.0), 1.0)])[0]


def grid_html(grid: mv.HeadGrid, selected: str = "") -> str:
    """The grid as a table of buttons, coloured by score (the label and score in each title)."""
    p = html.escape(grid.pattern)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in grid.cols)
    rows = []
    for name, cells in zip(grid.rows, grid.cells, strict=True):
        tds = []
        for cell in cells:
            if cell is None:
                tds.append("<td></td>")
                continue
            label, score = cell
            ink = "#fff" if score > 0.55 else "#111"
            ring = " llmc-picked" if label == selected else ""
            tds.append(
                f'<td><button class="llmc-cell{ring}" data-head="{html.escape(label)}" title="{html.escape(label)} '
                f'· {p}: {score:.3f}" style="background:{colour(score)};color:{ink}">{score:.2f}</button></td>'
            )
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(tds)}</tr>")
    return (
        f'<div class="llmc-grid"><div>colour = score for <b>{p}</b> (0 light, 1 dark); click a head</div>'
        f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table></div>"
    )


GRID_CSS = (
    ".llmc-grid table {border-collapse: collapse; font-size: 0.8em;} .llmc-grid th {padding: 0 4px;}"
    " .llmc-grid td {padding: 1px;} .llmc-cell {min-width: 44px; border: 1px solid #d4d4d4; border-radius: 3px;"
    " cursor: pointer; padding: 2px;} .llmc-picked {outline: 3px solid #b45309;}"
)


def build(ctx: AppContext, session: gr.State, sentence: gr.Number, row_scale: gr.Checkbox, kind: gr.Dropdown,
          n_heads: gr.Slider, llm_heads: gr.Textbox) -> tuple[list, list]:  # fmt: skip
    """The Heads accordion; ``sentence`` and ``row_scale`` are the tab's, ``kind``/``n_heads``/``llm_heads``
    its form. Returns the outputs drawn for one source and corpus, and their cleared values (the tab clears
    them when either changes)."""
    patterns = CONFIG.pattern_names()
    with gr.Accordion("Heads: map every head, click one, pick some for training", open=False, elem_id="heads-box"):
        gr.Markdown(
            f"Scores every head of the local LLM (or of the free multi-head source you chose) against a pattern on "
            f"the first {CONFIG.max_sentences} training sentences. Click a cell to see that head; clicks also add it "
            "to the picked heads, which can become this session's source (one supplied head each)."
        )
        with gr.Row():
            pattern = gr.Dropdown(patterns, value="previous", label="Pattern (colour = score)", elem_id="heads-pattern")
            map_btn = gr.Button("Map all heads", variant="primary", elem_id="heads-map-btn")
        progress = gr.HTML(label="Mapping progress", elem_id="heads-progress")
        grid = gr.HTML(
            "", label="Head grid (click a head)", elem_id="heads-grid", js_on_load=CLICK_JS, css_template=GRID_CSS
        )
        with gr.Row():
            selected = gr.Textbox(
                "", label="Head", placeholder="click a cell, or type L21.H4", elem_id="heads-selected"
            )
            own = gr.Textbox(
                "", label="Your own sentence", placeholder="empty: the corpus sentence # above", elem_id="heads-own",
                scale=3,
            )  # fmt: skip
            show_btn = gr.Button("Show head", elem_id="heads-show-btn", scale=0, min_width=110)
        message = gr.HTML(label="Head shown", elem_id="heads-message")
        plot = gr.Plot(label="This head (row = word, column = word it attends to)", elem_id="heads-heatmap")
        with gr.Row():
            picked = gr.Textbox("", label="Picked heads", placeholder="L21.H4, L23.H5", elem_id="heads-picked", scale=3)
            use_btn = gr.Button("Use picked heads for training", elem_id="heads-use-btn", scale=1)
        use_message = gr.HTML(label="Source chosen from the picked heads", elem_id="heads-use-message")

    def map_heads(pattern, selected, state: Session) -> Iterator[tuple[Any, Any]]:
        """Map every head of the local LLM (or of the chosen free multi-head source) on the corpus's first
        training sentences, streaming progress; ends with the grid for ``pattern``."""
        corpus, skip = ctx.corpus_of(state), gr.skip()
        try:
            atlas = mv.cached_atlas(state.settings, corpus, CONFIG)
            job = None if atlas is not None else mv.start_mapping(
                state.settings, corpus, ctx.jobs, act.visitor(state), keys=ctx.keys(state), cache=ctx.cache(),
                config=CONFIG)  # fmt: skip
        except USER_ERRORS as e:  # no grid beside an error: it was mapped for other inputs
            yield failed(e), ""
            return
        if job is not None:
            job.lease_s = act.SCORING_LEASE_S
            try:
                for snap in job.follow(act.POLL_S):
                    if not snap.running:
                        break
                    done, total = snap.scoring.get("done", 0), snap.scoring.get("sentences", 0)
                    phase = "mapping heads"
                    if job.source.kind == "local" and not done and act.model_state() == "loading":
                        phase = "loading the local model (first use only)"
                    yield (
                        progress_bar(done, total, f"{phase}: {done} of {total} sentences · {snap.elapsed_s:.0f} s"),
                        skip,
                    )
            finally:
                if job.running:  # the page went away: stop, never wait
                    job.stop("the page was closed")
            snap = job.snapshot()
            if snap.status != "finished" or job.result is None:
                yield error(snap.error or snap.status), ""
                return
            atlas = job.result
        text = f"{len(atlas.labels)} heads mapped on {atlas.sentences} training sentences"
        yield note(text, "ok"), grid_of(atlas, pattern, selected)

    def grid_of(atlas, pattern, selected) -> str:
        name = pattern if pattern in atlas.patterns else atlas.patterns[0]
        return grid_html(mv.head_grid(atlas, name), str(selected or "").strip())

    def show_grid(pattern, selected, state: Session):
        try:
            atlas = mv.cached_atlas(state.settings, ctx.corpus_of(state), CONFIG)
        except USER_ERRORS as e:
            return failed(e), ""
        if atlas is None:
            return note(NOT_MAPPED, "info"), ""
        return gr.skip(), grid_of(atlas, pattern, selected)

    def show_head(head, sentence_no, own_sentence, row_scale, state: Session):
        """One mapped head's heatmap for the corpus sentence ``sentence_no``, or for ``own_sentence`` when
        given (tokenized; at most the corpus's words per sentence); ``row_scale`` colours rows by their max."""
        corpus = ctx.corpus_of(state)
        try:
            atlas = mv.cached_atlas(state.settings, corpus, CONFIG)
            if atlas is None:
                raise mv.ModelViewError(NOT_MAPPED)
            words, caption = mv.sentence_words(corpus, sentence_no, own_sentence)
            m, title = mv.head_matrix(atlas, head, words, keys=ctx.keys(state), cache=ctx.cache())
        except USER_ERRORS as e:  # the plot drawn before was for other inputs: cleared, never beside the error
            return None, failed(e)
        fig = attention_heatmap(m, words, title=title, row_scale=bool(row_scale))
        return fig, note(f"{caption}: {detokenize(words)} · {title}", "ok")

    def on_cell(picked, sentence_no, own_sentence, row_scale, pattern, state: Session, evt: gr.EventData):
        head = str((getattr(evt, "_data", None) or {}).get("head", ""))[:40]
        with contextlib.suppress(*USER_ERRORS):  # a baseline's heads (head 0, ...) cannot be picked for the local LLM
            picked = mv.add_pick(picked, head)
        fig, msg = show_head(head, sentence_no, own_sentence, row_scale, state)
        return head, picked, fig, msg, show_grid(pattern, head, state)[1]

    def use_heads(picked, state: Session):
        """Make the picked heads (L21.H4, ...) this session's source: the local LLM, one supplied head each."""
        try:
            state.settings = mv.use_heads(state.settings, picked)
        except USER_ERRORS as e:
            return failed(e), gr.skip(), gr.skip()
        msg = f"the source is now the {state.settings.label()}; train it in the Train tab"
        return note(msg, "ok"), "local", state.settings.llm_heads

    map_btn.click(
        map_heads, [pattern, selected, session], [progress, grid], api_name="map_heads", concurrency_limit=None,
        show_progress="minimal",
    )  # fmt: skip
    pattern.change(show_grid, [pattern, selected, session], [progress, grid], api_name="head_grid")
    head_in = [selected, sentence, own, row_scale, session]
    show_btn.click(show_head, head_in, [plot, message], api_name="show_head")
    own.submit(show_head, head_in, [plot, message], api_visibility="private")
    grid.select(  # type: ignore[attr-defined]  # the custom event of CLICK_JS
        on_cell, [picked, sentence, own, row_scale, pattern, session], [selected, picked, plot, message, grid],
        api_visibility="private",
    )  # fmt: skip
    use_btn.click(use_heads, [picked, session], [use_message, kind, llm_heads], api_name="use_heads")
    # a corpus sentence's head plot is stale once the sentence # changes (a typed sentence's is not)
    sentence.change(lambda own: (None, "") if not str(own or "").strip() else (gr.skip(), gr.skip()), own,
                    [plot, message], api_visibility="private", queue=False, show_progress="hidden")  # fmt: skip
    for comp in (kind, n_heads, llm_heads):  # a person changed the source: "the source is now ..." no longer holds
        comp.input(lambda: "", None, use_message, api_visibility="private", queue=False, show_progress="hidden")
    return [progress, grid, plot, message], [note(REMAP, "info"), "", None, ""]


def mapped(settings) -> dict | None:
    """Which heads the grid maps for these settings (None when they cannot work): the grid and the head
    plot are stale only when this changes, not when, say, the local LLM's layers do."""
    try:
        return mv.mapped_description(settings)
    except USER_ERRORS:
        return None
