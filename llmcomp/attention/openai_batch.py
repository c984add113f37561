"""The Batch API route of the OpenAI-compatible source: every request of a run in batch files, at half the price.

``BatchRoute.prefill`` runs before the live route on the source's own loop. It plans the requests the sentences
still need (``batch_units``), leaves out those already in an open batch of an earlier command (``batch_store``),
writes the rest as JSONL (``custom_id`` = the cache key), split to the Batch API's limits, uploads each file,
creates the batch and records it at once, then polls every open batch with progress until each ends or the wait
is over. An ended batch's output and error files are read without trusting them; each answer is checked as a live
one is and cached. What is left goes to the live route: a line that failed or answered invalidly is asked again
live (``BatchConfig.live_retry``); requests an expired, cancelled or failed batch never ran are reported, and the
next command submits them in a new batch. Batches are never cancelled by us: a stopped command leaves them running,
and the next one collects them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from llmcomp.attention.base import ScoreStats
from llmcomp.attention.batch_store import BatchRecord, BatchStore
from llmcomp.attention.batch_units import (
    ENDPOINT,
    Unit,
    messages_of,
    needs,
    plan_units,
    provides,
    read_jsonl,
    read_line,
    request_line,
    split_files,
    within_budget,
)
from llmcomp.attention.openai_client import ChatClient
from llmcomp.attention.openai_config import BatchConfig, safe_url
from llmcomp.attention.openai_errors import BadFormat, ScoringAborted, UnitFailed, classify, server_message
from llmcomp.attention.openai_modes import Run, Strategy
from llmcomp.attention.openai_runtime import CallbackRaised

log = logging.getLogger("llmcomp.attention.openai")

ENDED = ("completed", "expired", "cancelled", "failed")


class BatchRoute:
    """One run's use of the Batch API, for one source (its strategy, chat client and cache)."""

    def __init__(
        self,
        batch: BatchConfig,
        strategy: Strategy,
        chat: ChatClient,
        identity: str,
        notify: Callable[[str], None] | None = None,
    ):
        if strategy.cache is None or not hasattr(strategy.cache, "path"):
            raise ScoringAborted("--batch needs the attention cache (answers land there); drop --no-cache")
        self.batch, self.strategy, self.chat, self.identity = batch, strategy, chat, identity
        self.config = strategy.config
        self.endpoint = safe_url(self.config.base_url)
        say = notify or (lambda line: log.info("%s", line))
        self.notify = lambda line: say(chat.safe(line))  # ids and statuses are the server's words: one safe line
        self.failed: dict[str, str] = {}  # unit id (``provides`` terms) -> why its line gave no answer
        self.not_run: dict[str, str] = {}  # unit id -> why it never ran
        self.open: list[BatchRecord] = []

    # --- the whole route --------------------------------------------------------------------------
    async def route(self, run: Run, items: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
        """Batches first: finish every sentence they settle (scored from the cache, or failed with the reason it
        may not be asked live) and return the rest, for the live route."""
        blocked = await self.prefill(items, run.stats)
        strategy, cache, rest = self.strategy, self.strategy.cache, []
        for key, words in items:
            if key in blocked:
                strategy.finish(run, key, words, blocked[key])
            elif strategy.task == "sentence" and (m := cache.get(key, len(words), len(strategy.heads))) is not None:  # type: ignore[union-attr]
                run.results[key] = m
                run.stats.scored += 1
                if run.progress:
                    try:
                        run.progress(run.stats)
                    except BaseException as e:  # noqa: BLE001 - carried to the caller, as the live route does
                        raise CallbackRaised(e) from None
            else:
                rest.append((key, words))  # prefix and pair mode read their cached rows and pairs themselves
        return rest

    def plan(self, todo: dict[str, list[str]]) -> list[tuple[list[dict[str, str]], int]]:
        """What a run would still submit for ``todo`` (cache key -> words, not cached), as an estimate counts
        requests: (messages, scores per head), less the requests already in an open batch of this source."""
        store = BatchStore(self.strategy.cache.path)  # type: ignore[union-attr]
        try:
            waiting = {cid for rec in store.open_batches(self.endpoint, self.identity) for cid in rec.units}
        finally:
            store.close()
        units = [u for u in plan_units(self.strategy, todo) if u.custom_id not in waiting]
        return [(messages_of(self.strategy, u), len(u.what.get("words") or u.what.get("pairs"))) for u in units]

    async def prefill(self, items: list[tuple[str, list[str]]], stats: ScoreStats) -> dict[str, str]:
        """Score ``items`` (cache key, words) through batches; returns, by sentence key, why a sentence must not
        be asked live (its requests never ran, or failed with live retries off). The rest is cached or live."""
        self.stats = stats
        store = BatchStore(self.strategy.cache.path)  # type: ignore[union-attr]
        try:
            self.open = store.open_batches(self.endpoint, self.identity)
            waiting = {cid for rec in self.open for cid in rec.units}
            if self.open:
                self.notify(f"resuming {len(self.open)} batch(es) of an earlier run ({len(waiting)} requests)")
            units = [u for u in plan_units(self.strategy, dict(items)) if u.custom_id not in waiting]
            fmt = self._format()
            lines = [(u, request_line(self.strategy, u, fmt)) for u in units]  # built once, counted, split
            files, too_big = split_files(within_budget(self.strategy, lines, self.chat.usage), self.batch)
            for u in too_big:
                self._mark(self.failed, u, "request larger than a batch file may be")
            for part in files:
                self.open.append(await self._submit(store, part))
            await self._wait(store, stats)
        finally:
            store.close()
        blocked = {}
        for key, words in items:
            wanted = needs(self.strategy, key, words)
            why = next((self.not_run[u] for u in wanted if u in self.not_run), None)
            if why is None and not self.batch.live_retry:
                why = next((self.failed[u] for u in wanted if u in self.failed), None)
            if why is not None:
                blocked[key] = why
        return blocked

    def _format(self) -> str:
        """The response format this server is known to take (learnt live, or json_schema, the Batch API's)."""
        if self.chat.format is None:
            self.chat._load_format()
        return self.chat.format or "json_schema"

    # --- the server -------------------------------------------------------------------------------
    async def _call(self, what: str, make: Callable[[], Any], timeout: float) -> Any:
        """One Batch API call within ``timeout`` seconds, retried while it fails transiently; ``ScoringAborted``
        in one line (never the key) when it cannot succeed."""
        c, key = self.config, self.chat._key()
        for attempt in range(c.max_retries + 1):
            try:
                async with asyncio.timeout(timeout):
                    return await make()
            except TimeoutError:
                reason = f"{what} timed out after {timeout:g} s"
            except Exception as e:  # noqa: BLE001 - sorted below; nothing of the SDK's error is chained
                reason = self._reason(e, what, key)
            if attempt < c.max_retries:
                await asyncio.sleep(min(c.backoff_base * 2**attempt, c.backoff_max))
        raise self._stopped(reason)

    def _reason(self, e: Exception, what: str, key: str) -> str:
        """Why a Batch API call failed, when another attempt may help; raises ScoringAborted when none can."""
        import openai

        host = self.config.host
        if isinstance(e, openai.NotFoundError):
            stop = f"{host} has no Batch API ({what} answered 404); score without --batch"
        elif isinstance(e, openai.BadRequestError | openai.UnprocessableEntityError):
            stop = f"{host} refused to {what} ({e.status_code}: {server_message(e, key)})"
        else:
            try:
                verdict = classify(e, self.config, key)
            except (BadFormat, UnitFailed) as refused:
                verdict, stop = None, f"{host} refused to {what}: {refused}"
            else:
                if verdict is None:
                    raise e
                if not verdict.fatal:
                    return f"cannot {what}: {verdict.reason}"
                stop = verdict.reason
        raise self._stopped(stop)

    def _stopped(self, reason: str) -> ScoringAborted:
        """The one line that ends the route (the key removed), saying what was kept and what keeps running."""
        return self.chat.aborted(self.stats, f"batch route stopped: {reason}; {self._left_running()}")

    def _left_running(self) -> str:
        ids = [r.id for r in self.open]
        if not ids:
            return "no batch was left open"
        return f"batch(es) {', '.join(ids[:3])} keep running: run the same command again to collect them"

    async def _submit(self, store: BatchStore, part: list[tuple[Unit, bytes]]) -> BatchRecord:
        """Upload one input file, create its batch and record it before anything else can go wrong."""
        sdk, data = self.chat.files_sdk(), b"".join(line for _, line in part)
        uploaded = await self._call(
            "upload a batch file",
            lambda: sdk.files.create(file=("llmcomp-batch.jsonl", data, "application/jsonl"), purpose="batch"),
            self.batch.transfer_timeout,
        )
        created = await self._call(
            "create a batch",
            lambda: sdk.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={"made_by": "llmcomp", "model": self.config.model[:200]},
            ),
            self.config.timeout,
        )
        rec = BatchRecord(created.id, self.endpoint, self.identity, {u.custom_id: u.what for u, _ in part})
        rec.status = str(created.status)
        store.save(rec)
        self.notify(f"submitted batch {rec.id}: {len(part):,} requests, {len(data):,} bytes")
        return rec

    async def _wait(self, store: BatchStore, stats: ScoreStats) -> None:
        """Poll until every open batch has ended and been read, or the wait is over (they keep running then)."""
        deadline = time.monotonic() + self.batch.wait
        while True:
            for rec in list(self.open):
                batch = await self._call(
                    f"check batch {rec.id}", lambda r=rec: self._retrieve(r.id), self.config.timeout
                )
                counts = batch.request_counts
                seen = {"total": counts.total, "completed": counts.completed, "failed": counts.failed} if counts else {}
                if batch.status != rec.status or seen != rec.counts:
                    rec.status, rec.counts = str(batch.status), seen
                    store.save(rec)
                    done = (
                        f", {seen['completed']:,} of {seen['total']:,} done, {seen['failed']:,} failed" if seen else ""
                    )
                    self.notify(f"batch {rec.id}: {rec.status}{done}")
                if batch.status in ENDED:
                    await self._collect(rec, batch, stats)
                    rec.open = False
                    store.save(rec)
                    self.open.remove(rec)
                    self.notify(f"batch {rec.id} {rec.status}: {rec.outcome}")
            if not self.open:
                return
            if time.monotonic() >= deadline:
                raise self._stopped(f"the wait of {self.batch.wait:g} s is over with {len(self.open)} batch(es) open")
            await asyncio.sleep(min(self.batch.poll, max(0.0, deadline - time.monotonic())))

    def _retrieve(self, batch_id: str) -> Any:
        return self.chat.files_sdk().batches.retrieve(batch_id)

    # --- reading what came back -------------------------------------------------------------------
    async def _download(self, file_id: str) -> list[Any]:
        sdk = self.chat.files_sdk()
        body = await self._call(f"download {file_id}", lambda: sdk.files.content(file_id), self.batch.transfer_timeout)
        return read_jsonl(body.content)

    async def _collect(self, rec: BatchRecord, batch: Any, stats: ScoreStats) -> None:
        """Cache every valid answer of an ended batch; note why each other request gave none."""
        units = {cid: Unit(cid, what) for cid, what in rec.units.items()}
        answered: set[str] = set()
        kept = 0
        for file_id in (batch.output_file_id, batch.error_file_id):
            lines = await self._download(file_id) if file_id else []
            for line in lines:
                unit = units.get(line["custom_id"])
                if unit is None or unit.custom_id in answered:
                    continue
                answered.add(unit.custom_id)
                answer, why, ran = await asyncio.to_thread(read_line, self.strategy, unit, line)  # off the loop
                if answer is not None:
                    kept += 1
                    for s in (stats, self.chat.usage):
                        s.prompt_tokens += answer.prompt_tokens or 0  # type: ignore[union-attr]
                        s.completion_tokens += answer.completion_tokens or 0  # type: ignore[union-attr]
                elif not ran:
                    self._mark(self.not_run, unit, f"batch {rec.id} {why} before this request ran; run again")
                else:
                    self._mark(self.failed, unit, f"batch {rec.id}: {why}")
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        first = f": {self.chat.safe(str(errors[0].message), 200)}" if errors else ""
        for cid, unit in units.items():
            if cid not in answered:
                self._mark(self.not_run, unit, f"batch {rec.id} {batch.status}{first} before this request ran")
        self.strategy.cache.commit()  # type: ignore[union-attr]
        stats.batched += len(answered)
        rec.outcome = f"{kept:,} answers kept, {len(units) - kept:,} not"

    def _mark(self, table: dict[str, str], unit: Unit, why: str) -> None:
        for uid in provides(unit):
            table[uid] = self.chat.safe(why)
