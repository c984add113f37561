"""One visitor's view of the shared attention cache, for a public server.

On a public server the cache is shared by strangers, and a hit tells whoever gets it that someone scored
that sentence: the estimate ("1 cached"), the run's counts, the requests that never reach the server and
the time it takes all say so. A ``CacheView`` stores every entry under a prefix of its own (a hash of the
visitor's browser id), so a visitor's scoring hits only what that visitor scored; someone else's entries
are misses, scored and paid for again like any new sentence. The sources use it exactly as they use an
``AttentionCache`` (the methods below are the ones they call). A private server (loopback, or behind a
login) passes the shared cache itself: there the cache is the owner's, and sharing it saves requests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from llmcomp.attention.cache import AttentionCache

PREFIX = "visitor-"


def visitor_tag(identity: str) -> str:
    """The cache prefix tag of one visitor: a hash, so the cache file holds no browser ids (which would let
    whoever reads the file claim that visitor's runs) and no addresses."""
    return hashlib.sha256(f"llmcomp-cache-view\0{identity}".encode()).hexdigest()[:32]


class CacheView:
    """The entries of ``cache`` stored under ``tag``; keys are the sources' own, the prefix is added here.

    Counts its own hits and misses (the shared cache's counters mix every visitor's). ``close`` commits
    but leaves the shared cache open: it belongs to whoever opened it (the app context)."""

    def __init__(self, cache: AttentionCache, tag: str):
        if not tag:
            raise ValueError("a cache view needs a tag")
        self.cache = cache
        self.tag = tag
        self.prefix = f"{PREFIX}{tag}/"
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"CacheView({self.cache.path}, tag={self.tag[:8]}...)"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _count(self, hits: int, lookups: int) -> None:
        self.hits += hits
        self.misses += lookups - hits

    @property
    def path(self) -> Path:
        return self.cache.path

    # --- tensors ----------------------------------------------------------------------------
    def get(self, key: str, n_words: int, n_heads: int | None = None) -> torch.Tensor | None:
        m = self.cache.get(self._key(key), n_words, n_heads)
        self._count(m is not None, 1)
        return m

    def put(self, key: str, m: torch.Tensor) -> None:
        self.cache.put(self._key(key), m)

    # --- JSON records ----------------------------------------------------------------------
    def get_json(self, key: str) -> Any | None:
        value = self.cache.get_json(self._key(key))
        self._count(value is not None, 1)
        return value

    def put_json(self, key: str, value: Any) -> None:
        self.cache.put_json(self._key(key), value)

    def get_many_json(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(dict.fromkeys(keys))
        found = self.cache.get_many_json(self._key(k) for k in keys)
        n = len(self.prefix)
        out = {k[n:]: v for k, v in found.items()}
        self._count(len(out), len(keys))
        return out

    def put_many_json(self, items: Iterable[tuple[str, Any]]) -> None:
        self.cache.put_many_json((self._key(k), v) for k, v in items)

    # --- housekeeping ----------------------------------------------------------------------
    def commit(self) -> None:
        self.cache.commit()

    def close(self) -> None:
        """Commit this view's writes; the shared cache stays open for the other visitors."""
        self.cache.commit()

    def __contains__(self, key: str) -> bool:
        return self._key(key) in self.cache

    def items(self) -> Iterator[tuple[str, bytes]]:
        """This view's entries, under the sources' keys (reads through every entry of the shared cache)."""
        n = len(self.prefix)
        for k, v in self.cache.items():
            if k.startswith(self.prefix):
                yield k[n:], v

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
