"""Generate tab: sample from a trained model and show the attention that produced each word."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from llmcomp.app.generation import PROBABILITY_COLUMNS, corpora_at_hand, generate_from_run, probability_rows
from llmcomp.generation.config import GenerateConfig
from llmcomp.plots import attention_heatmap
from llmcomp.ui.common import USER_ERRORS, AppContext, UserError, failed, note, owner_of
from llmcomp.ui.runs import find_run, run_choices, visible_runs
from llmcomp.ui.state import GenerationView, HeadView, Session


@dataclass
class GenerateTab:
    checkpoint: gr.Dropdown
    list_models: Callable[..., Any]  # handler: the runs this browser may generate from


def build(ctx: AppContext, session: gr.State) -> GenerateTab:
    with gr.Row():
        checkpoint = gr.Dropdown(
            [], label="Model (a trained run)", elem_id="gen-checkpoint", allow_custom_value=True, scale=4
        )
        refresh = gr.Button("↻", scale=0, min_width=50, elem_id="gen-refresh")
    prompt = gr.Textbox(label="Prompt", placeholder="e.g. my mother", elem_id="gen-prompt")
    with gr.Row():
        defaults = GenerateConfig()
        temperature = gr.Slider(
            0.0,
            2.0,
            value=defaults.temperature,
            step=0.05,
            label="Temperature (0 = most likely word)",
            elem_id="gen-temperature",
        )
        top_k = gr.Slider(0, 100, value=defaults.top_k, step=1, label="Top-k (0 = all words)")
        max_words = gr.Slider(
            1, 60, value=defaults.max_words, step=1, label="Length (words at most)", elem_id="gen-length"
        )
        seed = gr.Number(-1, precision=0, minimum=-1, label="Seed (-1 = random)")
    gen_btn = gr.Button("Generate", variant="primary", elem_id="gen-btn")
    text = gr.Textbox(label="Generated text", interactive=False, elem_id="gen-text")
    notes = gr.HTML(
        label="Notes: why it stopped, unknown words, a copied training sentence", show_label=False, elem_id="gen-notes"
    )
    probs = gr.Dataframe(
        headers=PROBABILITY_COLUMNS,
        label="Next-word probabilities: each sampled word, its probability and the 5 likeliest (as sampled from)",
        elem_id="gen-probs",
        interactive=False,
        wrap=True,
    )
    head = gr.Dropdown([], label="Head", elem_id="gen-head", allow_custom_value=True)
    heatmap = gr.Plot(
        label="Attention that produced the text (rows marked ▸ are generated words)", elem_id="gen-heatmap"
    )
    outputs = [text, notes, heatmap, head, probs]

    def list_models(state: Session, request: gr.Request):
        """The runs this session may use, newest first; the run picked last stays selected while listed."""
        runs = visible_runs(ctx, owner_of(state, request))
        choices = run_choices(runs)
        picked = state.generation.run if state.generation is not None else ""
        value = picked if picked in {v for _, v in choices} else choices[0][1] if choices else None
        return gr.update(choices=choices, value=value)

    def generate(
        checkpoint,
        prompt,
        temperature,
        top_k,
        max_words,
        seed=-1,
        state: Session = None,
        request: gr.Request = None,
        progress=gr.Progress(),  # noqa: B008 - gradio's way of asking for a progress tracker
    ):
        """Generate from a trained run; returns the text, notes (unknown words, why it stopped, a copied
        training sentence), the attention heatmap of the first head, the list of heads and the
        next-word probabilities. An error clears the previous generation's outputs."""
        owner, keys = owner_of(state, request), ctx.keys(state)
        try:
            if not checkpoint:
                runs = visible_runs(ctx, owner)
                if not runs:
                    raise UserError("no trained model yet: train one in the Train tab first")
                checkpoint = runs[-1].name
            run = find_run(ctx, owner, str(checkpoint))
            config = GenerateConfig(
                max_words=int(max_words),
                temperature=float(temperature),
                top_k=int(top_k),
                seed=None if seed is None or int(seed) < 0 else int(seed),
            )
            corpora = corpora_at_hand(state.corpus, ctx.bundled, ctx.bundled_names())
            outcome = generate_from_run(
                run,
                str(prompt or ""),
                config,
                keys,
                ctx.cache(),
                corpora,
                progress=lambda done, total: progress((done, total), desc="generating"),
            )
        except USER_ERRORS as e:
            state.generation = None
            return "", failed(e), None, gr.update(choices=[], value=None), None
        gen, learned = outcome.generation, outcome.learned
        words, n_prompt = gen.all_words, len(gen.prompt_words)
        views: dict[str, HeadView] = {}
        for h in range(gen.attention.shape[0]):
            views[f"supplied head {h} ({outcome.source_kind})"] = HeadView(gen.attention[h], words, n_prompt)
        if learned is not None:
            for h in range(learned.shape[0]):
                views[f"learned head {h} (last layer)"] = HeadView(learned[h], ["<s>", *words], n_prompt + 1)
        state.generation = GenerationView(gen.text, views, run=outcome.run)
        first = next(iter(views))
        shown = "".join(note(m, kind) for m, kind in outcome.messages())
        table = probability_rows(gen)
        return gen.text, shown, _figure(state, first), gr.update(choices=list(views), value=first), table

    def clear(checkpoint, state: Session):
        """Another model chosen: the last generation's outputs belong to the old one."""
        state.generation = GenerationView("", {}, run=str(checkpoint or ""))
        return "", "", None, gr.update(choices=[], value=None), None

    def show_generation_head(head, state: Session):
        """Redraw the last generation's heatmap for another head."""
        if state.generation is None or head not in state.generation.heads:
            return gr.skip()
        return _figure(state, head)

    def _figure(state: Session, head: str):
        view = state.generation.heads[head]
        return attention_heatmap(view.matrix, view.words, title=head, generated_from=view.generated_from)

    inputs = [checkpoint, prompt, temperature, top_k, max_words, seed, session]
    gen_btn.click(generate, inputs, outputs, api_name="generate")
    prompt.submit(generate, inputs, outputs, api_visibility="private")
    checkpoint.input(clear, [checkpoint, session], outputs, api_visibility="private")
    head.input(show_generation_head, [head, session], heatmap, api_visibility="private")
    refresh.click(list_models, session, checkpoint, api_name="list_models")
    return GenerateTab(checkpoint, list_models)
