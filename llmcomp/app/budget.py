"""Spending caps for the server owner's API key (``OPENAI_API_KEY``) when others use the app.

Anyone who opens a public app spends the owner's key, so the app counts requests and tokens per
visitor and per day (UTC) and refuses work that would cross a cap. People who bring their own key
are not counted: they spend their own money. The daily tally is kept in a small JSON file so a
restart does not reset it (point ``LLMCOMP_HOME`` at persistent storage to keep it).

Work reserves before it spends (``reserve``): the reservation is taken from what is left, atomically,
so two pieces of work running at once can never both count on the same remainder; the source's own
request cap is set to what was reserved, and what was not used goes back when the work is charged.
The "session" caps apply to one visitor (``visitor``): the login name, else the address the request
came from, so a new API client or a fresh browser does not get a fresh allowance. Behind a proxy
every visitor shares the proxy's address; the daily caps are the real bound either way.

The caps come from the environment through ``llmcomp.settings.budget_caps()``
(``LLMCOMP_SESSION_MAX_REQUESTS``, ``..._TOKENS``, ``LLMCOMP_DAILY_MAX_REQUESTS``, ``..._TOKENS``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

from llmcomp.errors import LLMCompError
from llmcomp.settings import BudgetCaps

#: a reservation covers the estimate plus this share and a few requests, for retries and long answers
HEADROOM = 0.5
HEADROOM_REQUESTS = 2


class BudgetError(LLMCompError, RuntimeError):
    """Work refused because it would spend more of the owner's key than the caps allow."""


@dataclass
class Usage:
    """Requests and tokens spent on the owner's key (one visitor's, or one day's), and those held
    by reservations of work still running."""

    requests: int = 0
    tokens: int = 0
    held_requests: int = 0
    held_tokens: int = 0


def _left(cap: int | None, used: int) -> int | None:
    return None if cap is None else max(0, cap - used)


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _want(estimate: int, left: int | None) -> int | None:
    """What to hold for work estimated at ``estimate``: some headroom, never more than is left."""
    if left is None:
        return None
    return min(left, math.ceil(estimate * (1 + HEADROOM)) + HEADROOM_REQUESTS)


class Reservation:
    """Requests and tokens set aside for one piece of work (None: no cap to hold against). ``charge``
    counts what the work spent and gives back the rest of the hold; a closed reservation holds nothing."""

    def __init__(self, budget: OwnerKeyBudget, session: Usage, day: str, requests: int | None, tokens: int | None):
        self.budget, self.session, self.day = budget, session, day
        self.requests, self.tokens = requests, tokens
        self.closed = False

    def charge(self, requests: int, tokens: int) -> None:
        """Count ``requests``/``tokens`` spent and release the hold (once; later calls only count)."""
        self.budget._settle(self, requests, tokens)

    def release(self) -> None:
        """Give the whole hold back (the work spent nothing more)."""
        self.budget._settle(self, 0, 0)


class OwnerKeyBudget:
    """Per-visitor and per-day caps on the owner's key; thread-safe; the day's tally persists in ``path``."""

    def __init__(self, limits: BudgetCaps | None = None, path: str | Path | None = None):
        self.limits = limits or BudgetCaps()
        self.path = Path(path) if path else None
        # reentrant: a reservation dropped with its source (weakref.finalize) may release from a GC pass
        self._lock = threading.RLock()
        self._day = ""
        self._today = Usage()
        self._visitors: dict[str, Usage] = {}
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
            self._day, self._today, self._visitors = self._date(), Usage(), {}

    def today(self) -> Usage:
        with self._lock:
            self._roll()
            t = self._today
            return Usage(t.requests, t.tokens, t.held_requests, t.held_tokens)

    def visitor(self, who: str) -> Usage:
        """The tally of one visitor (a login name or an address) for today: what the session caps count."""
        with self._lock:
            self._roll()
            return self._visitors.setdefault(who, Usage())

    def _remaining(self, session: Usage) -> tuple[int | None, int | None]:
        lim, day = self.limits, self._today
        req = _min(
            _left(lim.session_requests, session.requests + session.held_requests),
            _left(lim.daily_requests, day.requests + day.held_requests),
        )
        tok = _min(
            _left(lim.session_tokens, session.tokens + session.held_tokens),
            _left(lim.daily_tokens, day.tokens + day.held_tokens),
        )
        return req, tok

    def remaining(self, session: Usage) -> tuple[int | None, int | None]:
        """(requests, tokens) still allowed for this visitor today, less what running work holds; None = no cap."""
        with self._lock:
            self._roll()
            return self._remaining(session)

    @staticmethod
    def _refuse(requests: int, tokens: int, req_left: int | None, tok_left: int | None) -> None:
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

    def check(self, session: Usage, requests: int, tokens: int = 0) -> None:
        """Raise BudgetError if ``requests``/``tokens`` more would cross a cap (reserves nothing)."""
        self._refuse(requests, tokens, *self.remaining(session))

    def reserve(self, session: Usage, requests: int, tokens: int = 0) -> Reservation:
        """Set aside what work estimated at ``requests``/``tokens`` may spend (with some headroom, never
        more than is left), or raise BudgetError when even the estimate does not fit. Check and hold are
        one step under the lock, so concurrent work cannot both count on the same remainder."""
        with self._lock:
            self._roll()
            req_left, tok_left = self._remaining(session)
            self._refuse(requests, tokens, req_left, tok_left)
            hold_req, hold_tok = _want(requests, req_left), _want(tokens, tok_left)
            for u in (session, self._today):
                u.held_requests += hold_req or 0
                u.held_tokens += hold_tok or 0
            return Reservation(self, session, self._day, hold_req, hold_tok)

    def _settle(self, r: Reservation, requests: int, tokens: int) -> None:
        with self._lock:
            self._roll()
            if not r.closed:
                r.closed = True
                held = [r.session] + ([self._today] if r.day == self._day else [])
                for u in held:
                    u.held_requests = max(0, u.held_requests - (r.requests or 0))
                    u.held_tokens = max(0, u.held_tokens - (r.tokens or 0))
            if requests or tokens:
                self.charge(r.session, requests, tokens)

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
