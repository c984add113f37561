"""Reading the OpenAI source's answers, and distrusting them: tolerant JSON extraction, then strict checks.

Every answer is parsed with tolerant JSON extraction (prose and code fences around it are fine) and then
validated strictly: count, lengths, integers, finite, non-negative, in range, nothing on a later word. A
failed check raises ``AnswerError``, whose message is sent back to the model as a corrective turn. Scores
become attention weights here, in code (``scores_to_attention``), never in the model.

The HTTP body is distrusted first (``read_completion``): a 200 that is an HTML page, nested JSON, a message that
is a string, content that is a number or usage that is "lots" becomes a ``BodyError`` with a reason, and content
sent as a list of text parts is joined. Pure functions, so that they can be tested without a server.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from llmcomp.attention.base import normalize_scores


class AnswerError(ValueError):
    """An answer that cannot be used: wrong shape, wrong values, or no JSON at all."""


class BodyError(ValueError):
    """A 200 response that is no chat completion (the reason says what it is instead)."""


@dataclass
class Completion:
    """What a chat completion body says; a count is None when the server gave no usable number."""

    content: str
    finish: str | None
    prompt_tokens: int | None
    completion_tokens: int | None


def _json_type(v: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(v), "a number")


def _text(content: Any) -> str:
    """Message content as text: a string, or a list of parts whose text parts are joined (as some servers send)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = [p if isinstance(p, str) else p.get("text") for p in content if isinstance(p, str | dict)]
        return "".join(p for p in parts if isinstance(p, str))
    raise BodyError(f"the server's message content is {_json_type(content)}, not text")


def _count(usage: Any, name: str) -> int | None:
    v = usage.get(name) if isinstance(usage, dict) else None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v != int(v):
        return None
    return int(v) if 0 <= v <= 10**9 else None


def read_completion(body: bytes) -> Completion:
    """The content, finish reason and token counts of a chat completion body, or ``BodyError`` saying why not."""
    if body[:256].lstrip().startswith(b"<"):
        raise BodyError("the server answered an HTML page, not JSON: is the base URL right (…/v1)?")
    try:
        data = json.loads(body)
    except RecursionError:
        raise BodyError("the server's answer is JSON nested too deeply to read") from None
    except ValueError as e:
        raise BodyError(f"unreadable response body ({type(e).__name__}: not JSON)") from None
    if not isinstance(data, dict):
        raise BodyError(f"the server's answer is {_json_type(data)}, not a chat completion object")
    choices = data.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else {}
    if not isinstance(first, dict):
        raise BodyError(f"the server's choices hold {_json_type(first)}, not an object")
    message = first.get("message") or {}
    if not isinstance(message, dict):
        raise BodyError(f"the server's message is {_json_type(message)}, not an object")
    finish = first.get("finish_reason")
    usage = data.get("usage")
    return Completion(
        _text(message.get("content")),
        finish if isinstance(finish, str) else None,
        _count(usage, "prompt_tokens"),
        _count(usage, "completion_tokens"),
    )


# --- extraction --------------------------------------------------------------------------
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_TOKEN = re.compile(r'[{}\[\]"\\]')
_CLOSER = {"{": "}", "[": "]"}
#: Longest answer read (characters): a real one is a few kilobytes (3 heads x 100 words is about 45,000).
MAX_ANSWER_CHARS = 262_144
#: Deepest JSON value tried (an answer needs 3 levels); deeper spans are skipped without parsing.
MAX_DEPTH = 32
_DECODER = json.JSONDecoder()


def _scan(text: str, start: int, ends: dict[int, int], depths: dict[int, int]) -> int:
    """One pass from the opener at ``start`` until it closes, a closer mismatches, or the text ends.

    Every opener this pass meets outside a string is decided: ``ends[i]`` is where its bracket closes (and
    ``depths[i]`` how deep its value nests), or -1 where it never can (a mismatch or the end of the text comes
    first). Openers inside this pass's strings stay undecided: a pass that starts at one reads the quotes
    differently. Returns the characters read (the caller's budget). Plain ints only: no garbage to collect."""
    stack: list[int] = []  # positions of the open brackets
    inner: list[int] = []  # depth of the deepest value inside each
    in_string, escaped_at, end = False, -1, len(text) - 1
    for m in _TOKEN.finditer(text, start):
        i, c = m.start(), m.group()
        if in_string:
            if i == escaped_at:
                continue
            if c == "\\":
                escaped_at = i + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in _CLOSER:
            stack.append(i)
            inner.append(0)
        elif c in "}]":
            top, depth = stack.pop(), inner.pop() + 1
            if _CLOSER[text[top]] != c:
                ends[top], end = -1, i
                break
            ends[top], depths[top] = i, depth
            if not stack:
                return i + 1 - start
            inner[-1] = max(inner[-1], depth)
    for pos in stack:
        ends[pos] = -1
    return end + 1 - start


def _loads(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


def extract_json(text: str | None) -> Any:
    """The first JSON object (or array) in a reply, tolerating prose and code fences around it.

    In time linear in the reply: one bracket scan decides every opener it meets (``_scan``), values nested
    deeper than ``MAX_DEPTH`` are never parsed, and the work is capped at a few passes over the text."""
    if text is None or not text.strip():
        raise AnswerError("the answer is empty")
    if len(text) > MAX_ANSWER_CHARS:
        raise AnswerError(f"the answer is too long ({len(text):,} characters); reply with compact JSON only")
    for candidate in [text.strip()] + [m.group(1).strip() for m in _FENCE.finditer(text)]:
        ok, obj = _loads(candidate)
        if ok:
            return obj
    ends: dict[int, int] = {}
    depths: dict[int, int] = {}
    budget, too_deep = 8 * len(text) + 4096, False
    for opener in "{[":
        start = text.find(opener)
        while start != -1 and budget > 0:
            if start not in ends:
                budget -= _scan(text, start, ends, depths)
            if ends[start] != -1 and depths[start] > MAX_DEPTH:
                too_deep = True  # not parsed, nor anything inside it
                start = text.find(opener, ends[start] + 1)
                continue
            if ends[start] != -1:
                try:
                    return _DECODER.raw_decode(text, start)[0]
                except json.JSONDecodeError as e:
                    budget -= e.pos - start + 1
                except (ValueError, RecursionError):
                    budget -= ends[start] - start + 1
            start = text.find(opener, start + 1)
    if too_deep:
        raise AnswerError(f"the answer nests JSON more than {MAX_DEPTH} levels deep; reply with the requested shape")
    raise AnswerError("the answer contains no valid JSON")


def _score(v: Any, score_max: int, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        quoted = json.dumps(v)[:40] if not isinstance(v, list | dict) else _json_type(v)  # never re-walk a deep value
        raise AnswerError(f"{where} is {quoted}, not an integer 0..{score_max}")
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


def parse_sparse_answer(obj: Any, n_words: int, heads: list[str], score_max: int, top_k: int) -> torch.Tensor:
    """Integer scores (heads, T, T) from a sparse ``sentence`` answer: per word up to ``top_k`` [j, score] pairs,
    j an earlier word or the word itself, each j once; every other cell stays 0 (the floor alone)."""
    out = torch.zeros(len(heads), n_words, n_words)
    for h, (name, rows) in enumerate(zip(heads, _by_head(obj, heads), strict=True)):
        if not isinstance(rows, list) or len(rows) != n_words:
            got = len(rows) if isinstance(rows, list) else type(rows).__name__
            raise AnswerError(f'"{name}" must have {n_words} lists (one per word); got {got}')
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) > top_k:
                got = f"{len(row)} pairs" if isinstance(row, list) else _json_type(row)
                raise AnswerError(f'"{name}" word {i} must list at most {top_k} [j, score] pairs; got {got}')
            seen: set[int] = set()
            for e in row:
                if not isinstance(e, list) or len(e) != 2:
                    raise AnswerError(f'"{name}" word {i} holds {_json_type(e)}, not a [j, score] pair')
                j = _score(e[0], n_words - 1, f'"{name}" word {i} index')
                if j > i:
                    raise AnswerError(f'"{name}" word {i} names word {j}, a later word; name only words 0..{i}')
                if j in seen:
                    raise AnswerError(f'"{name}" word {i} names word {j} more than once')
                seen.add(j)
                out[h, i, j] = _score(e[1], score_max, f'"{name}" word {i} score of word {j}')
    return out


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
