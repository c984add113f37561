"""Attention from a file: matrices computed anywhere (another library, another model, a GPU box),
read from JSON lines and trained on like any other source. This module is the one home of the format:
``llmcomp score --out`` writes it with ``write_lines`` and the ``file`` source reads it with ``read_lines``.

One sentence per line, in either of two shapes (docs/sources.md, "Attention from a file"):

- ``{"words": [...], "attention": [[[...]]]}``: what ``score --out`` writes, one full (T, T) matrix per
  head; ``"attention": null`` marks a sentence that failed when scored (it counts as missing).
- ``{"words": [...], "heads": [[[...]]]}``: the plain format, one lower-triangular matrix per head whose
  rows may be given whole (T numbers) or as the lower triangle only (row i: i+1 numbers).

An optional first line without ``words`` is the header: ``{"rows_see_later": true}`` declares that a row
may depend on later words (a whole-sentence model); a line may also say so itself, and every declaration
must agree (default false). Such a file's source has ``prefix_causal`` False, so training validates leak-free
from prefixes and generation scores prefixes (``attention.prefix_rows``): a file cannot score a prefix it
does not hold, so each prefix must be in the file as its own line, or the sentence that needs it fails
with the reason (training leaves it out, or a ``--fallback`` stands in). Leaky rows are never used instead.

Reading is bounded (``MAX_FILE_BYTES``), JSON only, and every matrix passes ``validate_attention``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llmcomp.attention.base import AttentionError, AttentionSource, validate_attention

#: the largest file the source reads (a 256 MiB file holds about 60,000 sentences of 20 words, 4 heads)
MAX_FILE_BYTES = 256 * 2**20
_LINE_KEYS = frozenset({"words", "attention", "heads", "rows_see_later"})
_HEADER_KEYS = frozenset({"rows_see_later", "source"})


def write_lines(
    path: str | Path,
    sentences: Sequence[Sequence[str]],
    matrices: Sequence[torch.Tensor | None],
    rows_see_later: bool = False,
    source: dict[str, Any] | None = None,
) -> None:
    """A header line, then ``{"words", "attention"}`` per sentence (null where it was not scored)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"rows_see_later": bool(rows_see_later), "source": source or {}}) + "\n")
        for words, m in zip(sentences, matrices, strict=True):
            f.write(json.dumps({"words": list(words), "attention": None if m is None else m.tolist()}) + "\n")


def _matrix(rows_by_head: Any, n_words: int, where: str) -> torch.Tensor:
    """(H, T, T) from a list of per-head row lists, each row whole or its lower triangle only."""
    if not isinstance(rows_by_head, list) or not rows_by_head:
        raise AttentionError(f"{where}: the matrices must be a non-empty list, one per head")
    out = torch.zeros(len(rows_by_head), n_words, n_words)
    for h, rows in enumerate(rows_by_head):
        if not isinstance(rows, list) or len(rows) != n_words:
            raise AttentionError(f"{where}: head {h} must have {n_words} rows, one per word")
        for i, row in enumerate(rows):
            ok = isinstance(row, list) and len(row) in (i + 1, n_words)
            if not ok or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in row):
                raise AttentionError(f"{where}: head {h} row {i} must be {i + 1} (lower triangle) or {n_words} numbers")
            out[h, i, : len(row)] = torch.tensor(row, dtype=torch.float64).to(torch.float32)
    return out


def _read_text(path: Path, max_bytes: int) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise AttentionError(f"cannot read attention file {path}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise AttentionError(f"attention file {path} is larger than {max_bytes:,} bytes; split it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AttentionError(f"attention file {path} is not UTF-8 (byte {e.start})") from None


def read_lines(
    path: str | Path, max_bytes: int | None = None
) -> tuple[dict[tuple[str, ...], torch.Tensor | None], bool, str]:
    """The file's matrices by sentence (None: failed when scored), whether its rows see later words, and
    the SHA-256 of its bytes. AttentionError, one line naming the file and line, for anything malformed."""
    path = Path(path)
    text = _read_text(path, MAX_FILE_BYTES if max_bytes is None else max_bytes)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    found: dict[tuple[str, ...], torch.Tensor | None] = {}
    first_line: dict[tuple[str, ...], int] = {}
    declared: tuple[bool, int] | None = None
    n_heads: tuple[int, int] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise AttentionError(f"{where}: not JSON ({getattr(e, 'msg', 'too deeply nested')})") from None
        if not isinstance(obj, dict):
            raise AttentionError(f"{where}: each line must be a JSON object")
        header = "words" not in obj
        allowed = _HEADER_KEYS if header else _LINE_KEYS
        if header and (found or declared is not None):
            raise AttentionError(f"{where}: a line without 'words' (a header) may only come first")
        if unknown := sorted(set(obj) - allowed):
            raise AttentionError(
                f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            )
        if "rows_see_later" in obj:
            flag = obj["rows_see_later"]
            if not isinstance(flag, bool):
                raise AttentionError(f"{where}: rows_see_later must be true or false")
            if declared is not None and declared[0] != flag:
                raise AttentionError(f"{where}: rows_see_later={str(flag).lower()} disagrees with line {declared[1]}")
            declared = declared or (flag, number)
        if header:
            continue
        words = obj["words"]
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
            raise AttentionError(f"{where}: 'words' must be a non-empty list of non-empty strings")
        if ("attention" in obj) == ("heads" in obj):
            raise AttentionError(f"{where}: give exactly one of 'attention' (score --out) or 'heads' (plain format)")
        raw = obj.get("attention", obj.get("heads"))
        m: torch.Tensor | None = None
        if raw is not None or "heads" in obj:
            m = _matrix(raw, len(words), where)
            if n_heads is not None and m.shape[0] != n_heads[0]:
                raise AttentionError(f"{where}: {m.shape[0]} heads, but line {n_heads[1]} has {n_heads[0]}")
            n_heads = n_heads or (m.shape[0], number)
            try:
                m = validate_attention(m, len(words))
            except AttentionError as e:
                raise AttentionError(f"{where}: {e}") from None
        key = tuple(words)
        if key in found and not _same(found[key], m):
            raise AttentionError(f"{where}: the same sentence with another matrix on line {first_line[key]}")
        first_line.setdefault(key, number)
        found.setdefault(key, m)
    if n_heads is None:
        raise AttentionError(f"attention file {path} holds no matrix")
    return found, bool(declared and declared[0]), digest


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


class FileSource(AttentionSource):
    """Matrices read from a JSON-lines file (module docstring); a sentence not in it fails with a reason."""

    kind = "file"

    def __init__(self, path: str, n_heads: int | None = None, **kw: Any):
        self.path = str(path)
        self._matrices, rows_see_later, self.sha256 = read_lines(self.path)
        heads = next(m.shape[0] for m in self._matrices.values() if m is not None)
        if n_heads is not None and int(n_heads) != heads:
            raise AttentionError(f"attention file {self.path} has {heads} heads, not {n_heads}")
        super().__init__(n_heads=heads, **kw)
        #: False when the file declares that rows see later words: validation and generation use prefixes
        self.prefix_causal = not rows_see_later

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "path": self.path}

    def fingerprint(self) -> dict[str, Any]:
        """The file's content, not its name: moving it keeps the key, editing it changes the key."""
        return {
            "kind": self.kind,
            "n_heads": self.n_heads,
            "sha256": self.sha256,
            "rows_see_later": not self.prefix_causal,
        }

    def _score_batch(self, sentences, stats, progress):
        out: list[torch.Tensor | str] = []
        for words in sentences:
            key = tuple(words)
            if key not in self._matrices:
                out.append(f"sentence {' '.join(words)!r} is not in attention file {self.path}")
            elif (m := self._matrices[key]) is None:
                out.append(f"sentence {' '.join(words)!r} has no matrix in attention file {self.path} (null)")
            else:
                out.append(m.clone())
        return out

    def describe(self) -> str:
        leak = ", rows see later words" if not self.prefix_causal else ""
        return f"file {Path(self.path).name} ({self.n_heads} head{'s' if self.n_heads != 1 else ''}{leak})"
