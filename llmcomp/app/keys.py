"""Whose API key a request may use, so that a public app cannot be made to leak or drain it.

* The server owner's key (``OPENAI_API_KEY``) is only ever sent to the owner's own endpoint
  (``OPENAI_BASE_URL``, or OpenAI). Someone who points the app at another base URL must bring
  their own key; otherwise anyone could collect the owner's key on a server of their own.
* When the owner's key is used, the source gets hard request and token caps from the owner's
  budget (``llmcomp.app.budget``), and what it spends is charged to that budget afterwards.

``KeyPolicy`` applies both rules for one person's requests; ``llmcomp.app.sources.build_source``
asks it for the key of every OpenAI-compatible source it builds. The command line uses no policy:
whoever runs it owns the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmcomp import settings
from llmcomp.app.budget import BudgetError, OwnerKeyBudget, Usage
from llmcomp.attention.openai_config import DEFAULT_BASE_URL, DEFAULT_MODEL, NO_KEY
from llmcomp.errors import LLMCompError

if TYPE_CHECKING:
    from llmcomp.attention.base import AttentionSource

OPENAI_HOST = "api.openai.com"


class KeyPolicyError(LLMCompError, ValueError):
    """No key may be used for this endpoint, with what to do about it."""


def owner_endpoint() -> tuple[str, str]:
    """The server owner's base URL and model (settings, else OpenAI's defaults)."""
    env = settings.openai()
    return env.base_url or DEFAULT_BASE_URL, env.model or DEFAULT_MODEL


def owner_key_present() -> bool:
    return settings.openai().key_present


def same_endpoint(a: str, b: str) -> bool:
    sa, sb = urlsplit(a.strip()), urlsplit(b.strip())
    return (sa.scheme, sa.hostname, sa.port, sa.path.rstrip("/")) == (
        sb.scheme,
        sb.hostname,
        sb.port,
        sb.path.rstrip("/"),
    )


def resolve_key(base_url: str, typed_key: str) -> tuple[str, bool]:
    """The key to send to ``base_url`` and whether it is the owner's."""
    if typed_key.strip():
        return typed_key.strip(), False
    own_base, _ = owner_endpoint()
    env = settings.openai()
    if env.api_key and same_endpoint(base_url, own_base):
        return env.api_key, True
    if urlsplit(base_url).hostname == OPENAI_HOST:
        raise KeyPolicyError("enter your OpenAI API key: this server has no key of its own for api.openai.com")
    return NO_KEY, False


def owner_caps(owner: bool, budget: OwnerKeyBudget, usage: Usage) -> dict[str, Any]:
    if not owner:
        return {}
    req, tok = budget.remaining(usage)
    if req == 0 or tok == 0:
        raise BudgetError("the server's key has reached its spending cap for you today; enter your own API key")
    return {"max_requests": req, "max_tokens": tok}


def _spent(source: AttentionSource) -> tuple[int, int]:
    """A source's lifetime (requests, tokens); (0, 0) for sources that send no requests."""
    usage = getattr(source, "usage", None)
    if usage is None:
        return 0, 0
    return usage.requests, usage.prompt_tokens + usage.completion_tokens


@dataclass(repr=False)
class KeyPolicy:
    """One person's key rules: the key they typed (may be empty), the owner's budget and what this
    person has spent of it. Remembers which sources it gave the owner's key, so that exactly those
    are checked against the caps and charged."""

    typed_key: str = ""
    budget: OwnerKeyBudget | None = None
    usage: Usage = field(default_factory=Usage)
    _owner_sources: dict[int, tuple[AttentionSource, int, int]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"KeyPolicy(typed_key={'set' if self.typed_key else 'unset'}, owner_sources={len(self._owner_sources)})"

    def options_for(self, base_url: str) -> tuple[dict[str, Any], bool]:
        """The source options for ``base_url``: its key and, for the owner's key, the caps left;
        and whether the owner's key is used. Raises KeyPolicyError or BudgetError."""
        key, owner = resolve_key(base_url, self.typed_key)
        if owner and self.budget is None:
            raise KeyPolicyError("the server's key cannot be used without a budget; enter your own API key")
        caps = owner_caps(owner, self.budget, self.usage) if owner else {}
        return {"api_key": key, **caps}, owner

    def granted(self, source: AttentionSource) -> None:
        """Record that ``source`` spends the owner's key (called by the source factory)."""
        self._owner_sources[id(source)] = (source, *_spent(source))

    def uses_owner_key(self, source: AttentionSource) -> bool:
        entry = self._owner_sources.get(id(source))
        return entry is not None and entry[0] is source

    def check(self, source: AttentionSource, requests: int, tokens: int) -> None:
        """BudgetError if ``source`` spends the owner's key and this much more would cross a cap."""
        if self.uses_owner_key(source) and self.budget is not None:
            self.budget.check(self.usage, requests, tokens)

    def describe(self) -> str:
        """What the owner's key still allows this person (for an estimate)."""
        return self.budget.describe(self.usage) if self.budget is not None else ""

    def charge(self, source: AttentionSource) -> tuple[int, int]:
        """Charge what ``source`` spent on the owner's key since the last charge; returns (requests,
        tokens) charged. Charging twice never counts the same request twice."""
        if not self.uses_owner_key(source) or self.budget is None:
            return 0, 0
        _, req0, tok0 = self._owner_sources[id(source)]
        req, tok = _spent(source)
        self._owner_sources[id(source)] = (source, req, tok)
        if req > req0 or tok > tok0:
            self.budget.charge(self.usage, req - req0, tok - tok0)
        return req - req0, tok - tok0
