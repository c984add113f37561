"""Training: attention for the whole corpus in bulk, then batched AdamW steps with a metrics stream.

Determinism: the batch at step s is drawn from a generator seeded by (seed, s), and dropout is
seeded by (seed, s) too. So a run that stops at step N and resumes from its checkpoint draws the
same batches as a run that never stopped, and ends on the same loss.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmcomp.attention.base import AttentionSource, ProgressFn, ScoreStats
from llmcomp.devices import resolve_device, seed_step
from llmcomp.errors import LLMCompError
from llmcomp.model.gpt import GPTConfig
from llmcomp.text.corpus import Corpus
from llmcomp.text.tasks import Task, as_task
from llmcomp.threads import torch_threads
from llmcomp.training.batching import Batch, Example
from llmcomp.training.checkpoint import Checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint
from llmcomp.training.config import TrainConfig, TrainConfigError  # noqa: F401 - re-exported: its old home
from llmcomp.training.convergence import EARLY_STOP, STEPS_DONE, STOPPED, EarlyStopping
from llmcomp.training.data import FocusFn, PreparedData, data_key, evaluate, prepare_data, validation_record
from llmcomp.training.metrics_log import append_metric
from llmcomp.training.run_folder import checkpoint_dir
from llmcomp.training.state import new_model, new_optimizer, resumable_checkpoint

# ``evaluate`` lives in llmcomp.training.data; validation calls it through this module's name for it.


class TrainingError(LLMCompError, RuntimeError):
    """Training cannot start or go on, with a one-line reason."""


MetricFn = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    step: int
    stopped: bool
    checkpoint: Path | None
    metrics: list[dict[str, Any]]
    attention: ScoreStats
    failed_sentences: dict[int, str] = field(default_factory=dict)
    stop_reason: str = STEPS_DONE  # convergence.STEPS_DONE, EARLY_STOP (patience ran out) or STOPPED (asked to)
    best_val_loss: float | None = None  # the lowest validation loss of the run, at ``best_step``
    best_step: int | None = None
    best_checkpoint: Path | None = None  # the weights of ``best_step`` (run folders only)

    @property
    def final_val_loss(self) -> float | None:
        vals = [m["val_loss"] for m in self.metrics if "val_loss" in m]
        return vals[-1] if vals else None


class Trainer:
    """Train a GPT on a corpus with attention from ``source``. Use ``run()``; ``stop()`` is thread-safe.

    ``task`` (a name such as ``"binding"`` or ``"copy-after:the"``, or a ``Task``; docs/tasks.md) marks
    the decided positions: validation then also reports ``val_focus_loss``, ``val_focus_acc`` and, where
    the task knows the deciding word, ``val_target_mass``. ``focus=fn`` is the older positions-only form.

    ``prepared``: the examples another trainer prepared for the same corpus, source and focus
    (``prepare()``'s return value), so seeds share one scoring pass; see ``use``.
    """

    def __init__(
        self,
        corpus: Corpus,
        source: AttentionSource,
        model_config: GPTConfig | None = None,
        train_config: TrainConfig | None = None,
        run_dir: str | Path | None = None,
        resume_from: str | Path | None = None,
        focus: FocusFn | None = None,
        prepared: PreparedData | None = None,
        task: str | Task | None = None,
    ):
        if task is not None and focus is not None:
            raise TrainingError("give a task or a focus function, not both (a focus function is a task's shorthand)")
        self.corpus, self.source = corpus, source
        #: where loss, accuracy and target mass are measured apart (``focus=fn`` is the positions-only shorthand)
        self.task: Task | None = as_task(task if task is not None else focus)
        self.focus = self.task
        self.config = train_config or TrainConfig()
        self.run_dir = Path(run_dir) if run_dir else None
        self._stop = threading.Event()
        self.vocab = corpus.vocab()
        self.step = 0
        self.metrics: list[dict[str, Any]] = []
        self._elapsed0 = 0.0
        self._resume: Checkpoint | None = None
        if resume_from is not None:
            self._resume = ck = resumable_checkpoint(resume_from, self.vocab, source)
            self.model, self.step, self.metrics = ck.model, ck.step, list(ck.metrics)
            self._elapsed0 = self.metrics[-1]["elapsed"] if self.metrics else 0.0
            self.metrics = [{k: v for k, v in m.items() if k != "stop_reason"} for m in self.metrics]
        else:
            self.model = new_model(corpus, self.vocab, source, model_config, self.config.seed)
        #: where the model and its batches live; made and loaded on the CPU, so the same seed inits the same
        self.device = resolve_device(self.config.device)
        self.model.to(self.device)
        #: best validation loss so far (recomputed from a resumed run's metrics) and the patience left
        self.best = EarlyStopping.from_metrics(self.metrics, self.config.patience, self.config.min_delta)
        self.optimizer = new_optimizer(self.model, self.config.lr, self.config.weight_decay)
        if self._resume and self._resume.optimizer_state:
            optimizer_from_tensors(self.optimizer, self._resume.optimizer_state)
        self.prepared: PreparedData | None = None
        if prepared is not None:
            self.use(prepared)

    def stop(self) -> None:
        """Ask the loop to stop after the current step; it saves a checkpoint first."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def prepare(self, progress: ProgressFn | None = None) -> PreparedData:
        """Score the whole corpus and encode both splits; return them for other trainers to ``use``."""
        data = prepare_data(self.corpus, self.source, self.vocab, self.focus, self.config.threads, progress)
        self.use(data)
        return data

    def use(self, prepared: PreparedData) -> None:
        """Train on examples prepared for this corpus, source and focus (by this trainer or another)."""
        if prepared.key != data_key(self.corpus, self.source) or prepared.focus != self.focus:
            raise TrainingError("prepared examples come from another corpus, split, source or focus; prepare anew")
        self.prepared = prepared  # kept even when unusable: its stats and failures say why
        if not prepared.usable:
            first = next(iter(prepared.failures.values()), "no sentences")
            raise TrainingError(
                f"attention could not be obtained for enough sentences to train ({len(prepared.failures)} "
                f"failed; first: {first}); choose a fallback baseline or fix the source"
            )

    @property
    def train_examples(self) -> list[Example]:
        return self.prepared.train_examples if self.prepared else []

    @property
    def val_examples(self) -> list[Example]:
        return self.prepared.val_examples if self.prepared else []

    @property
    def attention_stats(self) -> ScoreStats:
        return self.prepared.stats if self.prepared else ScoreStats()

    @property
    def failed_sentences(self) -> dict[int, str]:
        return self.prepared.failures if self.prepared else {}

    def _emit(self, record: dict[str, Any], on_metric: MetricFn | None) -> None:
        self.metrics.append(record)
        if self.run_dir:
            append_metric(self.run_dir, record)
        if on_metric:
            on_metric(record)

    def batch(self, step: int) -> Batch:
        """The batch for ``step``: seeded by (seed, step) alone, so resumed runs see the same batches."""
        assert self.prepared is not None
        cfg = self.config
        return self.prepared.batch(cfg.seed * 1_000_003 + step, cfg.batch_size, cfg.length_window, self.vocab.pad_id)

    def validate(self) -> dict[str, float]:
        """Held-out loss (and focus measures) under the rows generation would see. For a source whose rows
        may see later words it also gives ``seen_loss``: the same sentences under the training-time rows,
        shown beside the leak-free loss and never instead of it."""
        size = self.config.batch_size * 2
        out = evaluate(self.model, self.val_examples, self.vocab.pad_id, size)
        if self.prepared is not None and self.prepared.val_seen_examples:
            out["seen_loss"] = evaluate(self.model, self.prepared.val_seen_examples, self.vocab.pad_id, size)["loss"]
        return out

    def run(
        self,
        on_metric: MetricFn | None = None,
        on_scoring: ProgressFn | None = None,
        stop_at: int | None = None,
    ) -> TrainResult:
        """Train until ``config.steps`` (or ``stop_at``, or ``stop()``); save a checkpoint; return the result."""
        if self.prepared is None or not self.prepared.usable:
            self.prepare(on_scoring)
        with torch_threads(self.config.threads):
            return self._loop(on_metric, stop_at)

    def _loop(self, on_metric: MetricFn | None, stop_at: int | None) -> TrainResult:
        cfg, model = self.config, self.model
        end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        model.train()
        t0 = time.perf_counter()
        window_loss, window_steps, window_tokens, window_t = 0.0, 0, 0, time.perf_counter()
        early = False  # patience ran out at this run's last validation
        while self.step < end and not self._stop.is_set():
            step = self.step
            lr = cfg.lr_at(step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batch = self.batch(step)
            x, att, y = (t.to(self.device, non_blocking=True) for t in (batch.x, batch.att, batch.y))
            seed_step(self.device, cfg.seed * 1_000_003 + step)  # dropout: resume stays exact
            loss = model.token_losses(x, att if att.shape[1] else None, y)[0].mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            window_loss += loss.item()
            window_steps += 1
            window_tokens += batch.n_tokens
            last = self.step == end
            do_eval = self.step % cfg.eval_every == 0 or self.step == cfg.steps
            if self.step % cfg.log_every == 0 or do_eval or last:
                now = time.perf_counter()
                record: dict[str, Any] = {
                    "step": self.step,
                    "train_loss": window_loss / window_steps,
                    "lr": lr,
                    "tokens_per_s": window_tokens / max(now - window_t, 1e-9),
                    "elapsed": self._elapsed0 + now - t0,
                    "total_steps": cfg.steps,
                }
                improved = False
                if do_eval:
                    val = self.validate()
                    record.update(validation_record(val))
                    improved = self.best.update(self.step, val["loss"])
                    record["best_val_loss"], record["best_step"] = self.best.best_val_loss, self.best.best_step
                    early = self.best.exhausted
                if early or self.step == cfg.steps:
                    record["stop_reason"] = EARLY_STOP if early else STEPS_DONE
                self._emit(record, on_metric)
                window_loss, window_steps, window_tokens, window_t = 0.0, 0, 0, time.perf_counter()
                if improved and self.run_dir:
                    self.save(checkpoint_dir(self.run_dir, best=True), optimizer=False)
                if early:
                    break
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not last:
                self.save()
        reason = EARLY_STOP if early else STOPPED if self.step < cfg.steps else STEPS_DONE
        best = checkpoint_dir(self.run_dir, best=True) if self.run_dir else None
        return TrainResult(
            step=self.step,
            stopped=reason == STOPPED,
            checkpoint=self.save(),
            metrics=list(self.metrics),
            attention=self.attention_stats,
            failed_sentences=self.failed_sentences,
            stop_reason=reason,
            best_val_loss=self.best.best_val_loss,
            best_step=self.best.best_step,
            best_checkpoint=best if best is not None and (best / "checkpoint.json").is_file() else None,
        )

    def checkpoint(self, optimizer: bool = True) -> Checkpoint:
        return Checkpoint(
            model=self.model,
            vocab=self.vocab,
            step=self.step,
            source_spec=self.source.spec(),
            source_fingerprint=self.source.fingerprint(),
            train_config={
                **{k: v for k, v in asdict(self.config).items() if k != "device"},  # placement, not identity
                "corpus": self.corpus.name,
                "corpus_sentences": len(self.corpus.sentences),
                "split_seed": self.corpus.config.seed,
                "val_fraction": self.corpus.config.val_fraction,
            },
            metrics=self.metrics,
            optimizer_state=optimizer_to_tensors(self.optimizer) if optimizer else {},
        )

    def save(self, folder: str | Path | None = None, optimizer: bool = True) -> Path | None:
        """Save to ``folder`` (default: the run's last checkpoint); the best is saved without the optimizer
        moments, since runs resume from the last."""
        folder = folder or (checkpoint_dir(self.run_dir) if self.run_dir else None)
        return save_checkpoint(self.checkpoint(optimizer), folder) if folder else None


def train(
    corpus: Corpus,
    source: AttentionSource,
    model_config: GPTConfig | None = None,
    train_config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    on_metric: MetricFn | None = None,
) -> TrainResult:
    """One-call training: ``train(load_corpus(path), make_source("uniform"), run_dir="runs/x")``."""
    return Trainer(corpus, source, model_config, train_config, run_dir=run_dir).run(on_metric=on_metric)
