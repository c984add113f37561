"""Every named endpoint of the web app, called with gradio_client against the app launched here.

The app runs in this process on 127.0.0.1 with its own runs folder and cache. The LLM path goes over
real HTTP to the fake OpenAI-compatible server; the default path uses the real local LLM.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from gradio_client import Client, handle_file  # noqa: E402

from llmcomp.app.jobs import JobManager  # noqa: E402
from llmcomp.attention.prices import CHECKED  # noqa: E402
from llmcomp.settings import BudgetCaps, Paths  # noqa: E402
from llmcomp.text import load_corpus  # noqa: E402
from llmcomp.text.binding import generate_binding_corpus  # noqa: E402
from llmcomp.ui.app import build_app, launch_options  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
ENDPOINTS = {
    "/use_bundled_corpus",
    "/upload_corpus",
    "/set_source",
    "/estimate_cost",
    "/score_corpus",
    "/show_attention",
    "/compare_sources",
    "/export_matrix",
    "/training_status",
    "/start_training",
    "/stop_training",
    "/download_checkpoint",
    "/generate",
    "/list_models",
    "/compare_runs",
    "/compare_curves",
    "/rename_run",
    "/delete_run",
    "/app_status",
    "/map_heads",
    "/head_grid",
    "/show_head",
    "/use_heads",
    "/attention_data",
    "/metrics_data",
    "/runs_data",
    "/generate_data",
}
pytestmark = [
    pytest.mark.slow,
    # gradio's own pandas calls, not ours
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning", "ignore:The copy keyword:Warning"),
]
TINY = {"n_layer": 1, "n_embd": 16, "batch_size": 8}


@pytest.fixture(scope="module")
def app(served_app):
    return served_app


@pytest.fixture
def public(app):
    """The app served publicly for one test: each session sees its own runs (and the CLI's); on a private
    server every run is everyone's (tests/test_ui_compare_api.py)."""
    app.ctx.expose("0.0.0.0", None)
    yield app
    app.ctx.expose("127.0.0.1", None)


def client(app) -> Client:
    return Client(app.url, verbose=False)


def plot(output) -> dict:
    assert output and output["type"] == "plotly", output
    return json.loads(output["plot"])


def write(tmp_path: Path, name: str, data: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def poll(c: Client, until, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = c.predict(api_name="/training_status")
        job = out[3]
        if until(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting; last status: {job}")


def test_every_named_endpoint_is_public_and_documented(app):
    api = client(app).view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == ENDPOINTS
    assert not api["unnamed_endpoints"]


def test_default_local_llm_on_the_bundled_corpus(app):
    c = client(app)
    est = c.predict(max_sentences=4, api_name="/estimate_cost")  # defaults: local LLM, example.txt
    assert "local LLM, offline and free: 4 of 4 sentences to score" in est
    job = c.submit(max_sentences=4, api_name="/score_corpus")
    progress, heat, sentence, heads, number = job.result(timeout=240)
    assert number == 0 and "Sentence 0 of" in sentence  # the number box names the sentence drawn
    assert len(job.outputs()) >= 2, "scoring should stream progress before the result"
    assert "finished" in progress and "done <b>4</b>" in progress and "failed <b>0</b>" in progress
    first = load_corpus(DATA / "example.txt").sentences[0]
    fig = plot(heat)
    assert fig["data"][0]["type"] == "heatmap"
    assert fig["layout"]["yaxis"]["ticktext"] == [f"{w} ({i})" for i, w in enumerate(first)]
    assert "local" in fig["layout"]["title"]["text"]
    z = fig["data"][0]["z"]
    assert all(abs(sum(v for v in row if v is not None) - 1) < 1e-3 for row in z)
    assert heads["choices"] == [["head 0", 0]]
    fig2, text, _ = c.predict(sentence_no=2, head=0, api_name="/show_attention")
    assert "Sentence 2 of 449" in text and "local" in text
    assert plot(fig2)["data"][0]["type"] == "heatmap"
    path, msg = c.predict(sentence_no=2, fmt="csv", api_name="/export_matrix")
    header = Path(path).read_text().splitlines()[0]
    words = load_corpus(DATA / "example.txt").sentences[2]
    assert header == "head,query," + ",".join(f"{w} ({i})" for i, w in enumerate(words))
    assert "1 head(s)" in msg
    status = c.predict(api_name="/app_status")
    assert status["local_model"] == "loaded" and status["training_in_progress"] is False


def test_binding_corpus_oracle_side_by_side_and_json_export(app):
    c = client(app)
    msg, summary, hist, preview, split = c.predict("binding.txt", api_name="/use_bundled_corpus")
    assert "binding.txt" in msg and "2,000" in summary and "200 of 2,000" in split
    assert preview["headers"] == ["#", "split", "words", "sentence"]
    assert hist.startswith("<svg") and "sentences</title>" in hist  # the length histogram, as light SVG
    c.predict(kind="oracle", api_name="/set_source")
    progress, heat, sentence, _, _ = c.predict(kind="oracle", max_sentences=10, api_name="/score_corpus")
    assert "done <b>10</b>" in progress and "oracle" in sentence
    words = load_corpus(DATA / "binding.txt").sentences[0]
    fig = plot(heat)
    z = fig["data"][0]["z"]
    recall = words.index(":")  # "name :" points at that name's noun
    noun = max(range(recall + 1), key=lambda j: z[recall][j])
    assert words[noun] == words[recall + 1] and z[recall][noun] == pytest.approx(1.0)
    side, diff, note = c.predict(sentence_no=0, head=0, other="uniform", api_name="/compare_sources")
    assert len(plot(side)["data"]) == 2 and "uniform" in note
    dz = plot(diff)["data"][0]["z"]
    assert dz[recall][noun] == pytest.approx(1.0 - 1.0 / (recall + 1), abs=1e-4)
    path, _ = c.predict(sentence_no=0, fmt="json", api_name="/export_matrix")
    doc = json.loads(Path(path).read_text())
    assert doc["words"] == words and doc["kind"] == "oracle" and doc["corpus"] == "binding.txt"
    assert all(abs(sum(row) - 1) < 1e-5 for row in doc["matrix"][0])


def test_uploads_good_and_bad_each_get_a_clear_message(app, tmp_path):
    c = client(app)
    good = "\n".join(generate_binding_corpus(12, seed=1))
    msg, summary, *_ = c.predict(handle_file(write(tmp_path, "alpha.txt", good)), api_name="/upload_corpus")
    assert "loaded alpha.txt: 12 sentences" in msg and "alpha.txt" in summary
    cases = {
        "empty.txt": (b"", "empty.txt is empty"),
        "binary.txt": (b"\x00\x01\x02binary\x00" * 50, "looks binary"),
        "latin1.txt": ("café crème\n".encode("latin-1") * 20, "is not UTF-8"),
        "short.txt": ("one sentence. another one.\n", "at least 10 are needed"),
    }
    for name, (data, expected) in cases.items():
        msg, *rest = c.predict(handle_file(write(tmp_path, name, data)), api_name="/upload_corpus")
        assert expected in msg and "llmc-error" in msg, (name, msg)
        assert "still using alpha.txt" in msg
    msg, *_ = c.predict(handle_file(write(tmp_path, "notes.pdf", "%PDF-1.4 not text")), api_name="/upload_corpus")
    assert "notes.pdf is not a .txt file" in msg and "still using alpha.txt" in msg
    big = app.ctx.max_upload_bytes + 1
    with pytest.raises(Exception, match="(?i)exceed|size"):
        c.predict(handle_file(write(tmp_path, "big.txt", b"a b c.\n" * (big // 7 + 1))), api_name="/upload_corpus")
    # the app is still up and this session still has its good corpus
    assert c.predict(api_name="/app_status")["training_in_progress"] is False
    c.predict(kind="previous", api_name="/set_source")
    _, text, _ = c.predict(sentence_no=0, head=0, api_name="/show_attention")
    assert "Sentence 0 of 11" in text


def test_an_upload_can_keep_each_line_one_sequence(app, tmp_path):
    c = client(app)
    lines = [f"n{'abcdefghijkl'[i % 12]} owns a cat , nb owns a dog . nb : dog ." for i in range(12)]
    upload = handle_file(write(tmp_path, "recall.txt", "\n".join(lines)))
    msg, *_ = c.predict(upload, api_name="/upload_corpus")  # auto: each line cut at its inner full stop
    assert "loaded recall.txt: 24 sentences" in msg and "12 of 12 lines hold more than one sentence" in msg
    assert "set split to lines" in msg
    msg, summary, *_ = c.predict(upload, split="lines", api_name="/upload_corpus")
    assert "loaded recall.txt: 12 sentences" in msg and "cut" not in msg, msg
    c.predict(kind="previous", api_name="/set_source")
    _, text, _ = c.predict(sentence_no=0, head=0, api_name="/show_attention")
    assert "Sentence 0 of 11:</b> na owns a cat, nb owns a dog. nb: dog." in text  # the recall kept its binding


def test_openai_source_on_the_fake_server_never_leaks_the_key(app, fake_openai, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")  # the owner lets visitors use the fake server on 127.0.0.1
    key = "planted-visitor-secret-0123456789"
    c = client(app)
    lines = generate_binding_corpus(20, seed=2)
    c.predict(handle_file(write(tmp_path, "twenty.txt", "\n".join(lines))), api_name="/upload_corpus")
    src = dict(
        kind="openai", base_url=fake_openai.url, model="fake-model", api_key=key, relations=["meaning", "syntax"]
    )
    est = c.predict(**src, api_name="/estimate_cost")
    assert "sentence mode: 20 of 20 sentences to score, 20 requests" in est
    assert "cost unknown: no price for model" in est and "--price-input/--price-output" in est
    priced = c.predict(**dict(src, model="gpt-4o-mini"), api_name="/estimate_cost")  # issue 16: in dollars
    assert "about $0.0" in priced and "at gpt-4o-mini" in priced and f"s price of {CHECKED}" in priced, priced
    job = c.submit(**src, api_name="/score_corpus")
    progress, heat, sentence, heads, _ = job.result(timeout=120)
    assert "done <b>20</b>" in progress and "failed <b>0</b>" in progress
    assert int(progress.split("requests <b>")[1].split("<")[0]) >= 20
    assert heads["choices"] == [["0 · meaning", 0], ["1 · syntax", 1]]
    again, *_ = c.predict(**src, api_name="/score_corpus")
    assert "cached <b>20</b>" in again and "requests <b>0</b>" in again
    fig, text, _ = c.predict(sentence_no=3, head=1, api_name="/show_attention")
    assert "1 · syntax" in plot(fig)["layout"]["title"]["text"]
    assert any(h == f"Bearer {key}" for h in fake_openai.auth_headers)

    started = c.predict(steps=6, eval_every=3, **TINY, api_name="/start_training")
    assert "started" in started, started
    done = poll(c, lambda j: j.get("status") in ("finished", "failed", "stopped"))
    assert done["status"] == "finished", done
    before = fake_openai.requests
    text, notes, gfig, gheads, _ = c.predict(checkpoint="", prompt="alice owns a", seed=1, api_name="/generate")
    assert text.startswith("alice owns a") and "openai" in notes
    assert fake_openai.requests > before  # generation scores each prefix over HTTP
    assert plot(gfig)["data"][0]["type"] == "heatmap"
    # the key is nowhere on disk: cache, checkpoints, job records, downloads
    files = [p for p in app.paths.home.rglob("*") if p.is_file()] + [p for p in app.ctx.tmp.rglob("*") if p.is_file()]
    assert files and not [p for p in files if key.encode() in p.read_bytes()]
    assert key not in json.dumps([est, progress, again, text, notes, done, str(heads)])


def test_owner_key_goes_only_to_the_owner_endpoint_and_respects_the_caps(app, fake_openai, monkeypatch, tmp_path):
    owner_key = "planted-owner-secret-abcdef987654"
    monkeypatch.setenv("OPENAI_API_KEY", owner_key)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # the owner's endpoint is api.openai.com
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")  # and visitors may use the fake server on 127.0.0.1
    c = client(app)
    c.predict(
        handle_file(write(tmp_path, "owner.txt", "\n".join(generate_binding_corpus(15, seed=9)))),
        api_name="/upload_corpus",
    )
    foreign = dict(kind="openai", base_url=fake_openai.url, model="fake-model", relations=["coreference"])
    progress, *_ = c.predict(max_sentences=3, **foreign, api_name="/score_corpus")
    assert "done <b>3</b>" in progress
    assert fake_openai.auth_headers and not any(owner_key in h for h in fake_openai.auth_headers)

    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)  # now the fake server is the owner's endpoint
    budget = app.ctx.budget
    old = budget.limits
    budget.limits = BudgetCaps(session_requests=5, daily_requests=100)
    try:
        own = dict(foreign, relations=["relatedness"])
        refused = c.predict(**own, api_name="/estimate_cost")
        assert "llmc-error" in refused and "allows 5 more" in refused and "your own API key" in refused
        assert "no price for model" in refused  # the budget speaks of money too (fake-model has no price)
        progress, *_ = c.predict(**own, api_name="/score_corpus")
        assert "allows 5 more" in progress
        fake_openai.reset_counts()
        progress, *_ = c.predict(max_sentences=3, **own, api_name="/score_corpus")
        assert "done <b>3</b>" in progress
        assert any(h == f"Bearer {owner_key}" for h in fake_openai.auth_headers)
        assert budget.today().requests >= 3
        again = c.predict(**own, api_name="/estimate_cost")  # this session has now spent 3 of its 5
        assert "allows 2 more" in again
    finally:
        budget.limits = old


def test_training_lifecycle_one_job_at_a_time_and_isolated_sessions(app, public):
    a, b = client(app), client(app)
    a.predict("example.txt", api_name="/use_bundled_corpus")
    a.predict(kind="uniform", api_name="/set_source")
    # patience 0: never stop early, so the run is still going when the second Start comes
    msg = a.predict(steps=100_000, eval_every=10, patience=0, **TINY, api_name="/start_training")
    assert "started" in msg, msg
    job = poll(a, lambda j: len([m for m in j.get("metrics", []) if "val_loss" in m]) >= 2)
    n_points = len(job["metrics"])
    job = poll(a, lambda j: len(j.get("metrics", [])) > n_points)
    assert job["status"] == "training" and job["eta_s"] is not None and job["tokens_per_s"] > 0
    status, bar, fig, _ = a.predict(api_name="/training_status")
    assert "training: step" in status and "ETA" in status and "llmc-bar" in bar

    again = a.predict(steps=50, **TINY, api_name="/start_training")
    assert "a training run is already in progress" in again and "stop it first" in again
    other = b.predict(steps=50, **TINY, api_name="/start_training")
    assert "by another session" in other and "wait for it to finish" in other
    status_b, _, _, job_b = b.predict(api_name="/training_status")
    assert "another session is training" in status_b and "metrics" not in job_b
    assert "started in another session" in b.predict(api_name="/stop_training")

    assert "stopping" in a.predict(api_name="/stop_training")
    stopped = poll(a, lambda j: j["status"] == "stopped")
    assert 0 < stopped["step"] < stopped["total_steps"]
    assert "nothing to stop" in a.predict(api_name="/stop_training")
    run = stopped["run"]

    path, note = a.predict(resume="", api_name="/download_checkpoint")
    names = zipfile.ZipFile(path).namelist()
    assert {"checkpoint.json", "model.safetensors", "vocab.json"} <= set(names) and "zip" in note
    saved = json.loads(zipfile.ZipFile(path).read("checkpoint.json"))
    assert saved["train_config"]["patience"] == 0, saved["train_config"]  # the form's patience reached the run
    assert run in [v for _, v in a.predict(api_name="/list_models")["choices"]]
    assert run not in [v for _, v in b.predict(api_name="/list_models")["choices"]]
    assert "no run to download yet" in b.predict(resume="", api_name="/download_checkpoint")[1]
    assert "no saved run named" in b.predict(checkpoint=run, prompt="my", api_name="/generate")[1]

    target = stopped["step"] + 5
    resumed = a.predict(steps=target, eval_every=5, resume=run, **TINY, api_name="/start_training")
    assert f"resumed {run} at step {stopped['step']}" in resumed, resumed
    done = poll(a, lambda j: j["status"] == "finished")
    assert done["step"] == target

    text, notes, fig, heads, _ = a.predict(checkpoint=run, prompt="my mother", temperature=0, api_name="/generate")
    assert text.startswith("my mother") and "generated" in notes
    assert heads["choices"][0][0] == "supplied head 0 (uniform)"
    gfig = plot(fig)
    assert gfig["layout"]["yaxis"]["ticktext"][:2] == ["my (0)", "mother (1)"]
    _, unknown, *_ = a.predict(checkpoint=run, prompt="zebra xylophone", api_name="/generate")
    assert "llmc-error" in unknown and "none of the prompt words are in the vocabulary" in unknown
    _, partly, *_ = a.predict(checkpoint=run, prompt="my zebra", api_name="/generate")
    assert "unknown word(s) read as &lt;unk&gt;: zebra" in partly

    msg, _, _, _, curves, table, by_source, _ = a.predict(api_name="/compare_runs")
    rows = {r[0]: dict(zip(table["headers"], r, strict=True)) for r in table["data"]}
    assert run in rows and rows[run]["steps"] == f"{target}/{target}"
    assert rows[run]["source"] == "uniform (1 head)" and float(rows[run]["final val loss"]) == pytest.approx(
        done["metrics"][-1]["val_loss"], abs=1e-3
    )
    assert any(t["name"].startswith(run) for t in plot(curves)["data"])
    try:
        import llmcomp.experiments.compare  # noqa: F401
    except ImportError:
        assert by_source["data"] == []
    else:
        assert [r[:2] for r in by_source["data"]] == [["uniform", 1]]
    table_b = b.predict(api_name="/compare_runs")[5]
    assert run not in {r[0] for r in table_b["data"]}
    # a comparison folder written by the CLI (runs one level down, no owner) is visible to every session
    shared = app.paths.runs / "cmp-cli" / "uniform-seed7"
    shutil.copytree(app.paths.runs / run, shared)
    (shared / "run.json").unlink()  # the record names the owner; without it the run is nobody's
    table_b = b.predict(api_name="/compare_runs")[5]
    assert "cmp-cli/uniform-seed7" in {r[0] for r in table_b["data"]}


def test_learned_source_shows_the_models_own_heads(app):
    c = client(app)
    c.predict(kind="learned", n_heads=2, api_name="/set_source")
    assert "started" in c.predict(steps=10, eval_every=5, **TINY, api_name="/start_training")
    assert poll(c, lambda j: j["status"] in ("finished", "failed"))["status"] == "finished"
    text, notes, fig, heads, _ = c.predict(checkpoint="", prompt="my", seed=3, api_name="/generate")
    labels = [lab for lab, _ in heads["choices"]]
    assert labels == ["learned head 0 (last layer)", "learned head 1 (last layer)"]
    assert "learned its own attention" in notes
    assert plot(fig)["layout"]["yaxis"]["ticktext"][0] == "&lt;s&gt; (0)"  # plotly shows "<s> (0)"
    fig2, text2, _ = c.predict(sentence_no=0, head=0, api_name="/show_attention")
    assert "supplies no attention" in text2


def test_sessions_do_not_share_corpus_key_or_results(app, tmp_path):
    a, b = client(app), client(app)
    secret = "\n".join(f"zanzibar sentence number {i} is private." for i in range(12))
    a.predict(handle_file(write(tmp_path, "private.txt", secret)), api_name="/upload_corpus")
    a.predict(kind="previous", api_key="sk-session-a-secret-42", api_name="/set_source")
    fig_a, text_a, _ = a.predict(sentence_no=0, head=0, api_name="/show_attention")
    fig_b, text_b, _ = b.predict(sentence_no=0, head=0, api_name="/show_attention")
    assert "zanzibar" in text_a and "zanzibar" not in text_b
    outputs_b = [
        b.predict(api_name="/estimate_cost"),
        b.predict(api_name="/training_status"),
        b.predict(api_name="/compare_runs"),
        text_b,
        fig_b,
    ]
    blob = json.dumps(outputs_b, default=str)
    assert "zanzibar" not in blob and "sk-session-a-secret-42" not in blob and "private.txt" not in blob


def test_launch_options_come_from_the_environment(monkeypatch, tmp_path):
    paths = Paths(home=tmp_path, cache=tmp_path / "c.sqlite", runs=tmp_path / "runs")
    monkeypatch.delenv("LLMCOMP_HOST", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("LLMCOMP_PORT", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("LLMCOMP_AUTH", raising=False)
    monkeypatch.setenv("LLMCOMP_MAX_UPLOAD", "2mb")
    demo = build_app(paths=paths, jobs=JobManager())
    opts = launch_options(demo)
    assert opts["server_name"] == "127.0.0.1" and opts["server_port"] is None  # loopback unless told otherwise
    assert opts["max_file_size"] == 2_000_000 and opts["auth"] is None
    assert str(paths.cache.resolve()) in opts["blocked_paths"] and str(paths.runs.resolve()) in opts["blocked_paths"]
    monkeypatch.setenv("LLMCOMP_HOST", "0.0.0.0")
    monkeypatch.setenv("LLMCOMP_PORT", "7999")
    monkeypatch.setenv("LLMCOMP_AUTH", "ann:pw1,bob:pw2")
    opts = launch_options(demo)
    assert (opts["server_name"], opts["server_port"]) == ("0.0.0.0", 7999)
    assert opts["auth"] == [("ann", "pw1"), ("bob", "pw2")]
    assert launch_options(demo, host="127.0.0.2", port=8001)["server_port"] == 8001
    monkeypatch.setenv("LLMCOMP_AUTH", "no-colon")
    with pytest.raises(SystemExit, match="user:password"):
        launch_options(demo)


def test_login_from_the_environment_is_enforced(monkeypatch, tmp_path):
    """LLMCOMP_AUTH locks the app: without the login (or with a wrong one) the API answers 401 "Not
    authenticated", not a connection error; with it the same endpoint answers."""
    import httpx
    from gradio_client.exceptions import AuthenticationError

    monkeypatch.setenv("LLMCOMP_AUTH", "ann:secret-pw")
    demo = build_app(paths=Paths(home=tmp_path, cache=tmp_path / "c.sqlite", runs=tmp_path / "r"), jobs=JobManager())
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(demo, host="127.0.0.1"))
    try:
        ok = Client(demo.local_url, auth=("ann", "secret-pw"), verbose=False).predict(api_name="/app_status")
        assert ok["training_in_progress"] is False  # the server is up and answers a logged-in client
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(demo.local_url, verbose=False).predict(api_name="/app_status")
        with pytest.raises(ValueError, match="Could not login"):  # gradio_client's answer to a refused login
            Client(demo.local_url, auth=("ann", "wrong-pw"), verbose=False)
        for method, path in (("GET", "config"), ("GET", "gradio_api/info"), ("POST", "gradio_api/call/app_status")):
            r = httpx.request(method, demo.local_url + path, json={"data": []} if method == "POST" else None)
            assert r.status_code == 401 and r.json()["detail"]["error"] == "Not authenticated", (path, r.text)
    finally:
        demo.close()


def test_the_browser_id_key_survives_a_restart(tmp_path):
    """Runs belong to a browser id kept (encrypted) in the browser; its key must outlive the process."""
    paths = Paths(home=tmp_path, cache=tmp_path / "c.sqlite", runs=tmp_path / "r")
    first = build_app(paths=paths, jobs=JobManager()).llmcomp_context.browser_secret
    second = build_app(paths=paths, jobs=JobManager()).llmcomp_context.browser_secret
    assert first == second and len(first) >= 32
    assert (tmp_path / "browser-id-secret").stat().st_mode & 0o077 == 0  # readable by the owner only
    other = tmp_path / "elsewhere"
    assert (
        build_app(
            paths=Paths(home=other, cache=other / "c", runs=other / "r"), jobs=JobManager()
        ).llmcomp_context.browser_secret
        != first
    )


def test_preloader_loads_the_local_model_once_after_its_delay(tmp_path):
    """With no visitor, the armed preloader starts by itself; a second start is a no-op. Until the
    local LLM module is imported, the header's state comes without importing it (or torch)."""
    from llmcomp.ui.app import Preloader, local_model_state

    idle = Preloader(delay_s=3600)
    assert not idle.started and local_model_state(None) in ("not loaded", "loaded")
    p = Preloader(delay_s=0.2).arm()
    deadline = time.time() + 240
    while not p.started or local_model_state(p) != "loaded":
        assert time.time() < deadline, f"the preloader did not load the model: {local_model_state(p)}"
        assert not local_model_state(p).startswith("failed"), local_model_state(p)
        time.sleep(0.2)
    p.start()  # already started: nothing happens
    assert local_model_state(p) == "loaded"


# --- issue 11: whose key goes where, what one visitor can learn or spend --------------------------------
def test_a_new_client_does_not_reset_the_owner_key_allowance(app, fake_openai, monkeypatch):
    """The session cap follows the visitor (here: the address), not the gradio session a client opens."""
    from llmcomp.app.budget import OwnerKeyBudget

    monkeypatch.setenv("OPENAI_API_KEY", "planted-owner-secret-allowance-1")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    old, app.ctx.budget = app.ctx.budget, OwnerKeyBudget(BudgetCaps(session_requests=4, daily_requests=100))
    own = dict(kind="openai", base_url="", model="fake-model", relations=["meaning"])
    try:
        first = client(app)
        first.predict("example.txt", api_name="/use_bundled_corpus")
        progress, *_ = first.predict(max_sentences=3, **own, api_name="/score_corpus")
        assert "done <b>3</b>" in progress and app.ctx.budget.today().requests == 3
        second = client(app)  # a fresh Client: a fresh gradio session, the same visitor
        refused = second.predict(max_sentences=6, **own, api_name="/estimate_cost")  # 3 cached, 3 to score
        assert "needs about 3 requests" in refused and "key allows 1 more" in refused  # not a fresh 4
        progress, *_ = second.predict(max_sentences=6, **own, api_name="/score_corpus")
        assert "allows 1 more" in progress and app.ctx.budget.today().requests == 3
    finally:
        app.ctx.budget = old


def test_visitors_cannot_reach_private_addresses_or_send_their_key_where_a_run_points(app, fake_openai, monkeypatch,
                                                                                      tmp_path):  # fmt: skip
    from llmcomp.cli import main

    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMCOMP_ALLOW_PRIVATE_URLS"):
        monkeypatch.delenv(var, raising=False)
    c = client(app)
    c.predict("example.txt", api_name="/use_bundled_corpus")
    for url in (fake_openai.url, "http://169.254.169.254/latest/meta-data"):
        src = dict(kind="openai", base_url=url, model="fake-model", relations=["meaning"])
        est = c.predict(max_sentences=1, **src, api_name="/estimate_cost")
        progress, *_ = c.predict(max_sentences=1, **src, api_name="/score_corpus")
        for shown in (est, progress):
            assert "llmc-error" in shown and "loopback, link-local or private address" in shown, shown
    assert fake_openai.requests == 0

    # a run made outside the app (listed for everyone) whose checkpoint names a capture server
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"the cat saw dog number {i} ." for i in range(30)), encoding="utf-8")
    run = app.paths.runs / "made-by-cli"
    tiny = ["--steps", "1", "--n-layer", "1", "--n-embd", "16", "--batch-size", "4", "--no-cache"]
    assert main(["train", "--corpus", str(corpus), "--attention", "uniform", "--run-dir", str(run), *tiny]) == 0
    for meta_path in run.glob("checkpoint*/checkpoint.json"):  # the last and the best
        meta = json.loads(meta_path.read_text())
        meta["source_spec"] = {
            "kind": "openai",
            "base_url": fake_openai.url,
            "model": "fake-model",
            "heads": ["meaning"],
        }
        meta_path.write_text(json.dumps(meta))
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")  # so that only the key rule stands in the way
    key = "planted-visitor-secret-for-a-capture-server"
    c.predict(kind="openai", base_url="https://api.example.com/v1", api_key=key, api_name="/set_source")
    _, notes, *_ = c.predict(checkpoint="made-by-cli", prompt="the cat", api_name="/generate")
    assert f"this checkpoint was scored at {fake_openai.url}; enter {fake_openai.url} as the Base URL" in notes
    assert "this checkpoint was scored at" in c.predict(
        steps=3, resume="made-by-cli", **TINY, api_name="/start_training"
    )
    assert fake_openai.requests == 0 and not any(key in h for h in fake_openai.auth_headers)
    shutil.rmtree(run)


def test_on_a_public_app_estimates_do_not_tell_what_other_visitors_scored(app, fake_openai, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")
    secret = "\n".join(f"the password of vault {i} is swordfish." for i in range(12))
    src = dict(kind="openai", base_url=fake_openai.url, model="fake-model", api_key="sk-a", relations=["syntax"])
    a, b = client(app), client(app)
    a.predict(handle_file(write(tmp_path, "vault.txt", secret)), api_name="/upload_corpus")
    progress, *_ = a.predict(max_sentences=2, **src, api_name="/score_corpus")
    assert "done <b>2</b>" in progress
    b.predict(handle_file(write(tmp_path, "guess.txt", secret)), api_name="/upload_corpus")  # b guesses the text
    assert "0 of 2 sentences to score" in b.predict(max_sentences=2, **src, api_name="/estimate_cost")  # local: shown
    app.ctx.expose("0.0.0.0", None)
    try:
        shown = b.predict(max_sentences=2, **src, api_name="/estimate_cost")  # b's own view of the cache
        assert "2 of 2 sentences to score, 2 requests" in shown
        assert "done <b>2</b>" in a.predict(max_sentences=2, **src, api_name="/score_corpus")[0]  # into a's view
        assert "0 of 2 sentences to score" in a.predict(max_sentences=2, **src, api_name="/estimate_cost")
        assert "2 of 2 sentences to score" in b.predict(max_sentences=2, **src, api_name="/estimate_cost")
    finally:
        app.ctx.expose("127.0.0.1", None)


def test_heads_mapped_a_head_for_a_typed_sentence_and_picked_heads_become_the_source(app):
    c = client(app)
    c.predict("example.txt", api_name="/use_bundled_corpus")
    c.predict(kind="gaussian", n_heads=2, api_name="/set_source")
    _, msg = c.predict(head="head 1", sentence_no=0, own_sentence="", row_scale=False, api_name="/show_head")
    assert "not mapped yet" in msg
    job = c.submit(pattern="self", selected="", api_name="/map_heads")
    progress, grid = job.result(timeout=120)
    assert "2 heads mapped on 50 training sentences" in progress
    assert grid.count("data-head=") == 2 and 'data-head="head 1"' in grid and "<b>self</b>" in grid
    fig, msg = c.predict(head="head 1", sentence_no=0, own_sentence="The Zebra saw a dog.", row_scale=True,
                         api_name="/show_head")  # fmt: skip
    assert "your sentence: the zebra saw a dog." in msg and "head 1" in msg
    z = plot(fig)["data"][0]["z"]
    assert len(z) == 6 and all(max(v for v in row if v is not None) == pytest.approx(1.0) for row in z)
    long = " ".join(["word"] * 65)  # the corpus allows 64 words a sentence
    _, bad = c.predict(head="head 1", sentence_no=0, own_sentence=long, row_scale=False, api_name="/show_head")
    assert "llmc-error" in bad and "65 words; this corpus allows at most 64" in bad
    _, grid2 = c.predict(pattern="previous", selected="head 0", api_name="/head_grid")
    assert "<b>previous</b>" in grid2 and "llmc-picked" in grid2
    msg, kind, heads = c.predict(picked="head 0", api_name="/use_heads")
    assert "llmc-error" in msg and "cannot read picked head" in msg
    msg, kind, heads = c.predict(picked="L21.H4, 23.5", api_name="/use_heads")
    assert kind == "local" and heads == "21.4,23.5" and "heads 21.4,23.5, one each" in msg
    _, text, choices = c.predict(sentence_no=1, head=1, row_scale=False, api_name="/show_attention")
    assert choices["choices"] == [["L21.H4", 0], ["L23.H5", 1]] and "heads 21.4,23.5" in text


#: the endpoints of the Corpus, Attention (with its Heads section) and Train tabs
NAMED_OUTPUTS = {"/use_bundled_corpus", "/upload_corpus", "/set_source", "/estimate_cost", "/score_corpus",
                 "/show_attention", "/compare_sources", "/export_matrix", "/map_heads", "/head_grid", "/show_head",
                 "/use_heads", "/training_status", "/start_training", "/stop_training", "/download_checkpoint"}  # fmt: skip


def test_every_output_of_these_tabs_says_what_it_is(app):
    """The API page named outputs "the 'value_16' Html component": each needs a label of its own."""
    api = client(app).view_api(return_format="dict", print_info=False)["named_endpoints"]
    unnamed = [
        (name, r["component"])
        for name in NAMED_OUTPUTS
        for r in api[name]["returns"]
        if not r.get("label") or r["label"].startswith("value_")
    ]
    assert not unnamed, unnamed


def test_a_baseline_source_takes_one_argument(app):
    """Gradio gives each endpoint parameter its component's initial value as the default, so the kind is enough."""
    c = client(app)
    params = client(app).view_api(return_format="dict", print_info=False)["named_endpoints"]["/set_source"]
    assert params["parameters"][0]["parameter_name"] == "kind"
    assert all(p["parameter_has_default"] for p in params["parameters"][1:])
    c.predict("uniform", api_name="/set_source")
    fig, text, _ = c.predict(sentence_no=1, api_name="/show_attention")
    assert "uniform" in plot(fig)["layout"]["title"]["text"] and "Sentence 1 of" in text
    c.predict(kind="previous", api_name="/set_source")
    fig, _, _ = c.predict(sentence_no=1, api_name="/show_attention")
    assert "previous" in plot(fig)["layout"]["title"]["text"]


def test_an_error_clears_the_plot_it_would_have_replaced(app):
    """A plot beside an error would show what the inputs no longer ask for: the error comes with no plot."""
    c = client(app)
    c.predict(kind="openai", api_name="/set_source")  # nothing scored with it: show_attention must refuse
    fig, text, _ = c.predict(sentence_no=0, api_name="/show_attention")
    assert fig is None and "llmc-error" in text and "score the corpus first" in text
    side, diff, msg = c.predict(sentence_no=0, head=0, other="uniform", api_name="/compare_sources")
    assert side is None and diff is None and "llmc-error" in msg


def test_a_long_line_names_the_remedy_the_app_offers(app, tmp_path):
    long = "\n".join(["the cat sat on the mat."] * 12 + [" ".join(["word"] * 80)])
    c = client(app)
    msg, *_ = c.predict(handle_file(write(tmp_path, "long.txt", long)), split="lines", api_name="/upload_corpus")
    assert "80 words" in msg and "choose split auto" in msg and "max_words" not in msg
    msg, *_ = c.predict(handle_file(write(tmp_path, "long.txt", long)), split="auto", api_name="/upload_corpus")
    assert "80 words" in msg and "split it in the file" in msg and "max_words" not in msg
