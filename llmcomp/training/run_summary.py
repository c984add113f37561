"""Reading run folders back: one ``RunSummary`` per run, listed, filtered by owner, grouped by corpus.

The write side (layout, naming, record, metrics) is ``llmcomp.training.run_folder``; this is what the
app's run lists, its Compare tab and ``llmcomp compare`` read. No torch: the app lists runs before
torch has loaded. A damaged run is skipped, never fatal.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcomp.attention.registry import describe_spec
from llmcomp.training.convergence import EARLY_STOP, stop_reason, validations
from llmcomp.training.metrics_log import read_metrics
from llmcomp.training.run_folder import (
    BEST_CHECKPOINT,
    CHECKPOINT,
    METRICS,
    RECORD,
    CorpusInfo,
    RunRecord,
    checkpoint_to_use,
    read_record,
    read_small,
)

if TYPE_CHECKING:
    pass


@dataclass
class RunSummary:
    """One training run, summarised: what the app lists, what its Compare tab and ``llmcomp compare``
    tabulate. ``read_run`` builds it from a run folder, ``summarise`` from a live run's metrics."""

    name: str
    path: Path
    kind: str  # the attention source's kind
    label: str  # the source as a comparison names it (e.g. "oracle:shift=1"); else the kind
    source: str  # the source, described for people
    seed: int | None
    steps: int
    total_steps: int
    final_val_loss: float | None
    final_val_ppl: float | None
    final_val_focus_loss: float | None
    best_val_loss: float | None
    tokens_per_s: float | None  # mean over the logged training windows
    train_seconds: float | None
    # counts of the scoring pass this run made (requests, tokens, cached, failed...); {} when it reused
    # another run's pass; None when not recorded (a run made with an older ``llmcomp train``)
    attention: dict[str, int] | None
    attention_seconds: float | None = None
    owner: str | None = None  # owner tag from the run record (hashed), None for runs made outside the app
    status: str = "finished"
    modified: float = 0.0
    corpus: CorpusInfo | None = None  # which sentences and split; None when not recorded
    # at the task's decided positions (docs/tasks.md): top-1 accuracy, and the supplied attention's weight
    # on the deciding word; None when no task was measured (or, for the mass, no supplied heads)
    final_val_focus_acc: float | None = None
    final_val_target_mass: float | None = None
    # the held-out loss under the training-time rows, for a source whose rows may see later words (its
    # final_val_loss is then scored prefix by prefix, leak-free); None for every other source
    final_val_loss_seen: float | None = None
    # the step of ``best_val_loss`` (its weights are in ``checkpoint-best/``) and why the run ended
    # (llmcomp.training.convergence: "steps", "early_stop", "stopped"); None when not recorded
    best_step: int | None = None
    stop_reason: str | None = None
    display_name: str | None = None  # a name people gave the run (``llmcomp runs rename``); None: its folder's
    started_at: float | None = None  # when the run record was made (seconds since the epoch)
    spec: dict[str, Any] = field(default_factory=dict)  # the source's settings (kind, model, mode, heads...)
    train_config: dict[str, Any] = field(default_factory=dict)  # steps, batch_size, lr, seed... as trained
    model_config: dict[str, Any] = field(default_factory=dict)  # n_layer, n_embd...
    metrics: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def generation_checkpoint(self) -> Path:
        """The checkpoint to generate from: the best (lowest validation loss) when the run kept one."""
        return checkpoint_to_use(self.path)

    @property
    def corpus_key(self) -> str | None:
        """Runs with the same key trained on the same sentences and split; None: unknown, compare with care."""
        return self.corpus.key if self.corpus else None

    @property
    def api_requests(self) -> int | None:
        return None if self.attention is None else self.attention.get("requests", 0)

    @property
    def api_tokens(self) -> int | None:
        a = self.attention
        return None if a is None else a.get("prompt_tokens", 0) + a.get("completion_tokens", 0)


def summarise(metrics: list[dict[str, Any]], **fields: Any) -> RunSummary:
    """A RunSummary whose losses, perplexity, speed and time come from ``metrics`` (a metrics stream);
    ``fields`` give the rest."""

    def numbers(key: str) -> list[float]:
        return [float(m[key]) for m in metrics if isinstance(m.get(key), int | float)]

    vals, focus, speeds, elapsed = (numbers(k) for k in ("val_loss", "val_focus_loss", "tokens_per_s", "elapsed"))
    acc, mass = numbers("val_focus_acc"), numbers("val_target_mass")
    seen = numbers("val_loss_seen")
    final = vals[-1] if vals else None
    # the trainer's own best (that of the saved best checkpoint: min_delta counted); else, for runs recorded
    # before it was, the lowest validation loss and its first step
    tracked = next((m for m in reversed(metrics) if isinstance(m.get("best_val_loss"), int | float)), None)
    curve = validations(metrics)
    lowest = min(curve, key=lambda sv: sv[1]) if curve else (None, None)
    best_loss, best_step = (tracked["best_val_loss"], tracked.get("best_step")) if tracked else lowest[::-1]
    return RunSummary(
        final_val_loss=final,
        final_val_ppl=math.exp(min(final, 50)) if final is not None else None,
        final_val_focus_loss=focus[-1] if focus else None,
        final_val_focus_acc=acc[-1] if acc else None,
        final_val_target_mass=mass[-1] if mass else None,
        best_val_loss=best_loss,
        final_val_loss_seen=seen[-1] if seen else None,
        tokens_per_s=sum(speeds) / len(speeds) if speeds else None,
        train_seconds=elapsed[-1] if elapsed else None,
        best_step=best_step,
        stop_reason=stop_reason(metrics),
        metrics=metrics,
        **fields,
    )


def _corpus_from_checkpoint(train_config: dict[str, Any]) -> CorpusInfo | None:
    """What a checkpoint's train config says of its corpus (no content hash: not comparable by key)."""
    name = train_config.get("corpus")
    if not isinstance(name, str):
        return None
    return CorpusInfo(name, None, int(train_config.get("corpus_sentences", 0)), train_config.get("split_seed"),
                      train_config.get("val_fraction"))  # fmt: skip


#: a run whose record says it is scoring or training but whose folder has not changed for this long is
#: counted as stopped (its process was killed): a live run writes a metrics line every few seconds
STALE_AFTER_S = 15 * 60
IN_PROGRESS = ("created", "scoring", "training")


def _last_write(folder: Path) -> float:
    times = [p.stat().st_mtime for p in (folder / RECORD, folder / METRICS) if p.is_file()]
    return max(times, default=0.0)


def in_progress(record: RunRecord | None, folder: Path, now: float | None = None) -> bool:
    """Whether the run is being scored or trained now: its record says so and its folder changed lately."""
    if record is None or record.status not in IN_PROGRESS:
        return False
    return (now if now is not None else time.time()) - _last_write(folder) < STALE_AFTER_S


def _meta(folder: Path, live: bool) -> dict[str, Any] | None:
    """checkpoint.json of the last checkpoint; for a live run without one yet, of its best; else None."""
    for sub in (CHECKPOINT, BEST_CHECKPOINT) if live else (CHECKPOINT,):
        path = folder / sub / "checkpoint.json"
        if path.is_file():
            meta = json.loads(read_small(path))
            return meta if isinstance(meta, dict) else None
    return None


def read_run(folder: str | Path, name: str | None = None, live: bool = False) -> RunSummary | None:
    """A summary of one run folder, or None if it has no readable checkpoint or its files are damaged.

    Reads ``checkpoint/checkpoint.json``, the metrics, and the run record (``run.json``, or the older
    ``job.json`` / compare ``run.json``) when present. With ``live``, a run in progress (``in_progress``)
    is read too, checkpoint or not, with its status "training" and the live metrics stream."""
    folder = Path(folder)
    try:
        record = read_record(folder)
        running = live and in_progress(record, folder)
        meta = _meta(folder, live)
        if meta is None and not (running or (live and record is not None and record.status == "failed")):
            return None
        meta, record = meta or {}, record or RunRecord()
        metrics = read_metrics(folder, live=running)
        spec = meta.get("source_spec") or record.source.get("spec") or {}
        train_config = meta.get("train_config") or {}
        last = metrics[-1] if metrics else {}
        step = int(last.get("step", 0)) if running else int(meta.get("step", 0))
        total = int(train_config.get("steps", last.get("total_steps", step)))
        seed = record.seed if record.seed is not None else train_config.get("seed")
        kind = str(spec.get("kind", "?"))
        corpus = record.corpus if record.corpus and record.corpus.sha256 else None
        if running:
            status = "training"
        elif record.status not in IN_PROGRESS:
            status = record.status
        else:
            status = "finished" if step >= total or stop_reason(metrics) == EARLY_STOP else "stopped"
        meta_path = folder / CHECKPOINT / "checkpoint.json"
        return summarise(
            metrics,
            name=name or folder.name,
            path=folder,
            kind=kind,
            label=record.label or kind,
            source=describe_spec(spec),
            seed=None if seed is None else int(seed),
            steps=step,
            total_steps=total,
            attention=record.attention,
            attention_seconds=record.attention_seconds,
            owner=record.owner,
            status=status,
            modified=meta_path.stat().st_mtime if meta_path.is_file() else _last_write(folder),
            corpus=corpus or _corpus_from_checkpoint(train_config),
            display_name=record.display_name,
            started_at=record.started_at,
            spec=spec,
            train_config=train_config,
            model_config=meta.get("model_config") or {},
        )
    except (OSError, ValueError, TypeError, AttributeError, KeyError):  # a damaged run is skipped, never fatal
        return None


def _is_run(folder: Path, live: bool) -> bool:
    return (folder / CHECKPOINT).is_dir() or (live and (folder / RECORD).is_file())


def run_folders(root: str | Path, live: bool = False) -> list[Path]:
    """Run folders directly under ``root``, and one level down (``llmcomp compare`` writes a folder of runs);
    with ``live``, also folders that hold only a run record so far (a run still scoring or training)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if _is_run(child, live):
            found.append(child)
        else:
            found += sorted(p for p in child.iterdir() if p.is_dir() and _is_run(p, live))
    return found


def list_runs(
    runs_dir: str | Path, visible_to: str | None = None, everyone: bool = True, live: bool = False
) -> list[RunSummary]:
    """Runs with a readable checkpoint, oldest first, named by their path under ``runs_dir``.

    ``visible_to`` (an owner tag) keeps that owner's runs and, with ``everyone``, runs that belong to
    no one (made by the CLI or experiments); None keeps every run. ``live`` adds the runs in progress
    (``read_run``), checkpoint or not: a Compare view wants them, a model picker does not."""
    root = Path(runs_dir)
    out = []
    for folder in run_folders(root, live=live):
        run = read_run(folder, name=folder.relative_to(root).as_posix(), live=live)
        if run is None:
            continue
        if visible_to is not None and (run.owner != visible_to if run.owner is not None else not everyone):
            continue
        out.append(run)
    return sorted(out, key=lambda r: r.modified)


def group_by_corpus(runs: Iterable[RunSummary]) -> dict[str | None, list[RunSummary]]:
    """Runs grouped by ``corpus_key`` (same sentences and split), in first-seen order; None holds the
    runs whose corpus is not known. Rank runs only within one group."""
    groups: dict[str | None, list[RunSummary]] = {}
    for r in runs:
        groups.setdefault(r.corpus_key, []).append(r)
    return groups


#: a run table's column for ``final_val_loss_seen``: empty unless the source's rows may see later words
SEEN_COLUMN = "† val loss, training-time rows"
#: What a run of a source whose rows may see later words says beside its loss (CLI warning, compare's † note).
LEAK_NOTE = (
    "its training rows may see later words, so validation is scored prefix by prefix as generation sees it: "
    "val_loss is that leak-free loss; val_loss_seen is the loss under the training-time rows (often lower, "
    "never reachable when generating)"
)
