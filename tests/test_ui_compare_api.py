"""Runs visible where they should be, and the Compare endpoints, through gradio_client against the app
launched here: on a private server (127.0.0.1) a fresh client lists a run trained by another session; once
the same app is exposed publicly (``AppContext.expose``) it does not. Rename and delete by API."""

from __future__ import annotations

import json
import os
import time

import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from gradio_client import Client  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning", "ignore:The copy keyword:Warning"),
]
TINY = {"n_layer": 1, "n_embd": 16, "batch_size": 8}


@pytest.fixture(scope="module")
def app(served_app):
    return served_app


def train(c: Client, kind: str, steps: int = 12, timeout: float = 120) -> str:
    c.predict("example.txt", api_name="/use_bundled_corpus")
    c.predict(kind=kind, api_name="/set_source")
    assert "started" in c.predict(steps=steps, eval_every=4, **TINY, api_name="/start_training")
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = c.predict(api_name="/training_status")[3]
        if job.get("status") in ("finished", "failed", "stopped"):
            assert job["status"] == "finished", job
            return job["run"]
        time.sleep(0.3)
    raise AssertionError("training did not finish")


def models(c: Client) -> list[str]:
    return [v for _, v in c.predict(api_name="/list_models")["choices"]]


def test_private_server_lists_every_run_for_every_client_public_one_does_not(app):
    assert app.ctx.public is False
    run = train(Client(app.url, verbose=False), "uniform")
    fresh = Client(app.url, verbose=False)
    assert run in models(fresh)  # a script can generate against a run trained in another session
    text, notes, *_ = fresh.predict(checkpoint=run, prompt="my mother", temperature=0, api_name="/generate")
    assert text.startswith("my mother") and "generated" in notes
    try:
        app.ctx.expose("0.0.0.0", None)  # the same app, served publicly: each visitor sees their own runs
        assert app.ctx.public is True
        assert run not in models(Client(app.url, verbose=False))
        msg, *_ = Client(app.url, verbose=False).predict(api_name="/compare_runs")
        assert "no runs yet" in msg
    finally:
        app.ctx.expose("127.0.0.1", None)
    assert run in models(Client(app.url, verbose=False))


def test_compare_runs_rename_and_delete_by_api(app):
    c = Client(app.url, verbose=False)
    run = train(c, "previous")
    msg, corpus, info, shown, curves, table, by_source, picker = c.predict(api_name="/compare_runs")
    assert "run(s) on this corpus" in msg and "example.txt" in info and "sentences" in info
    columns = table["headers"]
    rows = {r[columns.index("folder")]: dict(zip(columns, r, strict=True)) for r in table["data"]}
    row = rows[run]
    assert row["status"] == "finished" and row["source"] == "previous (1 head)" and row["steps"] == "12/12"
    assert "," in row["tokens/s"] or row["tokens/s"].isdigit()
    assert len(row["best val loss"].split(".")[1]) == 3 and row["batch"] == "8" and row["kind"] == "previous"
    assert run in [v for _, v in shown["choices"]] and run in shown["value"]
    fig = json.loads(curves["plot"])
    assert {t["name"] for t in fig["data"]} >= {f"{run} · validation", f"{run} · train"}
    timed = json.loads(c.predict(corpus["value"], 0.5, "time", False, [run], api_name="/compare_curves")["plot"])
    assert [t["name"] for t in timed["data"]] == [f"{run} · validation"]
    assert timed["layout"]["xaxis"]["title"]["text"] == "training time (s)"
    assert "smoothed" in timed["layout"]["title"]["text"]
    none_shown = json.loads(c.predict(corpus["value"], 0, "step", True, [], api_name="/compare_curves")["plot"])
    assert none_shown["data"] == []

    assert "is now shown as baseline previous" in c.predict(run, "baseline previous", api_name="/rename_run")
    table = c.predict(api_name="/compare_runs")[5]
    assert "baseline previous" in [r[0] for r in table["data"]]
    assert "no run named &#x27;../cache.sqlite&#x27;" in c.predict("../cache.sqlite", api_name="/delete_run")
    cache_before = app.paths.cache.stat().st_mtime if app.paths.cache.exists() else None
    assert f"deleted {run}" in c.predict(run, api_name="/delete_run")
    assert not (app.paths.runs / run).exists() and run not in models(c)
    assert (app.paths.cache.stat().st_mtime if app.paths.cache.exists() else None) == cache_before


def test_a_run_in_progress_is_shown_and_cannot_be_deleted(app):
    c = Client(app.url, verbose=False)
    c.predict("example.txt", api_name="/use_bundled_corpus")
    c.predict(kind="uniform", api_name="/set_source")
    assert "started" in c.predict(steps=100_000, eval_every=5, **TINY, api_name="/start_training")
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            job = c.predict(api_name="/training_status")[3]
            if len([m for m in job.get("metrics", []) if "val_loss" in m]) >= 2:
                break
            time.sleep(0.3)
        run = job["run"]
        table = c.predict(api_name="/compare_runs")[5]
        columns = table["headers"]
        rows = {r[columns.index("folder")]: dict(zip(columns, r, strict=True)) for r in table["data"]}
        assert rows[run]["status"] == "training" and rows[run]["best val loss"]
        refused = c.predict(run, api_name="/delete_run")
        assert "is in progress: stop it first" in refused and (app.paths.runs / run).is_dir()
    finally:
        c.predict(api_name="/stop_training")
        deadline = time.time() + 30
        while c.predict(api_name="/training_status")[3].get("status") == "training" and time.time() < deadline:
            time.sleep(0.3)
