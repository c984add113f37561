"""The web app: five tabs over the library, and how it is launched.

``build_app()`` only lays out components and wires handlers: it loads no model and starts no
thread, so the page is usable within seconds. ``launch()`` binds 127.0.0.1 by default, applies the
upload limit, optional login and a restrictive file policy; the local LLM loads in the background
once the first page is on screen (``Preloader``), and the header shows "loading local model…" until
it is ready.

Settings (``llmcomp.settings`` reads them from the environment or ``.env``): ``LLMCOMP_HOST``,
``LLMCOMP_PORT``, ``LLMCOMP_AUTH`` ("user:password", several separated by commas),
``LLMCOMP_MAX_UPLOAD`` (e.g. "5mb"), ``LLMCOMP_PRELOAD`` ("0" to skip the background load), the
owner key's budget caps (``llmcomp.app.budget``) and the paths.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from llmcomp import settings
from llmcomp.app.jobs import JobManager
from llmcomp.app.local_status import default_source, local_model_origin, local_state
from llmcomp.settings import Paths, SettingsError
from llmcomp.ui import attention_tab, compare_tab, corpus_tab, data_api, generate_tab, source_form, train_tab
from llmcomp.ui.common import CSS, AppContext, note, owner_of
from llmcomp.ui.state import Session

log = logging.getLogger("llmcomp.ui")
TITLE = "llmcomp: attention from outside"
INTRO = (
    "Train a small GPT whose attention weights come from **outside**: a local LLM, an OpenAI-compatible "
    "API, or a baseline. Pick a corpus, score its attention, train, generate, and compare runs."
)


def local_model_state(preloader: Preloader | None) -> str:
    """'loaded', 'loading', 'not loaded' or 'failed: <reason>', without importing torch to find out
    (``app.local_status``): until the local LLM's module is imported, the model is not loaded (and is
    loading soon, if a preloader is armed), unless it is known that it cannot load here."""
    armed = preloader is not None
    return local_state(loading_soon=armed, preload_error=preloader.error if armed else None)


def model_status_html(preloader: Preloader | None) -> str:
    state = local_model_state(preloader)
    if state == "loaded":
        return note("local model ready", "ok")
    if state == "loading":
        return note("loading local model… (the other sources work meanwhile)", "busy")
    if state == "not loaded":
        return note("local model not loaded yet; it loads on first use", "info")
    return note(default_source(state).header(), "warn")


class Preloader:
    """Loads the local LLM in the background, once: when the first page has rendered, or ``delay_s``
    after launch if nobody has opened it by then (so API clients find the model ready).

    Loading holds the CPU and the GIL for seconds; started at launch it would slow the first page
    down by about as much, on a 2-core machine."""

    def __init__(self, delay_s: float = 20.0):
        self._lock = threading.Lock()
        self._started = False
        self.error: str | None = None
        self._timer = threading.Timer(delay_s, self.start, kwargs={"reason": f"no page opened within {delay_s:g} s"})
        self._timer.daemon = True

    @property
    def started(self) -> bool:
        return self._started

    def arm(self) -> Preloader:
        self._timer.start()
        return self

    def start(self, reason: str = "the first page is open") -> None:
        """Start loading in a background thread (importing torch and transformers happens there too)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._timer.cancel()
        print(f"llmcomp: loading the local LLM in the background ({reason})", flush=True)
        threading.Thread(target=self._preload, name="llmcomp-preload", daemon=True).start()

    def _preload(self) -> None:
        try:
            from llmcomp.attention.local_model import preload_in_background
        except ImportError as e:  # a broken install: say so in the header rather than "loading" forever
            self.error = f"cannot import the local LLM source ({e})"
            return
        preload_in_background()


def build_app(
    paths: Paths | None = None, jobs: JobManager | None = None, preloader: Preloader | None = None
) -> gr.Blocks:
    """The Blocks app (no model loading, no threads). ``paths``/``jobs`` default to the environment's;
    a ``preloader`` is started by the first page load."""
    ctx = AppContext.create(paths, jobs)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 6 * 3600)) as demo:
        session = gr.State(Session(), time_to_live=24 * 3600)
        browser_id = gr.BrowserState(None, storage_key="llmcomp-browser-id", secret=ctx.browser_secret)
        with gr.Row():
            gr.Markdown(f"# {TITLE}\n{INTRO}")
            model_status = gr.HTML(model_status_html(preloader), elem_id="llmc-model-status")
        launch_warning = gr.HTML(elem_id="llmc-launch-warning")  # filled on load (see launch_options)
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("1 · Corpus", id="corpus", elem_id="tab-corpus"):
                corpus = corpus_tab.build(ctx, session)
            with gr.Tab("2 · Attention", id="attention", elem_id="tab-attention"):
                attention = attention_tab.build(ctx, session)
            with gr.Tab("3 · Train", id="train", elem_id="tab-train") as train_tab_box:
                train = train_tab.build(ctx, session, form_first=attention.form_first)
            with gr.Tab("4 · Generate", id="generate", elem_id="tab-generate") as generate_tab_box:
                gen = generate_tab.build(ctx, session)
            with gr.Tab("5 · Compare", id="compare", elem_id="tab-compare") as compare_tab_box:
                compare_runs, compare_outputs = compare_tab.build(ctx, session)
        data_api.build(ctx, session)  # /attention_data, /metrics_data, /runs_data, /generate_data: plain JSON
        status_timer = gr.Timer(2.0)

        def on_load(stored_id: str | None, state: Session):
            state.owner = stored_id or secrets.token_urlsafe(16)
            if preloader is not None:
                preloader.start()  # the page is on screen now, so loading the model no longer delays it
            warning = note(ctx.launch_warning, "warn") if ctx.launch_warning else ""
            return state.owner, model_status_html(preloader), warning

        def restore_source(state: Session):
            """The source form as this browser last set it (never the API key); unchanged when nothing is kept."""
            settings = ctx.pages.recall(state.owner).settings
            if settings is None:
                return [gr.skip()] * len(attention.form)
            return attention.form_values(settings)

        def refresh_model_status():
            state = local_model_state(preloader)
            done = state == "loaded" or state.startswith("failed")
            return model_status_html(preloader), gr.Timer(active=not done)

        def app_status(request: gr.Request) -> dict[str, Any]:
            """Server status: the local model's load state, where it comes from, the default source (a
            baseline when the local model cannot load) and whether a training run is in progress."""
            state = local_model_state(preloader)
            return {
                "local_model": state,
                "local_model_origin": local_model_origin(),
                "default_source": default_source(state).kind,
                "training_in_progress": ctx.jobs.active() is not None,
            }

        load = demo.load(
            on_load, [browser_id, session], [browser_id, model_status, launch_warning], api_visibility="private"
        )
        # a reload restores the corpus and the source this browser chose (kept on the server by browser id)
        load.then(corpus.restore, session, corpus.restore_outputs, api_visibility="private").then(
            restore_source, session, attention.form, api_visibility="private"
        )
        # a new corpus: nothing the Attention tab drew for the old one stays
        corpus.summary.change(attention.corpus_changed, session, attention.stale, api_visibility="private", queue=False)
        load.then(train.training_status, [session, train.seen], train.poll_outputs, api_visibility="private")
        load.then(train.describe_setup, session, [train.setup, train.resume], api_visibility="private")
        load.then(gen.list_models, session, gen.checkpoint, api_visibility="private")
        # the devices this machine has (finding out imports torch: after the page is up, never while building)
        load.then(lambda: [source_form.device_choices()] * 2, None, [attention.source.llm_device, train.device],
                  api_visibility="private", show_progress="hidden")  # fmt: skip
        status_timer.tick(
            refresh_model_status, None, [model_status, status_timer], api_visibility="private", show_progress="hidden"
        )
        train_tab_box.select(train.describe_setup, session, [train.setup, train.resume], api_visibility="private")
        generate_tab_box.select(gen.list_models, session, gen.checkpoint, api_visibility="private")
        compare_tab_box.select(compare_runs, session, compare_outputs, api_visibility="private")
        gr.api(app_status, api_name="app_status", concurrency_limit=None)
    demo.llmcomp_context = ctx  # type: ignore[attr-defined]  # for tests and launch()
    return demo


def launch_options(
    demo: gr.Blocks, host: str | None = None, port: int | None = None, share: bool = False
) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch``: address, upload limit, login, theme and file policy.

    Also records whether the app is public (``AppContext.expose``) and warns, in the log and the
    page's header, when anyone may spend the owner's key without a daily cap."""
    ctx: AppContext = demo.llmcomp_context  # type: ignore[attr-defined]
    try:
        server = settings.server()
    except SettingsError as e:  # a bad setting stops the launch with its one-line reason
        raise SystemExit(str(e)) from None
    host = host or server.host
    port = port or server.port
    if ctx.expose(host, server.auth, share):
        log.warning("llmcomp: %s", ctx.launch_warning)
    return {
        "server_name": host,
        "server_port": port,
        "max_file_size": ctx.max_upload_bytes,
        "auth": server.auth,
        "auth_message": "llmcomp: log in with the user and password the server owner gave you",
        # never serve the cache, the runs or the .env, whatever the working directory is
        "blocked_paths": [str(Path(p).resolve()) for p in (ctx.paths.cache, ctx.paths.runs, ctx.paths.home, ".env")],
        "css": CSS,
        # system fonts: the default Google fonts would be fetched from the internet by every visitor
        "theme": gr.themes.Soft(
            font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
        ),
        "show_error": False,
        "footer_links": ["api", "settings"],
    }


def launch(host: str | None = None, port: int | None = None, share: bool = False, block: bool = True) -> gr.Blocks:
    """Build and launch; the local LLM then loads in the background (see ``Preloader``; LLMCOMP_PRELOAD=0
    leaves it to load on first use)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    preloader = Preloader().arm() if settings.preload() else None
    demo = build_app(preloader=preloader)
    demo.queue(default_concurrency_limit=2)
    demo.launch(prevent_thread_lock=True, share=share, **launch_options(demo, host, port, share))
    print(f"llmcomp app ready at {demo.local_url}", flush=True)
    if block:
        demo.block_thread()
    return demo


__all__ = ["Preloader", "build_app", "launch", "launch_options", "owner_of"]
