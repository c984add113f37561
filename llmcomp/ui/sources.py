"""Turn the Attention tab's form (or a checkpoint's spec) into an attention source.

Which key may go where, and the owner's spending caps, are library rules
(``llmcomp.attention.owner_key`` and ``llmcomp.attention.budget``); this module only maps form
fields onto them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmcomp.attention.budget import OwnerKeyBudget, Usage
from llmcomp.attention.owner_key import owner_caps, owner_endpoint, resolve_key
from llmcomp.attention.registry import BASELINES, make_source, source_from_spec
from llmcomp.errors import LLMCompError
from llmcomp.ui.state import SourceSettings

if TYPE_CHECKING:
    from llmcomp.attention import AttentionCache, AttentionSource

KIND_CHOICES: list[tuple[str, str]] = [
    ("Local LLM: SmolLM2-135M, offline (default)", "local"),
    ("OpenAI-compatible API", "openai"),
    ("Baseline: uniform", "uniform"),
    ("Baseline: previous word", "previous"),
    ("Baseline: Gaussian (previous and current word)", "gaussian"),
    ("Baseline: frozen random", "random"),
    ("Baseline: learned (the model's own attention)", "learned"),
    ("Oracle (binding task only)", "oracle"),
]
KIND_NAMES = dict((v, k) for k, v in KIND_CHOICES)
OTHER_CHOICES = [(k, v) for k, v in KIND_CHOICES if v not in ("openai", "learned")]
MODES = ("sentence", "prefix", "pair")
RELATIONS = ("meaning", "syntax", "coreference", "relatedness")


class SourceFormError(LLMCompError, ValueError):
    """The Attention tab's settings cannot make a source, with a one-line reason."""


#: exceptions whose message is fit to show a person as it is (one line, no secrets); the library's
#: own errors (a local model that cannot load, an aborted scoring run, ...) are all LLMCompErrors
USER_ERRORS: tuple[type[BaseException], ...] = (LLMCompError, ValueError, TypeError)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:400]


@dataclass
class Built:
    source: AttentionSource
    owner_key: bool  # True: spending the server's key, so the budget applies


def build(
    settings: SourceSettings,
    api_key: str,
    cache: AttentionCache | None,
    budget: OwnerKeyBudget,
    usage: Usage,
) -> Built:
    """A source for the form's settings; raises a one-line error a person can act on."""
    kind, n = settings.kind, int(settings.n_heads or 1)
    if kind == "local":
        from llmcomp.attention.local_llm import LocalLLMSource

        return Built(LocalLLMSource(n_heads=n, layers=settings.layers.strip() or "all", cache=cache), False)
    if kind == "openai":
        from llmcomp.attention.openai_source import OpenAISource

        own_base, own_model = owner_endpoint()
        base = settings.base_url.strip() or own_base
        if urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).hostname:
            raise SourceFormError(f"the base URL must look like https://host/v1 (got {base[:80]!r})")
        key, owner = resolve_key(base, api_key)
        if not settings.relations:
            raise SourceFormError("choose at least one relation head for the OpenAI-compatible source")
        src = OpenAISource(
            base_url=base,
            model=settings.model.strip() or own_model,
            api_key=key,
            mode=settings.mode,
            heads=list(settings.relations),
            cache=cache,
            **owner_caps(owner, budget, usage),
        )
        return Built(src, owner)
    if kind == "learned":
        return Built(make_source("learned", learned_heads=n), False)
    if kind in BASELINES or kind == "oracle":
        return Built(make_source(kind, n_heads=n), False)
    raise SourceFormError(f"unknown attention source {kind!r}; choose one from the list")


def build_from_spec(
    spec: dict[str, Any], api_key: str, cache: AttentionCache | None, budget: OwnerKeyBudget, usage: Usage
) -> Built:
    """The source a checkpoint was trained with, for generation (and resume); keys as in ``build``."""
    kind = spec.get("kind")
    if kind == "openai":
        base = str(spec.get("base_url") or owner_endpoint()[0])
        key, owner = resolve_key(base, api_key)
        extra = {"api_key": key, "cache": cache, **owner_caps(owner, budget, usage)}
        return Built(source_from_spec(spec, **extra), owner)
    if kind == "local":
        return Built(source_from_spec(spec, cache=cache), False)
    return Built(source_from_spec(spec), False)


def settings_label(settings: SourceSettings) -> str:
    """Short human description of the form's settings (no secrets)."""
    k = settings.kind
    if k == "openai":
        own_base, own_model = owner_endpoint()
        host = urlsplit(settings.base_url.strip() or own_base).hostname
        return f"OpenAI-compatible {settings.model or own_model} @ {host}, {settings.mode} mode, heads {', '.join(settings.relations)}"
    if k == "local":
        return f"local LLM (layers {settings.layers or 'all'}, {settings.n_heads} head{'s' if settings.n_heads != 1 else ''})"
    if k == "learned":
        return f"learned ({settings.n_heads} learned head{'s' if settings.n_heads != 1 else ''}, no supplied attention)"
    return f"{k} ({settings.n_heads} head{'s' if settings.n_heads != 1 else ''})"
