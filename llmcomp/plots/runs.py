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
    name: str
    path: Path
    source: str  # human description of the attention source
    kind: str
    steps: int
    total_steps: int
    final_val_loss: float | None
    final_val_ppl: float | None
    tokens_per_s: float | None
    api_requests: int | None  # None: not recorded (runs made outside the app)
    api_tokens: int | None
    owner: str | None  # owner tag from job.json (hashed), None for runs made outside the app
    status: str
    modified: float
    metrics: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"


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


def read_run(folder: str | Path, name: str | None = None) -> RunSummary | None:
    """A summary of one run folder, or None if it has no readable checkpoint."""
    folder = Path(folder)
    meta_path = folder / "checkpoint" / "checkpoint.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        spec = meta.get("source_spec") or {}
        mpath = folder / "checkpoint" / "metrics.jsonl"
        metrics = read_jsonl(mpath) if mpath.is_file() else []
    except (OSError, ValueError, AttributeError):
        return None
    job: dict[str, Any] = {}
    if (folder / "job.json").is_file():
        try:
            job = json.loads((folder / "job.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            job = {}
    vals = [m["val_loss"] for m in metrics if isinstance(m.get("val_loss"), int | float)]
    speeds = [m["tokens_per_s"] for m in metrics if isinstance(m.get("tokens_per_s"), int | float)]
    final = vals[-1] if vals else None
    attention = job.get("attention") or {}
    total = int((meta.get("train_config") or {}).get("steps", meta.get("step", 0)))
    step = int(meta.get("step", 0))
    return RunSummary(
        name=name or folder.name,
        path=folder,
        source=describe_spec(spec),
        kind=str(spec.get("kind", "?")),
        steps=step,
        total_steps=total,
        final_val_loss=final,
        final_val_ppl=math.exp(min(final, 50)) if final is not None else None,
        tokens_per_s=sum(speeds) / len(speeds) if speeds else None,
        api_requests=attention.get("requests") if job else None,
        api_tokens=(attention.get("prompt_tokens", 0) + attention.get("completion_tokens", 0)) if job else None,
        owner=job.get("owner"),
        status=str(job.get("status") or ("finished" if step >= total else "stopped")),
        modified=meta_path.stat().st_mtime,
        metrics=metrics,
    )


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
