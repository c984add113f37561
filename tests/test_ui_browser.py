"""The whole journey in a real headless Chromium (Debian's /usr/bin/chromium via playwright).

The app runs as ``python app.py`` in a subprocess, exactly as a person starts it, with its own home
folder. Screenshots go to ``test-output/`` (or ``$LLMCOMP_TEST_OUTPUT``). The test prints, and does
not assert, the time from process start to a usable page and the latency of a click during training.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from llmcomp.text import parse_corpus
from llmcomp.text.binding import generate_binding_corpus

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("LLMCOMP_TEST_OUTPUT") or ROOT / "test-output")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UPLOAD_LIMIT = 200_000
TIMEOUT_MS = 60_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shot(page, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(browser, tmp_path_factory):
    """``python app.py`` on a free port; measures process start -> page usable."""
    home = tmp_path_factory.mktemp("app-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(
        LLMCOMP_HOME=str(home),
        LLMCOMP_PORT=str(port),
        LLMCOMP_HOST="127.0.0.1",
        LLMCOMP_MAX_UPLOAD=str(UPLOAD_LIMIT),
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONUNBUFFERED="1",
    )
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
    url = f"http://127.0.0.1:{port}/"
    page = browser.new_page()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # poll with plain HTTP (a refused page.goto costs Chromium an error page each time)
        while not answers(url):
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode}; see {home / 'server.log'}")
            if time.perf_counter() - t0 > 120:
                pytest.fail(f"the app did not answer within 120 s; see {home / 'server.log'}")
            time.sleep(0.05)
        t_listening = time.perf_counter() - t0
        page.goto(url)
        page.wait_for_selector("#corpus-summary h3", timeout=TIMEOUT_MS)
        t_usable = time.perf_counter() - t0
        print(f"\n[timing] process start -> server answers: {t_listening:.1f} s; -> page usable: {t_usable:.1f} s")
        status = page.inner_text("#llmc-model-status")
        assert "local model" in status  # "loading local model…" (or ready): the app did not wait for it
        # the model starts loading because the page opened (long before the 20 s fallback)
        log_file = home / "server.log"
        deadline = time.perf_counter() + 10
        while "(the first page is open)" not in log_file.read_text():
            assert time.perf_counter() < deadline, f"the preload did not start on the first page: {log_file}"
            time.sleep(0.1)
        shot(page, "00-startup")
        page.close()
        yield {"url": url, "home": home, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:  # URLError, refused, reset, timeout
        return False


def new_page(browser, server, init_script: str | None = None):
    """A fresh browser (its own browser id); ``init_script`` runs in the page before the app's own code."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    if init_script:
        ctx.add_init_script(init_script)
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server["url"])
    page.wait_for_selector("#corpus-summary h3")
    return ctx, page


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()


def fill(page, selector: str, value) -> None:
    box = page.locator(selector)
    box.fill(str(value))
    box.press("Tab")


def plot_points(page, elem_id: str, trace: int = 0) -> int:
    return page.evaluate(
        """([id, k]) => { const d = document.querySelector('#' + id + ' .js-plotly-plot');
            return d && d.data && d.data[k] ? (d.data[k].x || []).length : 0; }""",
        [elem_id, trace],
    )


def wait_text(page, selector: str, text: str) -> None:
    page.locator(selector).filter(has_text=text).first.wait_for()


def upload(page, path: Path) -> None:
    page.set_input_files("#corpus-upload input[type=file]", str(path))


def click_latencies(page, start: int, n: int = 5) -> list[float]:
    """Seconds from a click on "next sentence" to its heatmap being redrawn, ``n`` times, timed in
    the page: from the click event to the first animation frame that shows the new plot (what a
    person waits for; playwright's own work before the click is not counted)."""
    out = []
    for k in range(start, start + n):
        page.evaluate(
            """() => { window.__old = document.querySelector('#attention-heatmap .js-plotly-plot')?.data;
                window.__clicked = null; window.__drawn = null;
                document.querySelector('#next-sentence').addEventListener(
                    'click', () => { window.__clicked = performance.now(); }, {capture: true, once: true}); }"""
        )
        page.click("#next-sentence")
        page.wait_for_function(  # the plot itself was redrawn with new data; note when it was first seen
            """() => { const d = document.querySelector('#attention-heatmap .js-plotly-plot')?.data;
                if (!d || d === window.__old) return false;
                window.__drawn = window.__drawn || performance.now(); return true; }""",
            polling="raf",
        )
        wait_text(page, "#sentence-text", f"Sentence {k} of")
        out.append(page.evaluate("() => (window.__drawn - window.__clicked) / 1000"))
    return out


def fmt_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms ({', '.join(f'{x * 1000:.0f}' for x in xs)} ms)"


def test_the_whole_journey(browser, server, tmp_path):
    corpus = tmp_path / "mini.txt"
    corpus.write_text("\n".join(generate_binding_corpus(60, seed=4)) + "\n")
    ctx, page = new_page(browser, server)

    # 1. corpus: upload
    upload(page, corpus)
    wait_text(page, "#corpus-message", "loaded mini.txt: 60 sentences")
    assert "mini.txt" in page.inner_text("#corpus-summary")
    assert "Held out for validation" in page.inner_text("#corpus-split")
    shot(page, "01-corpus-uploaded")

    # 2. attention: score with a baseline and see a heatmap
    tab(page, "2 · Attention")
    choose(page, "source-kind", "Baseline: previous word")
    page.click("#estimate-btn")
    wait_text(page, "#estimate", "free")
    page.click("#score-btn")
    wait_text(page, "#score-progress", "finished")
    assert "done 60" in " ".join(page.inner_text("#score-counts").split())
    page.wait_for_function(
        "() => document.querySelector('#attention-heatmap .js-plotly-plot')?.data?.[0]?.type === 'heatmap'"
    )
    shot(page, "02-attention-heatmap")
    # side by side with another source, the difference, and a download
    page.click("#compare-accordion")
    choose(page, "other-source", "Baseline: uniform")
    page.click("#compare-btn")
    page.wait_for_function("() => document.querySelector('#difference .js-plotly-plot')?.data?.[0]?.type === 'heatmap'")
    assert page.evaluate("() => document.querySelector('#side-by-side .js-plotly-plot').data.length") == 2
    page.click("#export-btn")
    link = page.locator("#export-file a[download='attention-previous-sentence0.csv']")
    with page.expect_download() as dl:
        link.click()
    rows = list(csv.reader(io.StringIO(Path(dl.value.path()).read_text())))
    first = parse_corpus(corpus.read_text()).sentences[0]
    assert rows[0] == ["head", "query", *[f"{w} ({i})" for i, w in enumerate(first)]]
    assert len(rows) == 1 + len(first)
    shot(page, "02b-side-by-side-and-difference")
    idle = click_latencies(page, start=1)  # the same clicks again during training, for comparison

    # 3. train: start, watch the loss plot gain points
    tab(page, "3 · Train")
    fill(page, "#train-steps input", 100000)
    fill(page, "#train-batch input", 8)
    fill(page, "#train-eval input", 10)
    fill(page, "#train-patience input", 0)  # never stop early: the run must still be going at the second Start
    fill(page, "#train-layers input[type=number]", 1)
    choose(page, "train-width", "16")
    page.click("#start-btn")
    wait_text(page, "#train-message", "started")
    page.wait_for_function(
        "() => (document.querySelector('#loss-plot .js-plotly-plot')?.data?.[0]?.x || []).length >= 2"
    )
    first = plot_points(page, "loss-plot")
    t = time.time()
    while plot_points(page, "loss-plot") <= first and time.time() - t < 30:
        time.sleep(0.2)
    assert plot_points(page, "loss-plot") > first, "the loss plot did not gain points"
    wait_text(page, "#train-status", "training: step")
    assert "ETA" in page.inner_text("#train-status") or "left" in page.inner_text("#train-status")
    shot(page, "03-training-live")

    # a second Start while running gets a clear message
    page.click("#start-btn")
    wait_text(page, "#train-message", "already in progress")
    shot(page, "04-second-start-refused")

    # click latency while training: step to the next sentence in the Attention tab
    tab(page, "2 · Attention")
    busy = click_latencies(page, start=len(idle) + 1)
    print(
        f"\n[timing] click latency (next sentence -> heatmap shown): idle median {fmt_ms(idle)}; "
        f"during training median {fmt_ms(busy)}"
    )

    # stop, then stop again
    tab(page, "3 · Train")
    page.click("#stop-btn")
    wait_text(page, "#train-status", "stopped")
    shot(page, "05-stopped")
    page.click("#stop-btn")
    wait_text(page, "#train-message", "nothing to stop")

    # 4. generate: text and the heatmap of the attention that produced it
    tab(page, "4 · Generate")
    page.wait_for_function("() => document.querySelector('#gen-checkpoint input')?.value?.length > 0")
    fill(page, "#gen-prompt textarea", "jack owns a")
    page.click("#gen-btn")
    page.wait_for_function("() => document.querySelector('#gen-text textarea')?.value?.startsWith('jack owns a')")
    wait_text(page, "#gen-notes", "generated")
    page.wait_for_function(
        "() => document.querySelector('#gen-heatmap .js-plotly-plot')?.data?.[0]?.type === 'heatmap'"
    )
    generated = page.input_value("#gen-text textarea")
    assert len(generated.split()) > 3
    shot(page, "06-generated")
    fill(page, "#gen-prompt textarea", "zebra xylophone")
    page.click("#gen-btn")
    wait_text(page, "#gen-notes", "none of the prompt words are in the vocabulary")
    shot(page, "07-unknown-words")

    # 5. compare: the run is in the table
    tab(page, "5 · Compare")
    page.click("#compare-refresh")
    wait_text(page, "#compare-message", "1 run(s)")
    assert "previous (1 head)" in page.inner_text("#compare-table")
    shot(page, "08-compare")

    # a refreshed page re-attaches to the (now stopped) job
    page.reload()
    page.wait_for_selector("#corpus-summary h3")
    tab(page, "3 · Train")
    wait_text(page, "#train-status", "stopped")
    page.wait_for_function(  # the re-attached job's curve (drawn just after the status)
        "() => (document.querySelector('#loss-plot .js-plotly-plot')?.data?.[0]?.x || []).length >= 2"
    )
    shot(page, "09-reattached-after-refresh")
    ctx.close()


def test_bad_uploads_get_clear_messages_and_the_app_stays_up(browser, server, tmp_path):
    ctx, page = new_page(browser, server)
    cases = [
        ("empty.txt", b"", "#corpus-message", "is empty"),
        ("binary.txt", b"\x00\x01\x02\x03" * 300, "#corpus-message", "looks binary"),
    ]
    for name, data, where, expected in cases:
        path = tmp_path / name
        path.write_bytes(data)
        upload(page, path)
        wait_text(page, where, expected)
        assert "still using example.txt" in page.inner_text(where)
        shot(page, f"10-bad-upload-{path.stem}")
    wrong = tmp_path / "notes.pdf"
    wrong.write_bytes(b"%PDF-1.4 not a corpus")
    upload(page, wrong)
    wait_text(page, "#corpus-message", "notes.pdf is not a .txt file")
    shot(page, "11-bad-upload-wrong-type")
    big = tmp_path / "big.txt"
    big.write_bytes(b"the cat sat.\n" * (UPLOAD_LIMIT // 13 + 100))
    upload(page, big)
    page.get_by_text("exceed", exact=False).first.wait_for()
    shot(page, "12-bad-upload-too-big")
    # still up: a good upload works in the same page
    good = tmp_path / "good.txt"
    good.write_text("\n".join(generate_binding_corpus(15, seed=8)))
    upload(page, good)
    wait_text(page, "#corpus-message", "loaded good.txt")
    ctx.close()


def test_two_sessions_never_see_each_others_corpus_key_or_results(browser, server, tmp_path):
    secret_key = "planted-browser-session-a-secret-777"
    private = tmp_path / "private.txt"
    private.write_text("\n".join(f"zanzibar sentence number {i} is private." for i in range(12)))
    ctx_a, a = new_page(browser, server)
    ctx_b, b = new_page(browser, server)

    upload(a, private)
    wait_text(a, "#corpus-message", "loaded private.txt")
    tab(a, "2 · Attention")
    choose(a, "source-kind", "OpenAI-compatible API")
    fill(a, "#openai-key input", secret_key)
    choose(a, "source-kind", "Baseline: uniform")
    a.click("#score-btn")
    wait_text(a, "#score-progress", "finished")
    wait_text(a, "#sentence-text", "zanzibar")

    b.reload()
    b.wait_for_selector("#corpus-summary h3")
    assert "example.txt" in b.inner_text("#corpus-summary")
    tab(b, "2 · Attention")
    choose(b, "source-kind", "OpenAI-compatible API")
    assert b.input_value("#openai-key input") == ""
    b.click("#show-btn")
    wait_text(b, "#sentence-text", "Sentence 0 of 449")
    tab(b, "4 · Generate")
    tab(b, "5 · Compare")
    b.click("#compare-refresh")
    wait_text(b, "#compare-message", "run")  # a private server lists every run (the journey's too), not a's corpus
    tab(b, "3 · Train")
    wait_text(b, "#train-status", "no training run in this browser yet")
    html_b = b.content()
    assert "zanzibar" not in html_b and "private.txt" not in html_b and secret_key not in html_b
    shot(a, "13-session-a")
    shot(b, "14-session-b")
    ctx_a.close()
    ctx_b.close()


def test_heads_grid_click_draws_that_head_and_a_typed_sentence_is_shown(browser, server):
    ctx, page = new_page(browser, server)
    tab(page, "2 · Attention")
    page.click("#heads-box")
    page.click("#heads-map-btn")  # every head of the local LLM on the example corpus's first training sentences
    wait_text(page, "#heads-progress", "270 heads mapped")
    assert page.locator("#heads-grid button[data-head]").count() == 270
    shot(page, "15-heads-grid")
    page.click("#heads-grid button[data-head='L5.H3']")
    title = "() => document.querySelector('#heads-heatmap .js-plotly-plot')?.layout?.title?.text || ''"
    page.wait_for_function(f"() => ({title})().includes('L5.H3')")
    assert page.input_value("#heads-selected textarea") == "L5.H3"
    page.click("#heads-grid button[data-head='L21.H4']")  # a second click draws that head and adds it
    page.wait_for_function(f"() => ({title})().includes('L21.H4')")
    assert page.input_value("#heads-picked textarea") == "L5.H3, L21.H4"
    fill(page, "#heads-own textarea", "The zebra saw a purple dog")
    page.click("#heads-show-btn")
    wait_text(page, "#heads-message", "your sentence: the zebra saw a purple dog")
    ticks = page.evaluate("() => document.querySelector('#heads-heatmap .js-plotly-plot').layout.yaxis.ticktext")
    assert ticks == ["the (0)", "zebra (1)", "saw (2)", "a (3)", "purple (4)", "dog (5)"]
    page.click("#row-scale input")  # per-row colours: each row's largest cell is 1
    page.click("#heads-show-btn")
    page.wait_for_function(
        "() => document.querySelector('#heads-heatmap .js-plotly-plot')?.data?.[0]?.zmax === 1 && "
        "document.querySelector('#heads-heatmap .js-plotly-plot').data[0].z.every("
        "r => Math.abs(Math.max(...r.filter(v => v !== null)) - 1) < 1e-6)"
    )
    shot(page, "16-heads-typed-sentence")
    page.click("#heads-use-btn")
    wait_text(page, "#heads-use-message", "the source is now the local LLM (heads 5.3,21.4, one each)")
    page.click("#source-advanced-box")  # the form now shows the picked heads
    page.wait_for_function("() => document.querySelector('#local-heads textarea')?.value === '5.3,21.4'")
    ctx.close()
