"""The three scoring modes of the OpenAI source: which requests a sentence needs and how answers become scores.

``sentence`` asks once per sentence for the whole lower-triangular matrix; ``prefix`` asks once per row,
showing words 0..i only, and shares rows between sentences through the cache; ``pair`` asks for batches of
context-free (query, key) pairs, shared across the whole corpus. Each strategy lists its first-attempt requests
(``plan``, for estimates) and scores sentences (``score``), handing integer scores to the cache writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from llmcomp.attention import answers, prompts
from llmcomp.attention.answers import AnswerError
from llmcomp.attention.base import ProgressFn
from llmcomp.attention.cache import AttentionCache
from llmcomp.attention.openai_client import ChatClient, Traffic, UnitFailed, json_key
from llmcomp.attention.openai_config import OpenAIConfig
from llmcomp.attention.openai_runtime import CacheWriter, CallbackRaised, pool
from llmcomp.attention.prompts import Task

log = logging.getLogger("llmcomp.attention.openai")

#: Answers this long (characters) are read on a worker thread, so that other requests' deadlines keep time.
BIG_ANSWER = 32_768
#: A request as an estimate sees it: its messages and how many scores per head the answer holds.
Planned = tuple[list[dict[str, str]], int]


@dataclass
class Run(Traffic):
    """The state of one ``score_many`` call, on the loop thread."""

    progress: ProgressFn | None = None
    results: dict[str, torch.Tensor | str] = field(default_factory=dict)
    inflight: dict[str, asyncio.Task] = field(default_factory=dict)
    rows: dict[str, Any] = field(default_factory=dict)  # prefix rows found in the cache, by key


def row_key(identity: dict[str, Any], prefix: list[str]) -> str:
    """Cache key of the last word's row of a prefix, under a source's score identity."""
    return json_key("row", {"source": identity, "prefix": prefix})


def pair_key(identity: dict[str, Any], query: str, key: str) -> str:
    """Cache key of one (query, key) pair's scores, under a source's score identity."""
    return json_key("pair", {"source": identity, "pair": [query, key]})


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Strategy:
    """One mode: the requests it needs, the answers it accepts, and how they become (heads, T, T) scores."""

    task: ClassVar[Task]

    def __init__(
        self,
        config: OpenAIConfig,
        identity: dict[str, Any],
        cache: AttentionCache | None,
        chat: ChatClient,
        writer: CacheWriter,
    ):
        self.config, self.identity, self.cache, self.chat, self.writer = config, identity, cache, chat, writer
        self.heads = list(config.heads)

    def messages(self, words: list[str], pairs: list[tuple[int, int]] | None = None) -> list[dict[str, str]]:
        c = self.config
        return prompts.build_messages(self.task, words, self.heads, c.score_max, pairs, c.answer, c.top_k)

    def plan(self, todo: list[list[str]]) -> list[Planned]:
        """The first-attempt requests that scoring ``todo`` (sentences not cached) would send."""
        raise NotImplementedError

    async def score(self, run: Run, items: list[tuple[str, list[str]]]) -> None:
        """Score every (cache key, words) item; each ends in ``run.results`` through ``finish``."""
        raise NotImplementedError

    async def ask(self, run: Run, messages: list[dict[str, str]], parse: Callable[[Any], Any]) -> Any:
        """Ask until ``parse`` accepts the answer: an invalid one goes back with its fault."""
        attempts = self.config.max_corrective_retries + 1
        msgs, error = messages, ""
        for _ in range(attempts):
            content, finish = await self.chat.chat(run, self.task, msgs)
            try:
                if finish == "length":
                    raise AnswerError("the answer was cut off (finish_reason length); reply with compact JSON only")
                if len(content) < BIG_ANSWER:
                    return parse(answers.extract_json(content))
                return parse(await asyncio.to_thread(answers.extract_json, content))  # keep the loop's deadlines
            except AnswerError as e:
                error = str(e)
                log.info("invalid answer (%s); asking again", self.chat.safe(error))
                msgs = messages + prompts.corrective_message(content or "", error)
        raise UnitFailed(f"invalid answer after {attempts} attempt(s): {error}")

    def finish(self, run: Run, key: str, words: list[str], scores: torch.Tensor | str) -> None:
        """Record one sentence: its integer scores (heads, T, T), or why it failed (never cached; a reason
        may quote a server, so it loses the key and becomes one safe line here)."""
        if isinstance(scores, str):
            scores = self.chat.safe(scores)
            run.results[key] = scores
            run.stats.failed += 1
            log.info("sentence failed: %s", scores)
        else:
            run.stats.scored += 1
            self.writer.matrix(run, key, words, scores)
        if run.progress:
            try:
                run.progress(run.stats)
            except BaseException as e:  # noqa: BLE001 - a KeyboardInterrupt here would kill the loop thread
                raise CallbackRaised(e) from None


class SentenceMode(Strategy):
    """One request per sentence: the whole matrix, every head (the LLM sees later words)."""

    task = "sentence"

    def plan(self, todo: list[list[str]]) -> list[Planned]:
        return [(self.messages(words), len(words)) for words in todo]

    async def score(self, run: Run, items: list[tuple[str, list[str]]]) -> None:
        await pool(self.config.max_concurrency, [lambda k=k, w=w: self._one(run, k, w) for k, w in items])

    async def _one(self, run: Run, key: str, words: list[str]) -> None:
        heads, score_max, top_k = self.heads, self.config.score_max, self.config.top_k

        def parse(obj: Any) -> torch.Tensor:
            if self.config.answer == "sparse":  # each word's top_k words; the rest stay at the floor
                return answers.parse_sparse_answer(obj, len(words), heads, score_max, top_k)
            return answers.parse_sentence_answer(obj, len(words), heads, score_max)

        try:
            scores = await self.ask(run, self.messages(words), parse)
        except UnitFailed as e:
            self.finish(run, key, words, str(e))
            return
        self.finish(run, key, words, scores)


class PrefixMode(Strategy):
    """One request per row, showing words 0..i only; rows are cached by prefix and shared between sentences."""

    task = "prefix"

    def row_key(self, prefix: list[str]) -> str:
        return row_key(self.identity, prefix)

    def plan(self, todo: list[list[str]]) -> list[Planned]:
        rows = {self.row_key(w[: i + 1]): w[: i + 1] for w in todo for i in range(len(w))}
        cached_rows = self.cache.get_many_json(rows) if self.cache is not None else {}
        return [(self.messages(prefix), len(prefix)) for key, prefix in rows.items() if key not in cached_rows]

    async def score(self, run: Run, items: list[tuple[str, list[str]]]) -> None:
        if self.cache is not None:  # one bulk lookup, not one per row
            run.rows = self.cache.get_many_json(self.row_key(w[: i + 1]) for _, w in items for i in range(len(w)))
        await pool(self.config.max_concurrency, [lambda k=k, w=w: self._one(run, k, w) for k, w in items])

    async def _one(self, run: Run, key: str, words: list[str]) -> None:
        rows = await asyncio.gather(
            *[self._row(run, words[: i + 1]) for i in range(len(words))], return_exceptions=True
        )
        for r in rows:
            if isinstance(r, BaseException) and not isinstance(r, UnitFailed):
                raise r
        failed = [r for r in rows if isinstance(r, UnitFailed)]
        if failed:
            self.finish(run, key, words, f"row failed: {failed[0]}")
            return
        t = len(words)
        scores = torch.zeros(len(self.heads), t, t)
        for i, row in enumerate(rows):
            scores[:, i, : i + 1] = torch.tensor(row, dtype=torch.float32)
        self.finish(run, key, words, scores)

    def _row(self, run: Run, prefix: list[str]) -> asyncio.Task:
        """The scores of the prefix's last word: from the cache, a request already in flight, or a new one."""
        key = self.row_key(prefix)
        if key not in run.inflight:
            run.inflight[key] = asyncio.ensure_future(self._fetch_row(run, key, prefix))
        return run.inflight[key]

    async def _fetch_row(self, run: Run, key: str, prefix: list[str]) -> list[list[int]]:
        heads, n = self.heads, len(prefix)

        def parse(obj: Any) -> list[list[int]]:
            return answers.parse_vector_answer(obj, n, heads, self.config.score_max, f"one per word 0..{n - 1}")

        if key in run.rows:
            try:
                return parse(run.rows[key])
            except AnswerError:
                pass  # a damaged entry is a miss
        row = await self.ask(run, self.messages(prefix), parse)
        self.writer.store(key, dict(zip(heads, row, strict=True)))
        return row


class PairMode(Strategy):
    """Context-free (query, key) pairs, ``pair_batch`` per request, with one pair cache for the whole corpus."""

    task = "pair"

    def pair_key(self, query: str, key: str) -> str:
        return pair_key(self.identity, query, key)

    def plan(self, todo: list[list[str]]) -> list[Planned]:
        out = []
        for chunk in chunks(self.pairs_needed(todo, {}), self.config.pair_batch):
            words, idx = prompts.pair_words(chunk)
            out.append((self.messages(words, idx), len(chunk)))
        return out

    def pairs_needed(
        self, sentences: list[list[str]], known: dict[tuple[str, str], list[int]]
    ) -> list[tuple[str, str]]:
        """Distinct (query, key) pairs the sentences need that are neither known nor cached, in order.
        Cached pairs are added to ``known``."""
        wanted = list(dict.fromkeys((q, k) for words in sentences for i, q in enumerate(words) for k in words[: i + 1]))
        wanted = [p for p in wanted if p not in known]
        keys = [self.pair_key(*p) for p in wanted]
        hits = self.cache.get_many_json(keys) if self.cache is not None else {}
        out = []
        for p, key in zip(wanted, keys, strict=True):
            if key in hits:
                try:
                    got = answers.parse_vector_answer(hits[key], 1, self.heads, self.config.score_max, "")
                    known[p] = [h[0] for h in got]
                    continue
                except AnswerError:
                    pass  # a damaged entry is a miss
            out.append(p)
        return out

    async def score(self, run: Run, items: list[tuple[str, list[str]]]) -> None:
        heads, score_max = self.heads, self.config.score_max
        known: dict[tuple[str, str], list[int]] = {}
        needed = self.pairs_needed([w for _, w in items], known)
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
            self.finish(run, key, words, scores)

        for s in range(len(items)):
            if missing[s] == 0:
                complete(s)

        async def chunk_job(chunk: list[tuple[str, str]]) -> None:
            words, idx = prompts.pair_words(chunk)
            try:
                got = await self.ask(
                    run,
                    self.messages(words, idx),
                    lambda obj: answers.parse_vector_answer(obj, len(chunk), heads, score_max, "one per pair"),
                )
            except UnitFailed as e:
                for p in chunk:
                    for s in waiting[p]:
                        if items[s][0] not in run.results:
                            self.finish(run, items[s][0], items[s][1], f"pair batch failed: {e}")
                return
            for n, p in enumerate(chunk):
                known[p] = [got[h][n] for h in range(len(heads))]
                self.writer.store(self.pair_key(*p), {h: [got[i][n]] for i, h in enumerate(heads)})
            for p in chunk:
                for s in waiting[p]:
                    missing[s] -= 1
                    if missing[s] == 0 and items[s][0] not in run.results:
                        complete(s)

        await pool(
            self.config.max_concurrency, [lambda ch=ch: chunk_job(ch) for ch in chunks(needed, self.config.pair_batch)]
        )


STRATEGIES: dict[str, type[Strategy]] = {"sentence": SentenceMode, "prefix": PrefixMode, "pair": PairMode}
