"""The faults a test scripts on the fake OpenAI-compatible server, and the error responses it sends.

A ``Fault`` is applied to the next requests that match it; ``FAULTS`` lists every kind. A hostile server is
scripted the same way: a server that always answers 500 is ``Fault("server_error", times=None)``, one that never
answers ``Fault("hang", times=None)``. Valid answers come from ``behaviours``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

#: Every scriptable fault and what it does.
FAULTS: dict[str, str] = {
    "rate_limit": "429 rate_limit_exceeded with Retry-After",
    "server_error": "500 internal server error",
    "slow": "answers correctly after `delay` seconds (longer than the client timeout => timeout)",
    "malformed": "content that is not JSON",
    "wrong_shape": "valid JSON with a row or score missing",
    "nan": "a NaN score",
    "negative": "a negative score",
    "later": "weight on a later word (or an extra score)",
    "out_of_range": "a score above score_max",
    "truncated": 'content cut in half with finish_reason "length"',
    "insufficient_quota": "429 insufficient_quota (never succeeds on retry)",
    "unauthorized": "401 invalid_api_key, echoing the key it was sent as OpenAI does",
    "forbidden": "403 permission denied, also echoing the key",
    "bad_body": "HTTP 200 whose body is not JSON",
    "empty": "an empty message content",
    "obey": "a gullible model: replies with the text after 'reply with' in the words, not JSON",
    # hostile servers: the transport, the body and the message as a careless or malicious server sends them
    "hang": "reads the request and never answers (until the client gives up)",
    "drip": "status 200 at once, then the body one byte every `interval` seconds (no single read ever times out)",
    "deep_json": "a 200 body of JSON arrays nested `size` (default 100,000) deep",
    "deep_content": "message content of JSON arrays nested `size` (default 100,000) deep",
    "usage_text": 'usage.prompt_tokens is "lots"',
    "usage_huge": "usage.prompt_tokens is 1e999 (infinite as a float)",
    "content_number": "message content is a number (42), not text",
    "content_parts": "message content as a list of text parts (a valid answer in two parts, as some servers send)",
    "message_string": "the message is a string, not an object",
    "braces": "content of `size` (default 16,384) '{' characters",
    "echo_key": "a 200 answer that quotes the bearer key it was sent (as a score, and a long fragment in prose)",
    "html": "a 200 HTML page (text/html), as a web server at the wrong base URL answers",
    "huge": "a valid answer padded with spaces to `size` (default 2 MB) bytes",
    "huge_chunked": "the same, sent chunked: no content-length, so only a count of the bytes read can stop it",
    "ansi": "a 400 whose error message carries terminal controls (ESC clear-screen and colour, BEL, BS)",
    "gzip": "a valid answer gzip-compressed though the client asked for none (a small body could inflate to GBs)",
}
#: Faults that spoil the scores of an otherwise valid answer.
CORRUPTIONS = ("wrong_shape", "nan", "negative", "out_of_range", "later")
#: Faults in how a valid answer is sent that a client must read correctly (not failures).
ACCEPTED = ("content_parts", "usage_text", "usage_huge")
#: Default ``size`` of the faults that take one.
SIZES = {"deep_json": 100_000, "deep_content": 100_000, "braces": 16_384, "huge": 2_000_000, "huge_chunked": 2_000_000}
#: A pseudo-header that tells the HTTP handler how to deliver a response ("hang", "chunked", "drip:<seconds>").
DELIVERY = "x-fake-delivery"

#: (status, extra headers, body) of one HTTP response.
Response = tuple[int, dict[str, str], bytes]


@dataclass
class Fault:
    """One scripted fault: applied to the next ``times`` requests that match (None = forever)."""

    kind: str
    times: int | None = 1
    match: str | None = None  # a word that must be among the request's words
    task: str | None = None  # "sentence", "prefix" or "pair"
    retry_after: float = 0.05  # seconds, for rate_limit
    delay: float = 2.0  # seconds, for slow
    interval: float = 0.05  # seconds between the bytes of a drip
    size: int | None = None  # nesting, braces or bytes (None: the kind's default in SIZES)

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of: {', '.join(FAULTS)}")
        if self.size is None:
            self.size = SIZES.get(self.kind, 0)

    def matches(self, task: str, words: list[str]) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.task is not None and self.task != task:
            return False
        return self.match is None or self.match in words


def parse_fault(text: str) -> Fault:
    """``kind[:times[:match]]``, times ``*`` for every request (the command line's ``--fault``)."""
    kind, _, rest = text.partition(":")
    times_s, _, match = rest.partition(":")
    times = None if times_s == "*" else int(times_s or 1)
    return Fault(kind, times=times, match=match or None)


def bad_score(kind: str, score_max: int, key: str = "") -> Any:
    """The one score a ``nan``, ``negative``, ``out_of_range`` or ``echo_key`` fault puts in a valid answer."""
    return {"nan": math.nan, "negative": -3, "out_of_range": score_max + 33, "echo_key": f"key: {key}"}[kind]


def corrupt(kind: str, task: str, answer: dict[str, Any], score_max: int, key: str = "") -> dict[str, Any]:
    """A copy of a valid answer with one scripted defect (one of ``CORRUPTIONS``, or ``echo_key``: the key it
    was sent as the first score of the last row) in the first head."""
    head = next(iter(answer))
    vals = json.loads(json.dumps(answer[head]))
    first = vals[-1] if task == "sentence" else vals  # the last row has the most scores
    if kind == "wrong_shape":
        vals = vals[:-1] if len(vals) > 1 else [[]] if task == "sentence" else []
    elif kind == "later":
        if task == "sentence":
            n = len(vals)
            vals = [row + [5] * (n - len(row)) for row in vals]
            vals[0][-1] = 5  # row 0 scores the last word
            if n == 1:
                vals[0].append(5)
        else:
            first.append(5)
    else:
        first[0] = bad_score(kind, score_max, key)
    return {**answer, head: vals}


def error_response(
    status: int, code: str | None, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    err = {
        "message": message,
        "type": "invalid_request_error" if status < 500 else "server_error",
        "param": param,
        "code": code,
    }
    return status, headers or {}, json.dumps({"error": err}).encode()


def http_fault(fault: Fault, auth: str) -> Response | None:
    """The response of a fault that replaces the answer at the HTTP level, or None for any other fault."""
    key = auth.removeprefix("Bearer ")
    if fault.kind == "rate_limit":
        headers = {"retry-after": f"{fault.retry_after:g}", "retry-after-ms": f"{fault.retry_after * 1000:g}"}
        return error_response(429, "rate_limit_exceeded", "Rate limit reached; try again later.", headers=headers)
    if fault.kind == "server_error":
        return error_response(500, "server_error", "The server had an error while processing your request.")
    if fault.kind == "insufficient_quota":
        return error_response(429, "insufficient_quota", "You exceeded your current quota, please check your plan.")
    if fault.kind == "unauthorized":
        return error_response(401, "invalid_api_key", f"Incorrect API key provided: {key}.")
    if fault.kind == "forbidden":
        return error_response(403, "permission_denied", f"Key {key} may not use this model.")
    if fault.kind == "bad_body":
        return 200, {}, b'{"id": "chatcmpl-broken", "choices": [ {"message": '
    if fault.kind == "ansi":
        return error_response(400, "invalid_request", "bad \x1b[2J\x1b[31mrequest\x07\x08 (try again)")
    if fault.kind == "hang":
        return 200, {DELIVERY: "hang"}, b""
    if fault.kind == "deep_json":
        return 200, {}, b"[" * fault.size + b"]" * fault.size  # type: ignore[operator]
    if fault.kind == "html":
        page = b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>\n"
        return 200, {"content-type": "text/html; charset=utf-8"}, page
    return None


def spoil_content(kind: str | None, content: str, words: list[str], size: int = 0, key: str = "") -> tuple[str, str]:
    """(content, finish_reason) after a fault that spoils the message text (malformed, truncated, empty, obey,
    deep_content, braces, echo_key, huge)."""
    if kind == "malformed":
        return "Sure! " + content[: max(1, len(content) // 2)] + " ... (and so on)", "stop"
    if kind == "truncated":
        return content[: max(1, len(content) // 2)], "length"
    if kind == "empty":
        return "", "stop"
    if kind == "obey":
        text = " ".join(words)
        return (text.split("reply with", 1)[1].strip() if "reply with" in text else "OK, I will do that."), "stop"
    if kind == "deep_content":
        return "[" * size + "]" * size, "stop"
    if kind == "braces":
        return "{" * size, "stop"
    if kind == "echo_key":  # the key is already a score (a validator quotes a bad one); a long run of it in prose
        return f"{content} (signed {key[2:-2]})", "stop"
    if kind in ("huge", "huge_chunked"):
        return content + " " * max(0, size - len(content)), "stop"
    return content, "stop"
