"""Background jobs: a real Trainer in a worker thread, snapshots, one job at a time, stop, the run record."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest

from llmcomp.app.jobs import JobError, JobManager, JobSnapshot, owner_tag
from llmcomp.attention import make_source
from llmcomp.errors import LLMCompError
from llmcomp.model import GPTConfig
from llmcomp.text import parse_corpus
from llmcomp.text.binding import generate_binding_corpus
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.run_folder import read_record

TINY = GPTConfig(n_layer=1, n_embd=16)


@pytest.fixture(scope="module")
def corpus():
    return parse_corpus("\n".join(generate_binding_corpus(60, seed=5)), name="binding-60")


def trainer(corpus, tmp_path, steps: int, kind: str = "uniform", **kw) -> Trainer:
    cfg = TrainConfig(steps=steps, batch_size=8, eval_every=kw.pop("eval_every", 5), log_every=1, **kw)
    return Trainer(corpus, make_source(kind), TINY, cfg, run_dir=tmp_path / f"run-{kind}-{steps}")


def wait_for(job, predicate, timeout: float = 60.0) -> JobSnapshot:
    deadline = time.time() + timeout
    while time.time() < deadline:
        snap = job.snapshot()
        if predicate(snap):
            return snap
        time.sleep(0.02)
    raise AssertionError(f"timed out; last snapshot: {job.snapshot()}")


def test_a_job_scores_trains_finishes_and_records_itself(corpus, tmp_path):
    jobs = JobManager()
    job = jobs.start(trainer(corpus, tmp_path, steps=20), owner="alice", label="uniform on binding-60")
    seen: list[str] = []
    while job.running:
        seen.append(job.snapshot().status)
        time.sleep(0.005)
    assert job.wait(30)
    snap = job.snapshot()
    assert snap.status == "finished" and not snap.running
    assert snap.step == snap.total_steps == 20 and snap.progress == 1.0
    assert set(seen) <= {"scoring", "training"} and seen[0] == "scoring"
    assert [m["step"] for m in snap.metrics] == list(range(1, 21))
    assert snap.last_val_loss == snap.metrics[-1]["val_loss"]
    assert snap.scoring["sentences"] == len(corpus.sentences) == snap.scoring["done"]
    assert (tmp_path / "run-uniform-20" / "checkpoint" / "checkpoint.json").is_file()
    assert snap.checkpoint.endswith("checkpoint")
    record = read_record(tmp_path / "run-uniform-20")  # run.json, through the run folder's one reader
    assert record.status == "finished" and record.owner == owner_tag("alice") != "alice"
    assert record.attention["sentences"] == len(corpus.sentences) and record.label == "uniform"
    assert record.corpus.sha256 == corpus.sha256 and record.finished_at >= record.started_at
    assert jobs.job_for("alice") is job and jobs.active() is None


def test_second_start_while_running_is_refused_with_a_clear_message(corpus, tmp_path):
    jobs = JobManager()
    job = jobs.start(trainer(corpus, tmp_path, steps=100_000), owner="alice")
    try:
        wait_for(job, lambda s: s.status == "training")
        with pytest.raises(
            JobError, match=r"a training run is already in progress \(started \d\d:\d\d:\d\d, .*\); stop it first"
        ):
            jobs.start(trainer(corpus, tmp_path, steps=5, kind="previous"), owner="alice")
        with pytest.raises(JobError, match="by another session.*wait for it to finish"):
            jobs.check_free("bob")
        assert isinstance(JobError("x"), LLMCompError)
        assert jobs.job_for("bob") is None  # the refused start left nothing behind
    finally:
        jobs.stop()
        job.wait(30)


def test_stop_saves_a_checkpoint_and_stop_when_idle_says_so(corpus, tmp_path):
    jobs = JobManager()
    with pytest.raises(JobError, match="no training run is in progress, so there is nothing to stop"):
        jobs.stop("alice")
    job = jobs.start(trainer(corpus, tmp_path, steps=100_000), owner="alice")
    wait_for(job, lambda s: len(s.metrics) >= 3)
    with pytest.raises(JobError, match="another session"):
        jobs.stop("bob")
    assert job.running  # bob's attempt did nothing
    jobs.stop("alice")
    assert job.wait(30)
    snap = job.snapshot()
    assert snap.status == "stopped" and 3 <= snap.step < snap.total_steps
    assert (tmp_path / "run-uniform-100000" / "checkpoint" / "model.safetensors").is_file()
    with pytest.raises(JobError, match="nothing to stop"):
        jobs.stop("alice")
    # the stopped run is free to be replaced, and a new job can start at once
    nxt = jobs.start(trainer(corpus, tmp_path, steps=3, kind="previous"), owner="bob")
    assert nxt.wait(30) and nxt.snapshot().status == "finished"
    assert jobs.job_for("alice") is job and jobs.job_for("bob") is nxt


def test_snapshots_are_consistent_while_another_thread_trains(corpus, tmp_path):
    jobs = JobManager()
    job = jobs.start(trainer(corpus, tmp_path, steps=150, eval_every=10), owner=None)
    per_thread: list[list[JobSnapshot]] = [[], [], []]
    errors: list[BaseException] = []

    def reader(out: list[JobSnapshot]):
        try:
            while job.running:
                out.append(job.snapshot())
                time.sleep(0.0005)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    assert job.wait(60)
    for t in threads:
        t.join()
    assert not errors
    snaps = [s for out in per_thread for s in out]
    training = [s for s in snaps if s.status == "training"]
    assert training, "never saw the job training"
    for s in training:
        steps = [m["step"] for m in s.metrics]
        assert steps == sorted(steps) and len(set(steps)) == len(steps)
        assert 0 <= s.progress <= 1
    etas = [s.eta_s for s in training if s.eta_s is not None]
    assert etas and all(math.isfinite(e) and e >= 0 for e in etas)
    assert any(s.tokens_per_s for s in training)
    for out in per_thread:  # each reader sees versions only grow
        versions = [s.version for s in out]
        assert versions == sorted(versions)


def test_a_failing_source_ends_the_job_as_failed_with_one_line(corpus, tmp_path, fake_openai):
    from llmcomp.attention.openai_source import OpenAISource

    fake_openai.api_key = "the-right-key"
    src = OpenAISource(base_url=fake_openai.url, api_key="sk-wrong-key-123456", model="fake-model", max_retries=0)
    t = Trainer(corpus, src, TINY, TrainConfig(steps=5, batch_size=8), run_dir=tmp_path / "run-fail")
    jobs = JobManager()
    job = jobs.start(t, owner="alice")
    assert job.wait(60)
    snap = job.snapshot()
    assert snap.status == "failed" and not snap.running
    assert "rejected the API key (401)" in snap.error and "\n" not in snap.error
    assert "sk-wrong-key-123456" not in snap.error and "sk-wrong-key-123456" not in repr(snap)
    record = (tmp_path / "run-fail" / "run.json").read_text()
    assert json.loads(record)["status"] == "failed" and "sk-wrong-key-123456" not in record
    src.close()
    assert jobs.active() is None  # a failed job does not block the next one


def test_a_job_cannot_be_started_twice(corpus, tmp_path):
    jobs = JobManager()
    job = jobs.start(trainer(corpus, tmp_path, steps=2), owner="alice")
    with pytest.raises(JobError, match="already been started"):
        job.start()
    assert job.wait(30)
