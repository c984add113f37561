"""App start-up: ``python app.py`` until ``GET /`` answers 200 and until the page is usable in a
headless Chromium, against a bare Gradio app started the same way.

Each start is a fresh process on a free port (``LLMCOMP_PORT``) with a throw-away ``LLMCOMP_HOME``,
stopped once measured. The browser is launched before the app, so its own start-up is not counted;
the page is opened as soon as ``GET /`` answers. "Usable" means the first tab's content is on
screen: the corpus summary for llmcomp, the textbox for the bare app. The reference is a
one-textbox ``gr.Blocks`` app, so the ratio is what llmcomp adds on top of importing and launching
Gradio and rendering a page. Without playwright and Chromium only ``GET /`` is measured.

    python -m bench.startup            # 3 starts each
    python -m bench.startup --quick    # 1 start each

Medians over the starts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import machine, print_table

REPO = Path(__file__).resolve().parents[1]
BARE_APP = """
import os
import gradio as gr
with gr.Blocks() as demo:
    gr.Textbox()
demo.launch(server_name="127.0.0.1", server_port=int(os.environ["LLMCOMP_PORT"]))
"""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
TIMEOUT_S = 180.0
#: name -> (command, the element that shows the page is usable)
CASES: dict[str, tuple[list[str], str]] = {
    "bare gradio app (reference)": ([sys.executable, "-c", BARE_APP], "textarea"),
    "python app.py": ([sys.executable, "app.py"], "#corpus-summary h3"),
}
REFERENCE = "bare gradio app (reference)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def time_start(argv: list[str], usable: str, browser: Any | None) -> tuple[float, float | None]:
    """Seconds from process start until GET / returns 200, and until ``usable`` is on screen (None
    without a browser); the process is stopped afterwards."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="llmcomp-startup-") as home:
        env = {
            **os.environ,
            "LLMCOMP_PORT": str(port),
            "LLMCOMP_HOST": "127.0.0.1",
            "LLMCOMP_HOME": home,
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        page = browser.new_page() if browser is not None else None
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/"
            while not answers(url):
                if proc.poll() is not None:
                    raise RuntimeError(f"{' '.join(argv)} exited with code {proc.returncode} before answering")
                if time.perf_counter() - t0 > TIMEOUT_S:
                    raise RuntimeError(f"{' '.join(argv)} did not answer within {TIMEOUT_S:.0f} s")
                time.sleep(0.05)
            served = time.perf_counter() - t0
            if page is None:
                return served, None
            page.goto(url, wait_until="commit", timeout=TIMEOUT_S * 1000)
            page.wait_for_selector(usable, timeout=TIMEOUT_S * 1000)
            return served, time.perf_counter() - t0
        finally:
            if page is not None:
                page.close()
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def chromium():
    """A headless Chromium driven by playwright, or None (with a note) when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright is not installed: page-usable times are not measured", file=sys.stderr)
        yield None
        return
    if not Path(CHROMIUM).is_file():
        print(f"{CHROMIUM} is missing: page-usable times are not measured", file=sys.stderr)
        yield None
        return
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _row(name: str, measure: str, values: list[float], ref: list[float]) -> dict:
    return {
        "start": name,
        "measure": measure,
        "seconds (median)": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "x bare gradio": statistics.median(values) / statistics.median(ref),
        "runs": len(values),
    }


def run(quick: bool = False) -> list[dict]:
    repeats = 1 if quick else 3
    served: dict[str, list[float]] = {k: [] for k in CASES}
    usable: dict[str, list[float]] = {k: [] for k in CASES}
    with chromium() as browser:
        for _ in range(repeats):  # interleaved, so drifting machine load hits both alike
            for name, (argv, selector) in CASES.items():
                s, u = time_start(argv, selector, browser)
                served[name].append(s)
                if u is not None:
                    usable[name].append(u)
    rows = [_row(name, "GET / 200", v, served[REFERENCE]) for name, v in served.items()]
    if usable[REFERENCE]:
        rows += [_row(name, "page usable", v, usable[REFERENCE]) for name, v in usable.items()]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    rows = run(quick=p.parse_args().quick)
    print_table(
        f"app start-up: seconds from process start ({machine()})",
        rows,
        ["start", "measure", "seconds (median)", "min", "max", "x bare gradio", "runs"],
    )


if __name__ == "__main__":
    main()
