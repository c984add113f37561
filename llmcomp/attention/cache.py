"""Persistent attention cache on sqlitedict, stored as raw bytes (never pickle).

Each value is one byte of type tag and a payload:

* ``T`` + 4-byte little-endian header length + JSON header ``{"shape": [h, t, t]}`` + float32 data
* ``J`` + UTF-8 JSON (for per-row or per-pair entries and other small records)

Entries are written inside SQLite transactions and committed in batches by the sources, so a
process killed mid-run leaves every committed entry intact and nothing half-written. Tensors are
validated again when read, so a damaged entry is treated as a miss, never served.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from sqlitedict import SqliteDict

from llmcomp.attention.base import AttentionError, validate_attention


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
        # outer_stack=False: sqlitedict otherwise records a stack trace on every read and write.
        self._db = SqliteDict(
            str(self.path), tablename=table, autocommit=False, encode=_identity, decode=_identity, outer_stack=False
        )
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
        self.hits += 1
        return json.loads(bytes(blob[1:]).decode())

    def put_json(self, key: str, value: Any) -> None:
        self._db[key] = b"J" + json.dumps(value, allow_nan=False, ensure_ascii=False).encode()

    def get_many_json(self, keys: Iterable[str]) -> dict[str, Any]:
        """The JSON records of those keys that have one, in one query per 500 keys (bulk lookups)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, Any] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            query = f'SELECT key, value FROM "{self._db.tablename}" WHERE key IN ({",".join("?" * len(chunk))})'
            for key, blob in self._db.conn.select(query, chunk):
                blob = bytes(blob)
                if blob[:1] == b"J":
                    out[key] = json.loads(blob[1:].decode())
        self.hits += len(out)
        self.misses += len(keys) - len(out)
        return out

    def put_many_json(self, items: Iterable[tuple[str, Any]]) -> None:
        """Several JSON records in one statement."""
        self._db.update([(k, b"J" + json.dumps(v, allow_nan=False, ensure_ascii=False).encode()) for k, v in items])

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
                else:
                    rec = {"key": key, "json": json.loads(blob[1:].decode())}
                f.write(json.dumps(rec, allow_nan=False, ensure_ascii=False) + "\n")
                n += 1
        return n

    def import_jsonl(self, path: str | Path) -> tuple[int, int]:
        """Read entries written by ``export_jsonl``; invalid lines are skipped and counted.

        Returns (imported, rejected). Nothing in the file is executed: it is parsed as JSON and
        every matrix is validated before it is stored.
        """
        ok = bad = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    key = rec["key"]
                    if not isinstance(key, str) or len(key) > 512:
                        raise ValueError("bad key")
                    if "shape" in rec:
                        shape = [int(d) for d in rec["shape"]]
                        if len(shape) != 3:
                            raise ValueError("bad shape")
                        m = torch.tensor(rec["data"], dtype=torch.float32).reshape(shape)
                        self.put(key, validate_attention(m, shape[1]))
                    else:
                        self.put_json(key, rec["json"])
                    ok += 1
                except (ValueError, KeyError, TypeError, RuntimeError):
                    bad += 1
        self.commit()
        return ok, bad
