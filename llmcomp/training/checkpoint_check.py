"""Every field of a checkpoint checked before it is used: a crafted or damaged ``checkpoint.json`` is one line.

A checkpoint may come from anyone (a download, a shared run folder), and ``generate`` rebuilds its attention
source from the ``source_spec`` it holds. So the step must be a whole number of at least 0, the configs and
fingerprints JSON objects, and the spec must name a known source with options that source takes, of the
types its constructor's defaults have, within bounds (no secret, cache or object among them). The model
config validates itself (``GPTConfig``); its sizes are held to the weights file before anything is built.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmcomp.model.config import GPTConfig

#: options a spec never holds: secrets and live objects are given when a source is built, not stored
NOT_IN_SPEC = frozenset({"api_key", "cache", "fallback", "config"})
#: upper bounds of options that size an allocation (the frozen random source holds heads x max_len^2 floats)
OPTION_MAX = {"max_len": 4096, "learned_heads": 1024, "n_heads": 1024}
MAX_TEXT, MAX_LIST = 1000, 64


def whole(value: Any, low: int = 0) -> bool:
    """A JSON whole number (not a bool, not 7.0) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_meta(meta: Any) -> str | None:
    """Why ``checkpoint.json``'s fields (other than the model config and format) cannot be used, or None."""
    if not isinstance(meta, dict):
        return "checkpoint.json is not a JSON object"
    if not whole(meta.get("step")):
        return f"step must be a whole number of at least 0, got {meta.get('step')!r:.40}"
    for name in ("model_config", "train_config", "source_spec", "source_fingerprint"):
        if not isinstance(meta.get(name), dict):
            return f"{name} must be a JSON object"
    return check_spec(meta["source_spec"])


def check_spec(spec: dict[str, Any]) -> str | None:
    """Why a stored source spec cannot rebuild a source, or None."""
    from llmcomp.attention.registry import SOURCES, accepted_options

    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in SOURCES:
        return f"source_spec names no known attention source (kind {kind!r:.40})"
    allowed = accepted_options(kind) - NOT_IN_SPEC
    defaults = _defaults(kind)
    for name, value in spec.items():
        if name == "kind":
            continue
        if name not in allowed:
            return f"source_spec has an option {name!r:.40} that the {kind} source does not take"
        why = _check_value(value, defaults.get(name), OPTION_MAX.get(name))
        if why:
            return f"source_spec option {name} {why}"
    return None


def _check_value(value: Any, default: Any, most: int | None) -> str | None:
    """Why ``value`` cannot stand for an option whose default is ``default``, or None."""
    if value is None or isinstance(value, bool):
        ok = value is None or default is None or isinstance(default, bool)
        return None if ok else f"must be like {default!r}, got {value!r}"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int):
            return f"must be a whole number, got {value!r}"
        if not isinstance(default, int | float | type(None)) or isinstance(default, bool):
            return f"must be like {default!r}, got {value!r}"
        if most is not None and not 0 <= value <= most:
            return f"must be between 0 and {most}, got {value!r}"
        return None
    if isinstance(value, str):
        if not isinstance(default, str | type(None)):
            return f"must be like {default!r}, got a string"
        return None if len(value) <= MAX_TEXT else f"is longer than {MAX_TEXT} characters"
    if isinstance(value, list):  # heads by name, layers by number (a list form of the string "3,7,11")
        ok = len(value) <= MAX_LIST and all(
            (isinstance(v, str) and len(v) <= MAX_TEXT) or (whole(v, -1_000_000) and v <= 1_000_000) for v in value
        )
        return None if ok else f"must be a list of at most {MAX_LIST} names or numbers"
    return f"must be a number, a name or a list of names, got {type(value).__name__}"


def _defaults(kind: str) -> dict[str, Any]:
    """Each option's default, from the constructors (base class first) and the source's config dataclass."""
    from llmcomp.attention.base import AttentionSource
    from llmcomp.attention.registry import source_class

    cls = source_class(kind)
    out: dict[str, Any] = {}
    for klass in (AttentionSource, cls):
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.default is not p.empty:
                out[name] = p.default
    try:
        hint = typing.get_type_hints(cls.__init__).get("config") if "config" in out else None
    except (NameError, TypeError):  # an annotation that names a type only imported for type checkers
        hint = None
    for t in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(t):
            for f in dataclasses.fields(t):
                if f.default is not dataclasses.MISSING:
                    out[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    out[f.name] = f.default_factory()
    return out


def weights_asked(cfg: GPTConfig) -> dict[str, int]:
    """Weights a model of ``cfg`` stores for each size in its config: none may exceed the file's, so a crafted
    size (block_size 10**12 would ask for 256 TB) is refused before a model is built."""
    e = cfg.n_embd
    # n_layer: each layer stores at least one e x e projection
    asks = {"vocab_size": cfg.vocab_size * e, "block_size": cfg.block_size * e, "n_embd": e * e,
            "heads": cfg.n_head * e, "n_layer": cfg.n_layer * e * e}  # fmt: skip
    if cfg.mix_heads:  # each layer's (mix_heads, n_external_heads) logits over the bank
        asks["mix_heads"] = cfg.n_layer * cfg.mix_heads * cfg.n_external_heads
    return asks


def check_metrics(metrics: list[dict[str, Any]], step: int) -> str | None:
    """Why a checkpoint's metrics do not belong to its step (a record logged later: a mixed save), or None."""
    for rec in metrics:
        s = rec.get("step")
        if s is not None and not whole(s):
            return f"metrics.jsonl has a record with step {s!r:.40}"
        if s is not None and s > step:
            return f"metrics.jsonl has a record of step {s}, after the checkpoint's step {step} (a mixed save)"
    return None
