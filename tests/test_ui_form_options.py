"""The web form's answer and device fields through the HTTP API (gradio_client against the app served here):
the OpenAI source's sparse answers over the fake server (sentence mode only), the local LLM's device and
precision, the trainer's device. A device this machine lacks is one line in the form's words."""

from __future__ import annotations

import html
import os
import re
import time
from pathlib import Path

import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from gradio_client import Client, handle_file  # noqa: E402
from test_device import NO_GPU  # noqa: E402  (one marker for "a machine without a CUDA GPU")

from llmcomp.text.binding import generate_binding_corpus  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning", "ignore:The copy keyword:Warning"),
]


@pytest.fixture(scope="module")
def app(served_app):
    return served_app


def test_sparse_answers_reach_the_source_and_only_in_sentence_mode(app, fake_openai, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")  # the owner lets visitors use the fake server on 127.0.0.1
    c = Client(app.url, verbose=False)
    corpus = tmp_path / "twelve.txt"
    corpus.write_text("\n".join(generate_binding_corpus(12, seed=3)), encoding="utf-8")
    assert "llmc-error" not in c.predict(handle_file(str(corpus)), api_name="/upload_corpus")[0]
    src = dict(kind="openai", base_url=fake_openai.url, model="fake-model", api_key="k", relations=["meaning"])
    sparse = dict(src, answer="sparse", top_k=2)
    completion = lambda text: int(re.search(r"\+ ([\d,]+) completion", text).group(1).replace(",", ""))  # noqa: E731
    dense_tokens = completion(c.predict(**src, api_name="/estimate_cost"))
    assert completion(c.predict(**sparse, api_name="/estimate_cost")) < dense_tokens  # two words named per row
    dense, *_ = c.predict(**src, api_name="/score_corpus")
    assert "done <b>12</b>" in dense and "failed <b>0</b>" in dense
    before = fake_openai.requests
    progress, *_ = c.predict(**sparse, api_name="/score_corpus")
    # sparse answers are other matrices: none of the dense ones in the cache serves them
    assert "cached <b>0</b>" in progress and "failed <b>0</b>" in progress, progress
    assert fake_openai.requests - before >= 12
    again, *_ = c.predict(**sparse, api_name="/score_corpus")
    assert "cached <b>12</b>" in again and "requests <b>0</b>" in again
    pair = c.predict(**dict(sparse, mode="pair"), api_name="/estimate_cost")  # the form hides it; the API is told
    assert "llmc-error" in pair and "sparse (sentence mode only)" in pair and "\n" not in pair


@NO_GPU
def test_an_llm_device_this_machine_lacks_is_one_line_and_cpu_works(app):
    c = Client(app.url, verbose=False)
    for device in ("cuda", "cuda:1"):
        msg = html.unescape(c.predict(kind="local", llm_device=device, api_name="/estimate_cost"))
        assert "llmc-error" in msg and f"LLM device {device!r}: this machine has no such device" in msg, msg
        assert "choose one of auto, cpu" in msg
        progress, *_ = c.predict(kind="local", llm_device=device, api_name="/score_corpus")
        assert "llmc-error" in progress and "no such device" in progress
    ok = c.predict(kind="local", llm_device="cpu", llm_precision="fp32", api_name="/estimate_cost")
    assert "llmc-error" not in ok and "local LLM, offline and free" in ok, ok


@NO_GPU
def test_the_training_device_this_machine_lacks_is_one_line_and_cpu_trains(app):
    c = Client(app.url, verbose=False)
    c.predict("uniform", api_name="/set_source")
    tiny = {"steps": 4, "eval_every": 2, "n_layer": 1, "n_embd": 16, "batch_size": 8}
    msg = html.unescape(c.predict(**tiny, device="cuda", api_name="/start_training"))
    assert "llmc-error" in msg and "Training device 'cuda': this machine has no such device" in msg, msg
    assert "started" in c.predict(**tiny, device="cpu", api_name="/start_training")
    deadline = time.time() + 120
    while (job := c.predict(api_name="/training_status")[3])["status"] not in ("finished", "failed", "stopped"):
        assert time.time() < deadline, job
        time.sleep(0.3)
    assert job["status"] == "finished", job
