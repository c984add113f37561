"""Where the Batch API route remembers its batches: a table of its own in the attention cache's SQLite file.

A batch is recorded the moment the server accepts it, with what each of its requests asks (the words of a
sentence or a prefix, or a list of word pairs, by ``custom_id``), so a command that was stopped while waiting
resumes polling the same batch instead of paying for it twice, and reads its answers without the corpus it came
from. Records are JSON (never pickle), keyed by batch id, and name the endpoint (never the key) and the scoring
identity they were made under: only a command with the same endpoint and identity picks a batch up again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict

TABLE = "batches"


@dataclass
class BatchRecord:
    """One submitted batch: its id, whose it is, what its requests ask, and how it ended (``open`` until then)."""

    id: str
    endpoint: str  # the base URL without credentials or query: batches live on the account behind it
    identity: str  # the scoring identity's hash: only the same source settings read these answers
    units: dict[str, dict[str, Any]]  # custom_id -> {"task": ..., "words": [...]} or {"task": "pair", "pairs": [...]}
    created: float = field(default_factory=time.time)
    status: str = "validating"
    open: bool = True
    counts: dict[str, int] = field(default_factory=dict)  # the server's request_counts when last seen
    outcome: str = ""  # one line, once closed: how many answers were kept and why the rest were not

    @classmethod
    def from_json(cls, data: Any) -> BatchRecord | None:
        """A record from stored JSON, or None when the entry is not one (damaged entries are skipped, not served)."""
        try:
            rec = cls(**{k: data[k] for k in ("id", "endpoint", "identity", "units")})
            for name in ("created", "status", "open", "counts", "outcome"):
                if name in data:
                    setattr(rec, name, data[name])
        except (KeyError, TypeError):
            return None
        ok = isinstance(rec.id, str) and isinstance(rec.units, dict) and isinstance(rec.open, bool)
        return rec if ok and all(isinstance(u, dict) for u in rec.units.values()) else None


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _decode(blob: bytes) -> Any:
    try:
        return json.loads(blob)
    except (ValueError, TypeError):
        return None


class BatchStore:
    """The batches table of one cache file (a second SQLite connection on the same file)."""

    def __init__(self, path: str | Path):
        self._db = SqliteDict(
            str(path), tablename=TABLE, autocommit=False, encode=_encode, decode=_decode, outer_stack=False
        )

    def save(self, rec: BatchRecord) -> None:
        """Write and commit one record at once: a kill right after loses nothing the server has."""
        self._db[rec.id] = asdict(rec)
        self._db.commit()

    def open_batches(self, endpoint: str, identity: str) -> list[BatchRecord]:
        """The batches still open for this endpoint and identity, oldest first."""
        found = [BatchRecord.from_json(v) for _, v in self._db.items()]
        mine = [r for r in found if r is not None and r.open and r.endpoint == endpoint and r.identity == identity]
        return sorted(mine, key=lambda r: r.created)

    def all(self) -> list[BatchRecord]:
        """Every readable record, newest first (``llmcomp batches``)."""
        found = [BatchRecord.from_json(v) for _, v in self._db.items()]
        return sorted((r for r in found if r is not None), key=lambda r: -r.created)

    def close(self) -> None:
        self._db.close()
