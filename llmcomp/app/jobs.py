"""Background jobs: long work in a worker thread, watched through immutable snapshots.

A request handler must never train or score a whole corpus itself: it would block its worker and
end with the connection. A ``Job`` runs its work in a daemon thread and publishes what it does as a
frozen ``JobSnapshot`` that any thread may read at any time. Every job ends: ``stop()`` cancels its
source's requests at once (scoring) or ends training after the current step, with a checkpoint; a
stopped job whose source ignores the cancel is let go after ``stop_grace_s`` (its thread is left
behind, its outcome ignored); a job with a lease (``lease_s``) that nobody watches (``touch``,
``follow``) for that long is stopped, so an abandoned page stops spending. ``wait(timeout)`` and
``follow(every, timeout)`` watch a job against a deadline.

Two jobs share this pattern: ``TrainingJob`` (``llmcomp.app.training_job``: scores the corpus, then
trains, and keeps the run folder's record) and ``ScoringJob`` (``llmcomp.app.scoring``). ``JobManager``
(kept with ``TrainingJob``, importable from here) allows one training job per process (training is CPU-bound; two would halve each other), remembers
each owner's latest job, and admits scoring jobs by lane (``admit_scoring``): a lane such as
"network" holds at most one job per owner and a fixed number in all, so that one visitor cannot fill
the server and sources outside every lane (computed on the spot) never wait. An owner is an opaque
string chosen by the caller; it decides who may stop a job.
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

from llmcomp.errors import LLMCompError, one_line  # one_line: also re-exported for the app's callers

if TYPE_CHECKING:  # the web app imports this module before torch has loaded
    from llmcomp.app.training_job import JobManager, default_manager  # noqa: F401 - re-exported below
    from llmcomp.attention.base import ScoreStats

log = logging.getLogger(__name__)

Status = Literal["idle", "scoring", "training", "stopped", "finished", "failed"]
RUNNING: tuple[str, ...] = ("scoring", "training")
#: errors whose message is meant for a person (one line, no secrets); anything else is a bug, logged in full
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (LLMCompError, ValueError, TypeError)
#: seconds a stopped job's source may take to end before the job is let go (a source that ignores cancel)
STOP_GRACE_S = 5.0


class JobError(LLMCompError, RuntimeError):
    """A job request that cannot be honoured (busy, nothing to stop), with a one-line reason."""


class JobStopped(LLMCompError):
    """Raised inside a job's own progress report when it has been asked to stop."""


def owner_tag(owner: str | None) -> str | None:
    """A short hash of an owner id: safe to write into a run folder (the id itself stays secret)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16] if owner else None


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
    """Work in a daemon thread. Subclasses implement ``_run`` (return the final snapshot changes) and may
    override ``_cancel`` and ``_finally``; ``snapshot()``, ``stop()``, ``touch()``, ``wait()`` are safe from any thread."""

    kind = "job"
    stop_grace_s = STOP_GRACE_S

    def __init__(self, owner: str | None = None, on_finish: Callable[[Any], None] | None = None,
                 lease_s: float | None = None, **snap: Any):  # fmt: skip
        self.owner = owner
        self.lease_s = lease_s  # stop the job once nobody has watched it for this long; None: never
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ended = threading.Event()  # the final snapshot is out and the job has cleaned up
        self._claimed = self._let_go = False  # who ends the job: its worker, or the watchdog letting it go
        self._seen = time.monotonic()
        self._stopped_at: float | None = None
        self._reason: str | None = None
        self._thread: threading.Thread | None = None
        self._snap = JobSnapshot(job_id=uuid.uuid4().hex[:12], kind=self.kind, owner=owner, **snap)

    # --- state --------------------------------------------------------------------------------
    def _update(self, **changes: Any) -> None:
        with self._lock:
            if self._let_go and threading.current_thread() is self._thread:
                return  # a worker that was let go no longer speaks for its job
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
        threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True).start()
        return self

    def touch(self) -> None:
        """Someone is watching (a page's poll, ``follow``): renews the lease."""
        self._seen = time.monotonic()

    def stop(self, reason: str | None = None) -> None:
        """Ask the job to end: its source's requests are cancelled at once, training ends after its
        current step. ``reason`` becomes the stopped job's error line (None: stopped on request)."""
        with self._lock:
            first = not self._stop.is_set()
            if first:
                self._stopped_at, self._reason = time.monotonic(), reason
                self._stop.set()
        if first:
            self._cancel()

    def _cancel(self) -> None:
        """Cancel what the worker may be blocked on, once, from ``stop``: the job's ``source`` if it has one."""
        cancel_source(getattr(self, "source", None))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended, at most ``timeout`` seconds; True if it has."""
        return self._thread is None or self._ended.wait(timeout)

    def follow(self, every: float = 0.3, timeout: float | None = None) -> Iterator[JobSnapshot]:
        """Snapshots while the job runs (one now, then one every ``every`` seconds), then the final
        one; stops early, without stopping the job, once ``timeout`` seconds have passed. Each
        snapshot taken renews the job's lease."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.wait(0):
            self.touch()
            yield self.snapshot()
            left = every if deadline is None else min(every, deadline - time.monotonic())
            if left <= 0:
                return
            self.wait(left)
        yield self.snapshot()

    def check_stop(self, *_: Any) -> None:
        """A progress callback: raises JobStopped once ``stop()`` has been asked."""
        if self._stop.is_set():
            raise JobStopped(self._reason or f"{self.kind} stopped on request")

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
            end = {"status": "stopped", "error": self._reason}
        except Exception as e:  # noqa: BLE001 - the worker must report, never die silently
            if self._stop.is_set():  # a cancelled source ends its pass with an error: the job was stopped
                end = {"status": "stopped", "error": self._reason or one_line(e)}
            elif isinstance(e, EXPECTED_ERRORS):
                end = {"status": "failed", "error": one_line(e)}
            else:
                log.exception("%s job %s failed", self.kind, self._snap.job_id)
                end = {"status": "failed", "error": f"{self.kind} stopped by an unexpected {type(e).__name__}: "
                       f"{one_line(e, 300)} (see the server log)"}  # fmt: skip
        self._finish(end)

    def _watch(self) -> None:
        """The watchdog: stops a job whose lease has run out, lets go of a stopped one that does not end."""
        while not self._ended.wait(min(1.0, self.stop_grace_s / 4, (self.lease_s or 4.0) / 4)):
            now = time.monotonic()
            if self.lease_s is not None and not self._stop.is_set() and now - self._seen > self.lease_s:
                self.stop(f"{self.kind} stopped: nobody watched it for {self.lease_s:g} s (the page was closed)")
            stopped_at = self._stopped_at
            if stopped_at is not None and now - stopped_at > self.stop_grace_s and self.snapshot().status == "scoring":
                why = f"its source did not end within {self.stop_grace_s:g} s of the stop and was left behind"
                self._finish({"status": "stopped", "error": f"{self._reason}; {why}" if self._reason else why}, True)

    def _finish(self, end: dict[str, Any], let_go: bool = False) -> None:
        """Publish the final snapshot and clean up, once: by the worker, or by the watchdog letting it go."""
        with self._lock:
            if self._claimed:
                if not let_go:
                    log.info("%s job %s: its worker ended after it had been let go", self.kind, self._snap.job_id)
                return
            self._claimed, self._let_go = True, let_go
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
        self._ended.set()


def cancel_source(source: Any) -> None:
    """Cancel a source's in-flight requests where it can (``AttentionSource.cancel``); never raises."""
    cancel = getattr(source, "cancel", None)
    if callable(cancel):
        try:
            cancel()
        except Exception:  # noqa: BLE001 - a stop goes on whatever the source does
            log.exception("cancelling %s failed", type(source).__name__)


def __getattr__(name: str) -> Any:
    """``JobManager`` and ``default_manager`` live with ``TrainingJob`` (which imports this module)."""
    if name in ("JobManager", "default_manager"):
        from llmcomp.app import training_job

        return getattr(training_job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
