"""No visitor blocks another; every job ends (issue 11, item 2).

A source that never answers stands for a hostile or dead server: here a small test double whose
``score_many`` blocks until ``cancel()`` (it honours the cancel, or ignores it as a careless source
would), and, over real HTTP, the fake OpenAI-compatible server's ``hang`` fault. Every wait in these
tests has a deadline well above what the fix needs and well below what the bug would take: a stop
without cancel takes the whole grace period (5 s) or forever, a close that waits on the worker blocks
for the source's whole timeout.
"""

from __future__ import annotations

import threading
import time

import pytest

from llmcomp.app import scoring
from llmcomp.app.jobs import STOP_GRACE_S, JobError, JobManager, JobSnapshot
from llmcomp.app.sources import SourceSettings
from llmcomp.attention import make_source
from llmcomp.attention.base import AttentionSource
from llmcomp.errors import LLMCompError
from llmcomp.model import GPTConfig
from llmcomp.settings import Paths
from llmcomp.text import parse_corpus
from llmcomp.text.binding import generate_binding_corpus
from llmcomp.training import TrainConfig, Trainer
from llmcomp.ui import attention_actions, train_actions
from llmcomp.ui.common import AppContext
from llmcomp.ui.state import Session

TINY = GPTConfig(n_layer=1, n_embd=16)
PROMPT_S = 2.0  # "at once": a cancelled source ends in milliseconds; without the cancel a stop takes STOP_GRACE_S
assert PROMPT_S < STOP_GRACE_S


class HangingSource(AttentionSource):
    """A source whose server never answers: scoring blocks until ``cancel()`` (if it honours it) or
    until the test releases it. The 60 s cap only keeps a failing test from hanging the suite."""

    kind = "hanging"

    def __init__(self, honours_cancel: bool = True):
        super().__init__(n_heads=1)
        self.honours_cancel = honours_cancel
        self.entered = threading.Event()
        self.release = threading.Event()
        self.cancels = 0

    def _score_batch(self, sentences, stats, progress):
        self.entered.set()
        self.release.wait(60)
        stats.failed = len(sentences)
        if progress:  # a last report, as a source makes on its way out
            progress(stats)
        raise LLMCompError(f"scoring cancelled; kept 0 of {len(sentences)} sentences")

    def cancel(self) -> None:
        self.cancels += 1
        if self.honours_cancel:
            self.release.set()


@pytest.fixture(scope="module")
def corpus():
    return parse_corpus("\n".join(generate_binding_corpus(40, seed=3)), name="binding-40")


def trainer(corpus, tmp_path, source: AttentionSource, steps: int = 3, name: str = "run") -> Trainer:
    cfg = TrainConfig(steps=steps, batch_size=8, eval_every=1000, log_every=1)
    return Trainer(corpus, source, TINY, cfg, run_dir=tmp_path / name)


def ended_within(job, seconds: float) -> JobSnapshot:
    """The job's final snapshot, or AssertionError if it is still running after ``seconds``."""
    assert job.wait(seconds), f"still {job.snapshot().status} after {seconds} s"
    snap = job.snapshot()
    assert not snap.running, snap
    return snap


def until(predicate, seconds: float, what: str):
    """Poll ``predicate()`` until it returns something true, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            assert value, f"{what}: not within {seconds} s"
            return value
        time.sleep(0.05)


@pytest.fixture
def app_ctx(tmp_path, monkeypatch):
    """The web app's context with its own folders; one network scoring slot, so one pass fills it."""
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")  # the fake server is on 127.0.0.1; the owner allows it
    paths = Paths(home=tmp_path, cache=tmp_path / "cache.sqlite", runs=tmp_path / "runs")
    ctx = AppContext.create(paths=paths, jobs=JobManager(lanes={"network": 1}))
    yield ctx
    for job in ctx.jobs.stop_all("the test ended"):  # a failed test leaves nothing behind to write to a closed cache
        job.wait(STOP_GRACE_S + 5)
    ctx.close()


def visitor(owner: str, corpus, server=None) -> Session:
    """A browser's session: scoring against ``server`` (the OpenAI-compatible source) or uniform."""
    if server is None:
        return Session(owner=owner, corpus=corpus, settings=SourceSettings(kind="uniform"))
    settings = SourceSettings(kind="openai", base_url=server.url, model="fake-model")
    return Session(owner=owner, corpus=corpus, settings=settings, api_key=f"sk-{owner}-typed-key-0123456789")


# --- the job layer ----------------------------------------------------------------------------
def test_stop_cancels_a_hanging_scoring_pass_at_once_and_another_run_can_start(corpus, tmp_path):
    """Before: a training run whose source hangs stayed in "scoring attention: 0/n"; Stop had no effect."""
    jobs = JobManager()
    source = HangingSource()
    job = jobs.start(trainer(corpus, tmp_path, source), owner="alice")
    assert source.entered.wait(10) and job.snapshot().status == "scoring"
    with pytest.raises(JobError, match="already in progress"):
        jobs.check_free("bob")
    jobs.stop("alice")
    snap = ended_within(job, PROMPT_S)
    assert snap.status == "stopped" and source.cancels == 1
    assert jobs.active() is None
    nxt = jobs.start(trainer(corpus, tmp_path, make_source("uniform"), name="next"), owner="bob")
    assert nxt.wait(30) and nxt.snapshot().status == "finished"


def test_a_stopped_job_whose_source_ignores_the_cancel_is_let_go(corpus, tmp_path):
    """A source that ignores cancel() cannot hold the server's one training slot: after the grace
    period the job ends as stopped (its thread is left behind, and what it does later is ignored)."""
    jobs = JobManager()
    source = HangingSource(honours_cancel=False)
    job = jobs.start(trainer(corpus, tmp_path, source), owner="alice")
    job.stop_grace_s = 0.5
    assert source.entered.wait(10)
    jobs.stop("alice")
    snap = ended_within(job, 0.5 + 2.0)  # the grace, plus the watchdog's tick and the record written
    assert snap.status == "stopped" and source.cancels == 1
    assert "did not end within 0.5 s of the stop" in snap.error
    nxt = jobs.start(trainer(corpus, tmp_path, make_source("uniform"), name="next"), owner="bob")
    assert nxt.wait(30) and nxt.snapshot().status == "finished"
    source.release.set()  # the abandoned worker now reports and ends: the job it was let go from does not change
    until(lambda: not job._thread.is_alive(), 5, "the abandoned worker ended")
    assert job.snapshot() == snap


def test_stop_cancels_a_scoring_job(tmp_path):
    """The attention tab's pass (a ScoringJob) is cancelled by stop() too, not at a progress report
    that a hanging server never sends."""
    source = HangingSource()
    job = scoring.start_scoring(source, [["a", "b", "."]] * 4)
    assert source.entered.wait(10)
    job.stop("the page was closed")
    snap = ended_within(job, PROMPT_S)
    assert snap.status == "stopped" and snap.error == "the page was closed" and source.cancels == 1


def test_a_job_nobody_watches_is_stopped_when_its_lease_runs_out(corpus, tmp_path):
    """An abandoned page stops polling: its run is stopped (with a checkpoint); a watched one goes on."""
    jobs = JobManager()
    job = jobs.start(trainer(corpus, tmp_path, make_source("uniform"), steps=100_000), owner="alice", lease_s=0.6)
    watched = scoring.start_scoring(HangingSource(), [["a", "b", "."]])
    watched.lease_s = 0.6
    deadline = time.monotonic() + 1.8  # three leases: the watched job must outlive them
    while time.monotonic() < deadline:
        watched.touch()
        time.sleep(0.1)
    snap = ended_within(job, 3.0)  # the lease, plus the watchdog's tick and the current step
    assert snap.status == "stopped" and "nobody watched it for 0.6 s" in snap.error
    assert (tmp_path / "run" / "checkpoint" / "checkpoint.json").is_file()
    assert watched.running
    watched.stop()
    ended_within(watched, PROMPT_S)


def test_lanes_hold_one_pass_per_visitor_and_refuse_when_full():
    """A visitor holds at most one network pass (a new one replaces the last); a lane full of other
    visitors' passes refuses at once with one line; a source in no lane starts at once regardless."""
    jobs = JobManager(lanes={"network": 2})
    sources: list[HangingSource] = []

    def start():
        sources.append(HangingSource())
        return scoring.start_scoring(sources[-1], [["a", "b", "."]])

    first = jobs.admit_scoring("network", "alice", start)
    second = jobs.admit_scoring("network", "alice", start)
    snap = ended_within(first, PROMPT_S)
    assert snap.status == "stopped" and "replaced by a newer scoring pass" in snap.error and second.running
    bob = jobs.admit_scoring("network", "bob", start)
    t0 = time.monotonic()
    with pytest.raises(
        JobError, match=r"^the server is already running 2 scoring passes with network sources for other sessions"
    ) as e:
        jobs.admit_scoring("network", "carol", start)
    assert time.monotonic() - t0 < 0.5 and "\n" not in str(e.value)
    free = jobs.admit_scoring(None, "carol", lambda: scoring.start_scoring(make_source("uniform"), [["a", "b"]] * 3))
    assert free.wait(PROMPT_S) and free.snapshot().status == "finished"
    bob.stop()
    ended_within(bob, PROMPT_S)
    carol = jobs.admit_scoring("network", "carol", start)  # a slot freed by an ended pass is free again
    for job in (second, carol):
        job.stop()
        ended_within(job, PROMPT_S)
    assert len(sources) == 4  # the refused start never built a job


# --- the web app's actions, over real HTTP to a server that never answers -------------------------
def test_closing_the_page_stops_its_scoring_pass_at_once_and_frees_its_slot(app_ctx, fake_openai, corpus):
    """Before: the generator's ``finally`` joined the worker, so an abandoned request ran on (and
    held its slot) until the source gave up: for hours against a server that never answers. Gradio
    closes the generator on its event loop, so the close must not wait either."""
    fake_openai.add_fault("hang", times=None)
    page = attention_actions.score_corpus(app_ctx, visitor("alice", corpus, fake_openai), 3)
    assert "scoring: 0 of 3" in next(page)[0]
    until(lambda: fake_openai.requests, 10, "the request reached the server")
    closer = threading.Thread(target=page.close, daemon=True)
    t0 = time.monotonic()
    closer.start()
    closer.join(PROMPT_S)
    assert not closer.is_alive() and time.monotonic() - t0 < 0.5, "closing the page waited on the scoring pass"

    def bob_admitted() -> bool:  # the one network slot: refused while alice's pass still runs
        bob = attention_actions.score_corpus(app_ctx, visitor("bob", corpus, fake_openai), 3)
        first = next(bob)[0]
        bob.close()
        assert "scoring: 0 of 3" in first or "the most it allows" in first, first
        return "scoring: 0 of 3" in first

    until(bob_admitted, PROMPT_S, "the closed page's slot was given to another visitor")


def test_closing_the_page_never_waits_even_for_a_source_that_ignores_the_cancel(app_ctx, corpus, monkeypatch):
    """Gradio closes the generator on its event loop: a close that waited for the pass to end would
    freeze every visitor's page for as long as the source ignores the cancel (here: until let go)."""
    source = HangingSource(honours_cancel=False)
    monkeypatch.setattr(attention_actions, "build_source", lambda *a, **kw: source)
    page = attention_actions.score_corpus(app_ctx, visitor("alice", corpus), 3)
    assert "scoring: 0 of 3" in next(page)[0] and source.entered.wait(10)
    closer = threading.Thread(target=page.close, daemon=True)
    t0 = time.monotonic()
    closer.start()
    closer.join(STOP_GRACE_S + 5)
    assert time.monotonic() - t0 < 0.5, f"closing the page took {time.monotonic() - t0:.1f} s"
    assert source.cancels == 1
    source.release.set()


def test_a_free_pass_never_waits_and_a_visitor_holds_one_network_pass(app_ctx, fake_openai, corpus):
    """With the network lane full (alice's pass hangs), bob's network pass is refused at once with one
    line, carol's uniform pass finishes at once, and alice's second pass replaces her first."""
    fake_openai.add_fault("hang", times=None)
    alice = attention_actions.score_corpus(app_ctx, visitor("alice", corpus, fake_openai), 3)
    assert "scoring: 0 of 3" in next(alice)[0]
    t0 = time.monotonic()
    refused = next(attention_actions.score_corpus(app_ctx, visitor("bob", corpus, fake_openai), 3))[0]
    assert "already running 1 scoring pass with network sources for other sessions, the most" in refused
    carol = list(attention_actions.score_corpus(app_ctx, visitor("carol", corpus), 5))
    assert "finished" in carol[-1][0] and "done <b>5</b>" in carol[-1][0]
    assert time.monotonic() - t0 < PROMPT_S
    again = attention_actions.score_corpus(app_ctx, visitor("alice", corpus, fake_openai), 3)
    assert "scoring: 0 of 3" in next(again)[0]  # her own earlier pass does not count against her
    deadline = time.monotonic() + PROMPT_S
    for out in alice:  # her first page now reports its pass stopped (progress comes every 0.3 s)
        if "stopped" in out[0]:
            break
        assert time.monotonic() < deadline, "alice's first pass was not replaced"
    assert "replaced by a newer scoring pass of the same session" in out[0]
    again.close()


def test_stop_ends_a_hanging_training_run_and_another_run_can_start(app_ctx, fake_openai, corpus):
    """Before: a run whose source hangs stayed in "scoring attention: 0/n"; Stop had no effect and
    nobody could start another run."""
    fake_openai.add_fault("hang", times=None)
    form = {**train_actions.form_defaults(), "steps": 3, "batch_size": 8, "n_layer": 1, "n_embd": 16}
    alice = visitor("alice", corpus, fake_openai)
    assert "started" in train_actions.start(app_ctx, alice, None, form, "")
    until(lambda: fake_openai.requests, 10, "the run's scoring reached the server")

    def job() -> dict:
        return train_actions.status(app_ctx, alice, "", None)[3]

    assert job()["status"] == "scoring"
    refused = train_actions.start(app_ctx, visitor("bob", corpus), None, form, "")
    assert "already in progress" in refused and "by another session" in refused
    assert "cancelled now" in train_actions.stop(app_ctx, alice, None)
    until(lambda: job()["status"] == "stopped", PROMPT_S, "the stopped run ended")
    bob = visitor("bob", corpus)
    assert "started" in train_actions.start(app_ctx, bob, None, form, "")
    until(lambda: train_actions.status(app_ctx, bob, "", None)[3]["status"] == "finished", 60, "bob's run finished")


# --- through the web app: Gradio's own queue must not hold a free pass up --------------------------
def test_scoring_is_bounded_by_the_apps_lanes_not_by_gradios_queue(tmp_path):
    """The fast guard of the test below: a Gradio concurrency limit on score_corpus is shared by every
    source, so two hanging passes would fill it; the app's lanes bound network and local passes instead."""
    from llmcomp.ui.app import build_app

    demo = build_app(paths=Paths(home=tmp_path, cache=tmp_path / "c.sqlite", runs=tmp_path / "r"), jobs=JobManager())
    (score,) = [fn for fn in demo.fns.values() if fn.api_name == "score_corpus"]
    assert score.concurrency_limit is None, f"score_corpus has Gradio's limit {score.concurrency_limit!r}"
    assert demo.llmcomp_context.jobs.lanes == {"network": 4, "local": 2}


@pytest.mark.slow  # launches the app and three gradio clients (about 12 s on two busy cores)
def test_a_third_visitors_free_pass_finishes_while_two_others_hang(tmp_path, fake_openai, monkeypatch):
    """Before: two sessions scoring against a never-answering URL filled score_corpus's two queue
    slots, and a third visitor's free uniform scoring waited past 90 s. Launched as ``launch()`` does
    (default_concurrency_limit=2); the free pass must finish in seconds (10 s: a busy machine's margin)."""
    from gradio_client import Client
    from gradio_client.utils import Status

    from llmcomp.ui.app import build_app, launch_options

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")
    fake_openai.add_fault("hang", times=None)
    paths = Paths(home=tmp_path, cache=tmp_path / "cache.sqlite", runs=tmp_path / "runs")
    demo = build_app(paths=paths, jobs=JobManager())
    demo.queue(default_concurrency_limit=2)
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(demo, host="127.0.0.1"))
    hanging = [Client(demo.local_url, verbose=False) for _ in range(2)]
    try:
        passes = [
            c.submit(
                kind="openai",
                base_url=fake_openai.url,
                model="fake-model",
                api_key=f"sk-{i}-typed-0123456789",
                relations=["meaning"],
                max_sentences=3,
                api_name="/score_corpus",
            )  # fmt: skip
            for i, c in enumerate(hanging)
        ]
        running = (Status.PROCESSING, Status.ITERATING)  # a generator streaming its progress is ITERATING
        until(lambda: all(p.status().code in running for p in passes), 20, "both passes hold a slot")
        free = Client(demo.local_url, verbose=False)
        progress = free.submit(kind="uniform", max_sentences=5, api_name="/score_corpus").result(timeout=10)[0]
        assert "finished" in progress and "done <b>5</b>" in progress
        assert all(p.status().code in running for p in passes)  # the two still hang meanwhile
    finally:
        for c in hanging:
            c.close()
        demo.close()
        demo.llmcomp_context.close()
