"""Whose API key a request may use, so that a public app cannot be made to leak or drain it.

* The server owner's key (``OPENAI_API_KEY``) is only ever sent to the owner's own endpoint
  (``OPENAI_BASE_URL``, or OpenAI). A visitor who points the app at another base URL must bring
  their own key; otherwise a visitor could collect the owner's key on a server of their own.
* When the owner's key is used, the source gets hard request and token caps from the owner's
  budget (``llmcomp.attention.budget``).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from llmcomp.attention.budget import BudgetError, OwnerKeyBudget, Usage
from llmcomp.attention.openai_config import DEFAULT_BASE_URL, DEFAULT_MODEL, NO_KEY
from llmcomp.errors import LLMCompError

OPENAI_HOST = "api.openai.com"


class KeyPolicyError(LLMCompError, ValueError):
    """No key may be used for this endpoint, with what to do about it."""


def owner_endpoint() -> tuple[str, str]:
    """The server owner's base URL and model (environment, else OpenAI's defaults)."""
    return (
        os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
        os.environ.get("LLMCOMP_OPENAI_MODEL") or DEFAULT_MODEL,
    )


def owner_key_present() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY"))


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
    if owner_key_present() and same_endpoint(base_url, own_base):
        return os.environ["OPENAI_API_KEY"], True
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
