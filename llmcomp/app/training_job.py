"""A training run as a background job (the trainer's scoring pass, then its training loop), and the
``JobManager`` that decides which jobs may run: one training run per process, scoring jobs by lane.

The run itself, and its record (``run.json``), belong to ``llmcomp.app.training.TrainingRun``: the
job calls its ``begin`` when it starts and its ``end`` with the outcome, so the command line (which
runs a TrainingRun in its own thread) and the web app (which runs it here) keep the same record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from llmcomp.app.jobs import (
    EXPECTED_ERRORS,
    Job,
    JobError,
    JobSnapshot,
    JobStopped,
    Status,
    cancel_source,
    clock,
    one_line,
    owner_tag,
    stats_dict,
)
from llmcomp.errors import LLMCompError
from llmcomp.training import run_folder

if TYPE_CHECKING:
    from llmcomp.app.training import TrainingRun
    from llmcomp.training.trainer import Trainer

log = logging.getLogger(__name__)

#: scoring jobs that may run at once per lane, all owners together (``JobManager.admit_scoring``): requests to
#: servers that may never answer, and the local LLM (CPU-bound). Sources in no lane (baselines) never wait.
LANES: dict[str, int] = {"network": 4, "local": 2}


def as_run(work: TrainingRun | Trainer, owner: str | None) -> TrainingRun:
    """A TrainingRun for ``work``; a bare Trainer (a script's, a test's) is recorded as its source's kind."""
    from llmcomp.app.training import TrainingRun, TrainRequest

    if isinstance(work, TrainingRun):
        return work
    request = TrainRequest(work.corpus, work.source, work.model.config, work.config, owner=owner_tag(owner))
    return TrainingRun(work, request)


class TrainingJob(Job):
    """One TrainingRun in a worker thread; ``stop()`` cancels its scoring pass, or stops training after
    the current step (a checkpoint is saved)."""

    kind = "training"

    def __init__(self, work: TrainingRun | Trainer, label: str = "", owner: str | None = None, on_finish=None,
                 lease_s: float | None = None):  # fmt: skip
        self.run = as_run(work, owner)
        trainer = self.trainer = self.run.trainer
        run_dir = str(trainer.run_dir) if trainer.run_dir else None
        super().__init__(owner, on_finish, lease_s, label=label, step=trainer.step, start_step=trainer.step,
                         total_steps=trainer.config.steps, metrics=tuple(trainer.metrics), run_dir=run_dir)  # fmt: skip
        self._t_train: float | None = None
        self._step0 = trainer.step

    def snapshot(self) -> JobSnapshot:
        """The current state; while training, step and ETA are read live from the trainer."""
        snap = super().snapshot()
        if snap.status != "training":
            return snap
        step = self.trainer.step
        eta = None
        if self._t_train is not None and step > self._step0:
            rate = (step - self._step0) / max(time.time() - self._t_train, 1e-9)
            eta = (snap.total_steps - step) / rate
        return replace(snap, step=step, eta_s=eta)

    def start(self, status: Status = "scoring") -> TrainingJob:
        if self._thread is None and self._snap.run_dir:
            self._record(self.run.begin, "scoring")
        super().start(status)
        return self

    def _cancel(self) -> None:
        self.trainer.stop()
        cancel_source(self.trainer.source)

    def _on_metric(self, record: dict[str, Any]) -> None:
        with self._lock:
            metrics = (*self._snap.metrics, dict(record))
        self._update(metrics=metrics, step=int(record["step"]), tokens_per_s=record.get("tokens_per_s"))

    def _run(self) -> dict[str, Any]:
        trainer = self.trainer
        try:
            self.run.prepare(progress=self.on_scoring)
        except (JobStopped, *EXPECTED_ERRORS):
            raise
        except Exception as e:  # noqa: BLE001 - a source's own errors (auth, quota, model) are one line
            raise LLMCompError(f"attention scoring failed: {one_line(e, 300)}") from e
        self._update(scoring=stats_dict(trainer.attention_stats))
        self.check_stop()
        self._t_train, self._step0 = time.time(), trainer.step
        self._update(status="training")
        if self._snap.run_dir:
            self._record(run_folder.update_record, self._snap.run_dir, status="training")
        result = trainer.run(on_metric=self._on_metric)
        return {
            "status": "stopped" if result.stopped else "finished",
            "error": self._reason if result.stopped else None,  # why it was stopped (None: on request)
            "step": result.step,
            "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        }

    def _finally(self) -> None:
        self._update(step=self.trainer.step)
        snap = self.snapshot()
        if snap.run_dir:
            self._record(self.run.end, snap.status, snap.error)

    def _record(self, write, *args: Any, **kwargs: Any) -> None:
        """Write the run record; a record that cannot be written is logged, never fatal to the run."""
        try:
            write(*args, **kwargs)
        except (OSError, ValueError):
            log.exception("could not write the run record of %s", self._snap.run_dir)


J = TypeVar("J", bound=Job)


class JobManager:
    """At most one running training job per process; each owner's latest job stays reachable; scoring
    jobs are admitted by lane (``lanes``: how many may run in each, all owners together)."""

    def __init__(self, lanes: dict[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self._active: TrainingJob | None = None
        self._latest: dict[str | None, TrainingJob] = {}
        self.lanes = dict(LANES if lanes is None else lanes)
        self._scoring: dict[tuple[str, object], Job | None] = {}  # (lane, owner) -> its job; None while starting

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

    def start(self, work: TrainingRun | Trainer, owner: str | None = None, label: str = "",
              on_finish: Callable[[TrainingJob], None] | None = None, lease_s: float | None = None) -> TrainingJob:  # fmt: skip
        """Start a training run (``app.training.start_training``'s, or a bare Trainer) in the background,
        or raise JobError if a job is running. With ``lease_s``, it stops once unwatched that long."""
        from llmcomp.app.training_job import TrainingJob

        with self._lock:
            self.check_free(owner)
            job = TrainingJob(work, label=label, owner=owner, on_finish=on_finish, lease_s=lease_s)
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

    def stop_all(self, reason: str = "the server is shutting down") -> list[Job]:
        """Stop the training job and every admitted scoring job (a server that closes); returns them."""
        with self._lock:
            jobs = [j for j in (self._active, *self._scoring.values()) if j is not None and j.running]
        for job in jobs:
            job.stop(reason)
        return jobs

    def admit_scoring(self, lane: str | None, owner: str | None, start: Callable[[], J]) -> J:
        """``start()`` a scoring job in ``lane``: the owner's earlier job there is stopped (one each),
        and a lane full of other owners' jobs refuses with one line. ``lane=None`` starts at once."""
        if lane is None:
            return start()
        key = (lane, object() if owner is None else owner)
        with self._lock:
            self._scoring = {k: j for k, j in self._scoring.items() if j is None or j.running}
            others = sum(1 for k in self._scoring if k[0] == lane and k != key)
            if others >= self.lanes.get(lane, 1):
                passes = f"{others} scoring pass{'es' if others != 1 else ''}"
                raise JobError(f"the server is already running {passes} with {lane} sources for other sessions, the "
                               "most it allows at once; try again in a few minutes (baselines are never held up)")  # fmt: skip
            if key in self._scoring and self._scoring[key] is None:
                raise JobError("a scoring pass of this session is starting; wait for it or stop it first")
            previous, self._scoring[key] = self._scoring.get(key), None
        if previous is not None:
            previous.stop("replaced by a newer scoring pass of the same session")
        try:
            job = start()
        except BaseException:
            with self._lock:
                if key in self._scoring and self._scoring[key] is None:
                    del self._scoring[key]
            raise
        with self._lock:
            self._scoring[key] = job
        return job


_DEFAULT = JobManager()


def default_manager() -> JobManager:
    """The process-wide manager the web app uses."""
    return _DEFAULT
