"""The chat client of the OpenAI-compatible source: one object that sends chat requests and nothing else knows how.

It builds the ``AsyncOpenAI`` client (the only place the API key is read; ``openai_http`` caps the bodies), posts
through the SDK's raw route with a wall-clock deadline per attempt, reads the body itself without trusting it
(``answers.read_completion``), retries with backoff (honouring Retry-After), probes which structured-output
format the server accepts and remembers it, counts requests and tokens and refuses requests beyond the budget,
and acts on each failure as ``openai_errors`` reads it: retry, fail the unit, or stop the run. A run of
``max_consecutive_failures`` transport failures in a row stops the run too (the circuit breaker), so a server
that never answers ends a run in a few deadlines, not hours. Whatever a server wrote is redacted of the key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmcomp.attention import answers, prompts
from llmcomp.attention.base import ScoreStats
from llmcomp.attention.cache import AttentionCache
from llmcomp.attention.openai_config import NO_KEY, OpenAIConfig, OpenAIConfigError
from llmcomp.attention.openai_errors import (
    BadFormat,
    ScoringAborted,
    Transient,
    UnitFailed,
    Verdict,
    classify,
    redact,
)
from llmcomp.attention.openai_http import MAX_FILE_BYTES, build_sdk, too_large
from llmcomp.errors import one_line

log = logging.getLogger("llmcomp.attention.openai")

#: Structured-output formats, best first; a server that rejects one is asked with the next.
FORMATS: tuple[str, ...] = ("json_schema", "json_object", "text")

# Formats learnt in this process, per (host, model); also stored in the cache.
_KNOWN_FORMATS: dict[tuple[str, str], str] = {}


@dataclass
class Traffic:
    """What one scoring run shares with the client: its live counts, its limit on requests in flight, and how
    many attempts in a row have failed (the circuit breaker's count)."""

    stats: ScoreStats
    sem: asyncio.Semaphore
    failures_in_a_row: int = 0


def json_key(kind: str, obj: Any) -> str:
    """A cache key ``kind:sha256`` of a JSON-able description (sorted keys, so order never matters)."""
    return f"{kind}:" + hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ChatClient:
    """Chat requests to one server and model, with retries, format fallback and a lifetime budget.

    ``store(key, record)`` queues a JSON record for the cache (the source's writer); the learnt format goes
    there so that another process skips the probe. Coroutines run on the source's private loop.
    """

    def __init__(
        self,
        config: OpenAIConfig,
        cache: AttentionCache | None = None,
        store: Callable[[str, dict[str, Any]], None] | None = None,
    ):
        self.config = config
        self.cache = cache
        self.store = store
        self.usage = ScoreStats()  # requests and tokens over the client's lifetime (the budget)
        self.format: str | None = None  # the structured-output format this server accepts, once known
        self._rejected: set[str] = set()  # formats this server refused while none was known
        self._sdk: Any = None
        self._files_sdk: Any = None  # the Batch API's client: files may be hundreds of MB
        self._probe: asyncio.Lock | None = None  # one request at a time while the format is unknown...
        self._probe_open = False  # ...until the server fails in a way no format explains

    def __repr__(self) -> str:
        return f"ChatClient({self.config.model} @ {self.config.host})"

    @property
    def format_key(self) -> str:
        return json_key("format", {"host": self.config.host, "model": self.config.model})

    # --- the SDK client ------------------------------------------------------------------------------
    def sdk(self) -> Any:
        """The ``AsyncOpenAI`` client, built on first use: the one place the key leaves its ``Secret``."""
        if self._sdk is None:
            key = self._key()
            if not key:
                if self.config.host == "api.openai.com":
                    raise OpenAIConfigError(
                        "no API key for api.openai.com: set OPENAI_API_KEY in the environment or .env, or pass api_key="
                    )
                key = NO_KEY
            self._sdk = build_sdk(self.config.base_url, key, self.config.timeout)
        return self._sdk

    def files_sdk(self) -> Any:
        """A second client, with the same key and endpoint, that reads bodies up to ``MAX_FILE_BYTES`` (batch files)."""
        if self._files_sdk is None:
            c, _ = self.config, self.sdk()  # the same checks of the key
            self._files_sdk = build_sdk(c.base_url, self._key() or NO_KEY, c.timeout, MAX_FILE_BYTES)
        return self._files_sdk

    async def aclose(self) -> None:
        """Close the SDK clients' connections (on the loop that used them)."""
        for client in (self._sdk, self._files_sdk):
            if client is not None:
                await client.close()
        self._sdk = self._files_sdk = None

    def _key(self) -> str:
        return self.config.api_key.get() if self.config.api_key else ""

    def safe(self, text: str, limit: int = 600) -> str:
        """``text`` (anything a server wrote, or a message quoting it) fit to show: without the key or any long
        run of it, on one line with control characters escaped (``llmcomp.errors.one_line``)."""
        return one_line(redact(text, self._key()), limit)

    # --- one answer, in the best format the server takes --------------------------------------------
    async def chat(self, traffic: Traffic, task: str, messages: list[dict[str, str]]) -> tuple[str, str | None]:
        """One answer (content, finish_reason), retried while it fails transiently and falling back
        json_schema -> json_object -> text while the server refuses the format.

        Until a format is confirmed, requests go one at a time (the probe), so a server without json_schema
        costs one rejected request, not one per request in flight; once an attempt fails for another reason
        (timeout, 5xx, 429...) the probe gate opens for good, since waiting behind a failing probe would
        serialise the run.
        """
        if self._probe is None:
            self._probe = asyncio.Lock()
        if self.format is None:
            self._load_format()
        c, attempt = self.config, 0
        while True:
            try:
                fmt, answer = await self._gated(traffic, task, messages)
            except BadFormat as e:
                traffic.failures_in_a_row = 0  # the server answered
                if self.format is not None or e.fmt == FORMATS[-1]:
                    raise UnitFailed(f"server rejected the request: {e}") from None
                self._rejected.add(e.fmt)
                log.warning("%s does not accept response_format %s (%s); trying the next format", c.host, e.fmt, e)
                continue
            except Transient as t:
                self._probe_open = True
                attempt += 1
                delay = self._failed(traffic, t.verdict, attempt)
                log.info("%s; retry %d of %d in %.2f s", t.verdict.reason, attempt, c.max_retries, delay)
                await asyncio.sleep(delay)
                continue
            traffic.failures_in_a_row = 0
            if self.format is None:
                self._remember_format(fmt)
            return answer

    async def _gated(
        self, traffic: Traffic, task: str, messages: list[dict[str, str]]
    ) -> tuple[str, tuple[str, str | None]]:
        """One attempt in the format to try now, behind the probe gate while it is shut: (format, answer)."""
        if self.format is None and not self._probe_open:
            async with self._probe:  # type: ignore[union-attr]
                if self.format is None and not self._probe_open:
                    fmt = self._next_format()
                    return fmt, await self._attempt(traffic, task, messages, fmt)
        fmt = self.format or self._next_format()
        return fmt, await self._attempt(traffic, task, messages, fmt)

    def _next_format(self) -> str:
        return next((f for f in FORMATS if f not in self._rejected), FORMATS[-1])

    def _failed(self, traffic: Traffic, verdict: Verdict, attempt: int) -> float:
        """Count a transient failure: stop the run at the breaker, fail the unit past its retries; else the
        seconds to wait before the next attempt."""
        c = self.config
        if verdict.breaker:
            traffic.failures_in_a_row += 1
            if traffic.failures_in_a_row >= c.max_consecutive_failures:
                self._abort(
                    traffic.stats, f"{traffic.failures_in_a_row} requests in a row failed (last: {verdict.reason})"
                )
        if attempt > c.max_retries:
            if verdict.reason.startswith("cannot reach"):
                self._abort(traffic.stats, f"{verdict.reason} after {attempt} attempts; is the server running?")
            raise UnitFailed(f"request failed after {attempt} attempt(s): {verdict.reason}")
        wait = verdict.retry_after
        if wait is not None and wait > c.max_retry_after:
            raise UnitFailed(f"{verdict.reason}; the server asked to wait {wait:g} s (more than max_retry_after)")
        if wait is not None:
            return wait
        return min(c.backoff_base * 2 ** (attempt - 1), c.backoff_max) * (1 - 0.25 * random.random())

    def _load_format(self) -> None:
        known = _KNOWN_FORMATS.get((self.config.host, self.config.model))
        if known is None and self.cache is not None:
            rec = self.cache.get_json(self.format_key)
            if isinstance(rec, dict) and rec.get("format") in FORMATS:
                known = rec["format"]
        self.format = known

    def _remember_format(self, fmt: str) -> None:
        self.format = fmt
        _KNOWN_FORMATS[(self.config.host, self.config.model)] = fmt
        if self.store is not None:
            self.store(self.format_key, {"host": self.config.host, "model": self.config.model, "format": fmt})
        log.info("%s / %s: using response_format %s", self.config.host, self.config.model, fmt)

    # --- one attempt ------------------------------------------------------------------------------------
    async def _attempt(
        self, traffic: Traffic, task: str, messages: list[dict[str, str]], fmt: str
    ) -> tuple[str, str | None]:
        """One HTTP attempt within the deadline; raises BadFormat, Transient, UnitFailed or ScoringAborted."""
        c = self.config
        kwargs: dict[str, Any] = {"model": c.model, "messages": messages}
        rf = prompts.response_format(fmt, task, list(c.heads), c.answer)  # type: ignore[arg-type]
        if rf is not None:
            kwargs["response_format"] = rf
        if c.temperature is not None:
            kwargs["temperature"] = c.temperature
        client = self.sdk()
        verdict: Verdict | None = None
        async with traffic.sem:
            self._reserve(traffic.stats)
            try:
                # The SDK's raw route (same auth and typed errors, no re-walk of our params through its
                # TypedDict transform) returning the body as bytes, which we read without trusting it.
                async with asyncio.timeout(c.timeout):  # wall clock: the SDK's timeout is per read
                    body = await client.post("/chat/completions", body=kwargs, cast_to=bytes)
            except TimeoutError:
                verdict = Verdict(f"timed out: no complete answer within {c.timeout:g} s")
            except Exception as e:
                verdict = self._verdict(e, fmt)
        if verdict is not None:  # raised out here, so that no SDK error (which may quote the key) is chained
            if verdict.fatal:
                self._abort(traffic.stats, verdict.reason)
            raise Transient(verdict)
        try:
            answer = answers.read_completion(body)
        except answers.BodyError as e:  # a glitch may pass; a server that always sends these meets the breaker
            raise Transient(Verdict(str(e))) from None
        self._count(traffic.stats, answer, messages)
        return answer.content, answer.finish

    def _verdict(self, e: Exception, fmt: str) -> Verdict:
        """What a failed post means (a body over the cap is a transient failure: it may be a glitch); raises
        BadFormat, UnitFailed, or ``e`` itself when it is no request failure."""
        if (big := too_large(e)) is not None:
            return Verdict(str(big))
        try:
            verdict = classify(e, self.config, self._key())
        except BadFormat as bad:
            bad.fmt = fmt
            raise
        if verdict is None:
            raise e
        return verdict

    # --- accounting -------------------------------------------------------------------------------
    def _count(self, stats: ScoreStats, answer: answers.Completion, messages: list[dict[str, str]]) -> None:
        """Count the tokens the server reports; where it reports no usable number, estimate from the text."""
        pt = answer.prompt_tokens
        if pt is None:
            pt = sum(prompts.approx_tokens(str(m.get("content", ""))) for m in messages)
        ct = answer.completion_tokens if answer.completion_tokens is not None else prompts.approx_tokens(answer.content)
        for s in (stats, self.usage):
            s.prompt_tokens += pt
            s.completion_tokens += ct

    def _reserve(self, stats: ScoreStats) -> None:
        """Count one request against the budget, or fail it: nothing is sent beyond a cap."""
        c, u = self.config, self.usage
        if c.max_requests is not None and u.requests >= c.max_requests:
            raise UnitFailed(f"budget exhausted: max_requests={c.max_requests} reached")
        if c.max_tokens is not None and u.prompt_tokens + u.completion_tokens >= c.max_tokens:
            raise UnitFailed(f"budget exhausted: max_tokens={c.max_tokens} reached")
        stats.requests += 1
        u.requests += 1

    def aborted(self, stats: ScoreStats, message: str) -> ScoringAborted:
        """The one line that stops a run, saying what was kept (the source commits what was scored before the
        exception reaches the caller)."""
        if self.cache is not None:
            kept = f"{stats.scored} sentence(s) scored in this run and {stats.cached} found in the cache are kept there"
        else:
            kept = f"{stats.scored} sentence(s) scored in this run, not kept (no cache)"
        return ScoringAborted(self.safe(f"{message}; {kept}"), dataclasses.replace(stats))

    def _abort(self, stats: ScoreStats, reason: str) -> None:
        raise self.aborted(stats, f"scoring stopped: {reason}") from None
