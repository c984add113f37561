"""Start a training run from a request: the one way the command line and the web app do it.

A request names the corpus and the source (already built by the caller, e.g. with
``llmcomp.app.sources.build_source``), the model and training configs, where runs live, and
optionally a run to resume and the owner's tag. ``start_training`` checks it once (the configs
validate themselves; a resume must go past the run's step; the resumed checkpoint is read as JSON
here and loaded once, by the Trainer), names the run folder the one way (``run_folder.new_run_dir``)
and returns a ``TrainingRun``: the Trainer plus the run record it keeps (``run.json``, written when
the run begins and updated when it ends). The CLI calls ``TrainingRun.run``; the app hands the
trainer to a background job, which calls ``begin`` and ``end``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcomp.errors import LLMCompError
from llmcomp.model.config import GPTConfig
from llmcomp.training import run_folder
from llmcomp.training.config import TrainConfig

if TYPE_CHECKING:
    from llmcomp.app.head_choice import HeadChoice
    from llmcomp.attention.base import AttentionSource, ProgressFn
    from llmcomp.text.corpus import Corpus
    from llmcomp.text.tasks import Task
    from llmcomp.training.trainer import MetricFn, Trainer, TrainResult

#: a check run before any work (the app's owner-key budget): raise an LLMCompError to refuse
CheckFn = Callable[["AttentionSource", Sequence[list[str]]], Any]


class TrainRequestError(LLMCompError, ValueError):
    """A training request that cannot start, with a one-line reason."""


@dataclass
class TrainRequest:
    corpus: Corpus
    source: AttentionSource
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runs_root: str | Path | None = None  # where a new run folder goes; None: settings.Paths.from_env().runs
    run_dir: str | Path | None = None  # this folder instead (new or without a checkpoint, or the resumed run's)
    resume: str | Path | None = None  # a run folder, or its checkpoint folder, to continue
    owner: str | None = None  # the owner's tag for the record (already hashed, e.g. app.jobs.owner_tag)
    label: str | None = None  # the source as comparisons name it; None: its kind
    # where focus loss/accuracy/target mass are measured: a task name, "auto" (binding on a binding corpus) or None
    task: str | Task | None = None
    # heads chosen by data (``app.head_choice.source_for_corpus`` for ``heads=top:K:PATTERN``): kept as heads.json
    head_choice: HeadChoice | None = None


@dataclass(frozen=True)
class ResumePoint:
    """What a checkpoint says about the run it continues, read from its JSON (no weights, no torch)."""

    checkpoint: Path
    run_dir: Path | None  # the run folder holding it, when it sits in one (``<run>/checkpoint``)
    step: int
    total_steps: int
    source_spec: dict[str, Any]


def resume_point(path: str | Path) -> ResumePoint:
    """The checkpoint of a run folder or a checkpoint folder; TrainRequestError if there is none."""
    path = Path(path)
    ckpt = path if (path / "checkpoint.json").is_file() else run_folder.checkpoint_dir(path)
    try:
        meta = json.loads(run_folder.read_small(ckpt / "checkpoint.json"))
        step, spec = int(meta["step"]), meta["source_spec"]
        total = int((meta.get("train_config") or {}).get("steps", step))
        if not isinstance(spec, dict):
            raise ValueError("source_spec is not an object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TrainRequestError(f"{path} has no readable checkpoint to resume ({e})") from None
    owner_dir = ckpt.parent if ckpt.name == run_folder.CHECKPOINT else None
    return ResumePoint(ckpt, owner_dir, step, total, spec)


@dataclass
class TrainingRun:
    """A Trainer ready to run in its run folder, and the record of that run."""

    trainer: Trainer
    request: TrainRequest
    resumed: ResumePoint | None = None
    attention_seconds: float | None = None

    @property
    def run_dir(self) -> Path | None:
        return self.trainer.run_dir

    def begin(self, status: str = "scoring") -> run_folder.RunRecord | None:
        """Write ``run.json`` as the run begins (a resumed run keeps its record, marked running again);
        None for a trainer without a run folder (a script's)."""
        if self.run_dir is None:
            return None
        if self.resumed is not None and _has_record(self.run_dir):
            return run_folder.update_record(self.run_dir, status=status, error=None, finished_at=None)
        req, t = self.request, self.trainer
        record = run_folder.RunRecord.start(
            req.label or req.source.kind, req.corpus, req.source, seed=t.config.seed, owner=req.owner, status=status
        )
        run_folder.write_record(self.run_dir, record)
        return record

    def end(self, status: str, error: str | None = None) -> run_folder.RunRecord | None:
        """Update ``run.json`` with the outcome and the scoring pass's cost."""
        if self.run_dir is None:
            return None
        if status != "failed":  # which supplied heads a --mix model chose (training/mixture.py)
            from llmcomp.training.mixture import save_run_mixture

            save_run_mixture(self.run_dir, self.trainer.model, self.trainer.source, self.trainer.step)
        stats = {k: int(v) for k, v in asdict(self.trainer.attention_stats).items()}
        return run_folder.update_record(self.run_dir, status=status, error=error, finished_at=time.time(),
                                        attention=stats, attention_seconds=self.attention_seconds)  # fmt: skip

    def prepare(self, progress: ProgressFn | None = None) -> None:
        """Score the corpus (timed, for the record)."""
        t0 = time.perf_counter()
        try:
            self.trainer.prepare(progress=progress)
        finally:
            self.attention_seconds = time.perf_counter() - t0

    def run(
        self,
        on_metric: MetricFn | None = None,
        on_scoring: ProgressFn | None = None,
        stop_at: int | None = None,
        after_prepare: Callable[[], None] | None = None,
    ) -> TrainResult:
        """Begin the record, score, train to the end (or ``stop_at``, or ``stop()``), end the record.

        An error is recorded as a failed run and raised again; Ctrl-C stops after the current step
        and saves a checkpoint, like ``stop()``."""
        self.begin("scoring")
        try:
            self.prepare(on_scoring)
            if after_prepare:
                after_prepare()
            if self.run_dir is not None:
                run_folder.update_record(self.run_dir, status="training")
            try:
                result = self.trainer.run(on_metric=on_metric, stop_at=stop_at)
            except KeyboardInterrupt:
                self.trainer.stop()
                result = self.trainer.run()
        except BaseException as e:
            self.end("failed", (str(e).strip().splitlines() or [type(e).__name__])[0][:400])
            raise
        self.end("stopped" if result.stopped else "finished")
        return result


def _has_record(run_dir: Path) -> bool:
    try:
        return run_folder.read_record(run_dir) is not None
    except (OSError, ValueError):
        return False


def _run_dir(req: TrainRequest, resumed: ResumePoint | None) -> tuple[Path, bool]:
    """The run's folder and whether it was made here (so a failed start can remove it)."""
    if req.run_dir is not None:
        path = Path(req.run_dir)
        same = resumed is not None and resumed.run_dir is not None and path.resolve() == resumed.run_dir.resolve()
        if run_folder.checkpoint_dir(path).exists() and not same:
            raise TrainRequestError(f"{path} already holds a run; give a new folder, or resume that run")
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    if resumed is not None and resumed.run_dir is not None:
        return resumed.run_dir, False
    from llmcomp.settings import Paths

    root = Path(req.runs_root) if req.runs_root is not None else Paths.from_env().runs
    return run_folder.new_run_dir(root, req.label or req.source.kind), True


def start_training(request: TrainRequest, check: CheckFn | None = None) -> TrainingRun:
    """A TrainingRun for ``request``: checked, named, with its Trainer built (nothing scored yet).

    ``check`` runs before the folder or the model is made (the app passes its budget check)."""
    from llmcomp.text.tasks import choose_task
    from llmcomp.training.trainer import Trainer

    resumed = resume_point(request.resume) if request.resume is not None else None
    if resumed is not None and request.train.steps <= resumed.step:
        name = (resumed.run_dir or resumed.checkpoint).name
        raise TrainRequestError(
            f"run {name} is already at step {resumed.step}; set steps above {resumed.step} to continue it"
        )
    if check is not None:  # counts what the scoring pass sends: held-out prefixes too for a non-prefix-causal source
        from llmcomp.training.data import sentences_to_score

        check(request.source, sentences_to_score(request.corpus, request.source))
    run_dir, made = _run_dir(request, resumed)
    try:
        trainer = Trainer(
            request.corpus,
            request.source,
            request.model,
            request.train,
            run_dir=run_dir,
            resume_from=resumed.checkpoint if resumed else None,
            task=choose_task(request.task, request.corpus.sentences),
        )
    except BaseException:
        if made:
            run_dir.rmdir()  # nothing was written yet: leave no empty run behind
        raise
    if request.head_choice is not None and resumed is None:
        request.head_choice.write(run_dir)
    return TrainingRun(trainer, request, resumed)
