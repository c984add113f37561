"""Attention scored by an LLM behind any OpenAI-compatible chat API (OpenAI, vLLM, Ollama, llama.cpp
server, Groq, Cerebras), through the official ``openai`` SDK (``AsyncOpenAI``).

Example::

    from llmcomp.attention import AttentionCache
    from llmcomp.attention.openai_source import OpenAISource

    src = OpenAISource(mode="prefix", heads=["syntax", "meaning"], cache=AttentionCache("runs/attn.sqlite"),
                       max_concurrency=16, max_requests=5000)
    print(src.estimate(sentences))                 # requests and tokens still needed, no requests made
    result = src.score_many(sentences, progress=lambda s: print(s.done, "/", s.sentences))
    matrices = result.require_all()                # (2, T, T) each, or AttentionError naming a failure

Modes (``mode=``), each a trade between cost and what the matrix may depend on:

* ``sentence``: one request per sentence returns the whole lower-triangular matrix for every head.
  Cheapest, but the LLM sees the whole sentence, so row i may be shaped by words after i:
  ``prefix_causal`` is False. Fine for training on a fixed corpus; not what generation needs.
* ``prefix``: one request per row, showing only words 0..i. Row i can never depend on a later
  word, rows are cached by prefix (a second sentence sharing a prefix reuses them), and appending
  words never changes earlier rows. About T requests per sentence.
* ``pair``: context-free relatedness of (query, key) word pairs, the original method, batched (up to
  ``pair_batch`` pairs per request) with one pair cache for the whole corpus. Causal, cheapest per
  pair, but blind to context.

Scores are integers 0..score_max, turned into attention in code with ``floor`` added to every allowed
cell (``normalize_scores``), so no row is empty. Every answer is validated; an invalid answer is sent
back with the reason up to ``max_corrective_retries`` times, after which the sentence is reported as
failed with that reason and never cached. Structured output is tried as json_schema, then
json_object, then plain text; what the server accepted is remembered per host and model (in memory
and in the cache). 401, 403, 404, ``insufficient_quota`` and an unreachable server stop the run at
once with ``ScoringAborted`` (one line, never the key); everything scored so far is committed to the
cache first. Budget caps (``max_requests``, ``max_tokens``, over the source's lifetime) stop
scoring cleanly: the rest is reported failed with "budget exhausted". ``dry_run=True`` makes no
requests at all.

Configuration: explicit arguments, then the environment, then ``.env`` (python-dotenv):
``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``LLMCOMP_OPENAI_MODEL``. The key is kept in a ``Secret``
and never appears in repr(), spec(), fingerprint(), the cache, logs or error messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import queue
import random
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from llmcomp.attention import prompts
from llmcomp.attention.base import AttentionSource, ProgressFn, ScoreResult, ScoreStats, Words, validate_attention
from llmcomp.attention.cache import AttentionCache
from llmcomp.attention.openai_config import (
    MODES,
    NO_KEY,
    Mode,
    OpenAIConfig,
    OpenAIConfigError,
    Secret,
    resolve_config,
    safe_url,
)
from llmcomp.attention.prompts import PROMPT_VERSION, SCHEMA_VERSION, AnswerError
from llmcomp.errors import LLMCompError

log = logging.getLogger("llmcomp.attention.openai")

#: Structured-output formats, best first; a server that rejects one is asked with the next.
FORMATS: tuple[str, ...] = ("json_schema", "json_object", "text")

# Formats learnt in this process, per (host, model); also stored in the cache.
_KNOWN_FORMATS: dict[tuple[str, str], str] = {}


class ScoringAborted(LLMCompError, RuntimeError):
    """The server refused in a way no retry can fix; what was scored before is in the cache."""

    def __init__(self, message: str, stats: ScoreStats | None = None):
        super().__init__(message)
        self.stats = stats or ScoreStats()


class _UnitFailed(Exception):
    """One request unit (sentence, row or pair batch) failed for good; its sentences fail."""


class _CallbackRaised(Exception):
    """Carries what ``progress`` raised (even KeyboardInterrupt) out of the loop thread to the caller."""

    def __init__(self, error: BaseException):
        super().__init__(repr(error))
        self.error = error


class _BadFormat(Exception):
    """The server rejected the request as such (400/422); perhaps its response_format."""


@dataclass
class Estimate:
    """What scoring would cost: first-attempt requests and approximate tokens, after cache hits."""

    mode: str
    sentences: int
    cached: int  # sentences whose matrix is already cached
    requests: int
    prompt_tokens: int
    completion_tokens: int

    def __str__(self) -> str:
        return (
            f"{self.mode} mode: {self.sentences - self.cached} of {self.sentences} sentences to score, "
            f"{self.requests} requests, about {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion tokens"
        )


@dataclass
class _Run:
    """The state of one ``score_many`` call, on the loop thread."""

    stats: ScoreStats
    progress: ProgressFn | None
    sem: asyncio.Semaphore
    results: dict[str, torch.Tensor | str] = field(default_factory=dict)
    inflight: dict[str, asyncio.Task] = field(default_factory=dict)
    rows: dict[str, Any] = field(default_factory=dict)  # prefix rows found in the cache, by key


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


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
        max_corrective_retries: int | None = None,
        max_requests: int | None = None,
        max_tokens: int | None = None,
        dry_run: bool | None = None,
        pair_batch: int | None = None,
        temperature: float | None = 0.0,  # None: not sent (some reasoning models refuse it)
        backoff_base: float | None = None,
        backoff_max: float | None = None,
        max_retry_after: float | None = None,
        cache: AttentionCache | None = None,
        fallback: AttentionSource | None = None,
    ):
        """Options are the ``OpenAIConfig`` fields; None means "not given" (then the environment, then
        ``.env``, then the default), except for ``temperature``, where None means "do not send one".
        ``n_heads`` (as in ``spec()``) picks that many default heads when ``heads`` is not given.
        Or pass a ready ``config``."""
        options = {
            k: v
            for k, v in locals().items()
            if k not in ("self", "config", "n_heads", "cache", "fallback", "__class__")
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
        self.usage = ScoreStats()  # requests and tokens over the source's lifetime (the budget)
        self.last_estimate: Estimate | None = None
        self._format: str | None = None  # the structured-output format this server accepts, once known
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._client: Any = None
        self._probe: asyncio.Lock | None = None
        self._worker: ThreadPoolExecutor | None = None  # builds matrices, writes and commits the cache
        self._worker_error: Exception | None = None
        self._pending: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

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
        }

    def fingerprint(self) -> dict[str, Any]:
        return {**self._score_identity(), "floor": self.config.floor}

    def _row_key(self, prefix: list[str]) -> str:
        return "row:" + _sha({"source": self._score_identity(), "prefix": prefix})

    def _pair_key(self, query: str, key: str) -> str:
        return "pair:" + _sha({"source": self._score_identity(), "pair": [query, key]})

    def _format_key(self) -> str:
        return "format:" + _sha({"host": self.config.host, "model": self.config.model})

    def describe(self) -> str:
        c = self.config
        return f"openai {c.model} @ {c.host}, {c.mode} mode, heads {', '.join(c.heads)}"

    def __repr__(self) -> str:
        return f"OpenAISource({self.describe()})"

    # --- estimates ------------------------------------------------------------------------------
    def estimate(self, sentences: Sequence[Words], mode: Mode | None = None) -> Estimate:
        """Requests and tokens needed to score ``sentences`` in ``mode`` (default: this source's),
        counting what the cache already holds. No request is made. Retries are not included."""
        if mode is not None and mode != self.config.mode:
            sibling = OpenAISource(dataclasses.replace(self.config, mode=mode), cache=self.cache)
            return sibling.estimate(sentences)
        c, heads = self.config, list(self.config.heads)
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
        reqs = ptok = ctok = 0

        def add(task: str, words: list[str], n: int, pairs: list[tuple[int, int]] | None = None) -> None:
            nonlocal reqs, ptok, ctok
            msgs = prompts.build_messages(task, words, heads, c.score_max, pairs)  # type: ignore[arg-type]
            reqs += 1
            ptok += sum(prompts.approx_tokens(m["content"]) for m in msgs)
            ctok += prompts.approx_answer_tokens(task, n, len(heads))  # type: ignore[arg-type]

        if c.mode == "sentence":
            for words in todo.values():
                add("sentence", words, len(words))
        elif c.mode == "prefix":
            rows = {self._row_key(w[: i + 1]): w[: i + 1] for w in todo.values() for i in range(len(w))}
            cached_rows = self.cache.get_many_json(rows) if self.cache is not None else {}
            for key, prefix in rows.items():
                if key not in cached_rows:
                    add("prefix", prefix, len(prefix))
        else:
            needed = self._pairs_needed(list(todo.values()), {})
            for chunk in _chunks(needed, c.pair_batch):
                words, idx = prompts.pair_words(chunk)
                add("pair", words, len(chunk), idx)
        return Estimate(c.mode, len({self.cache_key(list(s)) for s in sentences}), cached, reqs, ptok, ctok)

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
            return self._run_coroutine(self._score_all(sentences, stats, progress))
        finally:
            # Live counts were shown to ``progress``; the base class adds the final tallies itself.
            stats.scored, stats.failed = scored, failed
            if self.cache is not None:
                self.cache.commit()

    def _run_coroutine(self, coro: Awaitable[Any]) -> Any:
        """Run on the private loop thread; works from any thread, with or without its own loop."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(
                    target=_serve_loop, args=(self._loop,), name="llmcomp-openai", daemon=True
                )
                self._loop_thread.start()
        if threading.current_thread() is self._loop_thread:
            raise RuntimeError("score_many cannot be called from its own progress callback")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        try:
            return future.result()
        except _CallbackRaised as e:
            raise e.error from None
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the caller: stop the requests too
            raise

    def close(self) -> None:
        """Close the HTTP client and stop the loop thread (the cache is closed by its owner)."""
        with self._lock:
            loop, thread, self._loop, self._loop_thread = self._loop, self._loop_thread, None, None
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.submit(self._drain).result()
            worker.shutdown(wait=True)
        if loop is None:
            return
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.close(), loop).result(timeout=10)
            self._client = None
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()

    def __enter__(self) -> OpenAISource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the async core ------------------------------------------------------------------------
    async def _score_all(self, sentences: list[list[str]], stats: ScoreStats, progress: ProgressFn | None):
        run = _Run(stats, progress, asyncio.Semaphore(self.config.max_concurrency))
        if self._probe is None:
            self._probe = asyncio.Lock()
        unique: dict[str, list[str]] = {}
        for words in sentences:
            unique.setdefault(self.cache_key(words), words)
        items = list(unique.items())
        if self.config.mode == "prefix" and self.cache is not None:  # one bulk lookup, not one per row
            run.rows = self.cache.get_many_json(self._row_key(w[: i + 1]) for _, w in items for i in range(len(w)))
        try:
            if self.config.mode == "pair":
                await self._score_pairs(run, items)
            else:
                job = self._sentence_job if self.config.mode == "sentence" else self._prefix_job
                await self._pool([lambda k=k, w=w: job(run, k, w) for k, w in items])
        finally:  # also on an abort: everything scored is committed before the caller hears of it
            await self._settle()
        return [run.results[self.cache_key(words)] for words in sentences]

    async def _pool(self, jobs: list[Callable[[], Awaitable[None]]]) -> None:
        """Run jobs with at most ``max_concurrency`` at a time; the first abort cancels the rest."""
        it = iter(jobs)

        async def worker() -> None:
            for job in it:
                await job()

        tasks = [asyncio.create_task(worker()) for _ in range(min(self.config.max_concurrency, len(jobs)))]
        if not tasks:
            return
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    def _finish(self, run: _Run, key: str, words: list[str], scores: torch.Tensor | str) -> None:
        """Record one sentence: its integer scores (heads, T, T), or why it failed (never cached)."""
        if isinstance(scores, str):
            run.results[key] = scores
            run.stats.failed += 1
            log.info("sentence failed: %s", scores)
        else:
            run.stats.scored += 1
            self._submit(("matrix", run, key, words, scores))
        if run.progress:
            try:
                run.progress(run.stats)
            except BaseException as e:  # noqa: BLE001 - a KeyboardInterrupt here would kill the loop thread
                raise _CallbackRaised(e) from None

    # --- the worker thread: scores -> attention, and every cache write ---------------------------
    # Off the event loop: torch's small triangular ops can wake an OpenMP thread team, which on a
    # busy machine takes milliseconds, and SQLite writes wait on sqlitedict's own thread. The
    # worker handles items in order and commits after each batch, so a sentence is committed as
    # soon as it is done and kill -9 loses only the work in flight.
    def _store(self, key: str, value: dict[str, Any]) -> None:
        """Queue one validated JSON record (a prefix row, a pair's scores, a format)."""
        if self.cache is not None:
            self._submit(("json", key, value))

    def _submit(self, item: tuple[Any, ...]) -> None:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmcomp-openai-worker")
        self._pending.put(item)
        self._worker.submit(self._drain)

    def _drain(self) -> None:
        """Worker thread: build and validate the queued matrices, write everything, commit once."""
        written = 0
        records: list[tuple[str, Any]] = []
        try:
            while True:
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
                if item[0] == "json":
                    records.append((item[1], item[2]))
                    continue
                _, run, key, words, scores = item
                try:
                    m = prompts.scores_to_attention(scores, self.config.floor)
                    m = validate_attention(m, len(words), self.n_heads)
                except ValueError as e:
                    run.results[key] = str(e)
                    run.stats.scored -= 1
                    run.stats.failed += 1
                    continue
                run.results[key] = m
                if self.cache is not None:
                    self.cache.put(key, m)
                    written += 1
            if records:
                self.cache.put_many_json(records)  # type: ignore[union-attr]
            if written or records:
                self.cache.commit()  # type: ignore[union-attr]
        except Exception as e:
            self._worker_error = e
            raise

    async def _settle(self) -> None:
        """Wait until everything queued is built and committed; raise what the worker hit."""
        if self._worker is not None:
            await asyncio.wrap_future(self._worker.submit(self._drain))
        error, self._worker_error = self._worker_error, None
        if error is not None:
            raise error

    # sentence mode
    async def _sentence_job(self, run: _Run, key: str, words: list[str]) -> None:
        heads, c = list(self.config.heads), self.config
        msgs = prompts.build_messages("sentence", words, heads, c.score_max)
        try:
            scores = await self._ask(
                run, "sentence", msgs, lambda obj: prompts.parse_sentence_answer(obj, len(words), heads, c.score_max)
            )
        except _UnitFailed as e:
            self._finish(run, key, words, str(e))
            return
        self._finish(run, key, words, scores)

    # prefix mode
    async def _prefix_job(self, run: _Run, key: str, words: list[str]) -> None:
        tasks = [self._row_task(run, words[: i + 1]) for i in range(len(words))]
        rows = await asyncio.gather(*tasks, return_exceptions=True)
        for r in rows:
            if isinstance(r, BaseException) and not isinstance(r, _UnitFailed):
                raise r
        failed = [r for r in rows if isinstance(r, _UnitFailed)]
        if failed:
            self._finish(run, key, words, f"row failed: {failed[0]}")
            return
        t = len(words)
        scores = torch.zeros(self.n_heads, t, t)
        for i, row in enumerate(rows):
            scores[:, i, : i + 1] = torch.tensor(row, dtype=torch.float32)
        self._finish(run, key, words, scores)

    def _row_task(self, run: _Run, prefix: list[str]) -> asyncio.Task:
        """The scores of the prefix's last word: from the cache, a request already in flight, or a new one."""
        key = self._row_key(prefix)
        if key not in run.inflight:
            run.inflight[key] = asyncio.ensure_future(self._fetch_row(run, key, prefix))
        return run.inflight[key]

    async def _fetch_row(self, run: _Run, key: str, prefix: list[str]) -> list[list[int]]:
        heads, c, n = list(self.config.heads), self.config, len(prefix)

        def parse(obj: Any) -> list[list[int]]:
            return prompts.parse_vector_answer(obj, n, heads, c.score_max, f"one per word 0..{n - 1}")

        if key in run.rows:
            try:
                return parse(run.rows[key])
            except AnswerError:
                pass  # a damaged entry is a miss
        row = await self._ask(run, "prefix", prompts.build_messages("prefix", prefix, heads, c.score_max), parse)
        self._store(key, dict(zip(heads, row, strict=True)))
        return row

    # pair mode
    def _pairs_needed(
        self, sentences: list[list[str]], known: dict[tuple[str, str], list[int]]
    ) -> list[tuple[str, str]]:
        """Distinct (query, key) pairs the sentences need that are neither known nor cached, in order.
        Cached pairs are added to ``known``."""
        wanted = list(dict.fromkeys((q, k) for words in sentences for i, q in enumerate(words) for k in words[: i + 1]))
        wanted = [p for p in wanted if p not in known]
        keys = [self._pair_key(*p) for p in wanted]
        hits = self.cache.get_many_json(keys) if self.cache is not None else {}
        out = []
        for p, key in zip(wanted, keys, strict=True):
            if key in hits:
                try:
                    got = prompts.parse_vector_answer(hits[key], 1, list(self.config.heads), self.config.score_max, "")
                    known[p] = [h[0] for h in got]
                    continue
                except AnswerError:
                    pass  # a damaged entry is a miss
            out.append(p)
        return out

    async def _score_pairs(self, run: _Run, items: list[tuple[str, list[str]]]) -> None:
        heads, c = list(self.config.heads), self.config
        known: dict[tuple[str, str], list[int]] = {}
        needed = self._pairs_needed([w for _, w in items], known)
        waiting: dict[tuple[str, str], list[int]] = {}
        missing: list[int] = []
        for s, (_, words) in enumerate(items):
            pairs = {(q, k) for i, q in enumerate(words) for k in words[: i + 1]} - known.keys()
            missing.append(len(pairs))
            for p in pairs:
                waiting.setdefault(p, []).append(s)

        def complete(s: int) -> None:
            key, words = items[s]
            t = len(words)
            scores = torch.zeros(len(heads), t, t)
            for i, q in enumerate(words):
                for j, k in enumerate(words[: i + 1]):
                    scores[:, i, j] = torch.tensor(known[(q, k)], dtype=torch.float32)
            self._finish(run, key, words, scores)

        for s in range(len(items)):
            if missing[s] == 0:
                complete(s)

        async def chunk_job(chunk: list[tuple[str, str]]) -> None:
            words, idx = prompts.pair_words(chunk)
            msgs = prompts.build_messages("pair", words, heads, c.score_max, idx)
            try:
                got = await self._ask(
                    run,
                    "pair",
                    msgs,
                    lambda obj: prompts.parse_vector_answer(obj, len(chunk), heads, c.score_max, "one per pair"),
                )
            except _UnitFailed as e:
                for p in chunk:
                    for s in waiting[p]:
                        if items[s][0] not in run.results:
                            self._finish(run, items[s][0], items[s][1], f"pair batch failed: {e}")
                return
            for n, p in enumerate(chunk):
                known[p] = [got[h][n] for h in range(len(heads))]
                self._store(self._pair_key(*p), {h: [got[i][n]] for i, h in enumerate(heads)})
            for p in chunk:
                for s in waiting[p]:
                    missing[s] -= 1
                    if missing[s] == 0 and items[s][0] not in run.results:
                        complete(s)

        await self._pool([lambda ch=ch: chunk_job(ch) for ch in _chunks(needed, c.pair_batch)])

    # --- one question, with corrective retries ---------------------------------------------------
    async def _ask(self, run: _Run, task: str, messages: list[dict[str, str]], parse: Callable[[Any], Any]) -> Any:
        """Ask until ``parse`` accepts the answer: an invalid one goes back with its fault."""
        attempts = self.config.max_corrective_retries + 1
        msgs, error = messages, ""
        for _ in range(attempts):
            content, finish = await self._chat(run, task, msgs)
            try:
                if finish == "length":
                    raise AnswerError("the answer was cut off (finish_reason length); reply with compact JSON only")
                return parse(prompts.extract_json(content))
            except AnswerError as e:
                error = str(e)
                log.info("invalid answer (%s); asking again", error)
                msgs = messages + prompts.corrective_message(content or "", error)
        raise _UnitFailed(f"invalid answer after {attempts} attempt(s): {error}")

    async def _chat(self, run: _Run, task: str, messages: list[dict[str, str]]) -> tuple[str, str | None]:
        """One answer, falling back json_schema -> json_object -> text while the server refuses the format.

        Until a format is confirmed for this server, requests go one at a time (the probe), so a
        server without json_schema costs one rejected request, not one per request in flight.
        """
        if self._format is None:
            self._load_format()
        if self._format is None:
            assert self._probe is not None
            async with self._probe:
                if self._format is None:
                    return await self._probe_formats(run, task, messages)
        try:
            return await self._chat_with(run, task, messages, self._format)
        except _BadFormat as e:
            raise _UnitFailed(f"server rejected the request: {e}") from None

    async def _probe_formats(self, run: _Run, task: str, messages: list[dict[str, str]]) -> tuple[str, str | None]:
        """Try each format in turn; the first the server accepts is remembered for this host and model."""
        for fmt in FORMATS:
            try:
                answer = await self._chat_with(run, task, messages, fmt)
            except _BadFormat as e:
                if fmt == FORMATS[-1]:
                    raise _UnitFailed(f"server rejected the request: {e}") from None
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
            rec = self.cache.get_json(self._format_key())
            if isinstance(rec, dict) and rec.get("format") in FORMATS:
                known = rec["format"]
        self._format = known

    def _remember_format(self, fmt: str) -> None:
        self._format = fmt
        _KNOWN_FORMATS[(self.config.host, self.config.model)] = fmt
        self._store(self._format_key(), {"host": self.config.host, "model": self.config.model, "format": fmt})
        log.info("%s / %s: using response_format %s", self.config.host, self.config.model, fmt)

    async def _chat_with(
        self, run: _Run, task: str, messages: list[dict[str, str]], fmt: str
    ) -> tuple[str, str | None]:
        import openai
        from openai.types.chat import ChatCompletion

        c = self.config
        kwargs: dict[str, Any] = {"model": c.model, "messages": messages}
        rf = prompts.response_format(fmt, task, list(c.heads))  # type: ignore[arg-type]
        if rf is not None:
            kwargs["response_format"] = rf
        if c.temperature is not None:
            kwargs["temperature"] = c.temperature
        client = self._get_client()
        attempt = 0
        while True:
            retry_after: float | None = None
            async with run.sem:
                self._reserve(run)
                try:
                    # The SDK's documented raw route: same auth, timeouts and typed errors and a typed
                    # ChatCompletion back, without re-walking our plain-dict params through its TypedDict
                    # transform (about 1 ms of CPU per request, which caps throughput at high concurrency).
                    resp = await client.post("/chat/completions", body=kwargs, cast_to=ChatCompletion)
                except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                    reason, fatal = f"{e.status_code}: {_server_message(e, self._key())}", False
                    raise _BadFormat(reason) from None
                except openai.AuthenticationError:
                    reason, fatal = f"{c.host} rejected the API key (401); set a valid OPENAI_API_KEY", True
                except openai.PermissionDeniedError as e:
                    reason, fatal = (
                        f"{c.host} refused access (403: {_server_message(e, self._key())}); check the key's permissions for model {c.model!r}",
                        True,
                    )
                except openai.NotFoundError:
                    reason, fatal = (
                        f"model {c.model!r} or the chat completions path was not found at {safe_url(c.base_url)} (404); check the model name and base URL",
                        True,
                    )
                except openai.RateLimitError as e:
                    if _error_code(e) == "insufficient_quota":
                        reason, fatal = (
                            f"{c.host} reports insufficient_quota (429): the account has no credit left; add credit or use another key",
                            True,
                        )
                    else:
                        reason, fatal, retry_after = "rate limited (429)", False, _retry_after(e.response.headers)
                except openai.APITimeoutError:
                    reason, fatal = f"timed out after {c.timeout:g} s", False
                except openai.APIConnectionError:
                    reason, fatal = f"cannot reach {safe_url(c.base_url)} (connection error)", False
                except openai.APIStatusError as e:
                    if e.status_code in (408, 409) or e.status_code >= 500:
                        reason, fatal, retry_after = (
                            f"server error ({e.status_code})",
                            False,
                            _retry_after(e.response.headers),
                        )
                    else:
                        raise _UnitFailed(
                            f"request failed ({e.status_code}: {_server_message(e, self._key())})"
                        ) from None
                except (openai.APIResponseValidationError, ValueError) as e:
                    reason, fatal = f"unreadable response body ({type(e).__name__})", False
                else:
                    return self._read(run, resp)
            if fatal:
                self._abort(run, reason)
            attempt += 1
            if attempt > c.max_retries:
                if reason.startswith("cannot reach"):
                    self._abort(run, f"{reason} after {attempt} attempts; is the server running?")
                raise _UnitFailed(f"request failed after {attempt} attempt(s): {reason}")
            if retry_after is not None and retry_after > c.max_retry_after:
                raise _UnitFailed(f"{reason}; the server asked to wait {retry_after:g} s (more than max_retry_after)")
            delay = retry_after if retry_after is not None and retry_after >= 0 else None
            if delay is None:
                delay = min(c.backoff_base * 2 ** (attempt - 1), c.backoff_max) * (1 - 0.25 * random.random())
            log.info("%s; retry %d of %d in %.2f s", reason, attempt, c.max_retries, delay)
            await asyncio.sleep(delay)

    def _read(self, run: _Run, resp: Any) -> tuple[str, str | None]:
        """Count usage; return (content, finish_reason). A response without choices reads as empty."""
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        for s in (run.stats, self.usage):
            s.prompt_tokens += pt
            s.completion_tokens += ct
        choices = getattr(resp, "choices", None) or []
        if not choices or getattr(choices[0], "message", None) is None:
            return "", None
        return choices[0].message.content or "", choices[0].finish_reason

    def _reserve(self, run: _Run) -> None:
        """Count one request against the budget, or fail it: nothing is sent beyond a cap."""
        c, u = self.config, self.usage
        if c.max_requests is not None and u.requests >= c.max_requests:
            raise _UnitFailed(f"budget exhausted: max_requests={c.max_requests} reached")
        if c.max_tokens is not None and u.prompt_tokens + u.completion_tokens >= c.max_tokens:
            raise _UnitFailed(f"budget exhausted: max_tokens={c.max_tokens} reached")
        run.stats.requests += 1
        u.requests += 1

    def _abort(self, run: _Run, reason: str) -> None:
        """Stop the run (``_score_all`` commits what was scored before the exception reaches the caller)."""
        done = run.stats.scored
        raise ScoringAborted(
            f"scoring stopped: {reason} ({done} sentence(s) scored in this run are kept in the cache)",
            dataclasses.replace(run.stats),
        )

    def _key(self) -> str:
        return self.config.api_key.get() if self.config.api_key else ""

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import AsyncOpenAI

            key = self._key()
            if not key:
                if self.config.host == "api.openai.com":
                    raise OpenAIConfigError(
                        "no API key for api.openai.com: set OPENAI_API_KEY in the environment or .env, or pass api_key="
                    )
                key = NO_KEY
            # Retries are ours (max_retries=0 here), so they do not multiply and every attempt is counted.
            self._client = AsyncOpenAI(
                api_key=key, base_url=self.config.base_url, max_retries=0, timeout=self.config.timeout
            )
        return self._client


def _serve_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The private loop thread: network and parsing only (matrices are built on the worker)."""
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _error_code(e: Any) -> str | None:
    body = getattr(e, "body", None)
    code = getattr(e, "code", None) or (body.get("code") if isinstance(body, dict) else None)
    if code is None and isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
    return str(code) if code is not None else None


def _retry_after(headers: Any) -> float | None:
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


def _server_message(e: Any, key: str) -> str:
    """The server's error message, one line, at most 200 characters, with anything key-like removed."""
    body = getattr(e, "body", None)
    msg = body.get("message") if isinstance(body, dict) else None
    text = str(msg if msg else getattr(e, "message", "") or type(e).__name__)
    if key:
        text = text.replace(key, "[key]")
    text = _KEYLIKE.sub("[key]", text)
    return " ".join(text.split())[:200]
