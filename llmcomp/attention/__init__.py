"""Attention sources (baselines, local LLM, OpenAI-compatible, oracle) and their cache."""

from __future__ import annotations

import importlib
from typing import Any

from llmcomp.attention.base import (
    AttentionError,
    AttentionSource,
    ScoreResult,
    ScoreStats,
    normalize_scores,
    validate_attention,
)
from llmcomp.attention.cache import AttentionCache

#: kind -> "module:Class". Heavy sources are imported only when asked for.
SOURCES: dict[str, str] = {
    "uniform": "llmcomp.attention.baselines:UniformSource",
    "previous": "llmcomp.attention.baselines:PreviousSource",
    "gaussian": "llmcomp.attention.baselines:GaussianSource",
    "random": "llmcomp.attention.baselines:RandomSource",
    "learned": "llmcomp.attention.baselines:LearnedSource",
    "local": "llmcomp.attention.local_llm:LocalLLMSource",
    "openai": "llmcomp.attention.openai_source:OpenAISource",
    "oracle": "llmcomp.attention.oracle:OracleSource",
}
BASELINES = ("uniform", "previous", "gaussian", "random", "learned")


def source_class(kind: str) -> type[AttentionSource]:
    if kind not in SOURCES:
        raise AttentionError(f"unknown attention source {kind!r}; choose one of: {', '.join(SOURCES)}")
    module, name = SOURCES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def make_source(kind: str, **options: Any) -> AttentionSource:
    """Build a source by name, e.g. ``make_source("gaussian", sigma=1.5)``."""
    return source_class(kind)(**options)


def source_from_spec(spec: dict[str, Any], **overrides: Any) -> AttentionSource:
    """Rebuild a source from ``AttentionSource.spec()`` (as stored in a checkpoint)."""
    options = {k: v for k, v in spec.items() if k != "kind"}
    options.update(overrides)
    return make_source(spec["kind"], **options)


__all__ = [
    "BASELINES",
    "SOURCES",
    "AttentionCache",
    "AttentionError",
    "AttentionSource",
    "ScoreResult",
    "ScoreStats",
    "make_source",
    "normalize_scores",
    "source_class",
    "source_from_spec",
    "validate_attention",
]
