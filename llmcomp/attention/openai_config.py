"""How the OpenAI-compatible source is configured: endpoint, model, key, mode and limits, from
arguments, then the environment, then ``./.env`` (both read by ``llmcomp.settings``).

Kept apart from ``openai_source`` so that the web app can read the defaults (and the key policy in
``llmcomp.app.keys`` can use them) without importing torch or the SDK.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from llmcomp import settings
from llmcomp.attention.prompts import ANSWERS, Answer, check_heads  # pure: no torch, no SDK
from llmcomp.errors import LLMCompError

Mode = Literal["sentence", "prefix", "pair"]
MODES: tuple[str, ...] = ("sentence", "prefix", "pair")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
#: Sent to servers that need no key (the SDK refuses to start without one).
NO_KEY = "sk-no-key-required"


class OpenAIConfigError(LLMCompError, ValueError):
    """A configuration that cannot work (no key for OpenAI, unknown mode, bad head name...)."""


class Secret:
    """A string that never shows itself in repr(), str() or a pickle.

    Copies (``copy.copy``, ``copy.deepcopy``, hence ``dataclasses.asdict`` of a config) are the same Secret:
    it is immutable, so sharing it is safe and nothing of the key is ever copied into another object.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass
class OpenAIConfig:
    """Everything that configures the OpenAI-compatible source. See the module docstring."""

    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    api_key: Secret | None = field(default=None, repr=False, compare=False)
    mode: Mode = "sentence"  # cheapest; validation is leak-free in every mode (docs/sources.md says why)
    heads: tuple[str, ...] = ("meaning",)
    score_max: int = 9  # answers are integers 0..score_max
    floor: float = 0.5  # added (in score units) to every allowed cell before rows are normalised
    max_concurrency: int = 8  # requests in flight
    timeout: float = 60.0  # seconds per attempt, wall clock (connect, send and the whole answer)
    max_retries: int = 5  # per request: 429 (not insufficient_quota), 408, 409, 5xx, timeouts, connection errors
    max_consecutive_failures: int = 8  # this many failed attempts in a row (not 429s) stop the run
    max_corrective_retries: int = 2  # an invalid answer is sent back with its fault this many times
    max_requests: int | None = None  # budget over the source's lifetime (every HTTP attempt counts)
    max_tokens: int | None = None  # budget of prompt + completion tokens over the source's lifetime
    dry_run: bool = False  # estimate only; no request is ever sent
    pair_batch: int = 100  # pairs per request in pair mode
    temperature: float | None = 0.0  # None: not sent (some reasoning models refuse it)
    backoff_base: float = 0.5  # seconds; doubled per retry, with jitter, unless the server sends Retry-After
    backoff_max: float = 8.0
    max_retry_after: float = 120.0  # a longer Retry-After fails the request instead of waiting
    answer: Answer = "dense"  # sparse (sentence mode): each word's top_k earlier words only, the rest at the floor
    top_k: int = 3  # words per row a sparse answer names
    cache_tag: str = ""  # part of every cache key: two servers behind one URL and model name never share scores

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            self.api_key = Secret(self.api_key)
        if self.mode not in MODES:
            raise OpenAIConfigError(f"unknown scoring mode {self.mode!r}; choose one of: {', '.join(MODES)}")
        try:
            self.heads = tuple(check_heads(list(self.heads)))
        except ValueError as e:
            raise OpenAIConfigError(str(e)) from None
        if self.answer not in ANSWERS or (self.answer == "sparse" and self.mode != "sentence"):
            raise OpenAIConfigError(f"answer={self.answer!r}: choose dense, or sparse (sentence mode only)")
        if not 1 <= self.top_k <= 64:
            raise OpenAIConfigError(f"top_k must be 1..64, got {self.top_k}")
        if not 1 <= self.score_max <= 100:
            raise OpenAIConfigError(f"score_max must be 1..100, got {self.score_max}")
        if self.floor < 0 or not math.isfinite(self.floor):
            raise OpenAIConfigError(f"floor must be a non-negative number, got {self.floor}")
        if self.max_concurrency < 1 or self.pair_batch < 1:
            raise OpenAIConfigError("max_concurrency and pair_batch must be at least 1")
        if self.max_retries < 0 or self.max_corrective_retries < 0:
            raise OpenAIConfigError("max_retries and max_corrective_retries cannot be negative")
        if self.max_consecutive_failures < 1:
            raise OpenAIConfigError("max_consecutive_failures must be at least 1")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise OpenAIConfigError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if len(self.cache_tag) > 100 or not self.cache_tag.isprintable():
            raise OpenAIConfigError("cache_tag must be printable text of at most 100 characters")
        split = urlsplit(self.base_url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise OpenAIConfigError(f"base URL must look like https://host/v1, got {safe_url(self.base_url)!r}")
        if split.username is not None or split.password is not None:
            # the HTTP client would send them as Basic auth in place of the key
            raise OpenAIConfigError(
                f"base URL {safe_url(self.base_url)!r} carries user:password@; remove it and set the key in "
                "OPENAI_API_KEY (or api_key=)"
            )

    @property
    def host(self) -> str:
        """Server identity for cache keys: host[:port], never the path, the query or credentials."""
        split = urlsplit(self.base_url)
        return f"{split.hostname}:{split.port}" if split.port else str(split.hostname)


@dataclass(frozen=True)
class BatchConfig:
    """How the Batch API route (``llmcomp score --batch``) submits and waits; the limits are OpenAI's per batch."""

    poll: float = 30.0  # seconds between status checks
    wait: float = 25 * 3600.0  # longest wait for open batches (their window is 24 h); they keep running after
    max_requests: int = 50_000  # requests per batch file
    max_bytes: int = 200_000_000  # bytes per batch file
    live_retry: bool = True  # a line that failed or answered invalidly is asked again live (with corrections)
    transfer_timeout: float = 600.0  # seconds for one upload or download, wall clock

    def __post_init__(self) -> None:
        for name in ("poll", "wait", "transfer_timeout"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise OpenAIConfigError(f"batch {name} must be a non-negative number of seconds, got {value}")
        if self.max_requests < 1 or self.max_bytes < 1024:
            raise OpenAIConfigError("batch max_requests must be at least 1 and max_bytes at least 1024")


def safe_url(url: str) -> str:
    """The URL without user:password@, query or fragment (a key may hide in any of them)."""
    s = urlsplit(url)
    netloc = s.hostname or ""
    if s.port:
        netloc += f":{s.port}"
    return urlunsplit((s.scheme, netloc, s.path, "", ""))


def _endpoint_identity(url: str) -> tuple[Any, ...] | None:
    try:
        s = urlsplit(url.strip())
        port = s.port or {"http": 80, "https": 443}.get(s.scheme)
    except ValueError:
        return None
    return s.scheme, s.hostname, port, s.path.rstrip("/")


def same_endpoint(a: str, b: str) -> bool:
    """Same scheme, host, port (the scheme's default when absent) and path; credentials and query aside."""
    ia = _endpoint_identity(a)
    return ia is not None and ia == _endpoint_identity(b)


def resolve_config(**options: Any) -> OpenAIConfig:
    """An ``OpenAIConfig`` from explicit options (None = not given, except ``temperature=None``,
    which is kept: no temperature is sent), then ``llmcomp.settings`` (the environment, then ``./.env``)."""
    names = {f.name for f in dataclasses.fields(OpenAIConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"unknown OpenAI source option(s): {', '.join(unknown)}")
    given = {k: v for k, v in options.items() if v is not None or k == "temperature"}
    env = settings.openai()  # OPENAI_API_KEY, OPENAI_BASE_URL, LLMCOMP_OPENAI_MODEL: the environment, then ./.env
    env_base = env.base_url or DEFAULT_BASE_URL
    given.setdefault("base_url", env_base)
    # the environment's key goes only to the environment's endpoint: a base URL from anywhere else (a
    # checkpoint's spec, a script) gets no key unless one is passed with it
    if "api_key" not in given and env.api_key and same_endpoint(given["base_url"], env_base):
        given["api_key"] = Secret(env.api_key)
    given.setdefault("model", env.model or DEFAULT_MODEL)
    if "heads" in given:
        given["heads"] = tuple(given["heads"])
    return OpenAIConfig(**given)
