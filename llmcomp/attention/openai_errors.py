"""What a failed chat request means: retry it, fail its unit, or stop the run; said in one line without the key.

``classify`` reads the SDK's typed errors (and Retry-After headers); ``server_message`` quotes a server's
error text with the key and anything key-like removed, since servers (OpenAI included) echo the key they got.
"""

from __future__ import annotations

import math
import re
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


#: (reason, fatal, retry_after): fatal stops the run; retry_after is what the server asked to wait, if it did.
Verdict = tuple[str, bool, float | None]


def classify(e: Exception, c: OpenAIConfig, key: str) -> Verdict | None:
    """The verdict on a failed request, or None for an exception that is not a request failure.

    Raises ``BadFormat`` (400/422: perhaps the response_format) and ``UnitFailed`` (another 4xx: no retry
    can help) at once."""
    import openai

    if isinstance(e, openai.BadRequestError | openai.UnprocessableEntityError):
        raise BadFormat(f"{e.status_code}: {server_message(e, key)}") from None
    if isinstance(e, openai.AuthenticationError):
        return f"{c.host} rejected the API key (401); set a valid OPENAI_API_KEY", True, None
    if isinstance(e, openai.PermissionDeniedError):
        reason = f"{c.host} refused access (403: {server_message(e, key)}); check the key's permissions for model {c.model!r}"
        return reason, True, None
    if isinstance(e, openai.NotFoundError):
        reason = f"model {c.model!r} or the chat completions path was not found at {safe_url(c.base_url)} (404); check the model name and base URL"
        return reason, True, None
    if isinstance(e, openai.RateLimitError):
        if error_code(e) == "insufficient_quota":
            reason = f"{c.host} reports insufficient_quota (429): the account has no credit left; add credit or use another key"
            return reason, True, None
        return "rate limited (429)", False, retry_after(e.response.headers)
    if isinstance(e, openai.APITimeoutError):
        return f"timed out after {c.timeout:g} s", False, None
    if isinstance(e, openai.APIConnectionError):
        return f"cannot reach {safe_url(c.base_url)} (connection error)", False, None
    if isinstance(e, openai.APIStatusError):
        if e.status_code in (408, 409) or e.status_code >= 500:
            return f"server error ({e.status_code})", False, retry_after(e.response.headers)
        raise UnitFailed(f"request failed ({e.status_code}: {server_message(e, key)})") from None
    if isinstance(e, openai.APIResponseValidationError | ValueError):
        return f"unreadable response body ({type(e).__name__})", False, None
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


def server_message(e: Any, key: str) -> str:
    """The server's error message, one line, at most 200 characters, with anything key-like removed."""
    body = getattr(e, "body", None)
    msg = body.get("message") if isinstance(body, dict) else None
    text = str(msg if msg else getattr(e, "message", "") or type(e).__name__)
    if key:
        text = text.replace(key, "[key]")
    text = _KEYLIKE.sub("[key]", text)
    return " ".join(text.split())[:200]
