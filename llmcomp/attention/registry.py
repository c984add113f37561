"""Attention sources by name: which kinds exist, and how to build one from options or a stored spec.

Importing this module is cheap (no torch): sources, and the base classes they need, are imported
when one is built. That keeps the web app's start-up and the CLI's ``--help`` fast.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmcomp.attention.base import AttentionSource

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
#: sources worth caching (slow or paid); baselines are cheaper to recompute than to look up
CACHED = ("local", "openai")


def source_class(kind: str) -> type[AttentionSource]:
    from llmcomp.attention.base import AttentionError

    if kind not in SOURCES:
        raise AttentionError(f"unknown attention source {kind!r}; choose one of: {', '.join(SOURCES)}")
    module, name = SOURCES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def make_source(kind: str, **options: Any) -> AttentionSource:
    """Build a source by name, e.g. ``make_source("gaussian", sigma=1.5)``."""
    return source_class(kind)(**options)


def build_source(
    kind: str, options: dict[str, Any] | None = None, cache_path: str | Path | None = None, fallback: str | None = None
) -> AttentionSource:
    """Build a source from loosely given options (CLI flags, UI fields): ``None`` values are ignored,
    options the source does not take are an error, and slow sources get the persistent cache."""
    from llmcomp.attention.base import AttentionError, AttentionSource
    from llmcomp.attention.cache import AttentionCache

    cls = source_class(kind)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = set(params) | (set(inspect.signature(AttentionSource.__init__).parameters) if takes_any else set())
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise AttentionError(f"option(s) {', '.join(unknown)} do not apply to the {kind!r} attention source")
    if cache_path is not None and kind in CACHED:
        options["cache"] = AttentionCache(cache_path)
    if fallback:
        options["fallback"] = make_source(fallback)
    return cls(**options)


def source_from_spec(spec: dict[str, Any], **overrides: Any) -> AttentionSource:
    """Rebuild a source from ``AttentionSource.spec()`` (as stored in a checkpoint)."""
    options = {k: v for k, v in spec.items() if k != "kind"}
    options.update(overrides)
    return make_source(spec["kind"], **options)


def describe_spec(spec: dict[str, Any]) -> str:
    """One line naming a source from its spec (specs never hold secrets): the one way runs, tables and
    the app describe a source they only know from a checkpoint or run record."""
    kind = str(spec.get("kind", "?"))
    heads = spec.get("n_heads")
    plural = "" if heads == 1 else "s"
    if kind == "openai":
        rel = ", ".join(spec.get("heads", []))
        return f"openai {spec.get('model', '?')} ({spec.get('mode', '?')} mode; {rel})"
    if kind == "local":
        return f"local LLM (layers {spec.get('layers', 'all')}, {heads} head{plural})"
    if kind == "learned":
        return f"learned ({spec.get('learned_heads', '?')} heads)"
    if kind == "gaussian":
        return f"gaussian ({heads} head{plural}, sigma {spec.get('sigma', '?')})"
    if kind == "oracle" and spec.get("shift"):
        return f"oracle ({heads} head{plural}, shift {spec['shift']})"
    return f"{kind} ({heads} head{plural})"
