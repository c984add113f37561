"""Scoring a corpus's attention the one way: estimate, check the budget, score, charge.

The web app and the command line both call this: ``start_scoring`` runs the pass as a background
``ScoringJob`` (snapshots with live counts, stop), ``score`` runs it in the caller's thread, and
``check_budget`` is the estimate-and-reserve step alone, for work that scores as part of something
bigger (a training run). Only a source that spends the server owner's key (``KeyPolicy``) is held
to the budget: it reserves before it spends and is charged after; any other source is free to
score, whatever its own key costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmcomp.app.budget import BudgetError
from llmcomp.app.cache_view import CacheView
from llmcomp.app.jobs import EXPECTED_ERRORS, Job, stats_dict
from llmcomp.attention.prices import Cost, cost
from llmcomp.attention.registry import PAID

if TYPE_CHECKING:
    from llmcomp.app.keys import KeyPolicy
    from llmcomp.attention.base import AttentionSource, ProgressFn, ScoreResult

Words = Sequence[str]


@dataclass(frozen=True)
class CostEstimate:
    """What scoring some sentences with a source would cost, before anything is sent."""

    kind: str
    sentences: int
    cached: int | None  # sentences already in the cache; None where the source keeps no cache
    requests: int = 0  # first-attempt requests (paid sources)
    tokens: int = 0  # approximate prompt + completion tokens (paid sources)
    paid: bool = False
    owner_key: bool = False  # the server owner's key would pay, so the budget applies
    detail: str = ""  # the source's own estimate, one line (paid sources)
    allowance: str = ""  # what the owner's key still allows (owner_key only)
    cost: Cost | None = None  # the tokens in dollars (paid sources; ``cost.dollars`` None: no price known)

    @property
    def to_score(self) -> int:
        return self.sentences - (self.cached or 0)


HIDDEN_NOTE = "cache hits are not shown on a public server, so this counts every sentence"


def _hides_cache(source: AttentionSource, keys: KeyPolicy | None) -> bool:
    """Whether an estimate must ignore the source's cache: on a public server, unless the cache is this
    visitor's own view of it (``build_source`` gives one), a hit would tell what someone else scored."""
    return keys is not None and keys.hide_cache and source.cache is not None and not isinstance(source.cache, CacheView)


@contextmanager
def _cache_hidden(source: AttentionSource, hide: bool) -> Iterator[None]:
    """Estimate as if the cache were empty: what it holds was scored by whoever came before."""
    cache = source.cache
    if hide:
        source.cache = None
    try:
        yield
    finally:
        source.cache = cache


@dataclass(frozen=True)
class Prices:
    """Dollars per 1M prompt / completion tokens that replace the price table's (None: the table's),
    and the most a run may cost (``--max-dollars``; None: no limit)."""

    input: float | None = None
    output: float | None = None
    max_dollars: float | None = None

    @classmethod
    def from_env(cls, input: float | None = None, output: float | None = None, max_dollars: float | None = None):
        """These flags over ``LLMCOMP_PRICE_INPUT`` / ``LLMCOMP_PRICE_OUTPUT`` (``llmcomp.settings``)."""
        from llmcomp import settings

        env_in, env_out = settings.price_override()
        return cls(env_in if input is None else input, env_out if output is None else output, max_dollars)


def dollars_of(source: AttentionSource, prompt_tokens: int, completion_tokens: int, prices: Prices | None) -> Cost:
    """What these tokens cost at the source's model's price (the overrides first)."""
    p = prices if prices is not None else Prices.from_env()
    model = str(getattr(getattr(source, "config", None), "model", "") or "")
    batch = getattr(source, "batch", None) is not None  # the Batch API route costs half
    return cost(model, prompt_tokens, completion_tokens, p.input, p.output, batch=batch)


def check_dollars(est: CostEstimate, max_dollars: float | None) -> None:
    """BudgetError (one line) when the estimate may cost more than ``max_dollars``, or has no price."""
    if max_dollars is None or est.cost is None:
        return
    if est.cost.dollars is None:
        raise BudgetError(f"--max-dollars {max_dollars:g} cannot be checked: {est.cost.basis}; nothing was sent")
    if est.cost.dollars > max_dollars:
        raise BudgetError(f"this run would cost {est.cost}, more than --max-dollars {max_dollars:g}; nothing was sent")


def estimate(
    source: AttentionSource, sentences: Sequence[Words], keys: KeyPolicy | None = None, prices: Prices | None = None
) -> CostEstimate:
    """The cost of scoring ``sentences`` with ``source``: requests and tokens for a paid source
    (after cache hits), cache hits for a cached one, nothing for one computed on the spot.

    On a public server (``keys.hide_cache``) the hits counted are those in the visitor's own view of the
    cache (what they scored themselves); a source given the shared cache instead has it ignored, since a
    hit there could tell this visitor that someone else scored that sentence: every sentence is counted
    and the estimate says so."""
    owner = keys is not None and keys.uses_owner_key(source)
    hide = _hides_cache(source, keys)
    allowance = keys.describe() if owner and keys is not None else ""
    if hasattr(source, "estimate"):
        with _cache_hidden(source, hide):
            est = source.estimate(sentences)
        tokens = est.prompt_tokens + est.completion_tokens
        money = dollars_of(source, est.prompt_tokens, est.completion_tokens, prices)
        detail = f"{est}; {money}" + (f"; {HIDDEN_NOTE}" if hide else "")
        return CostEstimate(source.kind, est.sentences, None if hide else est.cached, est.requests, tokens,
                            source.kind in PAID, owner, detail, allowance, money)  # fmt: skip
    cached = None
    if source.cache is not None and not hide:
        cached = sum(1 for words in sentences if source.cache_key(list(words)) in source.cache)
    detail = HIDDEN_NOTE if hide else ""
    return CostEstimate(source.kind, len(sentences), cached, paid=source.kind in PAID, owner_key=owner, detail=detail)


def check_budget(
    source: AttentionSource, sentences: Sequence[Words], keys: KeyPolicy | None = None, prices: Prices | None = None
) -> CostEstimate:
    """Estimate, refuse what costs more than ``prices.max_dollars``, then reserve what the owner's key
    may spend on it (BudgetError when it would cross a cap, before any request); returns the estimate.
    ``keys.charge(source)`` settles the reservation when the work ends (a source dropped without it
    gives the reservation back when collected)."""
    est = estimate(source, sentences, keys, prices)
    check_dollars(est, prices.max_dollars if prices is not None else None)
    if keys is not None:
        try:
            keys.reserve(source, est.requests, est.tokens)
        except BudgetError as e:
            raise BudgetError(f"{e} ({est.cost})" if est.cost is not None else str(e)) from None
    return est


def score(
    source: AttentionSource,
    sentences: Sequence[Words],
    keys: KeyPolicy | None = None,
    progress: ProgressFn | None = None,
    prices: Prices | None = None,
) -> ScoreResult:
    """Check the budget (and ``prices.max_dollars``), score every sentence in this thread, charge what
    the owner's key spent."""
    check_budget(source, sentences, keys, prices)
    try:
        return source.score_many(sentences, progress=progress)
    finally:
        if keys is not None:
            keys.charge(source)


class ScoringJob(Job):
    """One ``score_many`` pass in a worker thread. ``result`` holds the ScoreResult once finished;
    the source is charged (owner's key) and, with ``close=True``, closed when the pass ends."""

    kind = "scoring"

    def __init__(
        self,
        source: AttentionSource,
        sentences: Sequence[Words],
        keys: KeyPolicy | None = None,
        close: bool = True,
        label: str = "",
        owner: str | None = None,
        on_finish: Callable[[ScoringJob], None] | None = None,
    ):
        super().__init__(owner, on_finish, label=label, scoring={"done": 0, "sentences": len(sentences)})
        self.source, self.sentences, self.keys, self.close = source, [list(s) for s in sentences], keys, close
        self.result: ScoreResult | None = None

    def _run(self) -> dict[str, Any]:
        try:
            self.result = self.source.score_many(self.sentences, progress=self.on_scoring)
        except EXPECTED_ERRORS as e:
            stats = getattr(e, "stats", None)  # an aborted run says how far it got
            if stats is not None:
                self._update(scoring=stats_dict(stats))
            raise
        self._update(scoring=stats_dict(self.result.stats))
        return {"status": "finished"}

    def _finally(self) -> None:
        try:
            if self.keys is not None:
                self.keys.charge(self.source)
        finally:
            if self.close:
                self.source.close()


def generation_prefixes(prompt: str, max_words: int) -> list[list[str]]:
    """Every prefix a generation of ``max_words`` words after ``prompt`` may score (the generated words
    stood in for by the prompt's longest): what a budget reserves for before generating."""
    from llmcomp.text.tokenizer import tokenize

    words = tokenize(prompt) or ["the"]
    filler = words + [max(words, key=len)] * max(max_words, 0)
    return [filler[:k] for k in range(1, len(filler) + 1)]


def start_scoring(
    source: AttentionSource,
    sentences: Sequence[Words],
    keys: KeyPolicy | None = None,
    *,
    close: bool = True,
    label: str = "",
    owner: str | None = None,
) -> ScoringJob:
    """Check the budget, then score in the background; raises (and closes the source, with
    ``close=True``) when the budget refuses, before any request is sent."""
    try:
        check_budget(source, sentences, keys)
    except BaseException:
        if close:
            source.close()
        raise
    job = ScoringJob(source, sentences, keys, close=close, label=label, owner=owner)
    job.start("scoring")
    return job
