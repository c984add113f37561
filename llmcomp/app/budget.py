"""Spending caps for the server owner's API key (``OPENAI_API_KEY``) when others use the app.

Anyone who opens a public app spends the owner's key, so the app counts requests and tokens per
session and per day (UTC) and refuses work that would cross a cap. People who bring their own key
are not counted: they spend their own money. The daily tally is kept in a small JSON file so a
restart does not reset it (point ``LLMCOMP_HOME`` at persistent storage to keep it).

The caps come from the environment through ``llmcomp.settings.budget_caps()``
(``LLMCOMP_SESSION_MAX_REQUESTS``, ``..._TOKENS``, ``LLMCOMP_DAILY_MAX_REQUESTS``, ``..._TOKENS``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from llmcomp.errors import LLMCompError
from llmcomp.settings import BudgetCaps


class BudgetError(LLMCompError, RuntimeError):
    """Work refused because it would spend more of the owner's key than the caps allow."""


@dataclass
class Usage:
    """Requests and tokens spent on the owner's key (one session's, or one day's)."""

    requests: int = 0
    tokens: int = 0


def _left(cap: int | None, used: int) -> int | None:
    return None if cap is None else max(0, cap - used)


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


class OwnerKeyBudget:
    """Per-session and per-day caps on the owner's key; thread-safe; the day's tally persists in ``path``."""

    def __init__(self, limits: BudgetCaps | None = None, path: str | Path | None = None):
        self.limits = limits or BudgetCaps()
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._day = ""
        self._today = Usage()
        self._load()

    @staticmethod
    def _date() -> str:
        return dt.datetime.now(dt.UTC).date().isoformat()

    def _load(self) -> None:
        self._day = self._date()
        if self.path and self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("day") == self._day:
                    self._today = Usage(int(data.get("requests", 0)), int(data.get("tokens", 0)))
            except (OSError, ValueError, TypeError):
                pass  # a damaged tally starts from zero rather than blocking the app

    def _roll(self) -> None:
        if self._date() != self._day:
            self._day, self._today = self._date(), Usage()

    def today(self) -> Usage:
        with self._lock:
            self._roll()
            return Usage(self._today.requests, self._today.tokens)

    def remaining(self, session: Usage) -> tuple[int | None, int | None]:
        """(requests, tokens) still allowed for this session today; None = no cap."""
        with self._lock:
            self._roll()
            lim, day = self.limits, self._today
            req = _min(_left(lim.session_requests, session.requests), _left(lim.daily_requests, day.requests))
            tok = _min(_left(lim.session_tokens, session.tokens), _left(lim.daily_tokens, day.tokens))
            return req, tok

    def check(self, session: Usage, requests: int, tokens: int = 0) -> None:
        """Raise BudgetError if ``requests``/``tokens`` more would cross a cap."""
        req_left, tok_left = self.remaining(session)
        if req_left is not None and requests > req_left:
            raise BudgetError(
                f"this needs about {requests:,} requests but the server's key allows {req_left:,} more "
                "(session and daily caps); enter your own API key, or score fewer sentences"
            )
        if tok_left is not None and tokens > tok_left:
            raise BudgetError(
                f"this needs about {tokens:,} tokens but the server's key allows {tok_left:,} more "
                "(session and daily caps); enter your own API key, or score fewer sentences"
            )

    def charge(self, session: Usage, requests: int, tokens: int) -> None:
        """Record spending on the owner's key (after the fact, from the source's counters)."""
        with self._lock:
            self._roll()
            session.requests += requests
            session.tokens += tokens
            self._today.requests += requests
            self._today.tokens += tokens
            if self.path:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = self.path.with_name(self.path.name + ".tmp")
                    tmp.write_text(
                        json.dumps({"day": self._day, "requests": self._today.requests, "tokens": self._today.tokens}),
                        encoding="utf-8",
                    )
                    tmp.replace(self.path)
                except OSError:
                    pass  # the in-memory tally still applies

    def describe(self, session: Usage) -> str:
        req_left, tok_left = self.remaining(session)
        if req_left is None and tok_left is None:
            return "the server's key has no spending caps"
        parts = []
        if req_left is not None:
            parts.append(f"{req_left:,} requests")
        if tok_left is not None:
            parts.append(f"{tok_left:,} tokens")
        return "the server's key allows " + " and ".join(parts) + " more for you today"
