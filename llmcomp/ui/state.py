"""Per-browser-session state (held in ``gr.State``, so in server memory only, one per session).

The API key a visitor types lives here and nowhere else: never in a file, the cache, a checkpoint
or a log, and ``repr()`` does not show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

    def __repr__(self) -> str:
        corpus = self.corpus.name if self.corpus else None
        return (
            f"Session(corpus={corpus!r}, source={self.settings.kind!r}, api_key={'set' if self.api_key else 'unset'})"
        )

    __str__ = __repr__
