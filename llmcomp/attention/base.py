"""The attention-source interface and the one validator every result passes through.

A source turns sentences (lists of words) into one tensor per sentence of shape (heads, T, T),
T = number of words. Row i is how much word i attends to words 0..i: zero above the diagonal,
non-negative, finite, each row summing to 1.

Sources score many sentences at once (``score_many``) so that network sources can run requests
concurrently and consult their cache in bulk. A sentence that could not be scored is reported as
failed with its reason; it is replaced by a fallback source's matrix only if the caller chose one.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from llmcomp.errors import LLMCompError

if TYPE_CHECKING:
    from llmcomp.attention.cache import AttentionCache

Words = Sequence[str]


class AttentionError(LLMCompError, ValueError):
    """A matrix that breaks the contract, or a source that cannot produce one."""


def _causal_mask(t: int) -> torch.Tensor:
    """(t, t) bool, True on and below the diagonal. Built by comparison, not ``tril``/``triu``: those
    wake an OpenMP thread team even for a 5x5 matrix, which costs milliseconds on a busy machine."""
    pos = torch.arange(t)
    return pos[:, None] >= pos[None, :]


def validate_attention(m: torch.Tensor, n_words: int, n_heads: int | None = None, atol: float = 1e-4) -> torch.Tensor:
    """Check the contract and return the matrix as float32; raise AttentionError naming the fault."""
    if not isinstance(m, torch.Tensor):
        raise AttentionError(f"attention must be a tensor, got {type(m).__name__}")
    if m.dim() != 3 or m.shape[1] != n_words or m.shape[2] != n_words:
        raise AttentionError(f"attention shape {tuple(m.shape)} is not (heads, {n_words}, {n_words})")
    if n_heads is not None and m.shape[0] != n_heads:
        raise AttentionError(f"attention has {m.shape[0]} heads, expected {n_heads}")
    m = m.detach().to(torch.float32)
    if not torch.isfinite(m).all():
        raise AttentionError("attention has NaN or infinite values")
    if (m < 0).any():
        raise AttentionError("attention has negative weights")
    if m.numel() and torch.where(_causal_mask(n_words), 0.0, m).abs().max() > 0:
        raise AttentionError("attention gives weight to later words (non-zero above the diagonal)")
    if m.numel():
        sums = m.sum(-1)
        if (sums - 1).abs().max() > atol:
            raise AttentionError(
                f"attention rows do not sum to 1 (worst row sums to {sums.flatten()[(sums - 1).abs().argmax()]:.4f})"
            )
    return m


def normalize_scores(scores: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """Non-negative scores (..., T, T) -> causal row-stochastic weights.

    Everything above the diagonal is dropped, ``floor`` is added to every allowed cell so that no
    row is all zero, and each row is divided by its sum. A row that is still all zero (floor 0 and
    no score) falls back to attending to itself.
    """
    t = scores.shape[-1]
    causal = _causal_mask(t)
    w = torch.where(causal, scores.clamp_min(0).to(torch.float32) + floor, torch.zeros((), dtype=torch.float32))
    sums = w.sum(-1, keepdim=True)
    eye = torch.eye(t, dtype=torch.float32).expand_as(w)
    return torch.where(sums > 0, w / sums.clamp_min(1e-30), eye)


@dataclass
class ScoreStats:
    """Counters for one ``score_many`` call (and, summed, for a whole run)."""

    sentences: int = 0
    scored: int = 0  # freshly computed and valid
    cached: int = 0  # served from the cache
    failed: int = 0
    fallbacks: int = 0  # failed sentences replaced by the fallback source
    requests: int = 0  # live requests (every HTTP attempt)
    batched: int = 0  # answers read from Batch API files (paid at the batch price)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: ScoreStats) -> None:
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)

    @property
    def done(self) -> int:
        return self.scored + self.cached + self.failed


ProgressFn = Callable[[ScoreStats], None]


@dataclass
class ScoreResult:
    """Per-sentence matrices (None where failed without fallback) and failure reasons by index."""

    matrices: list[torch.Tensor | None]
    failures: dict[int, str] = field(default_factory=dict)
    stats: ScoreStats = field(default_factory=ScoreStats)

    def require_all(self) -> list[torch.Tensor]:
        """Every matrix, or AttentionError naming the first unscored sentence and why."""
        missing = [i for i, m in enumerate(self.matrices) if m is None]
        if missing:
            i = missing[0]
            raise AttentionError(
                f"{len(missing)} sentence(s) could not be scored; first #{i}: {self.failures.get(i, 'unknown reason')}"
            )
        return self.matrices  # type: ignore[return-value]


class AttentionSource(ABC):
    """Base of every source. Subclasses implement ``_score_batch``; caching and checks live here."""

    kind: str = "abstract"
    #: True when row i depends only on words 0..i, so the rows of a prefix never change.
    prefix_causal: bool = True

    def __init__(self, n_heads: int = 1, cache: AttentionCache | None = None, fallback: AttentionSource | None = None):
        self.n_heads = n_heads
        self.cache = cache
        self.fallback = fallback

    # --- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def _score_batch(
        self, sentences: list[list[str]], stats: ScoreStats, progress: ProgressFn | None
    ) -> list[torch.Tensor | str]:
        """A matrix or a failure reason per sentence. Count requests/tokens into ``stats``."""

    def spec(self) -> dict[str, Any]:
        """Constructor options that rebuild this source (no secrets). Stored in checkpoints."""
        return {"kind": self.kind, "n_heads": self.n_heads}

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines this source's matrices; the cache key is built from it."""
        return self.spec()

    # --- shared machinery -------------------------------------------------------------------
    def cache_key(self, words: Words) -> str:
        blob = json.dumps({"source": self.fingerprint(), "words": list(words)}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def score_many(self, sentences: Sequence[Words], progress: ProgressFn | None = None) -> ScoreResult:
        """Score every sentence: cache first, then one batched call for the rest, each result validated."""
        sentences = [list(s) for s in sentences]
        stats = ScoreStats(sentences=len(sentences))
        matrices: list[torch.Tensor | None] = [None] * len(sentences)
        failures: dict[int, str] = {}
        todo: list[int] = []
        for i, words in enumerate(sentences):
            hit = self.cache.get(self.cache_key(words), len(words), self.n_heads) if self.cache is not None else None
            if hit is not None:
                matrices[i] = hit
                stats.cached += 1
            else:
                todo.append(i)
        if progress:
            progress(stats)
        if todo:
            results = self._score_batch([sentences[i] for i in todo], stats, progress)
            for i, res in zip(todo, results, strict=True):
                if isinstance(res, str):
                    failures[i] = res
                    stats.failed += 1
                    continue
                try:
                    m = validate_attention(res, len(sentences[i]), self.n_heads)
                except AttentionError as e:
                    failures[i] = str(e)
                    stats.failed += 1
                    continue
                matrices[i] = m
                stats.scored += 1
                if self.cache is not None:
                    self.cache.put(self.cache_key(sentences[i]), m)
            if self.cache is not None:
                self.cache.commit()
        if failures and self.fallback is not None:
            idx = sorted(failures)
            fb = self.fallback.score_many([sentences[i] for i in idx]).require_all()
            for i, m in zip(idx, fb, strict=True):
                if m.shape[0] != self.n_heads:
                    m = m.mean(0, keepdim=True).expand(self.n_heads, -1, -1).clone()
                matrices[i] = m
            stats.fallbacks += len(idx)
        if progress:
            progress(stats)
        return ScoreResult(matrices=matrices, failures=failures, stats=stats)

    def score(self, words: Words) -> torch.Tensor:
        """One sentence; raises AttentionError if it cannot be scored."""
        return self.score_many([words]).require_all()[0]

    def describe(self) -> str:
        return f"{self.kind} ({self.n_heads} head{'s' if self.n_heads != 1 else ''})"

    def head_labels(self) -> list[str]:
        """One name per supplied head, in order, for tables and pictures (the head atlas, the app):
        ``head 0``, ``head 1``, ... unless a source knows better (relation names, ``L21.H4``)."""
        return [f"head {i}" for i in range(self.n_heads)]

    def cancel(self) -> None:
        """Stop a running ``score_many`` from any thread (a stopped or abandoned job): it ends with
        ``ScoringAborted`` keeping what was scored. Safe to call at any time; sources that never wait on
        anything slow need not override this no-op."""
        return None

    def close(self) -> None:
        """Release clients, threads and files (the cache is closed by its owner)."""
        return None


class PerSentenceSource(AttentionSource):
    """A source computed locally one sentence at a time (baselines, oracle)."""

    @abstractmethod
    def matrix(self, words: list[str]) -> torch.Tensor:
        """(heads, T, T) for one sentence."""

    def _score_batch(self, sentences, stats, progress):
        out: list[torch.Tensor | str] = []
        for words in sentences:
            try:
                out.append(self.matrix(words))
            except AttentionError as e:
                out.append(str(e))
        return out
