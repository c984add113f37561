"""The requests of a Batch API run, in each scoring mode, and how an answer read from a batch lands in the cache.

A unit is one request: its ``custom_id`` is the cache key its answer is stored under, so an answer that comes back
is matched to what it scores without any other state. ``sentence`` mode asks one request per sentence (the key of
its matrix). ``prefix`` mode asks one request per distinct row, and every row is known up front: row i shows words
0..i only and depends on no other row's answer, so all of a corpus's prefix requests go in the batch at once (shared
prefixes once). ``pair`` mode asks for chunks of (query, key) pairs; a chunk's id hashes its pairs. Answers pass the
same checks as the live route's (``answers``); a line that fails them is reported with its reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmcomp.attention import answers, prompts
from llmcomp.attention.base import ScoreStats, validate_attention
from llmcomp.attention.openai_client import json_key
from llmcomp.attention.openai_config import BatchConfig
from llmcomp.attention.openai_modes import Strategy, chunks, pair_key, row_key

#: the endpoint every request of a batch is sent to
ENDPOINT = "/v1/chat/completions"
#: a line's error code for a request its batch never ran, and how a reason says it
NOT_RUN = {"batch_expired": "expired", "batch_cancelled": "was cancelled"}


@dataclass(frozen=True)
class Unit:
    """One request of a batch: the cache key its answer is stored under, and what it asks about."""

    custom_id: str
    what: dict[str, Any]  # {"task": "sentence" | "prefix", "words": [...]} or {"task": "pair", "pairs": [[q, k]...]}


def plan_units(strategy: Strategy, sentence_keys: dict[str, list[str]]) -> list[Unit]:
    """The requests that score ``sentence_keys`` (cache key -> words, none cached), with what the cache holds left
    out: for ``prefix``, rows already cached; for ``pair``, pairs already cached."""
    task, cache = strategy.task, strategy.cache
    if task == "sentence":
        return [Unit(key, {"task": task, "words": words}) for key, words in sentence_keys.items()]
    if task == "prefix":
        rows = {
            row_key(strategy.identity, w[: i + 1]): w[: i + 1] for w in sentence_keys.values() for i in range(len(w))
        }
        cached = cache.get_many_json(rows) if cache is not None else {}
        return [Unit(key, {"task": task, "words": p}) for key, p in rows.items() if key not in cached]
    needed = strategy.pairs_needed(list(sentence_keys.values()), {})  # type: ignore[attr-defined]
    units = []
    for chunk in chunks([list(p) for p in needed], strategy.config.pair_batch):
        units.append(
            Unit(json_key("pairs", {"source": strategy.identity, "pairs": chunk}), {"task": task, "pairs": chunk})
        )
    return units


def messages_of(strategy: Strategy, unit: Unit) -> list[dict[str, str]]:
    """The chat messages of a unit's request: the live route's own prompts."""
    if unit.what["task"] == "pair":
        words, idx = prompts.pair_words([(q, k) for q, k in unit.what["pairs"]])
        return strategy.messages(words, idx)
    return strategy.messages(unit.what["words"])


def request_line(strategy: Strategy, unit: Unit, fmt: str) -> bytes:
    """The unit as one line of a batch input file (JSONL), asking in response format ``fmt``."""
    c = strategy.config
    body: dict[str, Any] = {"model": c.model, "messages": messages_of(strategy, unit)}
    rf = prompts.response_format(fmt, strategy.task, list(c.heads), c.answer)  # type: ignore[arg-type]
    if rf is not None:
        body["response_format"] = rf
    if c.temperature is not None:
        body["temperature"] = c.temperature
    line = {"custom_id": unit.custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def within_budget(strategy: Strategy, lines: list[tuple[Unit, bytes]], usage: ScoreStats) -> list[tuple[Unit, bytes]]:
    """The request lines the source's request and token budgets allow, counted into ``usage`` (each line is a
    request; its tokens are approximated from the line); the rest are left to the live route, which reports
    them as over budget."""
    c, out = strategy.config, []
    top_k = c.top_k if c.answer == "sparse" else None
    planned = usage.prompt_tokens + usage.completion_tokens
    for u, line in lines:
        n = len(u.what.get("words") or u.what.get("pairs") or [])
        tokens = prompts.approx_answer_tokens(strategy.task, n, len(strategy.heads), top_k)
        tokens += prompts.approx_tokens(line.decode())
        if c.max_requests is not None and usage.requests >= c.max_requests:
            break
        if c.max_tokens is not None and planned + tokens > c.max_tokens:
            break
        usage.requests += 1
        planned += tokens
        out.append((u, line))
    return out


def split_files(
    lines: list[tuple[Unit, bytes]], limits: BatchConfig
) -> tuple[list[list[tuple[Unit, bytes]]], list[Unit]]:
    """Request lines as input files within the Batch API's limits (requests and bytes per file), and the units
    too large for any file."""
    files: list[list[tuple[Unit, bytes]]] = [[]]
    too_big, size = [], 0
    for u, line in lines:
        if len(line) > limits.max_bytes:
            too_big.append(u)
            continue
        if len(files[-1]) >= limits.max_requests or size + len(line) > limits.max_bytes:
            files.append([])
            size = 0
        files[-1].append((u, line))
        size += len(line)
    return [f for f in files if f], too_big


def accept(strategy: Strategy, unit: Unit, content: str, finish: str | None) -> None:
    """Check one answer as the live route does and write what it scores to the cache (committed by the caller);
    ``AnswerError`` with the reason when it is not usable."""
    if finish == "length":
        raise answers.AnswerError("the answer was cut off (finish_reason length)")
    obj = answers.extract_json(content)
    c, heads, cache = strategy.config, strategy.heads, strategy.cache
    what = unit.what
    if what["task"] == "sentence":
        n = len(what["words"])
        if c.answer == "sparse":
            scores = answers.parse_sparse_answer(obj, n, heads, c.score_max, c.top_k)
        else:
            scores = answers.parse_sentence_answer(obj, n, heads, c.score_max)
        try:
            m = validate_attention(answers.scores_to_attention(scores, c.floor), n, len(heads))
        except ValueError as e:
            raise answers.AnswerError(str(e)) from None
        cache.put(unit.custom_id, m)  # type: ignore[union-attr]
    elif what["task"] == "prefix":
        n = len(what["words"])
        row = answers.parse_vector_answer(obj, n, heads, c.score_max, f"one per word 0..{n - 1}")
        cache.put_json(unit.custom_id, dict(zip(heads, row, strict=True)))  # type: ignore[union-attr]
    else:
        pairs = what["pairs"]
        got = answers.parse_vector_answer(obj, len(pairs), heads, c.score_max, "one per pair")
        records = [
            (pair_key(strategy.identity, q, k), {h: [got[i][n]] for i, h in enumerate(heads)})
            for n, (q, k) in enumerate(pairs)
        ]
        cache.put_many_json(records)  # type: ignore[union-attr]


def needs(strategy: Strategy, key: str, words: list[str]) -> set[str]:
    """The ids of the units a sentence's matrix is built from (``pair`` mode: its pairs, as ``q\\x00k``)."""
    if strategy.task == "sentence":
        return {key}
    if strategy.task == "prefix":
        return {row_key(strategy.identity, words[: i + 1]) for i in range(len(words))}
    return {f"{q}\x00{k}" for i, q in enumerate(words) for k in words[: i + 1]}


def provides(unit: Unit) -> set[str]:
    """What a unit answers, in the terms of ``needs``."""
    if unit.what["task"] == "pair":
        return {f"{q}\x00{k}" for q, k in unit.what["pairs"]}
    return {unit.custom_id}


def read_jsonl(data: bytes) -> list[dict[str, Any]]:
    """The lines of a batch output or error file that are objects with a string ``custom_id``; a damaged line
    is a request with no answer, never an error of the whole file."""
    out = []
    for raw in data.splitlines():
        try:
            line = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
            out.append(line)
    return out


def read_line(strategy: Strategy, unit: Unit, line: dict[str, Any]) -> tuple[answers.Completion | None, str, bool]:
    """(the completion, "", True) when the line's answer was valid and is cached; else (None, why not, whether
    the batch ran the request at all: False for an expired or cancelled batch's leftovers)."""
    response, error = line.get("response"), line.get("error")
    if isinstance(error, dict) and error.get("code") in NOT_RUN:
        return None, NOT_RUN[error["code"]], False
    if not isinstance(response, dict) or response.get("status_code") != 200:
        response = response if isinstance(response, dict) else {}
        body = response.get("body")
        said = body.get("error") if isinstance(body, dict) else None
        message = said.get("message") if isinstance(said, dict) else None
        message = message or (error.get("message") if isinstance(error, dict) else None) or "no answer"
        return None, f"request failed ({response.get('status_code') or 'no status'}: {str(message)[:200]})", True
    try:
        answer = answers.read_completion(json.dumps(response.get("body")).encode())
        accept(strategy, unit, answer.content, answer.finish)
    except (answers.AnswerError, answers.BodyError) as e:
        return None, f"invalid answer: {e}", True
    return answer, "", True
