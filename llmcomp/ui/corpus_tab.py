"""Corpus tab: pick a bundled corpus or upload a .txt; see statistics, a preview and the held-out split."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, get_args

import gradio as gr
import pandas as pd

from llmcomp.plots import histogram_svg
from llmcomp.text import Corpus, CorpusError, parse_corpus
from llmcomp.text.corpus import SentenceTooLongError, SplitMode
from llmcomp.text.tokenizer import detokenize
from llmcomp.ui.common import DEFAULT_CORPUS, AppContext, error, note
from llmcomp.ui.state import Session

PREVIEW_ROWS = 200
UPLOADED = "(your upload)"  # the picker's entry for this session's uploaded corpus (never a path)


@dataclass
class CorpusTab:
    bundled: gr.Dropdown
    upload: gr.File
    message: gr.HTML
    summary: gr.HTML
    histogram: gr.HTML
    preview: gr.Dataframe
    split: gr.HTML
    restore: Callable[..., Any]  # handler (session) -> the browser's remembered corpus, for ``restore_outputs``

    @property
    def view_outputs(self) -> list:
        return [self.message, self.summary, self.histogram, self.preview, self.split]

    @property
    def restore_outputs(self) -> list:
        return [*self.view_outputs, self.bundled]


def histogram_html(corpus: Corpus) -> str:
    return histogram_svg(
        corpus.stats().length_histogram, "Sentence length", "words per sentence", "sentences", unit="words"
    )


def summary_html(corpus: Corpus) -> str:
    s = corpus.stats()
    top = ", ".join(f"{html.escape(w)} ({c})" for w, c in s.top_words[:10])
    return (
        f"<h3>{html.escape(corpus.name)}</h3>"
        f'<div class="llmc-counts"><span>sentences <b>{s.sentences:,}</b></span>'
        f"<span>words <b>{s.words:,}</b></span><span>vocabulary <b>{s.vocab:,}</b></span>"
        f"<span>mean length <b>{s.mean_length:.1f}</b></span><span>longest <b>{s.max_length}</b></span></div>"
        f"<p>Most frequent: {top}</p>"
    )


def split_html(corpus: Corpus) -> str:
    n_val, n = len(corpus.val_idx), len(corpus.sentences)
    cfg = corpus.config
    examples = "".join(f"<li>{html.escape(detokenize(corpus.sentences[i]))}</li>" for i in corpus.val_idx[:5])
    return (
        f"<p><b>Held out for validation:</b> {n_val:,} of {n:,} sentences ({cfg.val_fraction:.0%}, chosen by seed "
        f"{cfg.seed}); {len(corpus.train_idx):,} are used for training. The validation loss is measured on these "
        f"sentences only.</p><ul>{examples}</ul>"
    )


def preview_frame(corpus: Corpus) -> pd.DataFrame:
    val = set(corpus.val_idx)
    rows = [
        {"#": i, "split": "val" if i in val else "train", "words": len(s), "sentence": detokenize(s)}
        for i, s in enumerate(corpus.sentences[:PREVIEW_ROWS])
    ]
    return pd.DataFrame(rows, columns=["#", "split", "words", "sentence"])


def view(corpus: Corpus, message: str) -> tuple:
    """The tab's outputs; the corpus's notices (lines cut, words split) follow the message, one box each."""
    message += "".join(note(n, "warn") for n in corpus.notices)
    return message, summary_html(corpus), histogram_html(corpus), preview_frame(corpus), split_html(corpus)


def build(ctx: AppContext, session: gr.State) -> CorpusTab:
    limit_mb = ctx.max_upload_bytes / 1_000_000
    gr.Markdown(
        "Choose the text the model will learn from: one of the bundled corpora, or your own UTF-8 `.txt` file "
        f"(one sentence per line, or paragraphs separated by blank lines; at most {limit_mb:g} MB, "
        f"{ctx.corpus_config.max_words} words per sentence, {ctx.corpus_config.min_sentences} sentences or more)."
    )
    with gr.Row():
        with gr.Column(scale=1):
            bundled = gr.Dropdown(
                choices=ctx.bundled_names(), value=DEFAULT_CORPUS, label="Bundled corpus", elem_id="bundled-corpus"
            )
            use_bundled = gr.Button("Use this bundled corpus", elem_id="use-bundled")
        with gr.Column(scale=1):
            # no file_types filter: gradio would reject other files with a pop-up before our handler
            # runs; the handler checks the extension itself and answers inline, like every other fault
            upload = gr.File(label="…or upload a .txt corpus", type="filepath", elem_id="corpus-upload")
            split_mode = gr.Radio(
                list(get_args(SplitMode)),
                value=ctx.corpus_config.split,
                label="split (of an upload)",
                info="lines: each line is one sequence, never cut; paragraphs: blank lines separate them; "
                "auto: paragraphs if there are blank lines, else lines cut after inner . ! ?",
                elem_id="corpus-split-mode",
            )
    # Every new session starts on the default corpus, so its view is part of the page itself: the
    # page is usable as soon as it renders, without waiting for a round trip.
    first = initial_view(ctx, Session())
    message = gr.HTML(first[0], label="Corpus message", elem_id="corpus-message")
    with gr.Row():
        with gr.Column(scale=3):
            summary = gr.HTML(first[1], label="Corpus statistics", elem_id="corpus-summary")
            split = gr.HTML(first[4], label="Held-out validation split", elem_id="corpus-split")
        with gr.Column(scale=2):
            histogram = gr.HTML(first[2], label="Sentence lengths", elem_id="corpus-histogram")
    preview = gr.Dataframe(
        first[3], label="Preview (first sentences)", interactive=False, wrap=True, elem_id="corpus-preview"
    )

    def restore(state: Session):
        """The corpus this browser chose before a reload (its upload, kept on the server), else nothing."""
        page = ctx.pages.recall(state.owner)
        try:
            corpus = page.upload or (ctx.bundled(page.bundled) if page.bundled else None)
        except (CorpusError, ValueError):
            corpus = None
        if corpus is None or corpus is ctx.corpus_of(state):
            return (gr.skip(),) * 6
        state.corpus = corpus
        what = "your upload" if page.upload else "the bundled corpus"
        return *view(corpus, note(f"using {what} {corpus.name} (restored after the reload)", "ok")), picker(state)

    tab = CorpusTab(bundled, upload, message, summary, histogram, preview, split, restore)

    def picker(state: Session):
        """The picker names the corpus in use: a bundled file, or this session's upload."""
        names, corpus = ctx.bundled_names(), ctx.corpus_of(state)
        if corpus.name in names and corpus is ctx.bundled(corpus.name):
            return gr.update(choices=names, value=corpus.name)
        return gr.update(choices=[*names, (f"{corpus.name} {UPLOADED}", UPLOADED)], value=UPLOADED)

    def use_bundled_corpus(name: str, state: Session):
        """Use a bundled corpus (example.txt or binding.txt). Returns a message, statistics, a length
        histogram, a preview and the held-out split."""
        if name == UPLOADED and state.corpus is not None:
            return view(state.corpus, note(f"using your upload {state.corpus.name}", "ok"))
        try:
            corpus = ctx.bundled(name)
        except (CorpusError, ValueError) as e:
            return error(str(e)), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        _set(ctx, state, corpus, bundled=True)
        return view(corpus, note(f"using the bundled corpus {name}", "ok"))

    def upload_corpus(path: str | None, state: Session, split: SplitMode = ctx.corpus_config.split):
        """Upload a UTF-8 .txt corpus, split into sequences by ``split`` (auto, lines or paragraphs). Invalid
        files get a one-line reason and the previous corpus stays."""
        if not path:
            return note("choose a .txt file to upload", "info"), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        file = Path(path)
        keep = f"; still using {ctx.corpus_of(state).name}"
        if file.suffix.lower() != ".txt":
            return (
                error(f"{file.name} is not a .txt file; upload plain UTF-8 text with one sentence per line{keep}"),
                *[gr.skip()] * 4,
            )
        try:
            size = file.stat().st_size
            if size > ctx.max_upload_bytes:
                raise CorpusError(
                    f"{file.name} is {size:,} bytes; the limit is {ctx.max_upload_bytes:,} (use a smaller file)"
                )
            config = replace(ctx.corpus_config, split=split)
            corpus = parse_corpus(file.read_bytes(), name=file.name, config=config)
        except SentenceTooLongError as e:  # what can be done here: the file, or the split mode this tab offers
            return error(f"{e.advise(too_long_remedy(split))}{keep}"), *[gr.skip()] * 4
        except CorpusError as e:
            return error(f"{e}{keep}"), *[gr.skip()] * 4
        except OSError as e:
            return error(f"could not read the upload ({e.strerror}); try again{keep}"), *[gr.skip()] * 4
        _set(ctx, state, corpus, bundled=False)
        return view(corpus, note(f"loaded {file.name}: {len(corpus.sentences):,} sentences", "ok"))

    hidden = {"api_visibility": "private", "show_progress": "hidden"}
    use_bundled.click(use_bundled_corpus, [bundled, session], tab.view_outputs, api_name="use_bundled_corpus").then(
        picker, session, bundled, **hidden
    )
    # the upload box is emptied afterwards, so the next file can be dropped straight away; the picker names it
    upload.upload(upload_corpus, [upload, session, split_mode], tab.view_outputs, api_name="upload_corpus").then(
        lambda state: (None, picker(state)), session, [upload, bundled], **hidden
    )
    return tab


def _set(ctx: AppContext, state: Session, corpus: Corpus, bundled: bool) -> None:
    """A new corpus invalidates what was computed on the old one; the browser's choice is kept for a reload."""
    ctx.pages.remember_corpus(state.owner, corpus, bundled)
    state.corpus = corpus
    state.scored = None
    state.generation = None


def too_long_remedy(split: str) -> str:
    """What a person in this tab can do about a sentence over the word limit, under split mode ``split``."""
    if split == "lines":
        return "split the line in the file, or choose split auto to cut lines after . ! ?"
    return "split it in the file: it has no . ! ? to cut at within the limit"


def initial_view(ctx: AppContext, state: Session) -> tuple:
    corpus = ctx.corpus_of(state)
    return view(corpus, note(f"using {corpus.name}; upload your own .txt to replace it", "info"))
