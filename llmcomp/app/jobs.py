"""Background training jobs: a Trainer in a worker thread, watched through thread-safe snapshots.

A web request must never train: it would block its worker and die with the browser tab. So a
``TrainingJob`` runs ``Trainer.prepare`` (scoring the corpus) and ``Trainer.run`` in a daemon
thread and publishes what it does as an immutable ``JobSnapshot`` that any thread may read at any
time: status, metrics so far, scoring progress, ETA, error, checkpoint.

``JobManager`` allows one running job per process (training is CPU-bound; two would halve each
other) and remembers each owner's latest job, so a refreshed page or a second tab asks the manager
and re-attaches: the job lives in the process, not in a browser session. An owner is an opaque
string chosen by the caller (the web app uses a random id kept in the browser); it decides who may
stop a job and who sees its details.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmcomp.errors import LLMCompError

if TYPE_CHECKING:  # the web app imports this module before torch has loaded
    from llmcomp.attention.base import ScoreStats
    from llmcomp.training.trainer import Trainer

log = logging.getLogger(__name__)

Status = Literal["idle", "scoring", "training", "stopped", "finished", "failed"]
RUNNING: tuple[str, ...] = ("scoring", "training")


class JobError(LLMCompError, RuntimeError):
    """A job request that cannot be honoured (busy, nothing to stop), with a one-line reason."""


def owner_tag(owner: str | None) -> str | None:
    """A short hash of an owner id: safe to write into a run folder (the id itself stays secret)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:16] if owner else None


class _ScoringFailed(RuntimeError):
    """The attention source raised while the corpus was being scored."""


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:300]


def _clock(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "?"


@dataclass(frozen=True)
class JobSnapshot:
    """Everything a UI needs about a job at one instant. ``version`` grows with every change."""

    status: Status = "idle"
    job_id: str | None = None
    label: str = ""
    owner: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0
    start_step: int = 0
    total_steps: int = 0
    metrics: tuple[dict[str, Any], ...] = ()
    scoring: dict[str, int] = field(default_factory=dict)  # done, sentences, cached, failed, requests, tokens
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
    def progress(self) -> float:
        """0..1: scoring progress while scoring, step progress while training or after."""
        if self.status == "scoring":
            total = self.scoring.get("sentences", 0)
            return self.scoring.get("done", 0) / total if total else 0.0
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    @property
    def last_val_loss(self) -> float | None:
        vals = [m["val_loss"] for m in self.metrics if "val_loss" in m]
        return vals[-1] if vals else None

    def summary(self) -> str:
        """One line for a status bar."""
        if self.status == "idle":
            return "no training run yet"
        started = f"started {_clock(self.started_at)}"
        if self.status == "scoring":
            s = self.scoring
            return (
                f"scoring attention: {s.get('done', 0)}/{s.get('sentences', 0)} sentences "
                f"({s.get('cached', 0)} cached, {s.get('failed', 0)} failed) · {started}"
            )
        parts = [f"step {self.step}/{self.total_steps}"]
        if self.last_val_loss is not None:
            parts.append(f"val loss {self.last_val_loss:.3f}")
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:,.0f} tokens/s")
        if self.status == "training":
            if self.eta_s is not None:
                parts.append(f"ETA {format_seconds(self.eta_s)}")
            return "training: " + " · ".join(parts) + f" · {started}"
        if self.status == "failed":
            return f"failed at step {self.step}: {self.error}"
        return f"{self.status}: " + " · ".join(parts)


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class TrainingJob:
    """One Trainer run in a daemon thread. ``snapshot()`` and ``stop()`` are safe from any thread."""

    def __init__(
        self,
        trainer: Trainer,
        label: str = "",
        owner: str | None = None,
        on_finish: Callable[[TrainingJob], None] | None = None,
    ):
        self.trainer = trainer
        self.owner = owner
        self._on_finish = on_finish
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._t_train: float | None = None
        self._step0 = trainer.step
        self._snap = JobSnapshot(
            status="idle",
            job_id=uuid.uuid4().hex[:12],
            label=label,
            owner=owner,
            step=trainer.step,
            start_step=trainer.step,
            total_steps=trainer.config.steps,
            metrics=tuple(trainer.metrics),
            run_dir=str(trainer.run_dir) if trainer.run_dir else None,
        )

    # --- state --------------------------------------------------------------------------------
    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._snap = replace(self._snap, version=self._snap.version + 1, **changes)

    def snapshot(self) -> JobSnapshot:
        """The current state; while training, step and ETA are read live from the trainer."""
        with self._lock:
            snap = self._snap
        if snap.status != "training":
            return snap
        step = self.trainer.step
        eta = None
        if self._t_train is not None and step > self._step0:
            rate = (step - self._step0) / max(time.time() - self._t_train, 1e-9)
            eta = (snap.total_steps - step) / rate
        return replace(snap, step=step, eta_s=eta)

    @property
    def running(self) -> bool:
        return self.snapshot().running

    # --- control ------------------------------------------------------------------------------
    def start(self) -> TrainingJob:
        if self._thread is not None:
            raise JobError("this job has already been started; start a new job instead")
        self._update(status="scoring", started_at=time.time())
        self._thread = threading.Thread(target=self._work, name=f"llmcomp-train-{self._snap.job_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the trainer to stop after its current step (it saves a checkpoint first)."""
        self.trainer.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ends; True if it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- worker -------------------------------------------------------------------------------
    def _on_scoring(self, stats: ScoreStats) -> None:
        self._update(
            scoring={
                "done": stats.done,
                "sentences": stats.sentences,
                "cached": stats.cached,
                "failed": stats.failed,
                "requests": stats.requests,
                "tokens": stats.prompt_tokens + stats.completion_tokens,
            }
        )

    def _on_metric(self, record: dict[str, Any]) -> None:
        with self._lock:
            metrics = (*self._snap.metrics, dict(record))
        self._update(metrics=metrics, step=int(record["step"]), tokens_per_s=record.get("tokens_per_s"))

    def _work(self) -> None:
        trainer = self.trainer
        try:
            try:
                trainer.prepare(progress=self._on_scoring)
            except LLMCompError:
                raise
            except Exception as e:  # noqa: BLE001 - a source's own errors (auth, quota, model) are one line
                raise _ScoringFailed(f"attention scoring failed: {_first_line(e)}") from e
            self._on_scoring(trainer.attention_stats)
            self._t_train, self._step0 = time.time(), trainer.step
            self._update(status="training")
            result = trainer.run(on_metric=self._on_metric)
            self._update(
                status="stopped" if result.stopped else "finished",
                step=result.step,
                eta_s=None,
                checkpoint=str(result.checkpoint) if result.checkpoint else None,
                finished_at=time.time(),
            )
        except (LLMCompError, _ScoringFailed) as e:
            self._update(status="failed", error=str(e), eta_s=None, finished_at=time.time(), step=trainer.step)
        except Exception as e:  # noqa: BLE001 - the worker must report, never die silently
            log.exception("training job %s failed", self._snap.job_id)
            self._update(
                status="failed",
                error=f"training stopped by an unexpected {type(e).__name__}: {_first_line(e)} (see the server log)",
                eta_s=None,
                finished_at=time.time(),
                step=trainer.step,
            )
        finally:
            self._write_record()
            if self._on_finish:
                try:
                    self._on_finish(self)
                except Exception:  # noqa: BLE001
                    log.exception("on_finish callback failed")

    def _write_record(self) -> None:
        """``job.json`` in the run folder: outcome and attention cost (the checkpoint does not hold them)."""
        snap = self.snapshot()
        if not snap.run_dir:
            return
        stats = self.trainer.attention_stats
        record = {
            "job_id": snap.job_id,
            "label": snap.label,
            "owner": owner_tag(self.owner),
            "status": snap.status,
            "error": snap.error,
            "started_at": snap.started_at,
            "finished_at": snap.finished_at,
            "step": snap.step,
            "total_steps": snap.total_steps,
            "source_spec": self.trainer.source.spec(),
            "corpus": self.trainer.corpus.name,
            "attention": asdict(stats),
        }
        try:
            path = Path(snap.run_dir)
            path.mkdir(parents=True, exist_ok=True)
            (path / "job.json").write_text(json.dumps(record, indent=2, allow_nan=False), encoding="utf-8")
        except (OSError, ValueError, TypeError):
            log.exception("could not write job.json for %s", snap.job_id)


class JobManager:
    """At most one running job per process; each owner's latest job stays reachable after it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: TrainingJob | None = None
        self._latest: dict[str | None, TrainingJob] = {}

    def active(self) -> TrainingJob | None:
        """The running job, if any."""
        job = self._active
        return job if job is not None and job.running else None

    def job_for(self, owner: str | None) -> TrainingJob | None:
        """This owner's latest job (running or ended), for re-attaching after a page refresh."""
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
                f"a training run is already in progress (started {_clock(snap.started_at)} by another session, "
                f"{where}); wait for it to finish"
            )
        return f"a training run is already in progress (started {_clock(snap.started_at)}, {where}); stop it first"

    def check_free(self, owner: str | None = None) -> None:
        """Raise JobError if a job is running (call before building an expensive Trainer)."""
        msg = self.busy_message(owner)
        if msg:
            raise JobError(msg)

    def start(
        self,
        trainer: Trainer,
        owner: str | None = None,
        label: str = "",
        on_finish: Callable[[TrainingJob], None] | None = None,
    ) -> TrainingJob:
        """Start ``trainer`` in the background, or raise JobError if a job is running."""
        with self._lock:
            self.check_free(owner)
            job = TrainingJob(trainer, label=label, owner=owner, on_finish=on_finish)
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
