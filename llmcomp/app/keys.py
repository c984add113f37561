"""Whose API key a request may use, and where a visitor may make the server send requests, so that
neither a crafted checkpoint nor a visitor can leak a key, drain the owner's, or reach the server's
own network.

* A key only ever goes to an endpoint its holder named for it in this command or session: the
  command line's ``--base-url``, else ``OPENAI_BASE_URL`` (else OpenAI), for the environment's key;
  the web form's Base URL (empty: the server's endpoint) for a key a visitor typed. A checkpoint's
  source spec that names another endpoint is refused with one line saying how to allow it, so a
  checkpoint cannot send your key to its author.
* The server owner's key (``OPENAI_API_KEY``) only goes to the owner's own endpoint, and only within
  a reservation from the owner's budget (``llmcomp.app.budget``): a source built with it may send
  nothing until ``reserve`` sets its request and token caps to what was reserved; ``charge`` counts
  what it spent, gives the rest back and closes the caps again.
* A visitor of the web app cannot make the server send requests to loopback, link-local, private or
  otherwise non-public addresses (the host is resolved and every address checked), except to the
  owner's own endpoint, unless the owner allows it (``LLMCOMP_ALLOW_PRIVATE_URLS=1``).
* ``hide_cache``: on a public server a visitor scores through their own view of the shared cache
  (``llmcomp.app.cache_view``, tagged by ``cache_owner``, the browser id), so neither estimates nor
  scoring (cached counts, requests, timing) tell what other visitors scored.

``KeyPolicy`` applies these rules for one person; ``llmcomp.app.sources.build_source`` asks it for
the key of every OpenAI-compatible source it builds; the command line uses ``KeyPolicy.command_line``.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmcomp import settings
from llmcomp.app.budget import BudgetError, OwnerKeyBudget, Reservation, Usage
from llmcomp.app.cache_view import visitor_tag
from llmcomp.attention.openai_config import DEFAULT_BASE_URL, DEFAULT_MODEL, NO_KEY, safe_url, same_endpoint
from llmcomp.errors import LLMCompError

if TYPE_CHECKING:
    from llmcomp.attention.base import AttentionSource

OPENAI_HOST = "api.openai.com"
FORM_HINT = "enter {url} as the Base URL in the Attention tab to send your key there"
CLI_HINT = "pass --base-url {url} to send your key there"


class KeyPolicyError(LLMCompError, ValueError):
    """No key may be used for this endpoint, or no request may go there, with what to do about it."""


def owner_endpoint() -> tuple[str, str]:
    """The server owner's base URL and model (settings, else OpenAI's defaults)."""
    env = settings.openai()
    return env.base_url or DEFAULT_BASE_URL, env.model or DEFAULT_MODEL


def owner_key_present() -> bool:
    return settings.openai().key_present


NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Not a public address, also when an IPv4 one hides in IPv6 (mapped, 6to4, NAT64)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = (
            ip.ipv4_mapped or ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None)
        )
        if embedded is not None and _internal(embedded):
            return True
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


def check_address(base_url: str) -> None:
    """KeyPolicyError unless every address ``base_url``'s host resolves to is a public one; the owner's
    own endpoint, and anything when the owner allows private addresses, pass without a look-up."""
    own = settings.openai().base_url
    if settings.allow_private_urls() or (own and same_endpoint(base_url, own)):
        return
    split = urlsplit(base_url)
    host = split.hostname or ""
    try:
        port = split.port or (443 if split.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as e:
        raise KeyPolicyError(f"cannot find the server {host[:80]!r} ({getattr(e, 'strerror', None) or e})") from None
    for *_, sockaddr in infos:
        if _internal(ipaddress.ip_address(str(sockaddr[0]).split("%")[0])):
            raise KeyPolicyError(
                f"{host[:80]} is a loopback, link-local or private address: this server does not send visitors' "
                "requests into its own network (its owner can allow it with LLMCOMP_ALLOW_PRIVATE_URLS=1)"
            )


def _spent(source: AttentionSource) -> tuple[int, int]:
    """A source's lifetime (requests, tokens); (0, 0) for sources that send no requests."""
    usage = getattr(source, "usage", None)
    if usage is None:
        return 0, 0
    return usage.requests, usage.prompt_tokens + usage.completion_tokens


def _cap(limit: int | None, allowed: int | None, spent: int) -> int | None:
    """A lifetime cap: what was spent plus what is allowed now (None: the budget has no cap), never
    above the description's own ``limit``."""
    mine = None if allowed is None else spent + allowed
    return limit if mine is None else mine if limit is None else min(limit, mine)


@dataclass
class _Grant:
    """A source given the owner's key: what was charged of it, its own caps, its reservation."""

    source: AttentionSource
    requests: int
    tokens: int
    limits: tuple[int | None, int | None]
    capped: tuple[bool, bool]  # whether the budget caps requests / tokens at all
    hold: Reservation | None = None
    finalizer: weakref.finalize | None = None

    def set_caps(self, requests: int | None, tokens: int | None) -> None:
        cfg = getattr(self.source, "config", None)
        if cfg is None:
            return
        req, tok = _spent(self.source)
        cfg.max_requests = _cap(self.limits[0], requests if self.capped[0] else None, req)
        cfg.max_tokens = _cap(self.limits[1], tokens if self.capped[1] else None, tok)

    def drop_hold(self) -> Reservation | None:
        hold, self.hold = self.hold, None
        if self.finalizer is not None:
            self.finalizer.detach()
            self.finalizer = None
        return hold


@dataclass(repr=False)
class KeyPolicy:
    """One person's key rules: the key they typed (the command line: the environment's), the endpoint
    they named for it, the owner's budget and what this person has spent of it. Remembers which
    sources it gave the owner's key, so that exactly those are reserved for and charged."""

    typed_key: str = ""
    budget: OwnerKeyBudget | None = None
    usage: Usage = field(default_factory=Usage)
    named_url: str = ""  # where typed_key may go ("": the server owner's endpoint)
    hint: str = FORM_HINT  # how to name another endpoint, with {url}
    visitor: bool = True  # a web visitor: no private addresses; the owner's key only with a budget
    hide_cache: bool = False  # a public server: each visitor sees only the cache entries they scored
    cache_owner: str = field(default="", repr=False)  # whose view of the cache (browser id); "" = this policy's own
    _owner_sources: dict[int, _Grant] = field(default_factory=dict)

    @classmethod
    def command_line(cls, base_url: str | None = None) -> KeyPolicy:
        """Whoever runs a command owns the environment's key; it goes to ``--base-url`` when given,
        else to ``OPENAI_BASE_URL`` (else OpenAI), and nowhere a checkpoint names instead."""
        key = settings.openai().api_key or ""
        return cls(typed_key=key, named_url=base_url or "", hint=CLI_HINT, visitor=False)

    def __repr__(self) -> str:
        return f"KeyPolicy(typed_key={'set' if self.typed_key else 'unset'}, owner_sources={len(self._owner_sources)})"

    def cache_tag(self) -> str | None:
        """The tag of this person's view of the cache (``cache_view.CacheView``); None: the shared cache
        (a private server). Without a ``cache_owner`` the view is this policy's alone: private, never reused."""
        if not self.hide_cache:
            return None
        if not self.cache_owner:
            self.cache_owner = "unnamed:" + secrets.token_urlsafe(16)
        return visitor_tag(self.cache_owner)

    def options_for(self, base_url: str) -> tuple[dict[str, Any], bool]:
        """The source options for ``base_url``: its key and, for the owner's key, caps that allow
        nothing until ``reserve``; and whether the owner's key is used. Raises KeyPolicyError or BudgetError."""
        if self.visitor:
            check_address(base_url)
        key = self.typed_key.strip()
        if key:
            named = self.named_url.strip() or owner_endpoint()[0]
            if not same_endpoint(base_url, named):
                url = safe_url(base_url)
                raise KeyPolicyError(f"this checkpoint was scored at {url}; " + self.hint.format(url=url))
            return {"api_key": key}, False
        if not self.visitor:
            return {}, False  # no key in the environment: none to protect; the source says what it lacks
        env = settings.openai()
        if env.api_key and same_endpoint(base_url, owner_endpoint()[0]):
            if self.budget is None:
                raise KeyPolicyError("the server's key cannot be used without a budget; enter your own API key")
            req, tok = self.budget.remaining(self.usage)
            if req == 0 or tok == 0:
                raise BudgetError("the server's key has reached its spending cap for you today; enter your own API key")
            return {"api_key": env.api_key, "max_requests": 0 if req is not None else None,
                    "max_tokens": 0 if tok is not None else None}, True  # fmt: skip
        if urlsplit(base_url).hostname == OPENAI_HOST:
            raise KeyPolicyError("enter your OpenAI API key: this server has no key of its own for api.openai.com")
        return {"api_key": NO_KEY}, False

    def granted(self, source: AttentionSource, limits: tuple[int | None, int | None] = (None, None)) -> None:
        """Record that ``source`` spends the owner's key (called by the source factory); ``limits``
        are the description's own caps, kept under every reservation."""
        if self.budget is None:
            return
        req, tok = self.budget.remaining(self.usage)
        self._owner_sources[id(source)] = _Grant(source, *_spent(source), limits, (req is not None, tok is not None))

    def _grant(self, source: AttentionSource) -> _Grant | None:
        grant = self._owner_sources.get(id(source))
        return grant if grant is not None and grant.source is source and self.budget is not None else None

    def uses_owner_key(self, source: AttentionSource) -> bool:
        return self._grant(source) is not None

    def check(self, source: AttentionSource, requests: int, tokens: int) -> None:
        """BudgetError if ``source`` spends the owner's key and this much more would cross a cap."""
        if self._grant(source) is not None and self.budget is not None:
            self.budget.check(self.usage, requests, tokens)

    def reserve(self, source: AttentionSource, requests: int, tokens: int) -> None:
        """For a source on the owner's key: set aside about ``requests``/``tokens`` (BudgetError when
        they do not fit) and let the source spend that much, no more. Replaces an earlier reservation;
        a source dropped without ``charge`` gives its reservation back when it is collected."""
        grant = self._grant(source)
        if grant is None or self.budget is None:
            return
        old = grant.drop_hold()
        if old is not None:
            old.release()
        hold = self.budget.reserve(self.usage, requests, tokens)
        grant.hold, grant.finalizer = hold, weakref.finalize(source, hold.release)
        grant.set_caps(hold.requests, hold.tokens)

    def describe(self) -> str:
        """What the owner's key still allows this person (for an estimate)."""
        return self.budget.describe(self.usage) if self.budget is not None else ""

    def charge(self, source: AttentionSource) -> tuple[int, int]:
        """Charge what ``source`` spent on the owner's key since the last charge, give back the rest of
        its reservation and allow it nothing more; returns (requests, tokens) charged. Charging twice
        never counts the same request twice."""
        grant = self._grant(source)
        if grant is None or self.budget is None:
            return 0, 0
        req, tok = _spent(source)
        spent = (req - grant.requests, tok - grant.tokens)
        grant.requests, grant.tokens = req, tok
        hold = grant.drop_hold()
        if hold is not None:
            hold.charge(*spent)
        elif spent[0] or spent[1]:
            self.budget.charge(self.usage, *spent)
        grant.set_caps(0, 0)
        return spent
