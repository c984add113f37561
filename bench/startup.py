"""App start-up time: ``python app.py`` until ``GET /`` answers 200, against a bare Gradio app.

Each start is a fresh process on a free port (``LLMCOMP_PORT``) with a throw-away ``LLMCOMP_HOME``,
stopped once the page answers. The reference is a one-textbox ``gr.Blocks`` app started the same
way, so the ratio is what llmcomp adds on top of importing and launching Gradio.

    python -m bench.startup            # 3 starts each
    python -m bench.startup --quick    # 1 start each

Medians over the starts.
"""

from __future__ import annotations

import argparse
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

from bench.common import machine, print_table

REPO = Path(__file__).resolve().parents[1]
BARE_APP = """
import os
import gradio as gr
with gr.Blocks() as demo:
    gr.Textbox()
demo.launch(server_name="127.0.0.1", server_port=int(os.environ["LLMCOMP_PORT"]))
"""
TIMEOUT_S = 180.0


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


def time_start(argv: list[str]) -> float:
    """Seconds from process start until GET / returns 200; the process is stopped afterwards."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="llmcomp-startup-") as home:
        env = {
            **os.environ,
            "LLMCOMP_PORT": str(port),
            "LLMCOMP_HOST": "127.0.0.1",
            "LLMCOMP_HOME": home,
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
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
            return time.perf_counter() - t0
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(quick: bool = False) -> list[dict]:
    repeats = 1 if quick else 3
    cases = {
        "bare gradio app (reference)": [sys.executable, "-c", BARE_APP],
        "python app.py": [sys.executable, "app.py"],
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):  # interleaved, so drifting machine load hits both alike
        for name, argv in cases.items():
            samples[name].append(time_start(argv))
    ref = statistics.median(samples["bare gradio app (reference)"])
    return [
        {
            "start": name,
            "seconds (median)": statistics.median(v),
            "min": min(v),
            "max": max(v),
            "x bare gradio": statistics.median(v) / ref,
            "runs": len(v),
        }
        for name, v in samples.items()
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    rows = run(quick=p.parse_args().quick)
    print_table(
        f"app start-up until GET / is 200 ({machine()})",
        rows,
        ["start", "seconds (median)", "min", "max", "x bare gradio", "runs"],
    )


if __name__ == "__main__":
    main()
