"""The threads behind the OpenAI source's synchronous API: a private event loop and the cache writer.

``LoopThread`` runs the source's coroutines on a loop of its own, so ``score_many`` works from any thread, with
or without a running loop, and lets any thread cancel the run in progress; ``pool`` runs jobs on it with a cap
on how many are in flight. ``CacheWriter`` turns integer scores into attention matrices and writes the cache on
one worker thread, in order, committing after each batch, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch

from llmcomp.attention import answers
from llmcomp.attention.base import validate_attention
from llmcomp.attention.cache import AttentionCache

if TYPE_CHECKING:
    from llmcomp.attention.openai_modes import Run


class RunCancelled(Exception):
    """The run was stopped by ``LoopThread.cancel``."""


class CallbackRaised(Exception):
    """Carries what ``progress`` raised (even KeyboardInterrupt) out of the loop thread to the caller."""

    def __init__(self, error: BaseException):
        super().__init__(repr(error))
        self.error = error


def _serve_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The private loop thread: network and parsing only (matrices are built on the writer's thread)."""
    asyncio.set_event_loop(loop)
    loop.run_forever()


async def pool(limit: int, jobs: list[Callable[[], Awaitable[None]]]) -> None:
    """Run jobs with at most ``limit`` at a time; the first abort cancels the rest."""
    it = iter(jobs)

    async def worker() -> None:
        for job in it:
            await job()

    tasks = [asyncio.create_task(worker()) for _ in range(min(limit, len(jobs)))]
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


class LoopThread:
    """A private event loop on a daemon thread, started on first use and stopped by ``close``."""

    def __init__(self, name: str = "llmcomp-openai"):
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._cancelled = threading.Event()  # set once by cancel(), from any thread; stays set
        self._work: asyncio.Future | None = None  # the cancellable run in progress (loop thread only)

    def cancel(self) -> None:
        """Cancel the run in progress (and every later one) from any thread; it ends with ``RunCancelled``."""
        self._cancelled.set()
        with self._lock:
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing runs
                loop.call_soon_threadsafe(self._cancel_work)

    def _cancel_work(self) -> None:
        if self._work is not None:
            self._work.cancel()

    async def cancellable(self, coro: Awaitable[Any]) -> Any:
        """Await ``coro`` as a task that ``cancel`` stops at once: ``RunCancelled`` when it did."""
        work = asyncio.ensure_future(coro)
        self._work = work
        if self._cancelled.is_set():
            work.cancel()
        try:
            return await work
        except asyncio.CancelledError:
            if work.cancelled() and self._cancelled.is_set():
                raise RunCancelled() from None
            raise  # the caller's own cancellation (Ctrl-C in score_many's thread)
        finally:
            self._work = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The private loop, once started (None before and after)."""
        return self._loop

    def run(self, coro: Awaitable[Any]) -> Any:
        """Run ``coro`` on the private loop and wait for it; works from any thread, with or without its own loop."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=_serve_loop, args=(self._loop,), name=self.name, daemon=True)
                self._thread.start()
        if threading.current_thread() is self._thread:
            raise RuntimeError("score_many cannot be called from its own progress callback")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        try:
            return future.result()
        except CallbackRaised as e:
            raise e.error from None
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the caller: stop the requests too
            raise

    def close(self, cleanup: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run ``cleanup()`` on the loop (if it ever started), then stop the loop and its thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None:
            return
        if cleanup is not None:
            asyncio.run_coroutine_threadsafe(cleanup(), loop).result(timeout=10)  # type: ignore[arg-type]
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        loop.close()


class CacheWriter:
    """Builds matrices from scores and does every cache write, on one worker thread, in order.

    Off the event loop: torch's small triangular ops can wake an OpenMP thread team, which on a busy machine
    takes milliseconds, and SQLite writes wait on sqlitedict's own thread. The worker commits after each batch,
    so a sentence is committed as soon as it is done and kill -9 loses only the work in flight.
    """

    def __init__(self, cache: AttentionCache | None, floor: float, n_heads: int):
        self.cache = cache
        self.floor = floor
        self.n_heads = n_heads
        self._worker: ThreadPoolExecutor | None = None
        self._error: Exception | None = None
        self._pending: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()

    def store(self, key: str, value: dict[str, Any]) -> None:
        """Queue one validated JSON record (a prefix row, a pair's scores, a format)."""
        if self.cache is not None:
            self._submit(("json", key, value))

    def matrix(self, run: Run, key: str, words: list[str], scores: torch.Tensor) -> None:
        """Queue one sentence's integer scores: its matrix lands in ``run.results`` (and the cache)."""
        self._submit(("matrix", run, key, words, scores))

    async def settle(self) -> None:
        """Wait until everything queued is built and committed; raise what the worker hit."""
        if self._worker is not None:
            await asyncio.wrap_future(self._worker.submit(self._drain))
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Finish what is queued and stop the worker (a later write starts a new one)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.submit(self._drain).result()
            worker.shutdown(wait=True)

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
                    m = answers.scores_to_attention(scores, self.floor)
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
            self._error = e
            raise
