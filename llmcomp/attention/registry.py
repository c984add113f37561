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
    "file": "llmcomp.attention.file_source:FileSource",
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
    "oracle": "Oracle (points at a task's deciding word)",
}
#: how the OpenAI-compatible source asks (``llmcomp.attention.openai_config`` validates against this)
MODES: tuple[str, ...] = ("sentence", "prefix", "pair")
#: how the OpenAI-compatible source's sentence mode is answered: the whole matrix, or each word's top_k words
ANSWERS: tuple[str, ...] = ("dense", "sparse")
#: the relation heads the OpenAI-compatible source has prompts for (other names are allowed)
RELATIONS: tuple[str, ...] = ("meaning", "syntax", "coreference", "relatedness")
#: options no person types, for every kind ("*") or for one kind: objects the application layer passes
#: (cache, fallback, a whole config), the API key (the key policy decides it: never a flag, a label or a
#: form field), a command's own mode (``dry_run``: ``llmcomp score --dry-run``; ``batch``: ``--batch``), and the learned source's
#: ``n_heads`` (always 0; accepted only so that its spec rebuilds it). Every other accepted option is
#: user-facing: the CLI, ``--sources`` labels and the web form all reach it (tests/test_source_options.py).
INTERNAL_OPTIONS: dict[str, frozenset[str]] = {
    "*": frozenset({"cache", "fallback", "config", "api_key", "dry_run"}),
    "openai": frozenset({"batch"}),  # a BatchConfig: the Batch API route of score and train
    "learned": frozenset({"n_heads"}),
    "file": frozenset({"n_heads"}),  # the file decides; accepted so that its spec rebuilds it
}


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


def _hints(obj: Any) -> dict[str, Any]:
    """Type hints, each resolved on its own: one that names a type imported only for type checkers
    (an internal option's, such as ``cache``) is left as text instead of failing them all."""
    import sys

    module = sys.modules[obj.__module__]
    out: dict[str, Any] = {}
    for name, hint in inspect.get_annotations(obj).items():
        try:
            out[name] = eval(hint, vars(module)) if isinstance(hint, str) else hint  # noqa: S307 (our own source)
        except NameError:
            out[name] = str
    return out


def user_options(kind: str) -> dict[str, Any]:
    """The options a person may set for ``kind`` (``accepted_options`` less ``INTERNAL_OPTIONS``), each
    with its type hint, read from the constructor or the config dataclass like ``accepted_options``."""
    import dataclasses
    import typing

    from llmcomp.attention.base import AttentionSource

    cls = source_class(kind)
    hints = _hints(AttentionSource.__init__)
    init_hints = _hints(cls.__init__)
    for t in typing.get_args(init_hints.get("config")) or (init_hints.get("config"),):
        if dataclasses.is_dataclass(t):
            hints |= _hints(t)
    hints |= init_hints
    hidden = INTERNAL_OPTIONS["*"] | INTERNAL_OPTIONS.get(kind, frozenset())
    return {name: hints.get(name, str) for name in sorted(accepted_options(kind) - hidden)}


def _is_union(hint: Any) -> bool:
    import types
    import typing

    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _describe_type(hint: Any) -> str:
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if hint in (int, float, bool):
        return {int: "an integer", float: "a number", bool: "true or false"}[hint]
    if hint is str or (_is_union(hint) and str in args):
        return "text"
    if args and not _is_union(hint):
        return "a comma-separated list"
    return " or ".join(_describe_type(a) for a in args) if args else "text"


def _parse_typed(hint: Any, text: str) -> Any:
    """``text`` as ``hint`` says; ValueError when it cannot be read so."""
    import collections.abc
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if text not in [str(a) for a in args]:
            raise ValueError(text)
        return text
    if hint is bool:
        if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("true", "yes", "1")
    if hint in (int, float):
        return hint(text)
    if hint is str or (_is_union(hint) and str in args):  # "last-2" and "0,1,2" both select layers
        return text
    if origin in (tuple, list, collections.abc.Sequence):
        return [_parse_typed(args[0] if args else str, part.strip()) for part in text.split(",") if part.strip()]
    for arg in args:  # a union without text: the first reading that works
        try:
            return _parse_typed(arg, text)
        except ValueError:
            pass
    raise ValueError(text)


def parse_option(kind: str, name: str, text: str) -> Any:
    """A user-facing option's value read from text (a flag, a ``--sources`` label, a web field), typed
    as the source declares it (``none`` for an optional one). AttentionError, one line, for an option
    ``kind`` does not take (naming those it does) or a value that cannot be read."""
    import functools
    import operator
    import typing

    from llmcomp.attention.base import AttentionError

    options = user_options(kind)
    if name not in options:
        raise AttentionError(
            f"option {name!r} does not apply to the {kind!r} attention source; its options: {', '.join(options)}"
        )
    hint, text = options[name], str(text).strip()
    if type(None) in typing.get_args(hint) and text.lower() == "none":
        return None
    inner = [a for a in typing.get_args(hint) if a is not type(None)]
    if _is_union(hint) and len(inner) < len(typing.get_args(hint)):
        hint = functools.reduce(operator.or_, inner)  # Optional[X] -> X
    try:
        return _parse_typed(hint, text)
    except ValueError:
        raise AttentionError(
            f"cannot read {name}={text!r} for the {kind!r} attention source; it takes {_describe_type(hint)}"
        ) from None


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
        sparse = f", sparse top-{spec.get('top_k', '?')}" if spec.get("answer") == "sparse" else ""
        return f"openai {spec.get('model', '?')} ({spec.get('mode', '?')} mode{sparse}; {rel})"
    if kind == "local" and spec.get("heads"):  # chosen heads, one supplied head each
        if spec["heads"] == "all":
            return f"local LLM (every head of layers {spec.get('layers', 'all')}, one each)"
        return f"local LLM (heads {spec['heads']}, one each)"
    if kind == "local":
        return f"local LLM (layers {spec.get('layers', 'all')}, {heads} head{plural})"
    if kind == "learned":
        return f"learned ({spec.get('learned_heads', '?')} heads)"
    if kind == "gaussian":
        return f"gaussian ({heads} head{plural}, sigma {spec.get('sigma', '?')})"
    if kind == "oracle" and (spec.get("shift") or spec.get("task")):
        task = f", task {spec['task']}" if spec.get("task") else ""
        shift = f", shift {spec['shift']}" if spec.get("shift") else ""
        return f"oracle ({heads} head{plural}{task}{shift})"
    return f"{kind} ({heads} head{plural})"
