"""Attention tab: choose a source, see what scoring costs, score the corpus with live counts, and look
at the matrices (one head, two sources side by side, their difference), with CSV/JSON downloads.

Layout and wiring only: what the buttons do is in ``llmcomp.ui.attention_actions``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

from llmcomp.app.local_status import default_source, local_state
from llmcomp.app.sources import SourceSettings
from llmcomp.ui import attention_actions as act
from llmcomp.ui import heads_panel, source_form
from llmcomp.ui.common import AppContext
from llmcomp.ui.state import Session

OTHER_CHOICES = [(label, kind) for label, kind in source_form.KIND_CHOICES if kind not in ("openai", "learned")]


@dataclass
class AttentionTab:
    source: source_form.SourceForm  # the source's fields (``source_form``)
    estimate: gr.HTML
    progress: gr.HTML
    sentence: gr.Number
    head: gr.Dropdown
    heatmap: gr.Plot
    stale: list  # what depends on the corpus: cleared (or reset) by corpus_changed
    corpus_changed: Callable[..., Any]  # handler (session) -> values for ``stale``
    form_first: Callable[[Any], Any] | None = None  # (trigger) -> event that puts the form into the session

    @property
    def form(self) -> list:
        """The source form a reload restores: every field but the API key."""
        return self.source.form

    @staticmethod
    def form_values(s: SourceSettings) -> list:
        return source_form.SourceForm.form_values(s)

    @property
    def source_inputs(self) -> list:
        return self.source.inputs


def build(ctx: AppContext, session: gr.State) -> AttentionTab:
    gr.Markdown(
        "Choose where the attention comes from. The **local LLM** runs offline on this machine; an "
        "**OpenAI-compatible** server costs requests (see the estimate first); **baselines** are the yardsticks "
        "every LLM source must beat."
    )
    start = default_source(local_state())  # the local LLM, or a baseline where it cannot load (says why)
    session.value.settings = replace(session.value.settings, kind=start.kind)  # what new sessions start with
    form = source_form.build(start)
    kind, n_heads, llm_heads = form.kind, form.n_heads, form.llm_heads
    with gr.Row():
        max_sentences = gr.Number(
            0, precision=0, minimum=0, label="Sentences to score (0 = the whole corpus)", elem_id="max-sentences"
        )
        estimate_btn = gr.Button("Estimate cost", elem_id="estimate-btn")
        score_btn = gr.Button("Score corpus", variant="primary", elem_id="score-btn")
    estimate = gr.HTML(label="Cost estimate", elem_id="estimate")
    progress = gr.HTML(label="Scoring progress", elem_id="score-progress")

    gr.Markdown("### Browse the matrices")
    with gr.Row():
        prev_btn = gr.Button("◀", scale=0, min_width=50, elem_id="prev-sentence")
        sentence = gr.Number(0, precision=0, minimum=0, label="Sentence #", elem_id="sentence-no", scale=1)
        next_btn = gr.Button("▶", scale=0, min_width=50, elem_id="next-sentence")
        head = gr.Dropdown(
            [("head 0", 0)], value=0, label="Head", elem_id="head-select", allow_custom_value=True, scale=1
        )
        row_scale = gr.Checkbox(
            False, label="Per-row colours", info="each row by its own largest weight", elem_id="row-scale", scale=1
        )
        show_btn = gr.Button("Show", elem_id="show-btn", scale=0, min_width=80)
    sentence_box = gr.HTML(label="Sentence shown", elem_id="sentence-text")
    heatmap = gr.Plot(label="Attention (row = word, column = word it attends to)", elem_id="attention-heatmap")
    with gr.Accordion("Compare with another source, and download", open=False, elem_id="compare-accordion"):
        with gr.Row():
            other = gr.Dropdown(OTHER_CHOICES, value="uniform", label="Other source (B)", elem_id="other-source")
            compare_btn = gr.Button("Side by side and difference", elem_id="compare-btn")
        compare_msg = gr.HTML(label="Comparison (which sentence and heads)", elem_id="compare-sources-message")
        side = gr.Plot(label="A (this source) and B", elem_id="side-by-side")
        diff = gr.Plot(label="A − B", elem_id="difference")
        with gr.Row():
            fmt = gr.Radio(["csv", "json"], value="csv", label="Format", elem_id="export-format")
            export_btn = gr.Button("Download this sentence's matrix", elem_id="export-btn")
        export_file = gr.File(label="Matrix file", elem_id="export-file")
        export_msg = gr.HTML(label="Download message", elem_id="export-message")

    panels = [side, diff, compare_msg, export_file, export_msg]  # drawn for one sentence, head and source
    cleared = [None, None, "", None, ""]

    def corpus_changed(state: Session):
        """A new corpus: back to its first sentence, and nothing drawn for the old one stays."""
        state.drawn_for = None
        return 0, None, act.stale_line(ctx, state, 0, "the corpus changed"), "", "", *cleared, *heads_cleared

    tab = AttentionTab(form, estimate, progress, sentence, head, heatmap, [], corpus_changed)

    # --- handlers: thin, named as the API documents them ---------------------------------------
    def remember(kind, n_heads, layers, base_url, model, api_key, *rest):
        state = rest[-1]
        state.settings = act.read_settings(kind, n_heads, layers, base_url, model, *rest[:-1])
        state.api_key = str(api_key or "")
        ctx.pages.remember_source(state.owner, state.settings)  # restored on a reload (never the key)

    def set_source(
        kind, n_heads, layers, base_url, model, api_key, mode, relations, floor, score_max, advanced, llm_heads,
        answer, top_k, llm_device, llm_precision, state: Session,
    ):  # fmt: skip
        """Choose this session's attention source (used by show_attention, start_training, ...). Every
        argument but kind defaults to the form's initial value, so a baseline needs one: predict("uniform",
        api_name="/set_source") or predict(kind="uniform", ...). floor and score_max: the OpenAI-compatible
        source's scale; answer: dense or sparse (sentence mode only), top_k: words a sparse answer names per
        word; advanced: any other option, option=value per line; llm_heads: the local LLM's chosen heads
        (21.4,23.5), one supplied head each; llm_device (auto, cpu or a GPU this machine has) and
        llm_precision (fp32, bf16 on CPU or CUDA, fp16 on CUDA): where and how the local LLM runs."""
        remember(kind, n_heads, layers, base_url, model, api_key, mode, relations, floor, score_max, advanced,
                 llm_heads, answer, top_k, llm_device, llm_precision, state)  # fmt: skip

    def source_changed(*form_and_state):
        """The form changed: keep the session in step, and take away what was drawn for the old source."""
        *form, sentence_no, state = form_and_state
        before = heads_panel.mapped(state.settings)
        remember(*form, state)
        same_heads = heads_panel.mapped(state.settings) == before  # e.g. other layers: the same heads mapped
        heads = [gr.skip()] * len(heads_cleared) if same_heads else heads_cleared
        # an estimate made for this very form stays (its click may be handled before this change's)
        estimate = gr.skip() if state.estimated_for == state.settings else ""
        if state.drawn_for == state.settings:  # a Show or Score handled before this change drew for this form
            return gr.skip(), gr.skip(), estimate, gr.skip(), *cleared, *heads
        state.drawn_for = None
        line = act.stale_line(ctx, state, sentence_no, f"the source is now {state.settings.label()}")
        return None, line, estimate, "", *cleared, *heads

    def estimate_cost(
        kind, n_heads, layers, base_url, model, api_key, mode, relations, floor, score_max, advanced, llm_heads,
        answer, top_k, llm_device, llm_precision, max_sentences, state: Session,
    ):  # fmt: skip
        """What scoring the corpus (or its first max_sentences) with this source would cost."""
        remember(kind, n_heads, layers, base_url, model, api_key, mode, relations, floor, score_max, advanced,
                 llm_heads, answer, top_k, llm_device, llm_precision, state)  # fmt: skip
        state.estimated_for = state.settings
        return act.estimate_cost(ctx, state, max_sentences)

    def score_corpus(
        kind, n_heads, layers, base_url, model, api_key, mode, relations, floor, score_max, advanced, llm_heads,
        answer, top_k, llm_device, llm_precision, max_sentences, state: Session,
    ):  # fmt: skip
        """Score the corpus (or its first max_sentences) with the chosen source, streaming progress:
        done, cached, failed, requests and tokens. Ends with the heatmap of the first scored sentence and
        its number."""
        remember(kind, n_heads, layers, base_url, model, api_key, mode, relations, floor, score_max, advanced,
                 llm_heads, answer, top_k, llm_device, llm_precision, state)  # fmt: skip
        yield from act.score_corpus(ctx, state, max_sentences)

    def show_attention(sentence_no, head, row_scale, state: Session):
        """The heatmap of one sentence and head for the session's source (scored, or computed now for
        free sources); row_scale colours each row by its own largest weight (hover shows the weights)."""
        fig, text, heads = act.heatmap(ctx, state, sentence_no, head, bool(row_scale))
        return fig, text, gr.update(choices=heads, value=min(int(head or 0), len(heads) - 1))

    def step_sentence(sentence_no, head, row_scale, delta: int, state: Session):
        n = len(ctx.corpus_of(state).sentences)
        idx = (act.clamp(sentence_no, n) + delta) % n
        return idx, *show_attention(idx, head, row_scale, state)

    def compare_sources(sentence_no, head, other, state: Session):
        """This source (A) and another (B) on the same sentence: side by side, and A − B."""
        return act.compare(ctx, state, sentence_no, head, other)

    def export_matrix(sentence_no, fmt, state: Session, request: gr.Request):
        """Download one sentence's matrix (all heads) as CSV or JSON."""
        return act.export(ctx, state, sentence_no, fmt, request)

    # --- wiring -------------------------------------------------------------------------------
    heads_stale, heads_cleared = heads_panel.build(ctx, session, sentence, row_scale, kind, n_heads, llm_heads)
    tab.stale = [sentence, heatmap, sentence_box, estimate, progress, *panels, *heads_stale]
    private = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
    # the public /set_source endpoint; every field's change also clears what was drawn for the old source
    kind.change(set_source, [*tab.source_inputs, session], None, api_name="set_source", queue=False,
                show_progress="hidden")  # fmt: skip
    for comp in tab.source_inputs:
        comp.change(source_changed, [*tab.source_inputs, sentence, session], tab.stale[1:], **private)
    source_form.wire(form)
    max_sentences.change(lambda: "", None, estimate, **private)
    estimate_btn.click(estimate_cost, [*tab.source_inputs, max_sentences, session], estimate, api_name="estimate_cost")
    score_btn.click(
        score_corpus,
        [*tab.source_inputs, max_sentences, session],
        [progress, heatmap, sentence_box, head, sentence],
        api_name="score_corpus",
        concurrency_limit=None,  # not Gradio's shared slots: the app's lanes bound network and local passes
        show_progress="minimal",
    )
    shown = [sentence, head, row_scale, session]
    drawn = [heatmap, sentence_box, head]

    def form_first(trigger):
        """The form as the page shows it goes into the session before a draw: the change event of a field
        just edited may reach the server after this click (API clients call the draw alone)."""
        return trigger(remember, [*tab.source_inputs, session], None, **private)

    tab.form_first = form_first  # the Train tab's Start too (app.py passes it on)

    form_first(show_btn.click).then(show_attention, shown, drawn, api_name="show_attention")
    form_first(sentence.submit).then(show_attention, shown, drawn, api_visibility="private")
    # a typed number redraws at once (the last one typed wins): the box and the plot always agree
    sentence.input(show_attention, shown, drawn, api_visibility="private", trigger_mode="always_last")
    head.input(show_attention, shown, drawn, api_visibility="private")
    row_scale.input(show_attention, shown, drawn, api_visibility="private")
    for btn, delta in ((prev_btn, -1), (next_btn, 1)):
        form_first(btn.click).then(
            lambda s, h, r, st, d=delta: step_sentence(s, h, r, d, st), shown, [sentence, *drawn],
            api_visibility="private",
        )  # fmt: skip
    sentence.change(lambda: cleared, None, panels, **private)
    for comp in (head, other):
        comp.change(lambda: cleared[:3], None, panels[:3], **private)
    fmt.change(lambda: cleared[3:], None, panels[3:], **private)
    form_first(compare_btn.click).then(
        compare_sources, [sentence, head, other, session], [side, diff, compare_msg], api_name="compare_sources"
    )
    form_first(export_btn.click).then(
        export_matrix, [sentence, fmt, session], [export_file, export_msg], api_name="export_matrix"
    )

    picker_timer = gr.Timer(2.0)
    picker_timer.tick(
        act.follow_local_model, [kind, session], [kind, picker_timer], api_visibility="private", show_progress="hidden"
    )
    return tab
