"""The OpenAI-compatible attention source: an LLM behind any OpenAI-compatible chat API (OpenAI, vLLM, Ollama,
llama.cpp server, Groq, Cerebras) scores attention, through the official ``openai`` SDK.

This module is the source itself: its identity (spec, fingerprint, cache keys), cost estimates, and
``score_many`` over the mode strategies. The parts are objects of their own: ``openai_config`` (settings and
the key's ``Secret``), ``openai_client`` (transport, retries, format probing, budget, the circuit breaker),
``openai_http`` (body caps), ``openai_modes`` (what each mode asks and how answers become rows),
``openai_runtime`` (the private loop, cancellation and the cache writer) and ``openai_batch`` (the Batch API).

Example::

    from llmcomp.attention import AttentionCache
    from llmcomp.attention.openai_source import OpenAISource

    src = OpenAISource(mode="prefix", heads=["syntax", "meaning"], cache=AttentionCache("runs/attn.sqlite"))
    print(src.estimate(sentences))                 # requests and tokens still needed, no requests made
    result = src.score_many(sentences, progress=lambda s: print(s.done, "/", s.sentences))
    matrices = result.require_all()                # (2, T, T) each, or AttentionError naming a failure

Modes (``mode=``; docs/sources.md compares them): ``sentence``, one request per sentence for the whole matrix
(the LLM sees later words: ``prefix_causal`` False, so validation and generation score rows from prefixes);
``prefix``, one request per row showing words 0..i only, rows shared through the cache; ``pair``, context-free
(query, key) pairs, ``pair_batch`` per request. Scores are integers 0..score_max, made rows in code with
``floor`` added. Every answer is validated and an invalid one sent back with its fault; 401, 403, 404,
``insufficient_quota``, an unreachable server, too many failures in a row or ``cancel()`` stop the run in one
line (``ScoringAborted``, never the key) after committing what was scored. ``max_requests`` and ``max_tokens``
cap the source's lifetime; ``dry_run=True`` sends nothing; ``batch=BatchConfig()`` goes through the Batch API.

Configuration: explicit arguments, then the environment, then ``./.env`` (read by ``llmcomp.settings``):
``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``LLMCOMP_OPENAI_MODEL``. The key is kept in a ``Secret``
and never appears in repr(), spec(), fingerprint(), the cache, logs or error messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from llmcomp.attention import prompts
from llmcomp.attention.base import AttentionSource, ProgressFn, ScoreResult, ScoreStats, Words
from llmcomp.attention.cache import AttentionCache
from llmcomp.attention.openai_batch import BatchRoute

# FORMATS, _KNOWN_FORMATS, ScoringAborted and the config names are imported from here by callers and tests.
from llmcomp.attention.openai_client import _KNOWN_FORMATS as _KNOWN_FORMATS
from llmcomp.attention.openai_client import FORMATS as FORMATS
from llmcomp.attention.openai_client import ChatClient, json_key
from llmcomp.attention.openai_config import (
    MODES,
    BatchConfig,
    Mode,
    OpenAIConfig,
    OpenAIConfigError,
    Secret,
    resolve_config,
    safe_url,
)
from llmcomp.attention.openai_errors import ScoringAborted as ScoringAborted
from llmcomp.attention.openai_modes import STRATEGIES, Run, Strategy, pair_key, row_key
from llmcomp.attention.openai_runtime import CacheWriter, LoopThread, RunCancelled
from llmcomp.attention.prompts import PROMPT_VERSION, SCHEMA_VERSION, Answer, Estimate

log = logging.getLogger("llmcomp.attention.openai")


class OpenAISource(AttentionSource):
    """Attention from an OpenAI-compatible chat model; ``score_many`` is synchronous (a private loop)."""

    kind = "openai"

    def __init__(
        self,
        config: OpenAIConfig | None = None,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | Secret | None = None,
        mode: Mode | None = None,
        heads: Sequence[str] | None = None,
        n_heads: int | None = None,
        score_max: int | None = None,
        floor: float | None = None,
        max_concurrency: int | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_consecutive_failures: int | None = None,
        max_corrective_retries: int | None = None,
        max_requests: int | None = None,
        max_tokens: int | None = None,
        dry_run: bool | None = None,
        pair_batch: int | None = None,
        temperature: float | None = 0.0,  # None: not sent (some reasoning models refuse it)
        backoff_base: float | None = None,
        backoff_max: float | None = None,
        max_retry_after: float | None = None,
        answer: Answer | None = None,
        top_k: int | None = None,
        cache_tag: str | None = None,
        batch: BatchConfig | None = None,
        cache: AttentionCache | None = None,
        fallback: AttentionSource | None = None,
    ):
        """Options are the ``OpenAIConfig`` fields; None means "not given" (then the environment, then
        ``.env``, then the default), except for ``temperature``, where None means "do not send one".
        ``n_heads`` (as in ``spec()``) picks that many default heads when ``heads`` is not given.
        Or pass a ready ``config``. ``batch`` sends the requests through the Batch API first
        (``openai_batch``; ``on_batch_status`` hears its progress lines)."""
        options = {
            k: v
            for k, v in locals().items()
            if k not in ("self", "config", "n_heads", "batch", "cache", "fallback", "__class__")
        }
        if config is None:
            if heads is None and n_heads is not None:
                options["heads"] = prompts.DEFAULT_HEADS[:n_heads]
            config = resolve_config(**options)
        elif any(v is not None for k, v in options.items() if k != "temperature") or temperature != 0.0:
            raise TypeError("pass either config= or options, not both")
        if n_heads is not None and n_heads != len(config.heads):
            raise OpenAIConfigError(f"n_heads={n_heads} does not match heads {list(config.heads)}")
        super().__init__(n_heads=len(config.heads), cache=cache, fallback=fallback)
        self.config = config
        self.prefix_causal = config.mode != "sentence"
        self.batch = batch
        self.on_batch_status: Callable[[str], None] | None = None
        self.last_estimate: Estimate | None = None
        self._runtime = LoopThread()
        self._writer = CacheWriter(cache, config.floor, self.n_heads)  # builds matrices, writes and commits
        self._chat = ChatClient(config, cache, self._writer.store)  # the only holder of the SDK client

    @property
    def usage(self) -> ScoreStats:
        """Requests and tokens over the source's lifetime (what the budget caps count)."""
        return self._chat.usage

    # --- identity ------------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        c = self.config
        return {
            **super().spec(),
            "base_url": safe_url(c.base_url),
            "model": c.model,
            "mode": c.mode,
            "heads": list(c.heads),
            "score_max": c.score_max,
            "floor": c.floor,
            "max_concurrency": c.max_concurrency,
            "timeout": c.timeout,
            "max_retries": c.max_retries,
            "max_corrective_retries": c.max_corrective_retries,
            "pair_batch": c.pair_batch,
            "temperature": c.temperature,
            **({"answer": c.answer, "top_k": c.top_k} if c.answer != "dense" else {}),
            **({"cache_tag": c.cache_tag} if c.cache_tag else {}),
        }

    def _score_identity(self) -> dict[str, Any]:
        """What decides the raw integer scores (the row and pair caches are keyed on it)."""
        c = self.config
        return {
            "kind": self.kind,
            "host": c.host,
            "model": c.model,
            "mode": c.mode,
            "prompt_version": PROMPT_VERSION,
            "schema_version": SCHEMA_VERSION,
            "heads": list(c.heads),
            "score_max": c.score_max,
            "temperature": c.temperature,
            **prompts.answer_identity(c.answer, c.top_k),  # nothing for dense: its keys are as they were
            # only when set: an untagged source keeps the keys it had before tags existed
            **({"cache_tag": c.cache_tag} if c.cache_tag else {}),
        }

    def fingerprint(self) -> dict[str, Any]:
        return {**self._score_identity(), "floor": self.config.floor}

    def _row_key(self, prefix: list[str]) -> str:
        return row_key(self._score_identity(), prefix)

    def _pair_key(self, query: str, key: str) -> str:
        return pair_key(self._score_identity(), query, key)

    def _strategy(self) -> Strategy:
        """This source's mode, wired to its identity, cache, chat client and cache writer."""
        return STRATEGIES[self.config.mode](self.config, self._score_identity(), self.cache, self._chat, self._writer)

    def describe(self) -> str:
        c = self.config
        sparse = f" (sparse top-{c.top_k} answers)" if c.answer == "sparse" else ""
        return f"openai {c.model} @ {c.host}, {c.mode} mode{sparse}, heads {', '.join(c.heads)}"

    def head_labels(self) -> list[str]:
        """Each head is named by the relation it asks about."""
        return list(self.config.heads)

    def __repr__(self) -> str:
        return f"OpenAISource({self.describe()})"

    # --- estimates ------------------------------------------------------------------------------
    def estimate(self, sentences: Sequence[Words], mode: Mode | None = None) -> Estimate:
        """Requests and tokens needed to score ``sentences`` in ``mode`` (default: this source's),
        counting what the cache already holds. No request is made. Retries are not included."""
        if mode is not None and mode != self.config.mode:
            answer = self.config.answer if mode == "sentence" else "dense"  # sparse is sentence mode's alone
            sibling = OpenAISource(dataclasses.replace(self.config, mode=mode, answer=answer), cache=self.cache)
            return sibling.estimate(sentences)
        todo: dict[str, list[str]] = {}
        cached = 0
        for s in sentences:
            words = list(s)
            key = self.cache_key(words)
            if key in todo:
                continue
            if self.cache is not None and key in self.cache:
                cached += 1
            else:
                todo[key] = words
        strategy, n_heads = self._strategy(), len(self.config.heads)
        planned = strategy.plan(list(todo.values()))
        if self.batch is not None and self.cache is not None:  # requests an open batch holds are paid already
            planned = BatchRoute(self.batch, strategy, self._chat, self._batch_identity()).plan(todo)
        prompt_tokens = sum(prompts.approx_tokens(m["content"]) for messages, _ in planned for m in messages)
        top_k = self.config.top_k if self.config.answer == "sparse" else None
        completion_tokens = sum(prompts.approx_answer_tokens(strategy.task, n, n_heads, top_k) for _, n in planned)
        unique = len({self.cache_key(list(s)) for s in sentences})
        return Estimate(self.config.mode, unique, cached, len(planned), prompt_tokens, completion_tokens)

    def estimate_all(self, sentences: Sequence[Words]) -> dict[str, Estimate]:
        """The estimate of every mode, to choose one."""
        return {m: self.estimate(sentences, mode=m) for m in MODES}  # type: ignore[misc]

    # --- scoring ------------------------------------------------------------------------------
    def score_many(self, sentences: Sequence[Words], progress: ProgressFn | None = None) -> ScoreResult:
        """Score every sentence (cache first). ``progress(stats)`` is called as sentences complete,
        from the source's own loop thread. Raising in it stops the run (the cache keeps what is done).
        """
        if not self.config.dry_run:
            return super().score_many(sentences, progress)
        self.last_estimate = self.estimate(sentences)
        log.info("dry run: %s", self.last_estimate)
        fallback, self.fallback = self.fallback, None  # a dry run fills nothing in
        try:
            return super().score_many(sentences, progress)
        finally:
            self.fallback = fallback

    def _score_batch(self, sentences: list[list[str]], stats: ScoreStats, progress: ProgressFn | None):
        if self.config.dry_run:
            return [f"dry run: not scored (no requests made; {self.last_estimate})" for _ in sentences]
        scored, failed = stats.scored, stats.failed
        try:
            return self._runtime.run(self._score_all(sentences, stats, progress))
        finally:
            # Live counts were shown to ``progress``; the base class adds the final tallies itself.
            stats.scored, stats.failed = scored, failed
            if self.cache is not None:
                self.cache.commit()

    async def _score_all(self, sentences: list[list[str]], stats: ScoreStats, progress: ProgressFn | None):
        """On the private loop: each distinct sentence once, through this mode's strategy (``cancel`` stops it)."""
        run = Run(stats, asyncio.Semaphore(self.config.max_concurrency), progress=progress)
        unique = {self.cache_key(words): words for words in sentences}  # equal keys mean equal words
        try:
            await self._runtime.cancellable(self._route(run, list(unique.items())))
        except RunCancelled:
            batches = "; its batches keep running: run the same command again to collect them" if self.batch else ""
            raise self._chat.aborted(run.stats, f"cancelled: scoring stopped on request{batches}") from None
        finally:  # also on an abort: everything scored is committed before the caller hears of it
            await self._writer.settle()
        return [run.results[self.cache_key(words)] for words in sentences]

    async def _route(self, run: Run, items: list[tuple[str, list[str]]]) -> None:
        """The Batch API first when asked (``openai_batch``), then live requests for whatever is left."""
        strategy = self._strategy()
        if self.batch is not None:
            batch = BatchRoute(self.batch, strategy, self._chat, self._batch_identity(), self.on_batch_status)
            items = await batch.route(run, items)
        await strategy.score(run, items)

    def _batch_identity(self) -> str:  # a batch is read back only by a source of the same fingerprint
        return json_key("batch", self.fingerprint())

    def cancel(self) -> None:
        """Stop scoring from any thread, at once: ``ScoringAborted("cancelled: ...")``; the source stays cancelled."""
        self._runtime.cancel()

    def close(self) -> None:
        """Finish the cache writes, close the HTTP client and stop the loop thread (the cache's owner closes it)."""
        self._writer.close()
        self._runtime.close(self._chat.aclose)

    def __enter__(self) -> OpenAISource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
