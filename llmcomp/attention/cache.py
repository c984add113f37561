"""Persistent attention cache on sqlitedict, stored as raw bytes (never pickle).

Each value is one byte of type tag and a payload:

* ``T`` + 4-byte little-endian header length + JSON header ``{"shape": [h, t, t]}`` + float32 data
* ``J`` + UTF-8 JSON (for per-row or per-pair entries and other small records)

Entries are written inside SQLite transactions and committed in batches by the sources, so a
process killed mid-run leaves every committed entry intact and nothing half-written. Tensors are
validated again when read, so a damaged entry is treated as a miss, never served. A file that is not an
SQLite database is refused with one line (``CacheError``), before SQLite is asked to open it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from sqlitedict import SqliteDict

from llmcomp.attention.base import AttentionError, validate_attention
from llmcomp.attention.cache_import import CacheError, ImportReport, check_import_line, import_lines
from llmcomp.errors import one_line

__all__ = ["AttentionCache", "CacheError", "ImportReport", "decode_tensor", "encode_tensor"]

SQLITE_MAGIC = b"SQLite format 3\x00"


def _identity(x: Any) -> Any:
    return x


def encode_tensor(m: torch.Tensor) -> bytes:
    header = json.dumps({"shape": list(m.shape)}).encode()
    return b"T" + struct.pack("<I", len(header)) + header + m.to(torch.float32).contiguous().numpy().tobytes()


def decode_tensor(blob: bytes) -> torch.Tensor:
    if not blob or blob[:1] != b"T":
        raise AttentionError("cache entry is not a tensor")
    (n,) = struct.unpack("<I", blob[1:5])
    shape = json.loads(blob[5 : 5 + n])["shape"]
    data = blob[5 + n :]
    count = 1
    for d in shape:
        count *= int(d)
    if len(data) != 4 * count:
        raise AttentionError("cache entry is truncated")
    return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape)


class AttentionCache:
    """sqlitedict-backed store of validated matrices and small JSON records, with a hit counter."""

    def __init__(self, path: str | Path, table: str = "attention"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _check_sqlite_file(self.path)
        try:
            # outer_stack=False: sqlitedict otherwise records a stack trace on every read and write.
            self._db = SqliteDict(
                str(self.path), tablename=table, autocommit=False, encode=_identity, decode=_identity, outer_stack=False
            )
        except sqlite3.Error as e:
            raise CacheError(f"cannot open the attention cache {one_line(str(self.path))}: {one_line(e)}") from None
        self.hits = 0
        self.misses = 0

    # --- tensors ----------------------------------------------------------------------------
    def get(self, key: str, n_words: int, n_heads: int | None = None) -> torch.Tensor | None:
        blob = self._db.get(key)
        if blob is None:
            self.misses += 1
            return None
        try:
            m = validate_attention(decode_tensor(bytes(blob)), n_words, n_heads)
        except (AttentionError, ValueError, KeyError):
            self.misses += 1
            return None
        self.hits += 1
        return m

    def put(self, key: str, m: torch.Tensor) -> None:
        self._db[key] = encode_tensor(m)

    # --- JSON records ----------------------------------------------------------------------
    def get_json(self, key: str) -> Any | None:
        blob = self._db.get(key)
        if blob is None or bytes(blob[:1]) != b"J":
            self.misses += 1
            return None
        value = _json_value(bytes(blob))
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put_json(self, key: str, value: Any) -> None:
        self._db[key] = _encode_json(value)

    def get_many_json(self, keys: Iterable[str]) -> dict[str, Any]:
        """The JSON records of those keys that have one, in one query per 500 keys (bulk lookups)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, Any] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            query = f'SELECT key, value FROM "{self._db.tablename}" WHERE key IN ({",".join("?" * len(chunk))})'
            for key, blob in self._db.conn.select(query, chunk):
                value = _json_value(bytes(blob))
                if value is not None:
                    out[key] = value
        self.hits += len(out)
        self.misses += len(keys) - len(out)
        return out

    def put_many_json(self, items: Iterable[tuple[str, Any]]) -> None:
        """Several JSON records in one statement."""
        self._db.update([(k, _encode_json(v)) for k, v in items])

    # --- housekeeping ----------------------------------------------------------------------
    def commit(self) -> None:
        self._db.commit()

    def close(self) -> None:
        self._db.commit()
        self._db.close()

    def __len__(self) -> int:
        return len(self._db)

    def __contains__(self, key: str) -> bool:
        return key in self._db

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def items(self) -> Iterator[tuple[str, bytes]]:
        for k, v in self._db.items():
            yield k, bytes(v)

    # --- sharing ---------------------------------------------------------------------------
    def export_jsonl(self, path: str | Path) -> int:
        """Write every entry as one JSON line; plain data, safe to share."""
        n = 0
        with open(path, "w", encoding="utf-8") as f:
            for key, blob in self.items():
                if blob[:1] == b"T":
                    m = decode_tensor(blob)
                    rec = {"key": key, "shape": list(m.shape), "data": [round(x, 7) for x in m.flatten().tolist()]}
                elif (value := _json_value(blob)) is not None:
                    rec = {"key": key, "json": value}
                else:
                    continue  # a damaged record is not shared
                f.write(json.dumps(rec, allow_nan=False, ensure_ascii=False) + "\n")
                n += 1
        return n

    def import_jsonl(self, path: str | Path, overwrite: bool = False) -> tuple[int, int]:
        """(imported, rejected): ``import_report``'s counts, for callers that need no more."""
        report = self.import_report(path, overwrite)
        return report.imported, report.rejected

    def import_report(self, path: str | Path, overwrite: bool = False) -> ImportReport:
        """Read entries written by ``export_jsonl``; every line is checked (``cache_import``) before it is stored.

        An entry whose key is already cached with another value is kept unless ``overwrite``; the report
        counts both. CacheError, before anything is stored, for a file that is not regular UTF-8 text."""
        report = ImportReport()
        for n, line in enumerate(import_lines(Path(path)), 1):
            if line is not None and not line.strip():
                continue
            try:
                key, m, value = check_import_line(line)
                blob = encode_tensor(m) if m is not None else _encode_json(value)
            except (ValueError, KeyError, TypeError, RuntimeError, RecursionError) as e:
                report.rejected += 1
                if len(report.reasons) < 3:
                    report.reasons.append(f"line {n}: {one_line(e, 200)}")
                continue
            old = self._db.get(key)
            if old is not None and bytes(old) == blob:
                report.same += 1
                continue
            if old is not None and not overwrite:
                report.kept += 1
                continue
            if old is None:
                report.added += 1
            else:
                report.replaced += 1
            self._db[key] = blob
        self.commit()
        return report


def _encode_json(value: Any) -> bytes:
    return b"J" + json.dumps(value, allow_nan=False, ensure_ascii=False).encode()


def _json_value(blob: bytes) -> Any | None:
    """A ``J`` entry's value; None for any other entry or a damaged one (a miss, never an exception)."""
    if blob[:1] != b"J":
        return None
    try:
        return json.loads(blob[1:].decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _check_sqlite_file(path: Path) -> None:
    """Refuse, before SQLite sees it, a path that is not an SQLite file (or a new, empty one)."""
    if not os.path.lexists(path):
        return
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise CacheError(f"{one_line(str(path))} is not a regular file; an attention cache is an SQLite file")
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise CacheError(f"cannot read the attention cache {one_line(str(path))}: {one_line(e)}") from None
    if st.st_size and head != SQLITE_MAGIC:
        raise CacheError(
            f"{one_line(str(path))} is not an attention cache (not an SQLite database); give another --cache file"
        )
