"""Which attention matrix to show for a sentence: the one a scoring pass produced, or one computed
now when that is free. A paid source is never called just to draw a picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmcomp.app.sources import SourceSettings, build_source
from llmcomp.attention.registry import PAID
from llmcomp.errors import LLMCompError

if TYPE_CHECKING:
    import torch

    from llmcomp.app.keys import KeyPolicy
    from llmcomp.attention.base import ScoreResult, ScoreStats
    from llmcomp.attention.cache import AttentionCache


class NotScoredError(LLMCompError, ValueError):
    """No matrix can be shown for this sentence without a paid request, with what to do about it."""


@dataclass
class Scored:
    """One scoring pass over (the first part of) a corpus, with the settings that made it."""

    settings: SourceSettings
    description: str
    matrices: list[torch.Tensor | None]  # one per corpus sentence; None = not scored (yet) or failed
    failures: dict[int, str]
    stats: ScoreStats

    @classmethod
    def of(cls, settings: SourceSettings, description: str, result: ScoreResult, n_sentences: int) -> Scored:
        """A pass over the first ``len(result.matrices)`` of ``n_sentences`` sentences."""
        matrices: list[torch.Tensor | None] = [None] * n_sentences
        matrices[: len(result.matrices)] = result.matrices
        return cls(settings, description, matrices, dict(result.failures), result.stats)

    def first_scored(self) -> int:
        return next((i for i, m in enumerate(self.matrices) if m is not None), 0)


def matrix_for(
    settings: SourceSettings,
    scored: Scored | None,
    words: list[str],
    idx: int,
    keys: KeyPolicy | None = None,
    cache: AttentionCache | None = None,
) -> tuple[torch.Tensor, str]:
    """The (heads, T, T) matrix of sentence ``idx`` (``words``) and the source's description: from
    ``scored`` when it was made with these settings, else computed now for a free source."""
    if scored is not None and scored.settings == settings:
        if scored.matrices[idx] is not None:
            return scored.matrices[idx], scored.description
        if idx in scored.failures:
            raise NotScoredError(f"sentence {idx} could not be scored: {scored.failures[idx][:200]}")
    if settings.kind in PAID:
        raise NotScoredError(
            f"sentence {idx} has not been scored with the OpenAI-compatible source; score the corpus first "
            "(or more of its sentences, to include this one)"
        )
    source = build_source(settings.description(), keys=keys, cache=cache)
    try:
        return source.score(words), source.describe()
    finally:
        source.close()


def other_matrix(
    kind: str, words: list[str], cache: AttentionCache | None = None, keys: KeyPolicy | None = None
) -> tuple[torch.Tensor, str]:
    """A free source's matrix for ``words``, to compare with (gaussian with its two heads); ``keys``
    gives a public server's visitor their own view of the cache, as for every other source."""
    if kind in PAID:
        raise NotScoredError("compare with a source that costs nothing: a baseline, the oracle or the local LLM")
    settings = SourceSettings(kind=kind, n_heads=2 if kind == "gaussian" else 1)
    return matrix_for(settings, None, words, 0, keys=keys, cache=cache)


def head_labels(settings: SourceSettings, n: int) -> list[tuple[str, int]]:
    """(label, index) per head: the relation names of an OpenAI-compatible source, the local LLM's
    chosen heads as the source names them (``L21.H4``), else numbers."""
    if settings.kind == "openai" and len(settings.relations) == n:
        return [(f"{i} · {r}", i) for i, r in enumerate(settings.relations)]
    if settings.kind == "local" and settings.llm_heads.strip():
        from llmcomp.attention.local_heads import canonical_heads, chosen_pairs, head_label

        try:
            labels = [head_label(*pair) for pair in chosen_pairs(str(canonical_heads(settings.llm_heads)))]
        except LLMCompError:
            labels = []
        if len(labels) == n:
            return [(label, i) for i, label in enumerate(labels)]
    return [(f"head {i}", i) for i in range(max(n, 1))]
