"""The catalogue of attention sources: which kinds exist, what each is called, which options each
takes, and ``make_source(kind, **options)``, the plain constructor (the Python API).

A source's ``spec()`` is a valid ``make_source`` call: ``make_source(**spec)`` rebuilds it. Turning a
loose description (CLI flags, the web form, a checkpoint's spec) into a source, with a cache and a
key policy, is the application layer's job (``llmcomp.app.sources``).

Importing this module is cheap (no torch): sources, and the base classes they need, are imported
when one is built. That keeps the web app's start-up and the CLI's ``--help`` fast.
"""

from __future__ import annotations

import importlib
import inspect
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
#: sources that spend money per request: never called just to draw a picture
PAID = ("openai",)
#: what each kind is called where a person chooses one, in the order they are offered
LABELS: dict[str, str] = {
    "local": "Local LLM: SmolLM2-135M, offline (default)",
    "openai": "OpenAI-compatible API",
    "uniform": "Baseline: uniform",
    "previous": "Baseline: previous word",
    "gaussian": "Baseline: Gaussian (previous and current word)",
    "random": "Baseline: frozen random",
    "learned": "Baseline: learned (the model's own attention)",
    "oracle": "Oracle (binding task only)",
}
#: how the OpenAI-compatible source asks (``llmcomp.attention.openai_config`` validates against this)
MODES: tuple[str, ...] = ("sentence", "prefix", "pair")
#: the relation heads the OpenAI-compatible source has prompts for (other names are allowed)
RELATIONS: tuple[str, ...] = ("meaning", "syntax", "coreference", "relatedness")


def source_class(kind: str) -> type[AttentionSource]:
    from llmcomp.attention.base import AttentionError

    if kind not in SOURCES:
        raise AttentionError(f"unknown attention source {kind!r}; choose one of: {', '.join(SOURCES)}")
    module, name = SOURCES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def accepted_options(kind: str) -> frozenset[str]:
    """The keyword options ``make_source(kind, ...)`` takes, read from the constructor: its named
    parameters, and where it takes ``**options``, those of the base class it passes them to and the
    fields of its ``config`` dataclass (the local source takes its config's fields as options)."""
    import dataclasses
    import typing

    from llmcomp.attention.base import AttentionSource

    cls = source_class(kind)
    params = inspect.signature(cls.__init__).parameters
    names = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        names |= set(inspect.signature(AttentionSource.__init__).parameters) - {"self"}
        if "config" in params:
            hint = typing.get_type_hints(cls.__init__).get("config")
            for t in typing.get_args(hint) or (hint,):
                if dataclasses.is_dataclass(t):
                    names |= {f.name for f in dataclasses.fields(t)}
    return frozenset(names)


def make_source(kind: str, **options: Any) -> AttentionSource:
    """Build a source by name, e.g. ``make_source("gaussian", sigma=1.5)``; ``make_source(**spec)``
    rebuilds a source from its ``spec()`` (as stored in a checkpoint)."""
    return source_class(kind)(**options)


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
