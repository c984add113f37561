"""Compare attention sources: the same model, split, steps and seeds for each, in one table.

A claim that LLM-supplied attention helps means nothing without its baselines trained the same way:
fixed, non-learned attention often comes close to learned attention (docs/sources.md). ``compare`` trains one model per (source, seed)
on one corpus split, with the same model size, steps and batches, and tabulates the final
validation loss across seeds (mean and spread), so a difference can be read against the noise.

Each source scores the corpus once; the seeds reuse that pass (``Trainer.prepare`` returns the
examples, ``Trainer(prepared=...)`` trains on them: the seed changes the model's initialisation and
the batch order, not the attention). Slow sources (local, openai) also use the persistent cache
when one is given, so a second comparison costs no requests.

This module runs the comparison; ``tables`` computes the tables, ``report`` writes the files. A
comparison folder holds:

* ``<source>-seed<k>/``: one run folder per (source, seed), named and recorded by
  ``llmcomp.training.run_folder`` (``metrics.jsonl``, ``checkpoint/``, ``run.json`` with label, seed,
  corpus hash, source and attention cost), so ``llmcomp generate`` and the app's Compare tab work on it;
* ``runs.csv``, ``table.csv``, ``table.md``, ``curves.html`` and ``compare.json`` (see ``report``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from llmcomp.app.head_choice import source_for_corpus
from llmcomp.app.sources import build_source
from llmcomp.attention.base import PerSentenceSource
from llmcomp.attention.registry import CACHED, describe_spec
from llmcomp.errors import LLMCompError
from llmcomp.experiments.compare_sources import resolve_sources
from llmcomp.experiments.labels import CompareError, parse_source
from llmcomp.experiments.report import write_outputs
from llmcomp.experiments.table_markdown import table_markdown
from llmcomp.experiments.tables import runs_frame, summary_table
from llmcomp.model.gpt import GPTConfig
from llmcomp.text.binding import decided_positions
from llmcomp.text.corpus import Corpus, CorpusConfig, load_corpus
from llmcomp.text.tasks import Task, choose_task, get_task
from llmcomp.threads import torch_threads
from llmcomp.training.data import PreparedData
from llmcomp.training.mixture import save_run_mixture
from llmcomp.training.run_folder import CorpusInfo, RunRecord, new_run_dir, slug, update_record, write_record
from llmcomp.training.run_summary import RunSummary, summarise
from llmcomp.training.trainer import TrainConfig, Trainer


@dataclass
class CompareConfig:
    """One comparison: which sources, how many seeds, and the model and training they all share.

    ``sources``: labels such as ``"uniform"`` or ``"oracle:shift=1"`` (options after colons);
    ``None`` or ``"auto"`` in the list means the baselines, the local LLM (when installed), openai
    (when OPENAI_API_KEY or OPENAI_BASE_URL is set) and the oracle (on the binding corpus).
    ``train.steps`` and ``train.seed`` are replaced by ``steps`` and each of ``seeds``.
    """

    sources: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # Small on purpose: 3 seeds x 7-8 sources must finish in minutes on a shared 2-core CPU (one layer,
    # half the steps, batch 32); everything else, dropout included, is GPTConfig's and TrainConfig's.
    steps: int = 300
    model: GPTConfig = field(default_factory=lambda: GPTConfig(n_layer=1))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=32, lr=3e-3, eval_every=50))
    corpus: CorpusConfig = field(default_factory=CorpusConfig)  # used when ``compare`` is given a path
    out: Path | None = None  # None: nothing is written
    focus: bool | None = None  # measure the task's positions; None: when a task applies; False: never
    # a task name or rule (docs/tasks.md): where focus loss, accuracy and target mass are measured;
    # "auto": binding on the binding corpus, else none; "none": no task
    task: str = "auto"
    cache: Path | None = None  # persistent attention cache for the slow sources (local, openai)
    max_sentences: int | None = None  # use only the first N sentences of the corpus (before the split)
    threads: int | None = None  # torch threads while comparing (None: leave as is; baselines score on one)
    # convergence budget: each run trains with early stopping (``patience`` validations) up to ``max_steps``;
    # the table then gives the loss at ``steps`` (learning speed) beside the converged (best) loss. Off: every
    # run trains exactly ``steps`` (no early stopping), the learning-speed comparison alone.
    converge: bool = False
    max_steps: int = 3000
    patience: int = TrainConfig.patience
    # options every label of a kind takes unless it sets them itself, e.g. {"local": {"device": "cuda"}}
    # (``llmcomp compare --llm-device``); the label in the table stays as written
    source_options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class CompareResult:
    runs: list[RunSummary]
    table: pd.DataFrame  # one row per source (``summary_table``)
    out: Path | None
    focus: bool
    sources: list[str]
    failures: dict[str, str] = field(default_factory=dict)  # source label -> one-line reason
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    task: str | None = None  # the measured task's name (docs/tasks.md); None when ``focus`` is False
    budget: int | None = None  # a convergence comparison's fixed budget (its ``steps``); None: not converged

    @property
    def markdown(self) -> str:
        return table_markdown(self.table, budget=self.budget)


ProgressFn = Callable[[dict[str, Any]], None]


# --- the task (the sources: ``compare_sources``) --------------------------------------------------
def binding_focus(words: list[str]) -> Iterable[int]:
    """Focus positions of the binding task: the recall cues, whose next word an earlier word decides."""
    return decided_positions(words).keys()


def resolve_task(config: CompareConfig, corpus: Corpus) -> Task | None:
    """The task a comparison measures: ``config.task`` by name, "auto" = binding on the binding corpus
    (or wherever ``focus`` is True); None when there is none or ``focus`` is False."""
    if config.focus is False:
        return None
    if config.focus and (config.task or "auto").strip() == "auto":
        return get_task("binding")
    return choose_task(config.task or "auto", corpus.sentences)


# --- running --------------------------------------------------------------------------------------
def compare(
    corpus: Corpus | str | Path, config: CompareConfig | None = None, progress: ProgressFn | None = None
) -> CompareResult:
    """Train the same model with each source and seed on one split; return (and write) the table.

    ``progress`` gets dicts: ``{"event": "source", "label", "index", "total"}`` before a source is
    scored, ``{"event": "scoring", "label", "stats": ScoreStats}`` while it is, ``{"event": "metric",
    "label", "seed", "record"}`` for every logged training step, ``{"event": "run", "record": RunSummary}``
    after each run and ``{"event": "failed", "label", "reason"}`` when a source cannot be used (the
    others still run; the reason is in ``CompareResult.failures``).
    """
    config = config or CompareConfig()
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus, config.corpus)
    if config.max_sentences:
        corpus = Corpus(corpus.sentences[: config.max_sentences], name=corpus.name, config=corpus.config)
    if not config.seeds:
        raise CompareError("no seeds to run; give at least one (three or more to see the spread)")
    if config.steps < 1:
        raise CompareError(f"steps must be at least 1, got {config.steps}")
    if config.converge and (config.max_steps < config.steps or config.patience < 1):
        raise CompareError(f"to converge, max_steps ({config.max_steps}) must be at least steps ({config.steps}) "
                           f"and patience ({config.patience}) at least 1")  # fmt: skip
    out = Path(config.out) if config.out else None
    if out is not None and out.is_dir() and any(out.iterdir()):
        raise CompareError(f"{out} already holds files; give compare a new or empty folder")
    task = resolve_task(config, corpus)
    focus = task is not None
    labels, notes = resolve_sources(config.sources, corpus)
    emit = progress or (lambda _event: None)
    runs: list[RunSummary] = []
    failures: dict[str, str] = {}
    with torch_threads(config.threads):
        for index, label in enumerate(labels):
            emit({"event": "source", "label": label, "index": index, "total": len(labels)})
            try:
                runs += _compare_source(corpus, label, config, task, out, emit)
            except (LLMCompError, ValueError, RuntimeError, OSError, ImportError) as e:
                failures[label] = reason = _first_line(e)
                emit({"event": "failed", "label": label, "reason": reason})
    table = summary_table(runs_frame(runs, budget=config.steps), order=labels)
    result = CompareResult(runs, table, out, focus, labels, failures, notes, task=task.name if task else None,
                           budget=config.steps if config.converge else None)  # fmt: skip
    if out is not None:
        result.files = write_outputs(result, corpus, config)
    return result


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _compare_source(
    corpus: Corpus, label: str, config: CompareConfig, task: Task | None, out: Path | None, emit: ProgressFn
) -> list[RunSummary]:
    """Every seed of one source: the first scores the corpus, the others train on its examples."""
    kind, options = parse_source(label)
    source, choice = source_for_corpus(  # heads=top:K:PATTERN: chosen on the training split first
        corpus,
        {"kind": kind, **config.source_options.get(kind, {}), **options},
        lambda d: build_source(d, cache=config.cache if kind in CACHED else None),
        progress=lambda s: emit({"event": "scoring", "label": label, "stats": s}),
    )
    records: list[RunSummary] = []
    prepared: PreparedData | None = None
    first_run: str | None = None
    try:
        for seed in config.seeds:
            train_cfg = replace(config.train, steps=config.steps, seed=seed, patience=0)  # a fixed budget
            if config.converge:
                train_cfg = replace(train_cfg, steps=config.max_steps, patience=config.patience)
            if config.threads:
                train_cfg = replace(train_cfg, threads=config.threads)
            run_dir = new_run_dir(out, label, seed, stamped=False) if out is not None else None
            if run_dir is not None:
                if choice is not None:
                    choice.write(run_dir)
                status = "scoring" if prepared is None else "training"
                write_record(run_dir, RunRecord.start(label, corpus, source, seed, status=status))
            try:
                trainer = Trainer(corpus, source, config.model, train_cfg, run_dir, task=task)
                if prepared is None:
                    t0 = time.perf_counter()
                    with torch_threads(1 if isinstance(source, PerSentenceSource) else None):
                        prepared = trainer.prepare(
                            progress=lambda s, label=label: emit({"event": "scoring", "label": label, "stats": s})
                        )
                    attention, attention_s, reused_from = asdict(prepared.stats), time.perf_counter() - t0, None
                    first_run = run_dir.name if run_dir is not None else None
                else:  # the same attention, scored once: only the model and the batches change with the seed
                    trainer.use(prepared)
                    attention, attention_s, reused_from = {}, None, first_run

                def on_metric(m: dict[str, Any], label: str = label, seed: int = seed) -> None:
                    emit({"event": "metric", "label": label, "seed": seed, "record": m})

                if run_dir is not None:
                    update_record(run_dir, status="training", attention=attention, reused_from=reused_from,
                                  attention_seconds=attention_s)  # fmt: skip
                result = trainer.run(on_metric=on_metric)
            except BaseException as e:
                if run_dir is not None:
                    update_record(run_dir, status="failed", error=_first_line(e), finished_at=time.time())
                raise
            status = "stopped" if result.stopped else "finished"
            if run_dir is not None:
                save_run_mixture(run_dir, trainer.model, source, trainer.step)  # with --mix: the heads chosen
                update_record(run_dir, status=status, finished_at=time.time())
            rec = summarise(
                list(trainer.metrics),
                name=run_dir.name if run_dir is not None else f"{slug(label)}-seed{seed}",
                path=run_dir or Path("."),
                kind=source.kind,
                label=label,
                source=describe_spec(source.spec()),
                seed=seed,
                steps=trainer.step,
                total_steps=train_cfg.steps,
                attention=attention,
                attention_seconds=attention_s,
                status=status,
                modified=time.time(),
                corpus=CorpusInfo.of(corpus),
            )
            records.append(rec)
            emit({"event": "run", "record": rec})
    finally:
        source.close()
        if source.cache is not None:
            source.cache.close()
    return records
