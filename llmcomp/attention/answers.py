"""Reading the OpenAI source's answers, and distrusting them: tolerant JSON extraction, then strict checks.

Every answer is parsed with tolerant JSON extraction (prose and code fences around it are fine) and then
validated strictly: count, lengths, integers, finite, non-negative, in range, nothing on a later word. A
failed check raises ``AnswerError``, whose message is sent back to the model as a corrective turn. Scores
become attention weights here, in code (``scores_to_attention``), never in the model.

Pure functions, so that they can be tested without a server.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import torch

from llmcomp.attention.base import normalize_scores


class AnswerError(ValueError):
    """An answer that cannot be used: wrong shape, wrong values, or no JSON at all."""


# --- extraction --------------------------------------------------------------------------
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def _balanced(text: str, start: int) -> str | None:
    """The JSON value that opens at text[start] ('{' or '['), up to its matching bracket."""
    closer = {"{": "}", "[": "]"}
    stack: list[str] = []
    in_string = escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in closer:
            stack.append(closer[c])
        elif c in "}]":
            if not stack or stack.pop() != c:
                return None
            if not stack:
                return text[start : i + 1]
    return None


def extract_json(text: str | None) -> Any:
    """The first JSON object (or array) in a reply, tolerating prose and code fences around it."""
    if text is None or not text.strip():
        raise AnswerError("the answer is empty")
    candidates = [text.strip()] + [m.group(1).strip() for m in _FENCE.finditer(text)]
    for c in candidates:
        try:
            return json.loads(c)
        except ValueError:
            pass
    for opener in "{[":
        start = text.find(opener)
        while start != -1:
            chunk = _balanced(text, start)
            if chunk is not None:
                try:
                    return json.loads(chunk)
                except ValueError:
                    pass
            start = text.find(opener, start + 1)
    raise AnswerError("the answer contains no valid JSON")


def _score(v: Any, score_max: int, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise AnswerError(f"{where} is {json.dumps(v)[:40]}, not an integer 0..{score_max}")
    if not math.isfinite(v):
        raise AnswerError(f"{where} is not finite")
    if v != int(v):
        raise AnswerError(f"{where} is {v}, not an integer 0..{score_max}")
    if v < 0:
        raise AnswerError(f"{where} is negative ({int(v)}); scores are 0..{score_max}")
    if v > score_max:
        raise AnswerError(f"{where} is {int(v)}, above the maximum {score_max}")
    return int(v)


def _by_head(obj: Any, heads: list[str]) -> list[Any]:
    """The answer's value for each head. A single head may also come as a bare list or a lone key."""
    if isinstance(obj, dict) and all(h in obj for h in heads):
        return [obj[h] for h in heads]
    if len(heads) == 1:
        if isinstance(obj, list):
            return [obj]
        if isinstance(obj, dict) and len(obj) == 1:
            return list(obj.values())
    if not isinstance(obj, dict):
        raise AnswerError(f"the answer must be a JSON object with keys {heads}")
    missing = [h for h in heads if h not in obj]
    raise AnswerError(f"the answer lacks the relation(s) {missing}")


def parse_sentence_answer(obj: Any, n_words: int, heads: list[str], score_max: int) -> torch.Tensor:
    """Lower-triangular integer scores (heads, T, T) from a ``sentence`` answer.

    Row i must hold i+1 scores. A full row of T scores is accepted only if every score after word i
    is 0: any weight on a later word is rejected, never silently dropped.
    """
    out = [[[0] * n_words for _ in range(n_words)] for _ in heads]
    for h, (name, rows) in enumerate(zip(heads, _by_head(obj, heads), strict=True)):
        if not isinstance(rows, list) or len(rows) != n_words:
            got = len(rows) if isinstance(rows, list) else type(rows).__name__
            raise AnswerError(f'"{name}" must have {n_words} rows (one per word); got {got}')
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) not in (i + 1, n_words):
                got = len(row) if isinstance(row, list) else type(row).__name__
                raise AnswerError(f'"{name}" row {i} must have {i + 1} scores (words 0..{i}); got {got}')
            vals = [_score(v, score_max, f'"{name}" row {i} score {j}') for j, v in enumerate(row)]
            if any(vals[i + 1 :]):
                raise AnswerError(f'"{name}" row {i} gives weight to a later word; score only words 0..{i}')
            out[h][i][: i + 1] = vals[: i + 1]
    return torch.tensor(out, dtype=torch.float32).reshape(len(heads), n_words, n_words)


def parse_vector_answer(obj: Any, length: int, heads: list[str], score_max: int, what: str) -> list[list[int]]:
    """One list of ``length`` integer scores per head (a ``prefix`` row or a ``pair`` batch)."""
    out = []
    for name, vals in zip(heads, _by_head(obj, heads), strict=True):
        if not isinstance(vals, list) or len(vals) != length:
            got = len(vals) if isinstance(vals, list) else type(vals).__name__
            raise AnswerError(f'"{name}" must have {length} scores ({what}); got {got}')
        out.append([_score(v, score_max, f'"{name}" score {j}') for j, v in enumerate(vals)])
    return out


def scores_to_attention(scores: torch.Tensor, floor: float) -> torch.Tensor:
    """Integer scores (heads, T, T) -> attention rows: causal, ``floor`` added, each row summing to 1.

    The floor (in score units) keeps every allowed word reachable: a row the model scored all 0
    becomes uniform over words 0..i instead of empty.
    """
    return normalize_scores(scores, floor=floor)
