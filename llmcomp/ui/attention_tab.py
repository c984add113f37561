"""Attention tab: choose a source, see what scoring costs, score the corpus with live counts, and look
at the matrices (one head, two sources side by side, their difference), with CSV/JSON downloads."""

from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import gradio as gr

from llmcomp.plots import attention_heatmap, difference_heatmap, matrix_to_csv, matrix_to_json, side_by_side
from llmcomp.text.tokenizer import detokenize
from llmcomp.ui import sources
from llmcomp.ui.common import AppContext, error, log, note, progress_bar
from llmcomp.ui.sources import KIND_CHOICES, MODES, OTHER_CHOICES, RELATIONS, USER_ERRORS, one_line
from llmcomp.ui.state import Scored, Session, SourceSettings

if TYPE_CHECKING:
    import torch

    from llmcomp.attention.base import ScoreStats

POLL_S = 0.3


@dataclass
class AttentionTab:
    kind: gr.Dropdown
    n_heads: gr.Slider
    layers: gr.Textbox
    base_url: gr.Textbox
    model: gr.Textbox
    api_key: gr.Textbox
    mode: gr.Radio
    relations: gr.CheckboxGroup
    local_box: gr.Group
    openai_box: gr.Group
    estimate: gr.HTML
    progress: gr.HTML
    sentence: gr.Number
    head: gr.Dropdown
    heatmap: gr.Plot

    @property
    def source_inputs(self) -> list:
        return [
            self.kind,
            self.n_heads,
            self.layers,
            self.base_url,
            self.model,
            self.api_key,
            self.mode,
            self.relations,
        ]


def read_settings(kind, n_heads, layers, base_url, model, mode, relations) -> SourceSettings:
    return SourceSettings(
        kind=str(kind or "local"),
        n_heads=max(1, int(n_heads or 1)),
        layers=str(layers or "all"),
        base_url=str(base_url or ""),
        model=str(model or ""),
        mode=str(mode or "sentence"),
        relations=tuple(relations or ()),
    )


def counts_html(stats: ScoreStats, total: int, elapsed: float, phase: str) -> str:
    done = stats.done
    tokens = stats.prompt_tokens + stats.completion_tokens
    label = f"{phase}: {done:,} of {total:,} sentences · {elapsed:.0f} s"
    return progress_bar(done, total, label) + (
        f'<div class="llmc-counts" id="score-counts"><span>done <b>{done:,}</b></span>'
        f"<span>cached <b>{stats.cached:,}</b></span><span>failed <b>{stats.failed:,}</b></span>"
        f"<span>requests <b>{stats.requests:,}</b></span><span>tokens <b>{tokens:,}</b></span></div>"
    )


def head_names(settings: SourceSettings, n: int) -> list[tuple[str, int]]:
    if settings.kind == "openai" and len(settings.relations) == n:
        return [(f"{i} · {r}", i) for i, r in enumerate(settings.relations)]
    return [(f"head {i}", i) for i in range(max(n, 1))]


def sentence_html(words: list[str], idx: int, total: int, extra: str = "") -> str:
    return (
        f'<div class="llmc-sentence"><b>Sentence {idx} of {total - 1}:</b> {html.escape(detokenize(words))}'
        f"{' · ' + html.escape(extra) if extra else ''}</div>"
    )


def build(ctx: AppContext, session: gr.State) -> AttentionTab:
    own_base, own_model = sources.owner_endpoint()
    gr.Markdown(
        "Choose where the attention comes from. The **local LLM** runs offline on this machine; an "
        "**OpenAI-compatible** server costs requests (see the estimate first); **baselines** are the yardsticks "
        "every LLM source must beat."
    )
    with gr.Row():
        kind = gr.Dropdown(KIND_CHOICES, value="local", label="Attention source", elem_id="source-kind", scale=2)
        n_heads = gr.Slider(1, 9, value=1, step=1, label="Heads", elem_id="source-heads", scale=1)
    with gr.Group(visible=True) as local_box:
        layers = gr.Textbox(
            "all", label="LLM layers to average", info="all, last-8, first-4, 10-20 or 3,7,11", elem_id="local-layers"
        )
    with gr.Group(visible=False) as openai_box:
        with gr.Row():
            base_url = gr.Textbox("", label="Base URL", placeholder=own_base, elem_id="openai-base-url")
            model = gr.Textbox("", label="Model", placeholder=own_model, elem_id="openai-model")
        api_key = gr.Textbox(
            "",
            label="API key",
            type="password",
            placeholder="kept in this browser session only; never saved or logged",
            elem_id="openai-key",
        )
        with gr.Row():
            mode = gr.Radio(list(MODES), value="sentence", label="Scoring mode", elem_id="openai-mode")
            relations = gr.CheckboxGroup(
                list(RELATIONS), value=["meaning"], label="Heads (one relation each)", elem_id="openai-relations"
            )
    with gr.Row():
        max_sentences = gr.Number(
            0, precision=0, minimum=0, label="Sentences to score (0 = the whole corpus)", elem_id="max-sentences"
        )
        estimate_btn = gr.Button("Estimate cost", elem_id="estimate-btn")
        score_btn = gr.Button("Score corpus", variant="primary", elem_id="score-btn")
    estimate = gr.HTML(elem_id="estimate")
    progress = gr.HTML(elem_id="score-progress")

    gr.Markdown("### Browse the matrices")
    with gr.Row():
        prev_btn = gr.Button("◀", scale=0, min_width=50, elem_id="prev-sentence")
        sentence = gr.Number(0, precision=0, minimum=0, label="Sentence #", elem_id="sentence-no", scale=1)
        next_btn = gr.Button("▶", scale=0, min_width=50, elem_id="next-sentence")
        head = gr.Dropdown(
            [("head 0", 0)], value=0, label="Head", elem_id="head-select", allow_custom_value=True, scale=1
        )
        show_btn = gr.Button("Show", elem_id="show-btn", scale=0, min_width=80)
    sentence_box = gr.HTML(elem_id="sentence-text")
    heatmap = gr.Plot(label="Attention (row = word, column = word it attends to)", elem_id="attention-heatmap")
    with gr.Accordion("Compare with another source, and download", open=False, elem_id="compare-accordion"):
        with gr.Row():
            other = gr.Dropdown(OTHER_CHOICES, value="uniform", label="Other source (B)", elem_id="other-source")
            compare_btn = gr.Button("Side by side and difference", elem_id="compare-btn")
        compare_msg = gr.HTML()
        side = gr.Plot(label="A (this source) and B", elem_id="side-by-side")
        diff = gr.Plot(label="A − B", elem_id="difference")
        with gr.Row():
            fmt = gr.Radio(["csv", "json"], value="csv", label="Format", elem_id="export-format")
            export_btn = gr.Button("Download this sentence's matrix", elem_id="export-btn")
        export_file = gr.File(label="Matrix file", elem_id="export-file")
        export_msg = gr.HTML()

    tab = AttentionTab(
        kind, n_heads, layers, base_url, model, api_key, mode, relations, local_box, openai_box,
        estimate, progress, sentence, head, heatmap,
    )  # fmt: skip

    # --- handlers ---------------------------------------------------------------------------
    def remember(kind, n_heads, layers, base_url, model, api_key, mode, relations, state: Session):
        state.settings = read_settings(kind, n_heads, layers, base_url, model, mode, relations)
        state.api_key = str(api_key or "")

    def set_source(kind, n_heads, layers, base_url, model, api_key, mode, relations, state: Session):
        """Choose this session's attention source (used by show_attention, start_training, ...)."""
        remember(kind, n_heads, layers, base_url, model, api_key, mode, relations, state)

    def toggle(kind):
        return (
            gr.update(visible=kind == "local"),
            gr.update(visible=kind == "openai"),
            gr.update(visible=kind != "openai", label="Learned heads" if kind == "learned" else "Heads"),
        )

    def estimate_cost(kind, n_heads, layers, base_url, model, api_key, mode, relations, max_sentences, state: Session):
        """What scoring the corpus (or its first max_sentences) with this source would cost."""
        remember(kind, n_heads, layers, base_url, model, api_key, mode, relations, state)
        corpus = ctx.corpus_of(state)
        sents = _subset(corpus.sentences, max_sentences)
        try:
            built = sources.build(state.settings, state.api_key, ctx.cache(), ctx.budget, state.owner_key_usage)
        except USER_ERRORS as e:
            return error(one_line(e))
        src = built.source
        try:
            if state.settings.kind == "openai":
                est = src.estimate(sents)
                text = str(est)
                if built.owner_key:
                    text += f"; {ctx.budget.describe(state.owner_key_usage)}"
                    try:
                        ctx.budget.check(state.owner_key_usage, est.requests, est.prompt_tokens + est.completion_tokens)
                    except USER_ERRORS as e:
                        return error(one_line(e))
                else:
                    text += "; billed to the key you entered" if state.api_key else ""
                return note(text, "info")
            if state.settings.kind == "local":
                cache = ctx.cache()
                hits = sum(1 for s in sents if src.cache_key(s) in cache)
                return note(
                    f"local LLM, offline and free: {len(sents) - hits:,} of {len(sents):,} sentences to score "
                    f"({hits:,} cached); roughly 0.1 to 1 s per sentence on a CPU; model {_model_state()}",
                    "info",
                )
            if state.settings.kind == "learned":
                return note(
                    "the learned source supplies no attention (the model learns its own): nothing to score", "info"
                )
            return note(f"{src.describe()}: computed in milliseconds on this machine, free", "info")
        except USER_ERRORS as e:
            return error(one_line(e))
        finally:
            src.close()

    def score_corpus(kind, n_heads, layers, base_url, model, api_key, mode, relations, max_sentences, state: Session):
        """Score the corpus (or its first max_sentences) with the chosen source, streaming progress:
        done, cached, failed, requests and tokens. Ends with the heatmap of the first sentence."""
        remember(kind, n_heads, layers, base_url, model, api_key, mode, relations, state)
        settings = state.settings
        corpus = ctx.corpus_of(state)
        sents = _subset(corpus.sentences, max_sentences)
        try:
            built = sources.build(settings, state.api_key, ctx.cache(), ctx.budget, state.owner_key_usage)
        except USER_ERRORS as e:
            yield error(one_line(e)), gr.skip(), gr.skip(), gr.skip()
            return
        if built.owner_key:
            try:
                est = built.source.estimate(sents)
                ctx.budget.check(state.owner_key_usage, est.requests, est.prompt_tokens + est.completion_tokens)
            except USER_ERRORS as e:
                built.source.close()
                yield error(one_line(e)), gr.skip(), gr.skip(), gr.skip()
                return
        from llmcomp.attention.base import ScoreStats

        src = built.source
        live = ScoreStats(sentences=len(sents))
        lock = threading.Lock()
        outcome: dict[str, Any] = {}

        def progress_cb(stats: ScoreStats) -> None:
            with lock:
                for k, v in vars(stats).items():
                    setattr(live, k, v)

        def work() -> None:
            try:
                outcome["result"] = src.score_many(sents, progress=progress_cb)
            except USER_ERRORS as e:
                outcome["error"] = one_line(e)
                outcome["stats"] = getattr(e, "stats", None)
            except Exception as e:  # noqa: BLE001 - reported as one line, logged in full
                log.exception("scoring failed")
                outcome["error"] = (
                    f"scoring failed unexpectedly ({type(e).__name__}: {one_line(e)}); see the server log"
                )

        t0 = time.time()
        worker = threading.Thread(target=work, name="llmcomp-score", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                with lock:
                    snap = replace(live)
                phase = "scoring"
                if settings.kind == "local" and snap.done == 0 and _model_state() == "loading":
                    phase = "loading the local model (first use only)"
                yield counts_html(snap, len(sents), time.time() - t0, phase), gr.skip(), gr.skip(), gr.skip()
                worker.join(POLL_S)
        finally:
            worker.join()
            charge_owner_key(ctx, built, src, state)
            src.close()
        if "error" in outcome:
            stats = outcome.get("stats") or live
            yield (
                counts_html(stats, len(sents), time.time() - t0, "stopped") + error(outcome["error"]),
                gr.skip(),
                gr.skip(),
                gr.skip(),
            )
            return
        result = outcome["result"]
        matrices: list[torch.Tensor | None] = [None] * len(corpus.sentences)
        matrices[: len(sents)] = result.matrices
        state.scored = Scored(settings, src.describe(), matrices, dict(result.failures), result.stats)
        summary = counts_html(result.stats, len(sents), time.time() - t0, "finished")
        if result.failures:
            first = next(iter(result.failures.items()))
            summary += note(f"{len(result.failures)} sentence(s) failed; first #{first[0]}: {first[1][:200]}", "warn")
        else:
            summary += note(f"scored {len(sents):,} sentences with {src.describe()}", "ok")
        first_ok = next((i for i, m in enumerate(matrices) if m is not None), 0)
        fig, text, heads = _heatmap(state, first_ok, 0)
        yield summary, fig, text, gr.update(choices=heads, value=0)

    def show_attention(sentence_no, head, state: Session):
        """The heatmap of one sentence and head for the session's source (scored, or computed now for
        free sources)."""
        fig, text, heads = _heatmap(state, sentence_no, head)
        return fig, text, gr.update(choices=heads, value=min(int(head or 0), len(heads) - 1))

    def _heatmap(state: Session, sentence_no, head) -> tuple[Any, str, list]:
        corpus = ctx.corpus_of(state)
        idx = _clamp(sentence_no, len(corpus.sentences))
        words = corpus.sentences[idx]
        try:
            m, desc = _matrix(state, idx)
        except USER_ERRORS as e:
            return gr.skip(), sentence_html(words, idx, len(corpus.sentences)) + error(one_line(e)), [("head 0", 0)]
        heads = head_names(state.settings, m.shape[0])
        if m.shape[0] == 0:
            msg = (
                "the learned source supplies no attention: the model learns its own. Train it, then see the learned "
                "heads in the Generate tab"
            )
            return gr.skip(), sentence_html(words, idx, len(corpus.sentences)) + note(msg, "info"), heads
        h = min(max(int(head or 0), 0), m.shape[0] - 1)
        fig = attention_heatmap(m[h], words, title=f"{desc} · {heads[h][0]}")
        return fig, sentence_html(words, idx, len(corpus.sentences), desc), heads

    def _matrix(state: Session, idx: int) -> tuple[torch.Tensor, str]:
        """The scored matrix if this source scored it, else computed now (never a paid request)."""
        sc = state.scored
        if sc is not None and sc.settings == state.settings:
            if sc.matrices[idx] is not None:
                return sc.matrices[idx], sc.description
            if idx in sc.failures:
                raise sources.SourceFormError(f"sentence {idx} could not be scored: {sc.failures[idx][:200]}")
        if state.settings.kind == "openai":
            raise sources.SourceFormError(
                f"sentence {idx} has not been scored with the OpenAI-compatible source; score the corpus first "
                "(or raise 'Sentences to score' to include it)"
            )
        built = sources.build(state.settings, state.api_key, ctx.cache(), ctx.budget, state.owner_key_usage)
        try:
            return built.source.score(ctx.corpus_of(state).sentences[idx]), built.source.describe()
        finally:
            built.source.close()

    def step_sentence(sentence_no, head, delta: int, state: Session):
        n = len(ctx.corpus_of(state).sentences)
        idx = (_clamp(sentence_no, n) + delta) % n
        fig, text, heads = _heatmap(state, idx, head)
        return idx, fig, text, gr.update(choices=heads, value=min(int(head or 0), len(heads) - 1))

    def compare_sources(sentence_no, head, other, state: Session):
        """This source (A) and another (B) on the same sentence: side by side, and A − B."""
        corpus = ctx.corpus_of(state)
        idx = _clamp(sentence_no, len(corpus.sentences))
        words = corpus.sentences[idx]
        try:
            a, desc_a = _matrix(state, idx)
            if a.shape[0] == 0:
                raise sources.SourceFormError("the learned source supplies no matrix to compare; choose another source")
            other_settings = SourceSettings(kind=str(other), n_heads=2 if other == "gaussian" else 1)
            built = sources.build(other_settings, "", ctx.cache(), ctx.budget, state.owner_key_usage)
            try:
                b = built.source.score(words)
                desc_b = built.source.describe()
            finally:
                built.source.close()
        except USER_ERRORS as e:
            return gr.skip(), gr.skip(), error(one_line(e))
        ha = min(max(int(head or 0), 0), a.shape[0] - 1)
        hb = min(ha, b.shape[0] - 1)
        title_a, title_b = f"A: {desc_a} · head {ha}", f"B: {desc_b} · head {hb}"
        fig = side_by_side(a[ha], b[hb], words, title_a, title_b)
        dfig = difference_heatmap(a[ha], b[hb], words, title="A − B (red: A attends more; blue: B attends more)")
        return fig, dfig, note(f"sentence {idx}: {title_a} vs {title_b}", "ok")

    def export_matrix(sentence_no, fmt, state: Session, request: gr.Request):
        """Download one sentence's matrix (all heads) as CSV or JSON."""
        corpus = ctx.corpus_of(state)
        idx = _clamp(sentence_no, len(corpus.sentences))
        words = corpus.sentences[idx]
        try:
            m, desc = _matrix(state, idx)
            if m.shape[0] == 0:
                raise sources.SourceFormError("the learned source supplies no matrix to download")
        except USER_ERRORS as e:
            return None, error(one_line(e))
        kind = state.settings.kind
        folder = ctx.session_dir(state, request)
        if fmt == "json":
            meta = {"source": desc, "kind": kind, "corpus": corpus.name, "sentence_index": idx}
            path = folder / f"attention-{kind}-sentence{idx}.json"
            path.write_text(matrix_to_json(m, words, meta), encoding="utf-8")
        else:
            path = folder / f"attention-{kind}-sentence{idx}.csv"
            path.write_text(matrix_to_csv(m, words), encoding="utf-8")
        return str(path), note(f"{path.name}: {m.shape[0]} head(s), {len(words)}×{len(words)}", "ok")

    # --- wiring -------------------------------------------------------------------------------
    settings_in = [*tab.source_inputs, session]
    for i, comp in enumerate(tab.source_inputs):
        # the first registration is the public /set_source endpoint; the rest only keep the session in step
        comp.change(
            set_source,
            settings_in,
            None,
            api_name="set_source" if i == 0 else None,
            api_visibility="public" if i == 0 else "private",
            queue=False,
            show_progress="hidden",
        )
    kind.change(toggle, kind, [local_box, openai_box, n_heads], api_visibility="private", queue=False)
    estimate_btn.click(estimate_cost, [*tab.source_inputs, max_sentences, session], estimate, api_name="estimate_cost")
    score_btn.click(
        score_corpus,
        [*tab.source_inputs, max_sentences, session],
        [progress, heatmap, sentence_box, head],
        api_name="score_corpus",
        show_progress="minimal",
    )
    show_btn.click(show_attention, [sentence, head, session], [heatmap, sentence_box, head], api_name="show_attention")
    sentence.submit(show_attention, [sentence, head, session], [heatmap, sentence_box, head], api_visibility="private")
    head.input(show_attention, [sentence, head, session], [heatmap, sentence_box, head], api_visibility="private")
    for btn, delta in ((prev_btn, -1), (next_btn, 1)):
        btn.click(
            lambda s, h, st, d=delta: step_sentence(s, h, d, st),
            [sentence, head, session],
            [sentence, heatmap, sentence_box, head],
            api_visibility="private",
        )
    compare_btn.click(
        compare_sources, [sentence, head, other, session], [side, diff, compare_msg], api_name="compare_sources"
    )
    export_btn.click(export_matrix, [sentence, fmt, session], [export_file, export_msg], api_name="export_matrix")
    return tab


def _subset(sentences: list[list[str]], max_sentences) -> list[list[str]]:
    n = int(max_sentences or 0)
    return sentences[:n] if n > 0 else sentences


def _clamp(value, n: int) -> int:
    try:
        i = int(value or 0)
    except (TypeError, ValueError):
        i = 0
    return min(max(i, 0), n - 1)


def charge_owner_key(ctx: AppContext, built: sources.Built, src: Any, state: Session) -> None:
    """Record what a source spent on the server's key (its lifetime ``usage`` counters)."""
    usage = getattr(src, "usage", None)
    if built.owner_key and usage is not None:
        ctx.budget.charge(state.owner_key_usage, usage.requests, usage.prompt_tokens + usage.completion_tokens)


def _model_state() -> str:
    from llmcomp.attention.local_llm import load_state

    return load_state()
