"""What every tab shares: the app context (paths, cache, jobs, budget), message boxes, owner ids,
and which errors are shown to a person as they are."""

from __future__ import annotations

import html
import ipaddress
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from llmcomp import settings
from llmcomp.app.budget import OwnerKeyBudget
from llmcomp.app.jobs import EXPECTED_ERRORS, JobManager, default_manager, one_line, owner_tag
from llmcomp.app.keys import KeyPolicy
from llmcomp.errors import LLMCompError
from llmcomp.settings import DATA_DIR, Paths
from llmcomp.text import Corpus, CorpusConfig, load_corpus
from llmcomp.ui.state import PageMemory, Session

if TYPE_CHECKING:
    from llmcomp.attention import AttentionCache

log = logging.getLogger("llmcomp.ui")

DEFAULT_CORPUS = "example.txt"
#: exceptions whose message is fit to show a person as it is (one line, no secrets); the library's
#: own errors (a local model that cannot load, an aborted scoring run, ...) are all LLMCompErrors
USER_ERRORS = EXPECTED_ERRORS


class UserError(LLMCompError, ValueError):
    """Something a person asked for that cannot be done, with a one-line reason."""


@dataclass
class AppContext:
    """Process-wide things the handlers need. Sessions never share anything else."""

    paths: Paths
    corpus_config: CorpusConfig
    jobs: JobManager
    budget: OwnerKeyBudget
    max_upload_bytes: int
    _cache: AttentionCache | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bundled: dict[str, Corpus] = field(default_factory=dict)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llmcomp-app-")))
    public: bool = False  # served to anyone (see expose); set at launch
    launch_warning: str = ""
    browser_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    pages: PageMemory = field(default_factory=PageMemory)  # each browser's corpus and source, for a reload

    @classmethod
    def create(cls, paths: Paths | None = None, jobs: JobManager | None = None) -> AppContext:
        paths = paths or Paths.from_env()
        max_upload = settings.max_upload_bytes()
        return cls(
            browser_secret=_stable_secret(paths.home / "browser-id-secret"),
            paths=paths,
            corpus_config=CorpusConfig(max_bytes=max_upload),
            jobs=jobs or default_manager(),
            budget=OwnerKeyBudget(settings.budget_caps(), paths.home / "owner-key-usage.json"),
            max_upload_bytes=max_upload,
        )

    def keys(self, session: Session, request: gr.Request | None = None) -> KeyPolicy:
        """The key policy for this session's requests: its typed key and the Base URL it named for it,
        the owner's budget and this visitor's tally of it (per login, else per address: a new API
        client or a fresh browser does not start a fresh allowance), and, on a public server, this
        browser's own view of the shared cache (per browser, not per address: people behind one address
        are strangers to each other). ``request`` defaults to the one being handled."""
        request = request if request is not None else _current_request()
        who = visitor_id(request)
        usage = self.budget.visitor(who) if who else session.owner_key_usage
        return KeyPolicy(session.api_key, self.budget, usage, named_url=session.settings.base_url,
                         hide_cache=self.public, cache_owner=owner_of(session, request) or "")  # fmt: skip

    def expose(self, host: str, auth: object, share: bool = False) -> str:
        """Record how the app is served: public (no login, and a share link or an address other than
        loopback) gives each visitor their own view of the cache. Returns the launch warning ('' when
        none is due): anyone may spend the owner's key and no daily cap bounds it."""
        self.public = auth is None and (share or not is_loopback(host))
        caps = self.budget.limits
        open_key = self.public and settings.openai().key_present
        self.launch_warning = (
            "anyone who reaches this public app can spend the server's OpenAI key (OPENAI_API_KEY) and no daily "
            "cap bounds it: set LLMCOMP_DAILY_MAX_REQUESTS and LLMCOMP_DAILY_MAX_TOKENS, or a login (LLMCOMP_AUTH)"
            if open_key and caps.daily_requests is None and caps.daily_tokens is None
            else ""
        )
        return self.launch_warning

    def cache(self) -> AttentionCache:
        """The one attention cache of this process (opened on first use, shared by every session)."""
        with self._lock:
            if self._cache is None:
                from llmcomp.attention import AttentionCache

                self._cache = AttentionCache(self.paths.cache)
            return self._cache

    def bundled_names(self) -> list[str]:
        return sorted(p.name for p in DATA_DIR.glob("*.txt"))

    def bundled(self, name: str) -> Corpus:
        """A bundled corpus by file name (parsed once per process; corpora are never mutated)."""
        if name not in self.bundled_names():
            raise ValueError(f"no bundled corpus named {name!r}; choose one of: {', '.join(self.bundled_names())}")
        with self._lock:
            if name not in self._bundled:
                self._bundled[name] = load_corpus(DATA_DIR / name, CorpusConfig())
            return self._bundled[name]

    def corpus_of(self, session: Session) -> Corpus:
        """The session's corpus, or the bundled example until the visitor picks one."""
        return session.corpus if session.corpus is not None else self.bundled(DEFAULT_CORPUS)

    def session_dir(self, session: Session, request: gr.Request | None) -> Path:
        """A private temp folder for this session's downloads."""
        name = owner_tag(owner_of(session, request)) or "anonymous"
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        old = time.time() - 3600  # gradio serves its own copy; ours are only needed for a moment
        for f in path.iterdir():
            if f.is_file() and f.stat().st_mtime < old:
                f.unlink(missing_ok=True)
        return path

    def __post_init__(self) -> None:
        # the downloads folder goes with the context: at close(), when it is collected, or at exit
        self._remove_tmp = weakref.finalize(self, shutil.rmtree, self.tmp, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None
        self._remove_tmp()


def _stable_secret(path: Path) -> str:
    """The key that encrypts the browser id in localStorage, kept across restarts so that a browser
    keeps its id (and so its runs); a fresh random one if the file cannot be kept."""
    try:
        if path.is_file():
            value = path.read_text(encoding="utf-8").strip()
            if len(value) >= 32:
                return value
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value)
        return value
    except OSError:
        return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (``0.0.0.0`` and names other than localhost do not)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _current_request() -> gr.Request | None:
    """The request gradio is handling in this thread (its context variable), if any."""
    from gradio.context import LocalContext

    return LocalContext.request.get(None)


def visitor_id(request: gr.Request | None) -> str | None:
    """Who spends the owner's key, by what a visitor cannot renew for free: the login name, else the
    address the request came from (not X-Forwarded-For, which anyone can write); None without a request."""
    user = getattr(request, "username", None)
    if user:
        return f"user:{user}"
    host = getattr(getattr(request, "client", None), "host", None)
    return f"address:{host}" if host else None


def owner_of(session: Session, request: gr.Request | None) -> str | None:
    """Who this session is for job ownership: the browser's id, else the API client's session."""
    if session.owner:
        return session.owner
    sid = getattr(request, "session_hash", None)
    return f"session:{sid}" if sid else None


# --- messages ------------------------------------------------------------------------------
_ICONS = {"ok": "✓", "info": "ℹ", "warn": "⚠", "error": "✗", "busy": "↻"}


def note(text: str, kind: str = "info") -> str:
    """A one-line message box (text is escaped: file names and server messages are not trusted)."""
    return f'<div class="llmc-msg llmc-{kind}">{_ICONS.get(kind, "")} {html.escape(text)}</div>'


def error(text: str) -> str:
    return note(text, "error")


def failed(e: BaseException) -> str:
    """A user error's message box (one line)."""
    return error(one_line(e))


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def progress_bar(done: int, total: int, label: str) -> str:
    total = max(total, 1)
    pct = max(0.0, min(100.0, 100.0 * done / total))
    return (
        f'<div class="llmc-progress"><div class="llmc-bar" style="width:{pct:.1f}%"></div></div>'
        f'<div class="llmc-progress-label">{html.escape(label)}</div>'
    )


CSS = """
.llmc-msg {padding: 8px 12px; border-radius: 6px; margin: 4px 0; font-size: 0.95em;}
.llmc-ok {background: #ecfdf5; color: #065f46; border: 1px solid #a7f3d0;}
.llmc-info {background: #eff6ff; color: #1e3a8a; border: 1px solid #bfdbfe;}
.llmc-busy {background: #fffbeb; color: #92400e; border: 1px solid #fde68a;}
.llmc-warn {background: #fffbeb; color: #92400e; border: 1px solid #fde68a;}
.llmc-error {background: #fef2f2; color: #991b1b; border: 1px solid #fecaca; font-weight: 600;}
.llmc-progress {width: 100%; height: 14px; background: #e5e7eb; border-radius: 7px; overflow: hidden;}
.llmc-bar {height: 100%; background: #2563eb; transition: width 0.3s;}
.llmc-progress-label {font-size: 0.9em; margin-top: 4px; color: #374151;}
.llmc-counts {display: flex; gap: 18px; flex-wrap: wrap; font-size: 0.95em; margin-top: 6px;}
.llmc-counts b {font-variant-numeric: tabular-nums;}
.llmc-sentence {font-size: 1.05em; padding: 6px 0;}
#llmc-model-status {font-size: 0.9em;}
"""
