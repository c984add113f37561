"""What the Attention tab's buttons do, and how their results are worded: each action calls the
application layer (``llmcomp.app.sources``, ``.scoring``, ``.attention_view``) and turns its answer
into the tab's outputs. The tab itself only lays out components and wires them to these."""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import gradio as gr

from llmcomp.app import scoring
from llmcomp.app.attention_view import NotScoredError, Scored, head_labels, matrix_for, other_matrix
from llmcomp.app.local_status import default_source, local_state
from llmcomp.app.sources import SERVER_ONLY_OPTIONS, SourceSettings, build_source, form_field
from llmcomp.attention.registry import PAID, user_options
from llmcomp.plots import attention_heatmap, difference_heatmap, matrix_to_csv, matrix_to_json, side_by_side
from llmcomp.text.tokenizer import detokenize
from llmcomp.ui.common import USER_ERRORS, AppContext, error, failed, note, progress_bar
from llmcomp.ui.state import Session

POLL_S = 0.3
#: a scoring pass that nobody follows for this long is stopped: Gradio stops pulling progress from a closed
#: page (this generator is then closed, which stops it at once; the lease is the second line of defence)
SCORING_LEASE_S = 30.0
LEARNED_NOTE = (
    "the learned source supplies no attention: the model learns its own. Train it, then see the learned heads in the "
    "Generate tab"
)


def read_settings(
    kind, n_heads, layers, base_url, model, mode, relations, floor=None, score_max=None, advanced=None, llm_heads=None,
    answer=None, top_k=None, llm_device=None, llm_precision=None,
) -> SourceSettings:  # fmt: skip
    d = SourceSettings()
    return SourceSettings(
        kind=str(kind or "local"),
        n_heads=max(1, int(n_heads or 1)),
        layers=str(layers or "all"),
        llm_heads=str(llm_heads or ""),
        base_url=str(base_url or ""),
        model=str(model or ""),
        mode=str(mode or "sentence"),
        relations=tuple(relations or ()),
        floor=d.floor if floor is None else float(floor),
        score_max=d.score_max if score_max is None else int(score_max),
        advanced=str(advanced or ""),
        answer=str(answer or d.answer),
        top_k=d.top_k if top_k is None else int(top_k),
        llm_device=str(llm_device or d.llm_device),
        llm_precision=str(llm_precision or d.llm_precision),
    )


def advanced_hint(kind: str) -> str:
    """Which options the advanced-options field takes for ``kind`` (those the form has no field for)."""
    names = [n for n in user_options(kind) if not form_field(kind, n) and n not in SERVER_ONLY_OPTIONS]
    return f"{kind}: {', '.join(names)} (docs/sources.md)" if names else f"{kind}: none"


def subset(sentences: list[list[str]], max_sentences) -> list[list[str]]:
    n = int(max_sentences or 0)
    return sentences[:n] if n > 0 else sentences


def clamp(value, n: int) -> int:
    try:
        i = int(value or 0)
    except (TypeError, ValueError):
        i = 0
    return min(max(i, 0), n - 1)


def lane(source) -> str | None:
    """The scoring lane a source takes (``JobManager.admit_scoring``): a server may never answer, the
    local LLM is CPU-bound; baselines take none, so they never wait behind either."""
    return "network" if source.kind in PAID else "local" if source.kind == "local" else None


def visitor(state: Session) -> str:
    """Whose scoring pass this is: the browser's id, else this API session's own state."""
    return state.owner or f"session-state:{id(state)}"


def model_state() -> str:
    from llmcomp.attention.local_model import load_state

    return load_state()


# --- wording ---------------------------------------------------------------------------------
def counts_html(counts: dict[str, int], total: int, elapsed: float, phase: str) -> str:
    done = counts.get("done", 0)
    label = f"{phase}: {done:,} of {total:,} sentences · {elapsed:.0f} s"
    return progress_bar(done, total, label) + (
        f'<div class="llmc-counts" id="score-counts"><span>done <b>{done:,}</b></span>'
        f"<span>cached <b>{counts.get('cached', 0):,}</b></span><span>failed <b>{counts.get('failed', 0):,}</b></span>"
        f"<span>requests <b>{counts.get('requests', 0):,}</b></span><span>tokens <b>{counts.get('tokens', 0):,}</b></span>"
        "</div>"
    )


def sentence_html(words: list[str], idx: int, total: int, extra: str = "") -> str:
    return (
        f'<div class="llmc-sentence"><b>Sentence {idx} of {total - 1}:</b> {html.escape(detokenize(words))}'
        f"{' · ' + html.escape(extra) if extra else ''}</div>"
    )


def estimate_text(est: scoring.CostEstimate, description: str, typed_key: bool) -> str:
    if est.paid:
        if est.owner_key:
            return f"{est.detail}; {est.allowance}"
        return est.detail + ("; billed to the key you entered" if typed_key else "")
    if est.kind == "local":
        return (
            f"local LLM, offline and free: {est.to_score:,} of {est.sentences:,} sentences to score "
            f"({est.cached or 0:,} cached); roughly 0.1 to 1 s per sentence on a CPU; model {model_state()}"
        )
    return f"{description}: computed in milliseconds on this machine, free"


# --- actions ---------------------------------------------------------------------------------
def estimate_cost(ctx: AppContext, state: Session, max_sentences) -> str:
    if state.settings.kind == "learned":
        return note("the learned source supplies no attention (the model learns its own): nothing to score", "info")
    sents = subset(ctx.corpus_of(state).sentences, max_sentences)
    keys = ctx.keys(state)
    try:
        source = build_source(state.settings.description(), keys=keys, cache=ctx.cache())
    except USER_ERRORS as e:
        return failed(e)
    try:
        est = scoring.check_budget(source, sents, keys)
        return note(estimate_text(est, source.describe(), bool(state.api_key)), "info")
    except USER_ERRORS as e:
        return failed(e)
    finally:
        source.close()


def score_corpus(ctx: AppContext, state: Session, max_sentences) -> Iterator[tuple[Any, Any, Any, Any, Any]]:
    """Score as a background job; yield progress now and then, and at the end the first scored sentence's
    heatmap, its line, the head choices and its number (so the number box and the plot agree)."""
    settings, corpus = state.settings, ctx.corpus_of(state)
    sents = subset(corpus.sentences, max_sentences)
    keys = ctx.keys(state)
    skip = gr.skip()
    try:
        source = build_source(settings.description(), keys=keys, cache=ctx.cache())
    except USER_ERRORS as e:
        yield failed(e), skip, skip, skip, skip
        return
    try:  # one pass per visitor and lane (a new one replaces the last); a full lane refuses with one line
        job = ctx.jobs.admit_scoring(lane(source), visitor(state), lambda: scoring.start_scoring(source, sents, keys))
    except USER_ERRORS as e:
        source.close()
        yield failed(e), skip, skip, skip, skip
        return
    job.lease_s = SCORING_LEASE_S
    try:
        for snap in job.follow(POLL_S):
            if not snap.running:
                break
            phase = "scoring"
            if settings.kind == "local" and not snap.scoring.get("done") and model_state() == "loading":
                phase = "loading the local model (first use only)"
            yield counts_html(snap.scoring, len(sents), snap.elapsed_s, phase), skip, skip, skip, skip
    finally:
        if job.running:  # the page went away and Gradio closed this generator, on its event loop: stop, never wait
            job.stop("the page was closed")  # (a source's cancel() only signals; the job ends in its own thread)
    snap = job.snapshot()
    if snap.status != "finished" or job.result is None:
        yield counts_html(snap.scoring, len(sents), snap.elapsed_s, "stopped") + error(snap.error or snap.status), \
            skip, skip, skip, skip  # fmt: skip
        return
    result = job.result
    state.scored = Scored.of(settings, source.describe(), result, len(corpus.sentences))
    summary = counts_html(snap.scoring, len(sents), snap.elapsed_s, "finished")
    if result.failures:
        first = next(iter(result.failures.items()))
        summary += note(f"{len(result.failures)} sentence(s) failed; first #{first[0]}: {first[1][:200]}", "warn")
    else:
        summary += note(f"scored {len(sents):,} sentences with {source.describe()}", "ok")
    first = state.scored.first_scored()
    fig, text, heads = heatmap(ctx, state, first, 0)
    yield summary, fig, text, gr.update(choices=heads, value=0), first  # the number box names the sentence drawn


def heatmap(ctx: AppContext, state: Session, sentence_no, head, row_scale: bool = False) -> tuple[Any, str, list]:
    """(figure, sentence line, head choices) for one sentence and head of the session's source;
    ``row_scale``: each row coloured by its own largest weight. A source changed while this one was
    computed draws nothing: the plot never disagrees with the form."""
    corpus = ctx.corpus_of(state)
    n = len(corpus.sentences)
    idx = clamp(sentence_no, n)
    words = corpus.sentences[idx]
    settings = state.settings
    state.drawn_for = None  # until a heatmap is drawn: none beside an error or the learned note
    try:
        m, desc = matrix_for(settings, state.scored, words, idx, ctx.keys(state), ctx.cache())
    except USER_ERRORS as e:  # no plot beside an error: the last one was drawn for other inputs
        return None, sentence_html(words, idx, n) + failed(e), [("head 0", 0)]
    heads = head_labels(settings, m.shape[0])
    if state.settings != settings:
        return None, stale_line(ctx, state, idx, f"the source is now {state.settings.label()}"), heads
    if m.shape[0] == 0:
        return None, sentence_html(words, idx, n) + note(LEARNED_NOTE, "info"), heads
    h = min(max(int(head or 0), 0), m.shape[0] - 1)
    fig = attention_heatmap(m[h], words, title=f"{desc} · {heads[h][0]}", row_scale=row_scale)
    state.drawn_for = settings
    return fig, sentence_html(words, idx, n, desc), heads


def _sentence(ctx: AppContext, state: Session, sentence_no) -> tuple[int, list[str]]:
    """The sentence the number box points at (clamped to the corpus) and its words."""
    sentences = ctx.corpus_of(state).sentences
    idx = clamp(sentence_no, len(sentences))
    return idx, sentences[idx]


def compare(ctx: AppContext, state: Session, sentence_no, head, other) -> tuple[Any, Any, str]:
    """This source (A) and another (B) on one sentence: side by side, and A − B."""
    idx, words = _sentence(ctx, state, sentence_no)
    try:
        a, desc_a = matrix_for(state.settings, state.scored, words, idx, ctx.keys(state), ctx.cache())
        if a.shape[0] == 0:
            raise NotScoredError("the learned source supplies no matrix to compare; choose another source")
        b, desc_b = other_matrix(str(other), words, ctx.cache(), ctx.keys(state))
    except USER_ERRORS as e:  # the panels drawn before were for other inputs: cleared, never left beside the error
        return None, None, failed(e)
    ha = min(max(int(head or 0), 0), a.shape[0] - 1)
    hb = min(ha, b.shape[0] - 1)
    title_a, title_b = f"A: {desc_a} · head {ha}", f"B: {desc_b} · head {hb}"
    fig = side_by_side(a[ha], b[hb], words, title_a, title_b)
    dfig = difference_heatmap(a[ha], b[hb], words, title="A − B (red: A attends more; blue: B attends more)")
    return fig, dfig, note(f"sentence {idx}: {title_a} vs {title_b}", "ok")


def export(ctx: AppContext, state: Session, sentence_no, fmt, request: gr.Request) -> tuple[str | None, str]:
    """One sentence's matrix (all heads) as a CSV or JSON file in the session's download folder."""
    idx, words = _sentence(ctx, state, sentence_no)
    try:
        m, desc = matrix_for(state.settings, state.scored, words, idx, ctx.keys(state), ctx.cache())
        if m.shape[0] == 0:
            raise NotScoredError("the learned source supplies no matrix to download")
    except USER_ERRORS as e:
        return None, failed(e)
    kind = state.settings.kind
    folder = ctx.session_dir(state, request)
    if fmt == "json":
        meta = {"source": desc, "kind": kind, "corpus": ctx.corpus_of(state).name, "sentence_index": idx}
        path = folder / f"attention-{kind}-sentence{idx}.json"
        path.write_text(matrix_to_json(m, words, meta), encoding="utf-8")
    else:
        path = folder / f"attention-{kind}-sentence{idx}.csv"
        path.write_text(matrix_to_csv(m, words), encoding="utf-8")
    return str(path), note(f"{path.name}: {m.shape[0]} head(s), {len(words)}×{len(words)}", "ok")


def stale_line(ctx: AppContext, state: Session, sentence_no, why: str) -> str:
    """The sentence line with why its heatmap was taken away (an input it depends on changed)."""
    idx, words = _sentence(ctx, state, sentence_no)
    return sentence_html(words, idx, len(ctx.corpus_of(state).sentences)) + note(f"{why}: press Show", "info")


def follow_local_model(current: str, state: Session):
    """Once the local model turns out unavailable, a picker (and session) still on it moves to the baseline.
    Until then the picker is left alone: its value read at the tick may be older than the visitor's choice."""
    choice = default_source(local_state())
    timer = gr.Timer(active=not choice.final)
    if not choice.fell_back:
        return gr.skip(), timer
    if state.settings.kind != "local":  # the session's choice, kept in step by every change of the form
        return gr.update(info=choice.picker_info()), timer
    state.settings = replace(state.settings, kind=choice.kind)
    return gr.update(value=choice.kind, info=choice.picker_info()), timer
