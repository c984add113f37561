"""What a failed chat request means: retry it, fail its unit, or stop the run; said in one line without the key.

``classify`` reads the SDK's typed errors (and Retry-After headers); ``redact`` removes the key, any 8 or more
of its characters in a row and anything key-like from whatever a server wrote, since servers (OpenAI included)
echo the key they got, in error messages and in answers that a validation message then quotes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from llmcomp.attention.base import ScoreStats
from llmcomp.attention.openai_config import OpenAIConfig, safe_url
from llmcomp.errors import LLMCompError


class ScoringAborted(LLMCompError, RuntimeError):
    """The server refused in a way no retry can fix; what was scored before is in the cache."""

    def __init__(self, message: str, stats: ScoreStats | None = None):
        super().__init__(message)
        self.stats = stats or ScoreStats()


class UnitFailed(Exception):
    """One request unit (sentence, row or pair batch) failed for good; its sentences fail."""


class BadFormat(Exception):
    """The server rejected the request as such (400/422); perhaps its response_format."""

    fmt: str = ""  # the format that was asked for


@dataclass
class Verdict:
    """A failed attempt: ``fatal`` stops the run; ``retry_after`` is what the server asked to wait, if it did;
    ``breaker``: it counts towards the run of failures that stops a run (a rate limit does not: the server is
    alive and says when to come back)."""

    reason: str
    fatal: bool = False
    retry_after: float | None = None
    breaker: bool = True


class Transient(Exception):
    """An attempt that another attempt may fix (timeout, connection, 5xx, 429, a body that is not JSON)."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.reason)
        self.verdict = verdict


def classify(e: Exception, c: OpenAIConfig, key: str) -> Verdict | None:
    """The verdict on a failed request, or None for an exception that is not a request failure.

    Raises ``BadFormat`` (400/422: perhaps the response_format) and ``UnitFailed`` (another 4xx: no retry
    can help) at once."""
    import openai

    if isinstance(e, openai.BadRequestError | openai.UnprocessableEntityError):
        raise BadFormat(f"{e.status_code}: {server_message(e, key)}") from None
    if isinstance(e, openai.AuthenticationError):
        return Verdict(f"{c.host} rejected the API key (401); set a valid OPENAI_API_KEY", fatal=True)
    if isinstance(e, openai.PermissionDeniedError):
        reason = f"{c.host} refused access (403: {server_message(e, key)}); check the key's permissions for model {c.model!r}"
        return Verdict(reason, fatal=True)
    if isinstance(e, openai.NotFoundError):
        reason = f"model {c.model!r} or the chat completions path was not found at {safe_url(c.base_url)} (404); check the model name and base URL"
        return Verdict(reason, fatal=True)
    if isinstance(e, openai.RateLimitError):
        if error_code(e) == "insufficient_quota":
            reason = f"{c.host} reports insufficient_quota (429): the account has no credit left; add credit or use another key"
            return Verdict(reason, fatal=True)
        return Verdict("rate limited (429)", retry_after=retry_after(e.response.headers), breaker=False)
    if isinstance(e, openai.APITimeoutError):
        return Verdict(f"timed out after {c.timeout:g} s")
    if isinstance(e, openai.APIConnectionError):
        return Verdict(f"cannot reach {safe_url(c.base_url)} (connection error)")
    if isinstance(e, openai.APIStatusError):
        if e.status_code in (408, 409) or e.status_code >= 500:
            return Verdict(f"server error ({e.status_code})", retry_after=retry_after(e.response.headers))
        raise UnitFailed(f"request failed ({e.status_code}: {server_message(e, key)})") from None
    if isinstance(e, openai.APIResponseValidationError | ValueError):
        return Verdict(f"unreadable response body ({type(e).__name__})")
    return None


def error_code(e: Any) -> str | None:
    """The ``code`` of an API error (``insufficient_quota``...), from the exception or its body."""
    body = getattr(e, "body", None)
    code = getattr(e, "code", None) or (body.get("code") if isinstance(body, dict) else None)
    if code is None and isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
    return str(code) if code is not None else None


def retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (numbers only), as the SDK reads them."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+)")
#: Runs of this many characters of the key are redacted wherever they appear.
KEY_RUN = 8


def redact(text: str, key: str) -> str:
    """``text`` with the key, every run of ``KEY_RUN`` or more of its characters, and anything key-like
    (``sk-...``, ``Bearer ...``) replaced by ``[key]``."""
    if key:
        text = text.replace(key, "[key]")
        runs = {key[i : i + KEY_RUN] for i in range(len(key) - KEY_RUN + 1)}
        spans: list[list[int]] = []
        for i in range(len(text) - KEY_RUN + 1):
            if text[i : i + KEY_RUN] in runs:
                if spans and i <= spans[-1][1]:
                    spans[-1][1] = i + KEY_RUN
                else:
                    spans.append([i, i + KEY_RUN])
        for a, b in reversed(spans):
            text = text[:a] + "[key]" + text[b:]
    return _KEYLIKE.sub("[key]", text)


def server_message(e: Any, key: str) -> str:
    """The server's error message, one line, at most 200 characters, with the key and anything key-like removed."""
    body = getattr(e, "body", None)
    msg = body.get("message") if isinstance(body, dict) else None
    text = str(msg if msg else getattr(e, "message", "") or type(e).__name__)
    return " ".join(redact(text, key).split())[:200]
