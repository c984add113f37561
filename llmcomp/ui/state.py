"""Per-browser-session state (held in ``gr.State``, so in server memory only, one per session), and each
browser's page choices, which outlive a session so that a reload restores them (``PageMemory``).

The API key a visitor types lives here and nowhere else: never in a file, the cache, a checkpoint
or a log, and ``repr()`` does not show it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from llmcomp.app.attention_view import Scored
from llmcomp.app.budget import Usage
from llmcomp.app.sources import SourceSettings
from llmcomp.text import Corpus

if TYPE_CHECKING:
    import torch


@dataclass
class HeadView:
    """One head's matrix over its words; rows from ``generated_from`` on are generated words."""

    matrix: torch.Tensor
    words: list[str]
    generated_from: int


@dataclass
class GenerationView:
    """The last generation, kept so the head selector can redraw without generating again."""

    text: str
    heads: dict[str, HeadView]  # label shown in the head selector -> its view
    run: str = ""  # the run picked (and generated from): a refreshed run list keeps it selected


@dataclass(repr=False)
class Session:
    owner: str | None = None  # random id kept in the browser (survives a page refresh)
    corpus: Corpus | None = None
    settings: SourceSettings = field(default_factory=SourceSettings)
    api_key: str = ""  # typed by the visitor; session memory only
    scored: Scored | None = None
    owner_key_usage: Usage = field(default_factory=Usage)
    generation: GenerationView | None = None
    estimated_for: SourceSettings | None = None  # the source the estimate on screen was made for
    drawn_for: SourceSettings | None = None  # the source the heatmap on screen was drawn for (None: no heatmap)

    def __repr__(self) -> str:
        corpus = self.corpus.name if self.corpus else None
        return (
            f"Session(corpus={corpus!r}, source={self.settings.kind!r}, api_key={'set' if self.api_key else 'unset'})"
        )

    __str__ = __repr__


@dataclass
class PageChoice:
    """What one browser last chose on the page: its corpus (a bundled name, or its own upload kept here on
    the server) and its source settings. Never the API key: ``SourceSettings`` holds none."""

    bundled: str | None = None
    upload: Corpus | None = None
    settings: SourceSettings | None = None


class PageMemory:
    """Each browser's page choices by browser id, in server memory, so that a reload restores them.

    Bounded: the least recently seen browsers are forgotten first, and uploads (up to the upload limit
    each) are kept for fewer browsers than settings. A browser without an id (an API client) is never
    remembered; nothing a client sends is used as a path."""

    def __init__(self, max_browsers: int = 2000, max_uploads: int = 16):
        self._pages: OrderedDict[str, PageChoice] = OrderedDict()
        self._lock = threading.Lock()
        self.max_browsers, self.max_uploads = max_browsers, max_uploads

    def _page(self, owner: str) -> PageChoice:
        page = self._pages.pop(owner, None) or PageChoice()
        self._pages[owner] = page
        while len(self._pages) > self.max_browsers:
            self._pages.popitem(last=False)
        uploads = [p for p in self._pages.values() if p.upload is not None]
        for old in uploads[: max(0, len(uploads) - self.max_uploads)]:
            old.upload = None
        return page

    def remember_source(self, owner: str | None, settings: SourceSettings) -> None:
        if owner:
            with self._lock:
                self._page(owner).settings = settings

    def remember_corpus(self, owner: str | None, corpus: Corpus, bundled: bool) -> None:
        if owner:
            with self._lock:
                page = self._page(owner)
                page.bundled, page.upload = (corpus.name, None) if bundled else (None, corpus)

    def recall(self, owner: str | None) -> PageChoice:
        """A copy of what ``owner`` chose (empty when nothing is remembered)."""
        with self._lock:
            page = self._pages.get(owner) if owner else None
            return replace(page) if page is not None else PageChoice()
