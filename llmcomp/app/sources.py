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

import dataclasses
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmcomp.app.cache_view import CacheView
from llmcomp.app.keys import KeyPolicy, owner_endpoint
from llmcomp.attention.openai_config import OpenAIConfig, safe_url
from llmcomp.attention.registry import CACHED, accepted_options, make_source, parse_option, source_class
from llmcomp.devices import AUTO, PRECISIONS, check_available
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
    config = params.get("config")  # the local source's options are its config's fields (torch_threads=None)
    for t in typing.get_args(_hint(source_class(kind), "config")) if config is not None else ():
        if dataclasses.is_dataclass(t):
            keep_none |= {f.name for f in dataclasses.fields(t) if f.default is not None and "None" in str(f.type)}
    return {k: v for k, v in options.items() if v is not None or k in keep_none}


def _hint(cls: type, name: str) -> Any:
    try:
        return typing.get_type_hints(cls.__init__).get(name)
    except NameError:  # a type imported only for type checkers: no config dataclass to read
        return None


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


#: options a web form may not set, whoever fills it in: a file path on the server (the command line's choice)
SERVER_ONLY_OPTIONS = frozenset({"gguf_path", "path"})
#: the largest value a web form may give an option: more would let one visitor take the server's memory,
#: threads or an endpoint's rate limit (the command line has no such limits)
FORM_LIMITS: dict[str, float] = {
    "n_heads": 64,
    "learned_heads": 64,
    "max_len": 1024,
    "batch_size": 64,
    "max_pieces": 2048,
    "torch_threads": 8,
    "max_concurrency": 16,
    "pair_batch": 500,
    "max_retries": 10,
    "max_corrective_retries": 5,
    "max_consecutive_failures": 50,
    "timeout": 300,
    "backoff_base": 30,
    "backoff_max": 120,
    "max_retry_after": 300,
}
#: the options the form has a field of its own for (the advanced options text leaves them to it)
FORM_FIELDS: dict[str, str] = {
    "n_heads": "Heads",
    "learned_heads": "Heads",
    "layers": "LLM layers",
    "base_url": "Base URL",
    "model": "Model",
    "mode": "Scoring mode",
    "heads": "Heads (one relation each)",
    "floor": "Floor",
    "score_max": "Highest score",
    "answer": "Answer",
    "top_k": "Words named per word",
}
#: fields of an option that means something else for one kind: the local source's heads are layer.head pairs
KIND_FORM_FIELDS: dict[str, dict[str, str]] = {
    "local": {"heads": "LLM heads", "device": "LLM device", "precision": "LLM precision"}
}


def form_field(kind: str, name: str) -> str | None:
    """The name of the form's own field for ``kind``'s option ``name``, or None (an advanced option)."""
    return KIND_FORM_FIELDS.get(kind, {}).get(name) or FORM_FIELDS.get(name)


def parse_advanced(kind: str, text: str) -> dict[str, Any]:
    """The web form's advanced options, ``name=value`` one per line (or ``;``-separated), typed by the
    registry (``registry.parse_option``). SourceFormError, one line, for an option the form has a field
    for, one no form may set (``SERVER_ONLY_OPTIONS``), or one the kind does not take."""
    options: dict[str, Any] = {}
    for item in (x.strip() for x in text.replace(";", "\n").splitlines()):
        if not item:
            continue
        name, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not name:
            raise SourceFormError(f"cannot read advanced option {item[:60]!r}; write option=value, one per line")
        if form_field(kind, name):
            raise SourceFormError(f"set {name} in the form's {form_field(kind, name)!r} field, not in advanced options")
        if name in SERVER_ONLY_OPTIONS:
            raise SourceFormError(f"{name} is set on the server's command line, never from the web form")
        try:
            options[name] = parse_option(kind, name, value)
        except LLMCompError as e:
            raise SourceFormError(str(e)) from None
    return options


def _within_form_limits(options: dict[str, Any]) -> dict[str, Any]:
    for name, value in options.items():
        top = FORM_LIMITS.get(name)
        if top is not None and isinstance(value, int | float) and value > top:
            raise SourceFormError(f"{name}={value} is more than the web form allows ({top:g})")
    return options


def _form_heads(text: str) -> str:
    """The local source's chosen heads as the web form may give them: named pairs, as many as ``n_heads``
    may be (``all`` can mean 270 heads: the command line's and the head atlas's)."""
    from llmcomp.attention.local_heads import canonical_heads, chosen_pairs

    try:
        heads = canonical_heads(text)
    except LLMCompError as e:
        raise SourceFormError(str(e)) from None
    if heads == "all":
        raise SourceFormError("LLM heads 'all' is for the command line; here name the heads, e.g. 21.0,21.1,21.2")
    count, top = len(chosen_pairs(str(heads))), FORM_LIMITS["n_heads"]
    if count > top:
        raise SourceFormError(f"{count} LLM heads is more than the web form allows ({top:g})")
    return str(heads)


@dataclass(frozen=True)
class SourceSettings:
    """A source as the web form describes it (no secrets: the typed key is the key policy's).
    Defaults come from the sources' config dataclasses."""

    kind: str = "local"
    n_heads: int = 1  # local: output heads; baselines: heads; learned: learned heads
    layers: str = "all"  # local only
    llm_heads: str = ""  # local only: chosen heads, "21.4,23.5" or "all" (LocalLLMConfig.heads); empty: groups averaged
    base_url: str = ""  # openai only; empty = the server's configured endpoint
    model: str = ""  # openai only; empty = the server's configured model
    mode: str = OpenAIConfig.mode  # openai only
    relations: tuple[str, ...] = OpenAIConfig.heads  # openai only: one head per relation
    floor: float = OpenAIConfig.floor  # openai only
    score_max: int = OpenAIConfig.score_max  # openai only
    answer: str = OpenAIConfig.answer  # openai only: dense, or sparse (sentence mode only) naming top_k words per word
    top_k: int = OpenAIConfig.top_k  # openai only, sparse answers
    llm_device: str = AUTO  # local only (LocalLLMConfig.device): auto, cpu or a GPU this machine has
    llm_precision: str = PRECISIONS[0]  # local only (LocalLLMConfig.precision): fp32, bf16 (CPU or CUDA) or fp16 (CUDA)
    advanced: str = ""  # every other option of the kind: name=value, one per line (``parse_advanced``)

    def description(self) -> dict[str, Any]:
        """The description ``build_source`` takes; SourceFormError for settings that cannot work."""
        kind, n = self.kind, max(1, int(self.n_heads or 1))
        extra = parse_advanced(kind, self.advanced)
        if kind == "local":
            local = {"kind": kind, "layers": self.layers.strip() or "all", **extra, "precision": self.llm_precision}
            local["device"] = check_available(self.llm_device or AUTO, "LLM device")  # one line, in the form's words
            if self.llm_heads.strip():  # each chosen head is one supplied head: the Heads field plays no part
                return _within_form_limits({**local, "heads": _form_heads(self.llm_heads)})
            return _within_form_limits({**local, "n_heads": n})
        if kind == "openai":
            if not self.relations:
                raise SourceFormError("choose at least one relation head for the OpenAI-compatible source")
            return _within_form_limits({
                "kind": kind,
                "base_url": self.base_url.strip() or None,
                "model": self.model.strip() or None,
                "mode": self.mode,
                "heads": list(self.relations),
                "floor": float(self.floor),
                "score_max": int(self.score_max),
                "answer": self.answer,
                "top_k": int(self.top_k),
                **extra,
            })  # fmt: skip
        if kind == "learned":
            return _within_form_limits({"kind": kind, "learned_heads": n, **extra})
        return _within_form_limits({"kind": kind, "n_heads": n, **extra})

    def label(self) -> str:
        """A short description of the settings (no secrets), before any source is built."""
        k, n = self.kind, self.n_heads
        plural = "s" if n != 1 else ""
        if k == "openai":
            own_base, own_model = owner_endpoint()
            host = urlsplit(self.base_url.strip() or own_base).hostname
            heads = ", ".join(self.relations)
            sparse = f", sparse top-{self.top_k} answers" if self.answer == "sparse" else ""
            return f"OpenAI-compatible {self.model or own_model} @ {host}, {self.mode} mode{sparse}, heads {heads}"
        if k == "local" and self.llm_heads.strip():
            return f"local LLM (heads {self.llm_heads.strip()}, one each)"
        if k == "local":
            return f"local LLM (layers {self.layers or 'all'}, {n} head{plural})"
        if k == "learned":
            return f"learned ({n} learned head{plural}, no supplied attention)"
        return f"{k} ({n} head{plural})"
