"""Background jobs: long work in a worker thread, watched through immutable snapshots.

A request handler must never train or score a whole corpus itself: it would block its worker and
end with the connection. A ``Job`` runs its work in a daemon thread and publishes what it does as a
frozen ``JobSnapshot`` that any thread may read at any time; ``stop()`` asks it to end (scoring is
cancelled at the next progress report, training after its current step, with a checkpoint);
``wait(timeout)`` and ``follow(every, timeout)`` let a caller watch it against a deadline.

Two jobs share this pattern: ``TrainingJob`` (``llmcomp.app.training_job``: scores the corpus, then
trains, and keeps the run folder's record) and ``ScoringJob`` (``llmcomp.app.scoring``). ``JobManager`` allows one training
job per process (training is CPU-bound; two would halve each other) and remembers each owner's
latest job, so that whoever started it can find it again. An owner is an opaque string chosen by the
caller; it decides who may stop a job.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from llmcomp.errors import LLMCompError

if TYPE_CHECKING:  # the web app imports this module before torch has loaded
    from llmcomp.app.training import TrainingRun
    from llmcomp.app.training_job import TrainingJob
    from llmcomp.attention.base import ScoreStats
    from llmcomp.training.trainer import Trainer

log = logging.getLogger(__name__)

Status = Literal["idle", "scoring", "training", "stopped", "finished", "failed"]
RUNNING: tuple[str, ...] = ("scoring", "training")
#: errors whose message is meant for a person (one line, no secrets); anything else is a bug, logged in full
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (LLMCompError, ValueError, TypeError)


class JobError(LLMCompError, RuntimeError):
    """A job request that cannot be honoured (busy, nothing to stop), with a one-line reason."""


class JobStopped(LLMCompError):
    """Raised inside a job's own progress report when it has been asked to stop."""


def owner_tag(owner: str | None) -> str | None:
    """A short hash of an owner id: safe to write into a run folder (the id itself stays secret)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16] if owner else None


def one_line(e: BaseException, limit: int = 400) -> str:
    """An error's message on one line (whitespace collapsed), at most ``limit`` characters."""
    return (" ".join(str(e).split()) or type(e).__name__)[:limit]


def clock(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "?"


def stats_dict(stats: ScoreStats) -> dict[str, int]:
    """Scoring counters as a job reports them."""
    return {
        "done": stats.done,
        "sentences": stats.sentences,
        "scored": stats.scored,
        "cached": stats.cached,
        "failed": stats.failed,
        "requests": stats.requests,
        "tokens": stats.prompt_tokens + stats.completion_tokens,
    }


@dataclass(frozen=True)
class JobSnapshot:
    """A job at one instant. ``version`` grows with every change."""

    status: Status = "idle"
    job_id: str | None = None
    kind: str = "job"  # "training" or "scoring"
    label: str = ""
    owner: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0
    start_step: int = 0
    total_steps: int = 0
    metrics: tuple[dict[str, Any], ...] = ()
    scoring: dict[str, int] = field(default_factory=dict)  # stats_dict(): done, sentences, cached, failed, ...
    error: str | None = None
    checkpoint: str | None = None
    run_dir: str | None = None
    eta_s: float | None = None
    tokens_per_s: float | None = None
    version: int = 0

    @property
    def running(self) -> bool:
        return self.status in RUNNING

    @property
    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at

    @property
    def progress(self) -> float:
        """0..1: scoring progress while scoring (or for a scoring job), step progress otherwise."""
        if self.status == "scoring" or (self.kind == "scoring" and not self.total_steps):
            total = self.scoring.get("sentences", 0)
            return self.scoring.get("done", 0) / total if total else 0.0
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    @property
    def last_val_loss(self) -> float | None:
        vals = [m["val_loss"] for m in self.metrics if "val_loss" in m]
        return vals[-1] if vals else None


class Job:
    """Work in a daemon thread. Subclasses implement ``_run`` (return the final snapshot changes)
    and may override ``_finally``; ``snapshot()``, ``stop()``, ``wait()`` are safe from any thread."""

    kind = "job"

    def __init__(self, owner: str | None = None, on_finish: Callable[[Any], None] | None = None, **snap: Any):
        self.owner = owner
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._snap = JobSnapshot(job_id=uuid.uuid4().hex[:12], kind=self.kind, owner=owner, **snap)

    # --- state --------------------------------------------------------------------------------
    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._snap = replace(self._snap, version=self._snap.version + 1, **changes)

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return self._snap

    @property
    def running(self) -> bool:
        return self.snapshot().running

    # --- control ------------------------------------------------------------------------------
    def start(self, status: Status = "scoring") -> Job:
        if self._thread is not None:
            raise JobError("this job has already been started; start a new job instead")
        self._update(status=status, started_at=time.time())
        name = f"llmcomp-{self.kind}-{self._snap.job_id}"
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the job to end: scoring stops at its next progress report, training after its step."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ends, at most ``timeout`` seconds; True if it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def follow(self, every: float = 0.3, timeout: float | None = None) -> Iterator[JobSnapshot]:
        """Snapshots while the job runs (one now, then one every ``every`` seconds), then the final
        one; stops early, without stopping the job, once ``timeout`` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.wait(0):
            yield self.snapshot()
            left = every if deadline is None else min(every, deadline - time.monotonic())
            if left <= 0:
                return
            self.wait(left)
        yield self.snapshot()

    def check_stop(self, *_: Any) -> None:
        """A progress callback: raises JobStopped once ``stop()`` has been asked."""
        if self._stop.is_set():
            raise JobStopped(f"{self.kind} stopped on request")

    def on_scoring(self, stats: ScoreStats) -> None:
        """Progress callback for ``score_many``: publish the counts, honour a stop request."""
        self._update(scoring=stats_dict(stats))
        self.check_stop()

    # --- worker -------------------------------------------------------------------------------
    def _run(self) -> dict[str, Any]:
        raise NotImplementedError

    def _finally(self) -> None:
        """Runs after the work, whatever happened (release what the job holds, write records)."""

    def _work(self) -> None:
        try:
            end = self._run()
        except JobStopped:
            end = {"status": "stopped"}
        except EXPECTED_ERRORS as e:
            end = {"status": "failed", "error": one_line(e)}
        except Exception as e:  # noqa: BLE001 - the worker must report, never die silently
            log.exception("%s job %s failed", self.kind, self._snap.job_id)
            end = {"status": "failed", "error": f"{self.kind} stopped by an unexpected {type(e).__name__}: "
                   f"{one_line(e, 300)} (see the server log)"}  # fmt: skip
        self._update(eta_s=None, finished_at=time.time(), **end)
        try:
            self._finally()
        except Exception:  # noqa: BLE001
            log.exception("%s job %s could not clean up", self.kind, self._snap.job_id)
        if self._on_finish:
            try:
                self._on_finish(self)
            except Exception:  # noqa: BLE001
                log.exception("on_finish callback failed")


class JobManager:
    """At most one running training job per process; each owner's latest job stays reachable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: TrainingJob | None = None
        self._latest: dict[str | None, TrainingJob] = {}

    def active(self) -> TrainingJob | None:
        """The running job, if any."""
        job = self._active
        return job if job is not None and job.running else None

    def job_for(self, owner: str | None) -> TrainingJob | None:
        """This owner's latest job (running or ended)."""
        return self._latest.get(owner)

    def busy_message(self, owner: str | None) -> str | None:
        """Why a new job cannot start now, or None if it can."""
        job = self.active()
        if job is None:
            return None
        snap = job.snapshot()
        where = f"step {snap.step}/{snap.total_steps}" if snap.status == "training" else "scoring attention"
        if owner is not None and job.owner != owner:
            return (
                f"a training run is already in progress (started {clock(snap.started_at)} by another session, "
                f"{where}); wait for it to finish"
            )
        return f"a training run is already in progress (started {clock(snap.started_at)}, {where}); stop it first"

    def check_free(self, owner: str | None = None) -> None:
        """Raise JobError if a job is running (call before building an expensive Trainer)."""
        msg = self.busy_message(owner)
        if msg:
            raise JobError(msg)

    def start(
        self,
        work: TrainingRun | Trainer,
        owner: str | None = None,
        label: str = "",
        on_finish: Callable[[TrainingJob], None] | None = None,
    ) -> TrainingJob:
        """Start a training run (``app.training.start_training``'s, or a bare Trainer) in the
        background, or raise JobError if a job is running."""
        from llmcomp.app.training_job import TrainingJob

        with self._lock:
            self.check_free(owner)
            job = TrainingJob(work, label=label, owner=owner, on_finish=on_finish)
            self._active = job
            self._latest[owner] = job
            job.start()
        return job

    def stop(self, owner: str | None = None) -> JobSnapshot:
        """Stop the running job. ``owner=None`` may stop any job; an owner may stop only its own."""
        job = self.active()
        if job is None:
            raise JobError("no training run is in progress, so there is nothing to stop")
        if owner is not None and job.owner != owner:
            raise JobError("the training run in progress was started in another session; only that session can stop it")
        job.stop()
        return job.snapshot()


_DEFAULT = JobManager()


def default_manager() -> JobManager:
    """The process-wide manager the web app uses."""
    return _DEFAULT
