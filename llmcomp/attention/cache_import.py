"""Checking a shared cache file line by line before anything in it is stored (``AttentionCache.import_report``).

A file to import is someone else's: it is read only if it is a regular UTF-8 file of bounded size, each line
is parsed as JSON (never executed), every matrix must keep the attention contract and every ``row:``,
``pair:`` and ``format:`` record must have its kind's shape. Reasons quote the file through ``one_line``.
"""

from __future__ import annotations

import codecs
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmcomp.attention.base import validate_attention
from llmcomp.errors import LLMCompError, one_line

MAX_IMPORT_BYTES = 1_000_000_000
MAX_IMPORT_LINE = 16_000_000  # a matrix of 64 heads x 64 x 64 words is about 3 MB as JSON
JSON_KINDS = ("row", "pair", "format")  # the records the OpenAI source writes, keyed "<kind>:<sha256>"
MAX_HEADS, MAX_WORDS = 256, 4096
MAX_SCORE = 100  # OpenAIConfig allows score_max up to 100; a source re-checks against its own on read


class CacheError(LLMCompError, ValueError):
    """A cache file, or a file to import, that cannot be used, with a one-line reason."""


@dataclass
class ImportReport:
    """What an import did with each line of a file."""

    added: int = 0  # keys the cache did not hold
    replaced: int = 0  # keys it held with another value, replaced (overwrite)
    kept: int = 0  # keys it held with another value, left as they were (no overwrite)
    same: int = 0  # keys it already held with the same value
    rejected: int = 0  # invalid lines, stored nowhere
    reasons: list[str] = field(default_factory=list)  # the first few rejections: "line N: why"

    @property
    def imported(self) -> int:
        return self.added + self.replaced


def import_lines(path: Path) -> Iterator[str | None]:
    """The lines of a file to import (None for a line over ``MAX_IMPORT_LINE``). CacheError, before the
    first line, for anything but a regular UTF-8 file of at most ``MAX_IMPORT_BYTES``: a FIFO or
    ``/dev/zero`` would hang or never end, a binary file would fail half-way through the import."""
    shown = one_line(str(path))
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise CacheError(f"{shown} is not a regular file; give a JSONL file written by `llmcomp cache export`")
        if st.st_size > MAX_IMPORT_BYTES:
            raise CacheError(f"{shown} is {st.st_size:,} bytes, over the {MAX_IMPORT_BYTES:,}-byte import limit")
        f = open(path, "rb")  # noqa: SIM115 - read twice below, closed in the finally
    except OSError as e:
        raise CacheError(f"cannot read {shown}: {one_line(e)}") from None
    try:
        decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
        try:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                decoder.decode(chunk)
                offset += len(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as e:
            raise CacheError(
                f"{shown} is not UTF-8 text (near byte {offset + max(e.start, 0):,}); give a JSONL file written "
                "by `llmcomp cache export`"
            ) from None
        f.seek(0)
        for raw in iter(lambda: f.readline(MAX_IMPORT_LINE + 1), b""):
            if len(raw) > MAX_IMPORT_LINE:
                while raw and not raw.endswith(b"\n"):  # skip the rest of this line
                    raw = f.readline(MAX_IMPORT_LINE + 1)
                yield None
            else:
                yield raw.decode("utf-8")
    finally:
        f.close()


def check_import_line(line: str | None) -> tuple[str, torch.Tensor | None, Any]:
    """(key, matrix, None) or (key, None, record) for one exported line; ValueError naming what is wrong."""
    if line is None:
        raise ValueError(f"line over the {MAX_IMPORT_LINE:,}-character limit")
    rec = json.loads(line)
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    key = rec.get("key")
    if not isinstance(key, str) or not 0 < len(key) <= 512:
        raise ValueError("key must be a string of 1 to 512 characters")
    own = key.rsplit("/", 1)[-1]  # a key may sit under a prefix ("visitor-<tag>/row:...", the web app's views)
    kind = own.split(":", 1)[0] if ":" in own else None
    if ("shape" in rec) == ("json" in rec):
        raise ValueError('an entry has either "shape" and "data" (a matrix) or "json" (a record)')
    if "json" in rec:
        value = rec["json"]
        if kind in ("row", "pair"):
            _check_scores(value, kind)
        elif kind == "format":
            _check_format(value)
        json.dumps(value, allow_nan=False)  # NaN and Infinity are not JSON: ValueError
        return key, None, value
    if kind in JSON_KINDS:
        raise ValueError(f"a matrix under a {kind}: key")
    shape, data = rec["shape"], rec.get("data")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(d, 0, MAX_WORDS) for d in shape)):
        raise ValueError(f"shape must be [heads, words, words], whole numbers up to {MAX_WORDS}")
    if shape[0] > MAX_HEADS or shape[1] < 1:
        raise ValueError(f"shape {shape} is out of range (up to {MAX_HEADS} heads, at least one word)")
    size = shape[0] * shape[1] * shape[2]
    if not isinstance(data, list) or len(data) != size:
        raise ValueError(f"data must be a list of {size} numbers")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in data):
        raise ValueError("data must hold numbers only")
    return key, validate_attention(torch.tensor(data, dtype=torch.float32).reshape(shape), shape[1]), None


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_scores(value: Any, kind: str) -> None:
    """A prefix row or a pair: ``{head: [score, ...]}``, whole scores 0..MAX_SCORE, one length for all heads."""
    if not isinstance(value, dict) or not 0 < len(value) <= MAX_HEADS:
        raise ValueError(f"a {kind}: record is an object of heads to score lists")
    lengths = set()
    for head, scores in value.items():
        if not head or len(head) > 100 or not isinstance(scores, list):
            raise ValueError(f"a {kind}: record maps head names to lists of scores")
        if not all(_is_int(v, 0, MAX_SCORE) for v in scores):
            raise ValueError(f"a {kind}: record's scores are whole numbers 0..{MAX_SCORE}")
        lengths.add(len(scores))
    (length,) = lengths if len(lengths) == 1 else (0,)
    if not (length == 1 if kind == "pair" else 1 <= length <= MAX_WORDS):
        raise ValueError(f"a {kind}: record has {'one score' if kind == 'pair' else 'one row'} per head, one length")


def _check_format(value: Any) -> None:
    from llmcomp.attention.openai_client import FORMATS

    ok = isinstance(value, dict) and set(value) == {"host", "model", "format"}
    if not ok or not all(isinstance(value[k], str) for k in ("host", "model")) or value["format"] not in FORMATS:
        raise ValueError(f"a format: record is {{host, model, format}}, format one of {', '.join(FORMATS)}")
