"""The data endpoints (/attention_data, /metrics_data, /runs_data, /generate_data) and the Generate
endpoint's probabilities, copy note and cleared outputs, called with gradio_client against the app
launched here (its own runs folder and cache; baselines only, so no model loads)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from gradio_client import Client, handle_file  # noqa: E402

from llmcomp.text import load_corpus  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
DATA_ENDPOINTS = ("/attention_data", "/metrics_data", "/runs_data", "/generate_data")
PARROT = "\n".join(["the cat sat on the mat ."] * 12)  # learned by heart in a few dozen steps
TINY = {"n_layer": 1, "n_embd": 16, "batch_size": 8}
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning", "ignore:The copy keyword:Warning"),
]


@pytest.fixture(scope="module")
def app(served_app):
    return served_app


def client(app) -> Client:
    return Client(app.url, verbose=False)


def assert_stochastic_and_causal(matrix: list[list[float]]) -> None:
    for i, row in enumerate(matrix):
        assert sum(row) == pytest.approx(1.0, abs=1e-5), (i, row)
        assert all(v == 0 for v in row[i + 1 :]), (i, row)


def test_every_output_of_the_data_and_generate_endpoints_says_what_it_is(app):
    api = client(app).view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in (*DATA_ENDPOINTS, "/generate"):
        for ret in api[name]["returns"]:
            assert ret["label"] and not ret["label"].startswith("value_"), (name, ret)
        assert all(p["parameter_has_default"] for p in api[name]["parameters"]) or name == "/generate"
    assert api["/attention_data"]["returns"][0]["label"].startswith("attention: words")


def test_attention_data_for_a_baseline_takes_one_argument(app):
    c = client(app)
    record = c.predict(kind="previous", api_name="/attention_data")  # this call only; the session keeps its source
    first = load_corpus(DATA / "example.txt").sentences[0]
    assert record["words"] == first and record["sentence_index"] == 0 and record["corpus"] == "example.txt"
    assert record["heads"] == ["head 0"] and record["source_spec"] == {"kind": "previous", "n_heads": 1}
    (m,) = record["matrices"]
    assert len(m) == len(first) and m[2][1] == pytest.approx(0.5)
    assert_stochastic_and_causal(m)
    assert json.loads(json.dumps(record)) == record


def test_attention_data_follows_the_sessions_source_and_head_choice(app):
    c = client(app)
    c.predict("binding.txt", api_name="/use_bundled_corpus")
    c.predict(kind="gaussian", n_heads=2, api_name="/set_source")
    both = c.predict(sentence_no=5, api_name="/attention_data")
    assert both["heads"] == ["head 0", "head 1"] and both["sentence_index"] == 5 and both["corpus"] == "binding.txt"
    assert both["words"] == load_corpus(DATA / "binding.txt").sentences[5]
    for m in both["matrices"]:
        assert_stochastic_and_causal(m)
    one = c.predict(sentence_no=5, heads="head 1", api_name="/attention_data")
    assert one["head_indices"] == [1] and one["matrices"] == [both["matrices"][1]]
    with pytest.raises(Exception, match=r"no head '7': this source has 2 head\(s\)"):
        c.predict(heads="7", api_name="/attention_data")
    with pytest.raises(Exception, match="sentence_no 5000 is out of range: binding.txt has 2000"):
        c.predict(sentence_no=5000, api_name="/attention_data")


def poll(c: Client, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = c.predict(api_name="/training_status")[3]
        if job.get("status") in ("finished", "stopped", "failed"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"training did not end: {job}")


@pytest.fixture(scope="module")
def parrot(app, tmp_path_factory):
    """A session that uploaded the parrot corpus and trained a run on it with the previous-word baseline."""
    path = tmp_path_factory.mktemp("parrot") / "parrot.txt"
    path.write_text(PARROT, encoding="utf-8")
    c = client(app)
    c.predict(handle_file(str(path)), split="lines", api_name="/upload_corpus")
    c.predict(kind="previous", api_name="/set_source")
    assert "started" in c.predict(steps=120, eval_every=40, **TINY, api_name="/start_training")
    job = poll(c)
    assert job["status"] == "finished", job
    return SimpleNamespace(client=c, run=job["run"])


def test_runs_and_metrics_as_records(app, parrot):
    c = parrot.client
    runs = {r["name"]: r for r in c.predict(api_name="/runs_data")}
    record = runs[parrot.run]
    assert record["kind"] == "previous" and record["steps"] == 120 and record["corpus"]["name"] == "parrot.txt"
    assert isinstance(record["best_val_loss"], float) and "path" not in record
    latest = c.predict(api_name="/metrics_data")  # empty run name: the latest
    named = c.predict(run=parrot.run, api_name="/metrics_data")
    assert latest == named and named["run"] == parrot.run
    vals = [m for m in named["records"] if "val_loss" in m]
    assert [m["step"] for m in vals][-1] == 120 and all(isinstance(m["val_loss"], float) for m in vals)
    with pytest.raises(Exception, match="no saved run named '../etc'"):
        c.predict(run="../etc", api_name="/metrics_data")


def test_generate_data_words_probabilities_attention_and_the_copy(app, parrot):
    c = parrot.client
    g = c.predict(prompt="the cat", temperature=0, api_name="/generate_data")
    assert g["run"] == parrot.run and g["text"] == "the cat sat on the mat."
    assert g["generated_words"] == ["sat", "on", "the", "mat", "."]
    assert [ch["word"] for ch in g["choices"]] == g["generated_words"]
    for ch in g["choices"]:
        assert ch["top"][0]["word"] == ch["word"] and ch["prob"] == ch["top"][0]["prob"]  # greedy: the likeliest
        assert sum(t["prob"] for t in ch["top"]) <= 1 + 1e-6
    assert [ch["position"] for ch in g["choices"]] == [2, 3, 4, 5, 6]
    att = g["attention"]
    assert att["words"] == ["the", "cat", *g["generated_words"]]
    for m in att["matrices"]:
        assert_stochastic_and_causal(m)
    assert g["copies"]["checked"] and g["copies"]["sentence"] == ["the", "cat", "sat", "on", "the", "mat", "."]
    sampled = c.predict(prompt="the", temperature=1.0, top_k=2, seed=5, api_name="/generate_data")
    for ch in sampled["choices"]:
        assert len(ch["top"]) <= 2 and ch["word"] in [t["word"] for t in ch["top"]]


def test_generate_shows_probabilities_the_copy_and_an_error_clears_the_last_text(app, parrot):
    c = parrot.client
    text, notes, fig, heads, table = c.predict(checkpoint="", prompt="the cat", temperature=0, api_name="/generate")
    assert text == "the cat sat on the mat." and "copies training sentence" in notes and "parrot.txt" in notes
    assert table["headers"] == ["#", "word", "p(word)", "likeliest next words"]
    assert [row[1] for row in table["data"]] == ["sat", "on", "the", "mat", "."]
    assert table["data"][0][3].startswith("sat ")
    text, notes, fig, heads, table = c.predict(checkpoint="", prompt="zebra", api_name="/generate")
    assert "llmc-error" in notes and "e.g. the, cat" in notes  # words, never "."
    assert text == "" and fig is None and heads["choices"] == [] and not table["data"]


def test_the_run_generated_from_stays_selected_when_the_list_is_refreshed(app, parrot):
    c = parrot.client
    assert "started" in c.predict(steps=20, eval_every=10, **TINY, api_name="/start_training")
    newer = poll(c)["run"]
    assert newer != parrot.run and c.predict(api_name="/list_models")["value"] == newer  # nothing picked: newest
    c.predict(checkpoint=parrot.run, prompt="the cat", temperature=0, api_name="/generate")
    listed = c.predict(api_name="/list_models")
    assert listed["value"] == parrot.run and newer in [v for _, v in listed["choices"]]
