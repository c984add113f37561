"""The Attention tab's source form: the fields of each kind of source, and which of them show.

Layout only. The fields' defaults are ``SourceSettings``' (the sources' config dataclasses, through the
app layer); what the fields mean is ``SourceSettings.description()``'s. The devices offered are ``auto``
and ``cpu`` until the page loads, then what this machine has (``devices.available_devices``, which
imports torch: never while the app is built). A device typed through the API that the machine lacks
is refused in one line when the source is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from llmcomp.app.keys import owner_endpoint
from llmcomp.app.local_status import DefaultSource
from llmcomp.app.sources import SourceSettings
from llmcomp.attention.openai_config import safe_url
from llmcomp.attention.registry import ANSWERS, LABELS, MODES, RELATIONS
from llmcomp.devices import AUTO, PRECISIONS, available_devices
from llmcomp.ui import attention_actions as act

KIND_CHOICES: list[tuple[str, str]] = [(label, kind) for kind, label in LABELS.items()]
D = SourceSettings()  # the form's defaults
#: the devices offered before the page has loaded (no torch needed to know these exist)
FIRST_DEVICES = [AUTO, "cpu"]
SPARSE_INFO = "sparse: each word names its top words, the rest get the floor (sentence mode only)"


@dataclass
class SourceForm:
    kind: gr.Dropdown
    n_heads: gr.Slider
    layers: gr.Textbox
    base_url: gr.Textbox
    model: gr.Textbox
    api_key: gr.Textbox
    mode: gr.Radio
    relations: gr.CheckboxGroup
    floor: gr.Number
    score_max: gr.Number
    advanced: gr.Textbox
    llm_heads: gr.Textbox
    answer: gr.Radio
    top_k: gr.Number
    llm_device: gr.Dropdown
    llm_precision: gr.Radio
    local_box: gr.Group
    openai_box: gr.Group
    local_advanced: gr.Group

    @property
    def inputs(self) -> list:
        """Every field, in the order of the handlers' parameters (``/set_source``)."""
        return [self.kind, self.n_heads, self.layers, self.base_url, self.model, self.api_key, self.mode,
                self.relations, self.floor, self.score_max, self.advanced, self.llm_heads, self.answer, self.top_k,
                self.llm_device, self.llm_precision]  # fmt: skip

    @property
    def form(self) -> list:
        """The fields a reload restores: every one but the API key."""
        return [c for c in self.inputs if c is not self.api_key]

    @staticmethod
    def form_values(s: SourceSettings) -> list:
        """``form``'s values for settings ``s`` (a Base URL without whatever credentials it held)."""
        return [s.kind, s.n_heads, s.layers, safe_url(s.base_url) if s.base_url else "", s.model, s.mode,
                list(s.relations), s.floor, s.score_max, s.advanced, s.llm_heads, s.answer, s.top_k, s.llm_device,
                s.llm_precision]  # fmt: skip


def build(start: DefaultSource) -> SourceForm:
    """The form's components, as they first show for the kind ``start``."""
    own_base, own_model = owner_endpoint()
    with gr.Row():
        kind = gr.Dropdown(
            KIND_CHOICES, value=start.kind, label="Attention source", info=start.picker_info(), elem_id="source-kind",
            scale=2,
        )  # fmt: skip
        n_heads = gr.Slider(1, 9, value=1, step=1, label="Heads", elem_id="source-heads", scale=1)
    with gr.Group(visible=start.kind == "local") as local_box:  # as toggle() shows it for the start kind
        layers = gr.Textbox(
            "all", label="LLM layers to average", info="all, last-8, first-4, 10-20 or 3,7,11", elem_id="local-layers"
        )
    with gr.Group(visible=False) as openai_box:
        with gr.Row():
            # every browser receives the placeholder: the owner's URL without user:password@ or ?api-key=
            base_url = gr.Textbox("", label="Base URL", placeholder=safe_url(own_base), elem_id="openai-base-url")
            model = gr.Textbox("", label="Model", placeholder=own_model, elem_id="openai-model")
        api_key = gr.Textbox(
            "", label="API key", type="password", placeholder="kept in this browser session only; never saved or logged",
            elem_id="openai-key",
        )  # fmt: skip
        with gr.Row():
            mode = gr.Radio(list(MODES), value=D.mode, label="Scoring mode", elem_id="openai-mode")
            relations = gr.CheckboxGroup(
                list(RELATIONS), value=list(D.relations), label="Heads (one relation each)", elem_id="openai-relations"
            )
        with gr.Row():
            answer = gr.Radio(
                list(ANSWERS), value=D.answer, label="Answer", info=SPARSE_INFO, visible=D.mode == "sentence",
                elem_id="openai-answer",
            )  # fmt: skip
            top_k = gr.Number(
                D.top_k, precision=0, minimum=1, maximum=64, label="Words named per word (sparse)",
                visible=D.answer == "sparse", elem_id="openai-top-k",
            )  # fmt: skip
        with gr.Accordion("Scoring scale", open=False, elem_id="openai-scale"), gr.Row():
            floor = gr.Number(
                D.floor, minimum=0, label="Floor", info="added to every allowed cell before rows are normalised",
                elem_id="openai-floor",
            )  # fmt: skip
            score_max = gr.Number(
                D.score_max, precision=0, minimum=1, maximum=100, label="Highest score",
                info="the model answers integers 0..this", elem_id="openai-score-max",
            )  # fmt: skip
    with gr.Accordion("Advanced options", open=False, elem_id="source-advanced-box"):
        with gr.Group(visible=start.kind == "local") as local_advanced:
            llm_heads = gr.Textbox(
                "", label="LLM heads, one supplied head each (layer.head)",
                info="e.g. 21.4,23.5; empty: the LLM layers' heads averaged into Heads groups", elem_id="local-heads",
            )  # fmt: skip
            with gr.Row():
                llm_device = gr.Dropdown(
                    FIRST_DEVICES, value=D.llm_device, label="LLM device", allow_custom_value=True,
                    info="where the local LLM runs: auto takes a GPU where there is one", elem_id="local-device",
                )  # fmt: skip
                llm_precision = gr.Radio(
                    list(PRECISIONS), value=D.llm_precision, label="LLM precision",
                    info="fp32 by default; bf16 on the CPU (about 2x faster with AVX512_BF16) or a CUDA GPU, "
                    "matrices ~1e-2 off fp32; fp16 on a CUDA GPU only", elem_id="local-precision",
                )  # fmt: skip
        advanced = gr.Textbox(
            "", lines=2, label="Other options of this source, option=value, one per line",
            info="the options each source takes are listed in docs/sources.md", elem_id="source-advanced",
        )  # fmt: skip
    return SourceForm(
        kind, n_heads, layers, base_url, model, api_key, mode, relations, floor, score_max, advanced, llm_heads, answer,
        top_k, llm_device, llm_precision, local_box, openai_box, local_advanced,
    )  # fmt: skip


def wire(form: SourceForm) -> None:
    """Show each kind's fields; the answer only in sentence mode (another mode asks for dense answers), and
    its top-k only for sparse ones."""
    private = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}

    def toggle(kind):
        return (
            gr.update(visible=kind == "local"),
            gr.update(visible=kind == "openai"),
            gr.update(visible=kind != "openai", label="Learned heads" if kind == "learned" else "Heads"),
            gr.update(info=act.advanced_hint(kind)),
            gr.update(visible=kind == "local"),
        )

    def mode_changed(mode):
        sentence = mode == "sentence"
        return gr.update(visible=sentence) if sentence else gr.update(visible=False, value="dense")

    f = form
    f.kind.change(toggle, f.kind, [f.local_box, f.openai_box, f.n_heads, f.advanced, f.local_advanced], **private)
    f.mode.change(mode_changed, f.mode, f.answer, **private)
    f.answer.change(lambda a: gr.update(visible=a == "sparse"), f.answer, f.top_k, **private)


def device_choices() -> dict:
    """The LLM device field's choices once the page is up: auto and what this machine has."""
    devices = available_devices()
    # no update where nothing is new: an update is a change event, and a change of a source field clears what
    # was drawn, so a late one (a busy server) would take away a score the visitor just started
    return gr.skip() if devices == FIRST_DEVICES else gr.update(choices=devices)
