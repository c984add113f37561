"""The run folder, owned here alone: its layout, its name, its record, reading it back.

A run folder holds ``checkpoint/`` (``llmcomp.training.checkpoint``), ``metrics.jsonl`` (one JSON
object per logged step, appended while training) and ``run.json`` (the run record: label, seed,
corpus with its content hash, source, owner tag, status, attention cost). Older folders hold
``job.json`` (the web app's record) or a shorter ``run.json`` (``llmcomp compare``'s); both still
read. The metrics stream's format is ``llmcomp.training.metrics_log``'s. Reading is JSON only, from bounded
regular files: a damaged run is skipped, never fatal.
Nothing here imports torch, so the web app can list runs before torch has loaded.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CHECKPOINT, METRICS, RECORD, LEGACY_JOB = "checkpoint", "metrics.jsonl", "run.json", "job.json"
HEADS = "heads.json"  # the heads an atlas chose for the run (llmcomp.app.head_choice owns its format)
BEST_CHECKPOINT = "checkpoint-best"  # the weights of the lowest validation loss; ``checkpoint/`` is the last
RECORD_FORMAT = 1
MAX_RECORD_BYTES = 1_000_000  # run.json, job.json, checkpoint.json: configs and counts, never data
MAX_DISPLAY_NAME = 80  # a run's display name: a label for people, one line
STATUSES = ("created", "scoring", "training", "finished", "stopped", "failed")


# --- naming -----------------------------------------------------------------------------------
def slug(label: str) -> str:
    """A folder-safe form of a label: ``"oracle:shift=1"`` -> ``"oracle-shift1"``."""
    return re.sub(r"[^a-z0-9_.-]+", "-", label.lower().replace(":", "-").replace("=", "")).strip("-.") or "run"


def new_run_dir(root: str | Path, label: str, seed: int | None = None, stamped: bool = True) -> Path:
    """Create and return a new run folder under ``root``: the one naming scheme.

    ``stamped`` (a runs folder shared over time): ``YYYYmmdd-HHMMSS-<slug>[-seed<N>]-<4 hex>``, unique
    even for two runs started in the same second. Not stamped (inside a comparison's own new folder,
    where (label, seed) is unique): ``<slug>-seed<N>``. Raises FileExistsError rather than reuse a folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tail = "" if seed is None else f"-seed{int(seed)}"
    if not stamped:
        path = root / f"{slug(label)}{tail}"
        path.mkdir()
        return path
    for _ in range(16):
        path = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(label)}{tail}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not find a free run folder name under {root}")


def checkpoint_dir(run_dir: str | Path, best: bool = False) -> Path:
    """The run's last checkpoint (what resume continues), or with ``best`` the one of its lowest val loss."""
    return Path(run_dir) / (BEST_CHECKPOINT if best else CHECKPOINT)


def checkpoint_to_use(run_dir: str | Path, best: bool = True) -> Path:
    """The checkpoint to generate from: the best when asked and the run has one, else the last."""
    path = checkpoint_dir(run_dir, best=True)
    return path if best and (path / "checkpoint.json").is_file() else checkpoint_dir(run_dir)


# --- the run record --------------------------------------------------------------------------
@dataclass
class CorpusInfo:
    """Which sentences a run trained on, and how they were split: runs compare only within one."""

    name: str
    sha256: str | None  # Corpus.sha256; None for runs recorded before it existed
    sentences: int
    split_seed: int | None = None
    val_fraction: float | None = None

    @classmethod
    def of(cls, corpus: Any) -> CorpusInfo:
        return cls(corpus.name, corpus.sha256, len(corpus.sentences), corpus.config.seed, corpus.config.val_fraction)

    @property
    def key(self) -> str | None:
        """Comparability key: same sentences and same held-out split, or None when unknown."""
        if not self.sha256:
            return None
        return f"{self.sha256}:{self.split_seed}:{self.val_fraction}"


@dataclass
class RunRecord:
    """``run.json``: what the checkpoint does not hold about a run."""

    label: str = ""  # the source as a comparison names it (e.g. "oracle:shift=1"); "" = its kind
    seed: int | None = None
    corpus: CorpusInfo | None = None
    source: dict[str, Any] = field(default_factory=dict)  # {"spec": ..., "fingerprint": ...}; no secrets
    owner: str | None = None  # an opaque owner tag (hashed by the caller), None for runs outside the app
    status: str = "created"
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attention: dict[str, int] | None = None  # this run's scoring counts; {} when it reused another run's
    attention_seconds: float | None = None
    reused_from: str | None = None  # the run whose scoring pass this one reused
    display_name: str | None = None  # a name people gave the run (rename); the folder's name never changes
    format: int = RECORD_FORMAT

    @classmethod
    def start(cls, label: str, corpus: Any, source: Any, seed: int | None = None, **more: Any) -> RunRecord:
        """A record for a run starting now on ``corpus`` with ``source`` (an AttentionSource)."""
        src = {"spec": source.spec(), "fingerprint": source.fingerprint()}
        return cls(label=label, seed=seed, corpus=CorpusInfo.of(corpus), source=src, started_at=time.time(), **more)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """A record from parsed JSON; ValueError when a field has the wrong type (a damaged record)."""
        if not isinstance(data, dict):
            raise ValueError("a run record is a JSON object")
        known = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in data.items() if k in known})
        if isinstance(rec.corpus, dict):
            rec.corpus = CorpusInfo(**{k: rec.corpus.get(k) for k in ("name", "sha256", "sentences")},
                                    split_seed=rec.corpus.get("split_seed"),
                                    val_fraction=rec.corpus.get("val_fraction"))  # fmt: skip
        _check(rec)
        return rec


def _is(value: Any, *types: type) -> bool:
    return value is None or (isinstance(value, types) and not isinstance(value, bool))


def _check(rec: RunRecord) -> None:
    c = rec.corpus
    ok = (
        isinstance(rec.label, str)
        and _is(rec.seed, int)
        and (c is None or (isinstance(c, CorpusInfo) and isinstance(c.name, str) and _is(c.sha256, str)
                           and isinstance(c.sentences, int) and _is(c.split_seed, int)
                           and _is(c.val_fraction, int, float)))  # fmt: skip
        and isinstance(rec.source, dict)
        and _is(rec.owner, str)
        and rec.status in STATUSES
        and _is(rec.error, str)
        and all(_is(t, int, float) for t in (rec.started_at, rec.finished_at, rec.attention_seconds))
        and (rec.attention is None or (isinstance(rec.attention, dict) and all(_is(v, int) for v in rec.attention.values())))
        and _is(rec.reused_from, str)
        and _is(rec.display_name, str) and len(rec.display_name or "") <= MAX_DISPLAY_NAME
    )  # fmt: skip
    if not ok:
        raise ValueError("run record has a field of the wrong type")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_record(run_dir: str | Path, record: RunRecord) -> Path:
    """Write ``run.json`` (whole, atomically: a reader never sees half a record)."""
    _check(record)
    path = Path(run_dir) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, record.to_json())
    return path


def update_record(run_dir: str | Path, **changes: Any) -> RunRecord:
    """Change some fields of ``run.json`` (a new record if there is none or it is unreadable)."""
    try:
        rec = read_record(run_dir) or RunRecord()
    except ValueError:
        rec = RunRecord()
    for k, v in changes.items():
        setattr(rec, k, v)
    write_record(run_dir, rec)
    return rec


def set_display_name(run_dir: str | Path, name: str) -> RunRecord:
    """Give a run a display name (stripped, one line, at most ``MAX_DISPLAY_NAME`` characters; "" clears it).
    Only ``run.json`` changes: the folder keeps its name, so paths to its checkpoint stay valid."""
    text = " ".join(str(name).split())
    if len(text) > MAX_DISPLAY_NAME:
        raise ValueError(f"a display name has at most {MAX_DISPLAY_NAME} characters; this one has {len(text)}")
    rec = read_record(run_dir) or RunRecord()  # a damaged record raises: never replaced by a blank one
    rec.display_name = text or None
    write_record(run_dir, rec)
    return rec


def read_small(path: Path, limit: int = MAX_RECORD_BYTES) -> str:
    """A regular file's text, at most ``limit`` bytes; ValueError for links, devices and oversize files."""
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path.name} is not a regular file")
    if st.st_size > limit:
        raise ValueError(f"{path.name} is {st.st_size:,} bytes, over the {limit:,}-byte limit")
    return path.read_text(encoding="utf-8")


def _read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file; None if missing; ValueError if damaged."""
    if not os.path.lexists(path):
        return None
    data = json.loads(read_small(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data


def _legacy(run_json: dict[str, Any] | None, job: dict[str, Any] | None) -> RunRecord | None:
    """A record from the old files: compare's ``run.json`` (label, seed, cost) and the app's ``job.json``."""
    if run_json is None and job is None:
        return None
    info, job = run_json or {}, job or {}
    corpus = job.get("corpus")
    status = job.get("status")  # compare's run.json has none: "created" = not recorded (read_run infers it)
    return RunRecord.from_dict({
        "label": info.get("label") or "",
        "seed": info.get("seed"),
        "corpus": {"name": corpus, "sha256": None, "sentences": 0} if isinstance(corpus, str) else None,
        "source": {"spec": job["source_spec"]} if isinstance(job.get("source_spec"), dict) else {},
        "owner": job.get("owner"),
        "status": status if status in STATUSES else "created",
        "error": job.get("error"),
        "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
        "attention": info.get("attention") if run_json is not None else job.get("attention"),
        "attention_seconds": info.get("attention_seconds"),
        "reused_from": info.get("attention_reused_from"),
    })  # fmt: skip


def read_record(run_dir: str | Path) -> RunRecord | None:
    """The run record, from ``run.json`` or the older files; None if there is none; ValueError if damaged."""
    folder = Path(run_dir)
    data, job = _read_object(folder / RECORD), _read_object(folder / LEGACY_JOB)
    if data is not None and data.get("format") == RECORD_FORMAT:
        return RunRecord.from_dict(data)
    if data is not None and "format" in data:
        raise ValueError(f"{RECORD} has format {data['format']!r}; expected {RECORD_FORMAT}")
    if job is not None and isinstance(job.get("attention"), dict):  # job.json counted floats as ints
        job["attention"] = {k: int(v) for k, v in job["attention"].items() if isinstance(v, int | float)}
    return _legacy(data, job)
