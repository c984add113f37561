"""Per-browser-session state (held in ``gr.State``, so in server memory only, one per session).

The API key a visitor types lives here and nowhere else: never in a file, the cache, a checkpoint
or a log, and ``repr()`` does not show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmcomp.attention.budget import Usage
from llmcomp.text import Corpus

if TYPE_CHECKING:
    import torch

    from llmcomp.attention.base import ScoreStats


@dataclass
class SourceSettings:
    """What the Attention tab's form says about the source (no secrets)."""

    kind: str = "local"
    n_heads: int = 1  # local: output heads; baselines: heads; learned: learned heads
    layers: str = "all"  # local only
    base_url: str = ""  # openai only; empty = the server's configured endpoint
    model: str = ""  # openai only; empty = the server's configured model
    mode: str = "sentence"  # openai only
    relations: tuple[str, ...] = ("meaning",)  # openai only: one head per relation


@dataclass
class Scored:
    """One scoring pass over (part of) the session's corpus."""

    settings: SourceSettings
    description: str
    matrices: list[torch.Tensor | None]  # one per corpus sentence; None = not scored (yet) or failed
    failures: dict[int, str]
    stats: ScoreStats


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
