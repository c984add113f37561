"""The data endpoints: plain JSON beside the figure endpoints (``/attention_data``, ``/metrics_data``,
``/runs_data``, ``/generate_data``), for scripts that want numbers, not HTML or plotly JSON.

They need the session (its corpus, source, scored matrices, owner), so each is an event listener of
a hidden button with the session's ``gr.State`` as an input, and hidden inputs whose values are
the defaults a client may leave out. Records are built by ``llmcomp.app.data_export``; this module
only wires. Errors come back as ``gr.Error`` with their one line.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from llmcomp.app.attention_view import head_labels, matrix_for, other_matrix
from llmcomp.app.data_export import attention_record, choose_heads, generation_record, metrics_record, run_record
from llmcomp.app.generation import corpora_at_hand, generate_from_run
from llmcomp.app.jobs import one_line
from llmcomp.app.sources import SourceSettings
from llmcomp.generation.config import GenerateConfig
from llmcomp.ui.common import USER_ERRORS, AppContext, UserError, owner_of
from llmcomp.ui.runs import find_run, visible_runs
from llmcomp.ui.state import Session


def _fail(e: BaseException) -> gr.Error:
    return gr.Error(one_line(e), print_exception=False)


def build(ctx: AppContext, session: gr.State) -> None:
    """Hidden components and the four data endpoints (nothing shows on the page)."""
    defaults = GenerateConfig()
    with gr.Column(visible=False):
        sentence_no = gr.Number(0, precision=0, label="sentence_no")
        heads = gr.Textbox("all", label="heads")
        kind = gr.Textbox("", label="kind")
        run = gr.Textbox("", label="run")
        prompt = gr.Textbox("", label="prompt")
        temperature = gr.Number(defaults.temperature, label="temperature")
        top_k = gr.Number(defaults.top_k, precision=0, label="top_k")
        max_words = gr.Number(defaults.max_words, precision=0, label="max_words")
        seed = gr.Number(-1, precision=0, label="seed")
        attention_out = gr.JSON(label="attention: words, head labels, matrices[head][query][key] (rows sum to 1)")
        metrics_out = gr.JSON(label="metrics: the run's name and its records, one per logged step")
        runs_out = gr.JSON(label="runs: one summary record per run you can see, oldest first")
        generation_out = gr.JSON(
            label="generation: text, words, each word's probability and the 5 likeliest, attention, copy check"
        )
        buttons = [gr.Button(visible=False) for _ in range(4)]

    def attention_data(sentence_no=0, heads="all", kind="", state: Session = None) -> dict[str, Any]:
        """One corpus sentence's attention from this session's source (scored or computed now when free),
        or, with ``kind``, from that free source for this call only; ``heads``: all, a number or label,
        or several separated by commas."""
        corpus = ctx.corpus_of(state)
        try:
            idx = int(sentence_no or 0)
            if not 0 <= idx < len(corpus.sentences):
                raise UserError(f"sentence_no {idx} is out of range: {corpus.name} has {len(corpus.sentences)}")
            words = corpus.sentences[idx]
            kind = str(kind or "").strip()
            if kind and kind != state.settings.kind:
                m, desc = other_matrix(kind, words, ctx.cache(), ctx.keys(state))
                settings = SourceSettings(kind=kind, n_heads=m.shape[0])
            else:
                settings = state.settings
                m, desc = matrix_for(settings, state.scored, words, idx, ctx.keys(state), ctx.cache())
            if m.shape[0] == 0:
                raise UserError("the learned source supplies no attention; its model learns its own")
            labels = [label for label, _ in head_labels(settings, m.shape[0])]
            chosen = choose_heads(heads, m.shape[0], labels)
            spec = settings.description()
        except (*USER_ERRORS, ValueError) as e:
            raise _fail(e) from None
        return attention_record(m, words, labels, chosen, desc, spec, corpus.name, idx)

    def metrics_data(run="", state: Session = None, request: gr.Request = None) -> dict[str, Any]:
        """A run's metrics as records, by run name (empty: your latest run)."""
        return metrics_record(_run(run, state, request))

    def runs_data(state: Session = None, request: gr.Request = None) -> list[dict[str, Any]]:
        """Every run you can see, summarised."""
        return [run_record(r) for r in visible_runs(ctx, owner_of(state, request))]

    def generate_data(
        prompt="",
        run="",
        temperature=None,
        top_k=None,
        max_words=None,
        seed=-1,
        state: Session = None,
        request: gr.Request = None,
    ) -> dict[str, Any]:
        """Generate from a run (empty: your latest) and return the data: words, probabilities, attention."""
        target = _run(run, state, request)
        config = GenerateConfig(
            max_words=int(defaults.max_words if max_words is None else max_words),
            temperature=float(defaults.temperature if temperature is None else temperature),
            top_k=int(defaults.top_k if top_k is None else top_k),
            seed=None if seed is None or int(seed) < 0 else int(seed),
        )
        corpora = corpora_at_hand(state.corpus, ctx.bundled, ctx.bundled_names())
        try:
            outcome = generate_from_run(target, str(prompt or ""), config, ctx.keys(state), ctx.cache(), corpora)
        except USER_ERRORS as e:
            raise _fail(e) from None
        return generation_record(outcome)

    def _run(name, state: Session, request: gr.Request | None):
        owner = owner_of(state, request)
        try:
            if not name:
                runs = visible_runs(ctx, owner)
                if not runs:
                    raise UserError("no trained run yet: train one first")
                return runs[-1]
            return find_run(ctx, owner, str(name))
        except USER_ERRORS as e:
            raise _fail(e) from None

    wiring = [
        (attention_data, [sentence_no, heads, kind, session], attention_out, "attention_data"),
        (metrics_data, [run, session], metrics_out, "metrics_data"),
        (runs_data, [session], runs_out, "runs_data"),
        (generate_data, [prompt, run, temperature, top_k, max_words, seed, session], generation_out, "generate_data"),
    ]
    for button, (fn, inputs, output, name) in zip(buttons, wiring, strict=True):
        button.click(fn, inputs, output, api_name=name)
