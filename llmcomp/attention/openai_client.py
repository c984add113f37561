"""The chat client of the OpenAI-compatible source: one object that sends chat requests and nothing else knows how.

It builds the ``AsyncOpenAI`` client (the only place the API key is read), posts through the SDK's raw route,
retries with backoff (honouring Retry-After), probes which structured-output format the server accepts and
remembers it, counts requests and tokens and refuses requests beyond the budget, and acts on each failure as
``openai_errors`` reads it: retry, fail the unit, or stop the run (with the key stripped from server messages).
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

from llmcomp.attention import prompts
from llmcomp.attention.base import ScoreStats
from llmcomp.attention.cache import AttentionCache
from llmcomp.attention.openai_config import NO_KEY, OpenAIConfig, OpenAIConfigError
from llmcomp.attention.openai_errors import BadFormat, ScoringAborted, UnitFailed, classify

log = logging.getLogger("llmcomp.attention.openai")

#: Structured-output formats, best first; a server that rejects one is asked with the next.
FORMATS: tuple[str, ...] = ("json_schema", "json_object", "text")

# Formats learnt in this process, per (host, model); also stored in the cache.
_KNOWN_FORMATS: dict[tuple[str, str], str] = {}


@dataclass
class Traffic:
    """What one scoring run shares with the client: its live counts and its limit on requests in flight."""

    stats: ScoreStats
    sem: asyncio.Semaphore


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
        self._sdk: Any = None
        self._probe: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"ChatClient({self.config.model} @ {self.config.host})"

    @property
    def format_key(self) -> str:
        return json_key("format", {"host": self.config.host, "model": self.config.model})

    # --- the SDK client ------------------------------------------------------------------------------
    def sdk(self) -> Any:
        """The ``AsyncOpenAI`` client, built on first use: the one place the key leaves its ``Secret``."""
        if self._sdk is None:
            from openai import AsyncOpenAI

            key = self._key()
            if not key:
                if self.config.host == "api.openai.com":
                    raise OpenAIConfigError(
                        "no API key for api.openai.com: set OPENAI_API_KEY in the environment or .env, or pass api_key="
                    )
                key = NO_KEY
            # Retries are ours (max_retries=0 here), so they do not multiply and every attempt is counted.
            self._sdk = AsyncOpenAI(
                api_key=key, base_url=self.config.base_url, max_retries=0, timeout=self.config.timeout
            )
        return self._sdk

    async def aclose(self) -> None:
        """Close the SDK client's connections (on the loop that used them)."""
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    def _key(self) -> str:
        return self.config.api_key.get() if self.config.api_key else ""

    # --- one answer, in the best format the server takes --------------------------------------------
    async def chat(self, traffic: Traffic, task: str, messages: list[dict[str, str]]) -> tuple[str, str | None]:
        """One answer (content, finish_reason), falling back json_schema -> json_object -> text while the
        server refuses the format.

        Until a format is confirmed for this server, requests go one at a time (the probe), so a server
        without json_schema costs one rejected request, not one per request in flight.
        """
        if self._probe is None:
            self._probe = asyncio.Lock()
        if self.format is None:
            self._load_format()
        if self.format is None:
            async with self._probe:
                if self.format is None:
                    return await self._probe_formats(traffic, task, messages)
        try:
            return await self._send(traffic, task, messages, self.format)
        except BadFormat as e:
            raise UnitFailed(f"server rejected the request: {e}") from None

    async def _probe_formats(
        self, traffic: Traffic, task: str, messages: list[dict[str, str]]
    ) -> tuple[str, str | None]:
        """Try each format in turn; the first the server accepts is remembered for this host and model."""
        for fmt in FORMATS:
            try:
                answer = await self._send(traffic, task, messages, fmt)
            except BadFormat as e:
                if fmt == FORMATS[-1]:
                    raise UnitFailed(f"server rejected the request: {e}") from None
                log.warning(
                    "%s does not accept response_format %s (%s); trying the next format", self.config.host, fmt, e
                )
                continue
            self._remember_format(fmt)
            return answer
        raise AssertionError("unreachable")

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

    # --- transport and retries ------------------------------------------------------------------------
    async def _send(
        self, traffic: Traffic, task: str, messages: list[dict[str, str]], fmt: str
    ) -> tuple[str, str | None]:
        from openai.types.chat import ChatCompletion

        c = self.config
        kwargs: dict[str, Any] = {"model": c.model, "messages": messages}
        rf = prompts.response_format(fmt, task, list(c.heads))  # type: ignore[arg-type]
        if rf is not None:
            kwargs["response_format"] = rf
        if c.temperature is not None:
            kwargs["temperature"] = c.temperature
        client = self.sdk()
        attempt = 0
        while True:
            async with traffic.sem:
                self._reserve(traffic.stats)
                try:
                    # The SDK's documented raw route: same auth, timeouts and typed errors and a typed
                    # ChatCompletion back, without re-walking our plain-dict params through its TypedDict
                    # transform (about 1 ms of CPU per request, which caps throughput at high concurrency).
                    resp = await client.post("/chat/completions", body=kwargs, cast_to=ChatCompletion)
                except Exception as e:
                    verdict = classify(e, c, self._key())  # raises BadFormat or UnitFailed when no retry helps
                    if verdict is None:
                        raise
                    reason, fatal, retry_after = verdict
                else:
                    return self._read(traffic.stats, resp)
            if fatal:
                self._abort(traffic.stats, reason)
            attempt += 1
            if attempt > c.max_retries:
                if reason.startswith("cannot reach"):
                    self._abort(traffic.stats, f"{reason} after {attempt} attempts; is the server running?")
                raise UnitFailed(f"request failed after {attempt} attempt(s): {reason}")
            if retry_after is not None and retry_after > c.max_retry_after:
                raise UnitFailed(f"{reason}; the server asked to wait {retry_after:g} s (more than max_retry_after)")
            delay = retry_after if retry_after is not None and retry_after >= 0 else None
            if delay is None:
                delay = min(c.backoff_base * 2 ** (attempt - 1), c.backoff_max) * (1 - 0.25 * random.random())
            log.info("%s; retry %d of %d in %.2f s", reason, attempt, c.max_retries, delay)
            await asyncio.sleep(delay)

    # --- accounting -------------------------------------------------------------------------------
    def _read(self, stats: ScoreStats, resp: Any) -> tuple[str, str | None]:
        """Count usage; return (content, finish_reason). A response without choices reads as empty."""
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        for s in (stats, self.usage):
            s.prompt_tokens += pt
            s.completion_tokens += ct
        choices = getattr(resp, "choices", None) or []
        if not choices or getattr(choices[0], "message", None) is None:
            return "", None
        return choices[0].message.content or "", choices[0].finish_reason

    def _reserve(self, stats: ScoreStats) -> None:
        """Count one request against the budget, or fail it: nothing is sent beyond a cap."""
        c, u = self.config, self.usage
        if c.max_requests is not None and u.requests >= c.max_requests:
            raise UnitFailed(f"budget exhausted: max_requests={c.max_requests} reached")
        if c.max_tokens is not None and u.prompt_tokens + u.completion_tokens >= c.max_tokens:
            raise UnitFailed(f"budget exhausted: max_tokens={c.max_tokens} reached")
        stats.requests += 1
        u.requests += 1

    @staticmethod
    def _abort(stats: ScoreStats, reason: str) -> None:
        """Stop the run (the source commits what was scored before the exception reaches the caller)."""
        raise ScoringAborted(
            f"scoring stopped: {reason} ({stats.scored} sentence(s) scored in this run are kept in the cache)",
            dataclasses.replace(stats),
        )
