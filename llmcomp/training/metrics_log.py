"""The metrics stream of a run folder (``metrics.jsonl``): one JSON object per logged step, appended while
training, cut back to the checkpoint's step when a run resumes, read back with a torn last line skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llmcomp.training.run_folder import CHECKPOINT, METRICS, read_small, write_atomic

MAX_METRICS_BYTES = 64_000_000  # a metrics stream: ~200 bytes a logged step


def append_metric(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Append one logged step to ``metrics.jsonl``. A resumed run logs again the steps logged after its
    checkpoint before a kill, and a kill mid-append tears the last line: both are cut away first."""
    path = Path(run_dir) / METRICS
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(path) and not _follows(path, record.get("step")):
        _trim_stream(path, record.get("step"))
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _later(a: Any, b: Any) -> bool:
    """Whether step ``a`` is at or after step ``b`` (both numbers)."""
    return isinstance(a, int | float) and isinstance(b, int | float) and a >= b


def _follows(path: Path, step: Any) -> bool:
    """Whether the file ends in a whole line of an earlier step (read from its last 4 KB: a record is ~200 B)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 4096))
        tail = f.read()
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    if not tail.endswith(b"\n") or (len(lines) < 2 and size > len(tail)):
        return False  # a torn last line, or one longer than the window: look at the whole file
    try:
        return not _later(json.loads(lines[-1]).get("step"), step)
    except (ValueError, AttributeError):
        return False


def _trim_stream(path: Path, step: Any) -> None:
    """Rewrite the stream without a torn last line and without records at or after ``step`` (atomically)."""
    try:
        kept = [r for r in read_jsonl(path) if not _later(r.get("step"), step)]
    except (OSError, ValueError):
        return  # not ours to repair (a link, a huge or damaged file): append as before
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def read_jsonl(path: Path, limit: int = MAX_METRICS_BYTES) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; blank lines and a torn last line (a crash mid-append) skipped."""
    out = []
    lines = read_small(path, limit).splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break
            raise
        if isinstance(rec, dict):
            out.append(rec)
    return out


def read_metrics(run_dir: str | Path, live: bool = False) -> list[dict[str, Any]]:
    """The metrics up to the saved checkpoint (else the live stream); [] if there are none. ``live``: the
    live stream first (a run in progress is past its last checkpoint)."""
    folder = Path(run_dir)
    paths = (folder / CHECKPOINT / METRICS, folder / METRICS)
    for path in reversed(paths) if live else paths:
        if path.is_file():
            return read_jsonl(path)
    return []
