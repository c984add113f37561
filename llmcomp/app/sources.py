"""The one way the command line and the web app turn a description of a source into a source.

A description is ``{"kind": kind, **options}``: the command line's flags, the web form's fields
(``SourceSettings.description()``) or a checkpoint's ``source_spec`` as it is. ``build_source`` adds
what the library's plain constructor (``llmcomp.attention.registry.make_source``) leaves to the
caller: loose options (None = not given), a clear error for options a kind does not take, the
persistent cache for slow or paid kinds (on a public server, each visitor's own view of it), a
fallback, and the key policy (``llmcomp.app.keys``) that decides whose key an OpenAI-compatible
source may use.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmcomp.app.cache_view import CacheView
from llmcomp.app.keys import KeyPolicy, owner_endpoint
from llmcomp.attention.openai_config import safe_url
from llmcomp.attention.registry import CACHED, accepted_options, make_source, source_class
from llmcomp.errors import LLMCompError

if TYPE_CHECKING:
    from llmcomp.attention.base import AttentionSource
    from llmcomp.attention.cache import AttentionCache


class SourceFormError(LLMCompError, ValueError):
    """A description that cannot make a source (a bad URL, no relation heads), with a one-line reason."""


def _drop_unset(kind: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Options without the unset ones: None means "not given", except for a parameter that takes None
    as a value of its own (an optional type with another default: the OpenAI source's
    ``temperature=None`` means "send none", and a checkpoint's spec may say so)."""
    params = inspect.signature(source_class(kind).__init__).parameters
    keep_none = {
        n for n, p in params.items() if p.default not in (inspect.Parameter.empty, None) and "None" in str(p.annotation)
    }
    return {k: v for k, v in options.items() if v is not None or k in keep_none}


def _min_cap(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _visitor_cache(cache: AttentionCache, keys: KeyPolicy | None) -> AttentionCache | CacheView:
    """The cache as this person may see it: on a public server (``keys.hide_cache``) their own view
    (``cache_view``), so that no hit tells them what another visitor scored; else the cache itself."""
    tag = keys.cache_tag() if keys is not None else None
    return CacheView(cache, tag) if tag else cache


def build_source(
    description: Mapping[str, Any],
    *,
    cache: AttentionCache | str | Path | None = None,
    fallback: str | None = None,
    keys: KeyPolicy | None = None,
) -> AttentionSource:
    """A source from ``{"kind": ..., **options}``.

    ``cache`` (an AttentionCache or a sqlite path) is used only by the kinds worth caching
    (``registry.CACHED``), through the person's own view of it on a public server (``keys.hide_cache``);
    ``fallback`` names a kind that fills in sentences the source fails on.
    ``keys``: the key policy for OpenAI-compatible sources (a key only where its holder named it, the
    owner's key only for the owner's endpoint and within a reservation, no private addresses for web
    visitors; the command line passes ``KeyPolicy.command_line``); None (scripts) leaves the key to the
    source, which reads ``OPENAI_API_KEY``. Raises an LLMCompError with a one-line reason."""
    from llmcomp.attention.base import AttentionError
    from llmcomp.attention.cache import AttentionCache

    options = dict(description)
    kind = options.pop("kind", None)
    if not kind:
        raise AttentionError("a source description needs a kind, e.g. {'kind': 'uniform'}")
    options = _drop_unset(kind, options)
    unknown = sorted(set(options) - accepted_options(kind))
    if unknown:
        raise AttentionError(f"option(s) {', '.join(unknown)} do not apply to the {kind!r} attention source")
    owner, limits = False, (options.get("max_requests"), options.get("max_tokens"))
    if keys is not None and kind == "openai":
        base = str(options.get("base_url") or owner_endpoint()[0]).strip()
        if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).hostname:
            raise SourceFormError(f"the base URL must look like https://host/v1 (got {safe_url(base)[:80]!r})")
        options.pop("api_key", None)  # the policy decides the key, never the description
        key_options, owner = keys.options_for(base)
        for cap in ("max_requests", "max_tokens"):
            key_options[cap] = _min_cap(options.get(cap), key_options.get(cap))
        options.update(base_url=base, **{k: v for k, v in key_options.items() if v is not None})
    if cache is not None and kind in CACHED:
        options["cache"] = _visitor_cache(cache if isinstance(cache, AttentionCache) else AttentionCache(cache), keys)
    if fallback:
        options["fallback"] = make_source(fallback)
    source = make_source(kind, **options)
    if owner and keys is not None:
        keys.granted(source, limits)
    return source


@dataclass(frozen=True)
class SourceSettings:
    """A source as the web form describes it (no secrets: the typed key is the key policy's)."""

    kind: str = "local"
    n_heads: int = 1  # local: output heads; baselines: heads; learned: learned heads
    layers: str = "all"  # local only
    base_url: str = ""  # openai only; empty = the server's configured endpoint
    model: str = ""  # openai only; empty = the server's configured model
    mode: str = "sentence"  # openai only
    relations: tuple[str, ...] = ("meaning",)  # openai only: one head per relation

    def description(self) -> dict[str, Any]:
        """The description ``build_source`` takes; SourceFormError for settings that cannot work."""
        kind, n = self.kind, max(1, int(self.n_heads or 1))
        if kind == "local":
            return {"kind": kind, "n_heads": n, "layers": self.layers.strip() or "all"}
        if kind == "openai":
            if not self.relations:
                raise SourceFormError("choose at least one relation head for the OpenAI-compatible source")
            return {
                "kind": kind,
                "base_url": self.base_url.strip() or None,
                "model": self.model.strip() or None,
                "mode": self.mode,
                "heads": list(self.relations),
            }
        if kind == "learned":
            return {"kind": kind, "learned_heads": n}
        return {"kind": kind, "n_heads": n}

    def label(self) -> str:
        """A short description of the settings (no secrets), before any source is built."""
        k, n = self.kind, self.n_heads
        plural = "s" if n != 1 else ""
        if k == "openai":
            own_base, own_model = owner_endpoint()
            host = urlsplit(self.base_url.strip() or own_base).hostname
            heads = ", ".join(self.relations)
            return f"OpenAI-compatible {self.model or own_model} @ {host}, {self.mode} mode, heads {heads}"
        if k == "local":
            return f"local LLM (layers {self.layers or 'all'}, {n} head{plural})"
        if k == "learned":
            return f"learned ({n} learned head{plural}, no supplied attention)"
        return f"{k} ({n} head{plural})"
