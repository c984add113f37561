"""A training run as a background job: the trainer's scoring pass, then its training loop.

The run itself, and its record (``run.json``), belong to ``llmcomp.app.training.TrainingRun``: the
job calls its ``begin`` when it starts and its ``end`` with the outcome, so the command line (which
runs a TrainingRun in its own thread) and the web app (which runs it here) keep the same record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from llmcomp.app.jobs import EXPECTED_ERRORS, Job, JobSnapshot, JobStopped, Status, one_line, owner_tag, stats_dict
from llmcomp.errors import LLMCompError
from llmcomp.training import run_folder

if TYPE_CHECKING:
    from llmcomp.app.training import TrainingRun
    from llmcomp.training.trainer import Trainer

log = logging.getLogger(__name__)


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

    def __init__(self, work: TrainingRun | Trainer, label: str = "", owner: str | None = None, on_finish=None):
        self.run = as_run(work, owner)
        trainer = self.trainer = self.run.trainer
        run_dir = str(trainer.run_dir) if trainer.run_dir else None
        super().__init__(owner, on_finish, label=label, step=trainer.step, start_step=trainer.step,
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

    def stop(self) -> None:
        super().stop()
        self.trainer.stop()

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
