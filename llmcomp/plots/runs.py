"""Read finished training runs from the runs folder and summarise them for a comparison table.

A run folder holds ``checkpoint/checkpoint.json`` (with the attention source's ``source_spec``) and
``checkpoint/metrics.jsonl``; runs started from the web app also hold ``job.json`` with the
attention cost (API requests and tokens) and an owner tag. Nothing here executes file contents: it
is JSON only, and a damaged run is skipped, never fatal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


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
    # another run's pass; None when not recorded (a run made with ``llmcomp train``)
    attention: dict[str, int] | None
    attention_seconds: float | None = None
    owner: str | None = None  # owner tag from job.json (hashed), None for runs made outside the app
    status: str = "finished"
    modified: float = 0.0
    metrics: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

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
    final = vals[-1] if vals else None
    return RunSummary(
        final_val_loss=final,
        final_val_ppl=math.exp(min(final, 50)) if final is not None else None,
        final_val_focus_loss=focus[-1] if focus else None,
        best_val_loss=min(vals) if vals else None,
        tokens_per_s=sum(speeds) / len(speeds) if speeds else None,
        train_seconds=elapsed[-1] if elapsed else None,
        metrics=metrics,
        **fields,
    )


def describe_spec(spec: dict[str, Any]) -> str:
    """One line naming a source from its spec (specs never hold secrets)."""
    kind = str(spec.get("kind", "?"))
    heads = spec.get("n_heads")
    plural = "" if heads == 1 else "s"
    if kind == "openai":
        rel = ", ".join(spec.get("heads", []))
        return f"openai {spec.get('model', '?')} ({spec.get('mode', '?')} mode; {rel})"
    if kind == "local":
        return f"local LLM (layers {spec.get('layers', 'all')}, {heads} head{plural})"
    if kind == "learned":
        return f"learned ({spec.get('learned_heads', '?')} heads)"
    if kind == "gaussian":
        return f"gaussian ({heads} head{plural}, sigma {spec.get('sigma', '?')})"
    if kind == "oracle" and spec.get("shift"):
        return f"oracle ({heads} head{plural}, shift {spec['shift']})"
    return f"{kind} ({heads} head{plural})"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (a metrics stream), blank lines skipped."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if isinstance(rec, dict):
                out.append(rec)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; {} if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _counts(value: Any) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    return {k: int(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def read_run(folder: str | Path, name: str | None = None) -> RunSummary | None:
    """A summary of one run folder, or None if it has no readable checkpoint or metrics.

    Reads ``checkpoint/checkpoint.json`` and ``checkpoint/metrics.jsonl``, plus ``run.json`` (written
    by ``llmcomp compare``: label, seed, attention cost) or ``job.json`` (written by the app: attention
    cost, owner, status) when present."""
    folder = Path(folder)
    meta_path = folder / "checkpoint" / "checkpoint.json"
    meta = _read_json(meta_path)
    if not meta:
        return None
    metrics_path = folder / "checkpoint" / "metrics.jsonl"
    if not metrics_path.is_file():
        metrics_path = folder / "metrics.jsonl"
    info, job = _read_json(folder / "run.json"), _read_json(folder / "job.json")
    try:
        metrics = read_jsonl(metrics_path) if metrics_path.is_file() else []
        spec = meta.get("source_spec") or {}
        train_config = meta.get("train_config") or {}
        step = int(meta.get("step", 0))
        total = int(train_config.get("steps", step))
        seed = info.get("seed", train_config.get("seed"))
        kind = str(spec.get("kind", "?"))
        return summarise(
            metrics,
            name=name or folder.name,
            path=folder,
            kind=kind,
            label=str(info.get("label") or kind),
            source=describe_spec(spec),
            seed=None if seed is None else int(seed),
            steps=step,
            total_steps=total,
            attention=_counts(info.get("attention") if info else job.get("attention")),
            attention_seconds=info.get("attention_seconds"),
            owner=job.get("owner"),
            status=str(job.get("status") or ("finished" if step >= total else "stopped")),
            modified=meta_path.stat().st_mtime,
        )
    except (OSError, ValueError, TypeError, AttributeError):  # a damaged run is skipped, never fatal
        return None


def list_runs(runs_dir: str | Path, visible_to: str | None = None, everyone: bool = True) -> list[RunSummary]:
    """Runs with a checkpoint, oldest first, named by their path under ``runs_dir``. ``visible_to`` (an owner tag) keeps that owner's runs and,
    with ``everyone``, runs that belong to no one (made by the CLI or experiments)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    out = []
    for folder in run_folders(root):
        run = read_run(folder, name=folder.relative_to(root).as_posix())
        if run is None:
            continue
        if visible_to is not None and run.owner is not None and run.owner != visible_to:
            continue
        if visible_to is not None and run.owner is None and not everyone:
            continue
        out.append(run)
    return sorted(out, key=lambda r: r.modified)


def run_folders(root: Path) -> list[Path]:
    """Run folders directly under ``root``, and one level down (``llmcomp compare`` writes a folder of runs)."""
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if (child / "checkpoint").is_dir():
            found.append(child)
        else:
            found += sorted(p for p in child.iterdir() if p.is_dir() and (p / "checkpoint").is_dir())
    return found


def _round(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def runs_table(runs: Iterable[RunSummary]) -> pd.DataFrame:
    """One row per run: source, steps, final validation loss and perplexity, tokens/s, API requests."""
    rows = [
        {
            "run": r.name,
            "source": r.source,
            "steps": f"{r.steps}/{r.total_steps}",
            "final val loss": _round(r.final_val_loss, 4),
            "val perplexity": _round(r.final_val_ppl, 2),
            "tokens/s": None if r.tokens_per_s is None else int(round(r.tokens_per_s)),
            "API requests": r.api_requests,
            "status": r.status,
        }
        for r in runs
    ]
    cols = ["run", "source", "steps", "final val loss", "val perplexity", "tokens/s", "API requests", "status"]
    return pd.DataFrame(rows, columns=cols)
