"""The model view behind the Attention tab's Heads section: every head of a multi-head source
mapped against the atlas's patterns, one head's matrix for any sentence, and picked heads turned
into the session's source.

Mapping reads the first ``ModelViewConfig.max_sentences`` training sentences (never the held-out
ones: heads picked here may be trained on) in a background job with progress, a deadline and a stop,
admitted to the local LLM's lane like any scoring pass. Atlases are kept per (corpus sha, source
fingerprint, patterns, sentences), so switching pattern or clicking a head never maps again.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from llmcomp.app.jobs import Job
from llmcomp.app.sources import FORM_LIMITS, SourceSettings, build_source
from llmcomp.attention.registry import PAID
from llmcomp.errors import LLMCompError

if TYPE_CHECKING:
    import torch

    from llmcomp.app.jobs import JobManager
    from llmcomp.app.keys import KeyPolicy
    from llmcomp.attention.atlas import Atlas
    from llmcomp.attention.base import AttentionSource, ScoreStats
    from llmcomp.attention.cache import AttentionCache
    from llmcomp.text.corpus import Corpus

#: what "Map all heads" maps unless the visitor chose a free multi-head source of another kind
ALL_LOCAL_HEADS: dict[str, Any] = {"kind": "local", "heads": "all"}
_LABEL = re.compile(r"L(\d+)\.H(\d+)")


class ModelViewError(LLMCompError, ValueError):
    """A sentence, head or pick the model view cannot use, with what to do instead."""


@dataclass(frozen=True)
class ModelViewConfig:
    """How much the Heads section maps, and for how long."""

    # 50 sentences x 270 heads of the local LLM: a few seconds on 2 cores once the model is loaded
    max_sentences: int = 50
    deadline_s: float = 300.0  # a mapping still running after this is stopped, with a one-line reason
    cache_entries: int = 8  # atlases kept in memory, least recently used dropped first
    patterns: tuple[str, ...] = ()  # empty: llmcomp.attention.atlas.default_patterns()

    def pattern_names(self) -> list[str]:
        from llmcomp.attention.patterns import default_patterns

        return list(self.patterns or default_patterns())


_CACHE: OrderedDict[tuple, Atlas] = OrderedDict()
_LOCK = threading.Lock()


def mapped_description(settings: SourceSettings) -> dict[str, Any]:
    """The source whose heads are mapped: the visitor's own when it is a free source of several heads
    other than the local LLM (a baseline, the oracle), else every head of the local LLM."""
    if settings.kind not in PAID and settings.kind not in ("local", "learned") and settings.n_heads > 1:
        return settings.description()
    return dict(ALL_LOCAL_HEADS)


def _key(corpus: Corpus, source: AttentionSource, patterns: Sequence[str], n: int) -> tuple:
    fingerprint = json.dumps(source.fingerprint(), sort_keys=True, default=str)
    return corpus.sha256, fingerprint, tuple(patterns), n


def _sentences(corpus: Corpus, config: ModelViewConfig) -> list[list[str]]:
    return corpus.train[: config.max_sentences]


def _source(settings: SourceSettings, cache: AttentionCache | None, keys: KeyPolicy | None) -> AttentionSource:
    return build_source(mapped_description(settings), cache=cache, keys=keys)


def cached_atlas(settings: SourceSettings, corpus: Corpus, config: ModelViewConfig | None = None) -> Atlas | None:
    """The atlas already mapped for this corpus and source, if any (nothing is scored)."""
    config = config or ModelViewConfig()
    source = _source(settings, None, None)
    try:
        key = _key(corpus, source, config.pattern_names(), len(_sentences(corpus, config)))
    finally:
        source.close()
    with _LOCK:
        atlas = _CACHE.get(key)
        if atlas is not None:
            _CACHE.move_to_end(key)
        return atlas


def _store(key: tuple, atlas: Atlas, entries: int) -> None:
    with _LOCK:
        _CACHE[key] = atlas
        _CACHE.move_to_end(key)
        while len(_CACHE) > max(entries, 1):
            _CACHE.popitem(last=False)


class AtlasJob(Job):
    """``head_atlas`` in a worker thread; ``result`` holds the Atlas once finished (and it is cached)."""

    kind = "scoring"  # a stopped job whose source ignores the cancel is let go, as for scoring passes

    def __init__(self, source: AttentionSource, sentences: list[list[str]], key: tuple, config: ModelViewConfig,
                 owner: str | None = None):  # fmt: skip
        super().__init__(owner, label="head atlas", scoring={"done": 0, "sentences": len(sentences)})
        self.source, self.sentences, self.key, self.config = source, sentences, key, config
        self.result: Atlas | None = None
        self._deadline = time.monotonic() + config.deadline_s

    def on_scoring(self, stats: ScoreStats) -> None:
        if time.monotonic() > self._deadline:
            self.stop(f"mapping the heads took longer than {self.config.deadline_s:g} s; try again when the server is "
                      "less busy")  # fmt: skip
        super().on_scoring(stats)

    def _run(self) -> dict[str, Any]:
        from llmcomp.attention.atlas import head_atlas

        self.result = head_atlas(self.source, self.sentences, list(self.key[2]), progress=self.on_scoring)
        self.check_stop()
        _store(self.key, self.result, self.config.cache_entries)
        return {"status": "finished"}

    def _finally(self) -> None:
        self.source.close()


def start_mapping(
    settings: SourceSettings,
    corpus: Corpus,
    jobs: JobManager,
    owner: str | None,
    *,
    keys: KeyPolicy | None = None,
    cache: AttentionCache | None = None,
    config: ModelViewConfig | None = None,
) -> AtlasJob:
    """Map the heads in the background; the local LLM takes the local lane (one pass per visitor there:
    a newer one replaces theirs; a full lane refuses with one line)."""
    config = config or ModelViewConfig()
    source = _source(settings, cache, keys)
    sentences = _sentences(corpus, config)
    key = _key(corpus, source, config.pattern_names(), len(sentences))
    lane = "local" if source.kind == "local" else None

    def start() -> AtlasJob:
        job = AtlasJob(source, sentences, key, config, owner)
        job.start("scoring")
        return job

    try:
        return jobs.admit_scoring(lane, owner, start)
    except BaseException:
        source.close()
        raise


@dataclass(frozen=True)
class HeadGrid:
    """A pattern's scores as rows of cells: (head label, score), None where a layer lacks that head."""

    pattern: str
    rows: list[str]
    cols: list[str]
    cells: list[list[tuple[str, float] | None]]


def head_grid(atlas: Atlas, pattern: str) -> HeadGrid:
    """Layer x head for the local LLM's ``L{l}.H{h}`` labels; one row of named heads otherwise."""
    grid = atlas.grid(pattern)
    if grid is None:
        p = atlas.patterns.index(pattern)
        cells = [[(label, float(atlas.scores[p, h])) for h, label in enumerate(atlas.labels)]]
        return HeadGrid(pattern, [""], list(atlas.labels), cells)  # type: ignore[arg-type]
    layers, heads, values = grid
    rows = [[None if v is None else (f"L{layer}.H{head}", v) for head, v in zip(heads, vs, strict=True)]
            for layer, vs in zip(layers, values, strict=True)]  # fmt: skip
    return HeadGrid(pattern, [f"L{layer}" for layer in layers], [f"H{h}" for h in heads], rows)


def sentence_words(corpus: Corpus, sentence_no: Any, typed: str | None) -> tuple[list[str], str]:
    """The words to show and a caption: the typed sentence when there is one (tokenized, at most the
    corpus's ``max_words``), else corpus sentence ``sentence_no`` (clamped)."""
    from llmcomp.text.tokenizer import tokenize

    text = str(typed or "").strip()
    if text:
        if "\n" in text:
            raise ModelViewError("type one sentence on one line")
        words = tokenize(text)
        if not words:
            raise ModelViewError("the typed sentence has no words; type a sentence, or clear the box to use the corpus")
        top = corpus.config.max_words
        if len(words) > top:
            raise ModelViewError(f"the typed sentence has {len(words)} words; this corpus allows at most {top}")
        return words, "your sentence"
    n = len(corpus.sentences)
    try:
        idx = min(max(int(sentence_no or 0), 0), n - 1)
    except (TypeError, ValueError):
        idx = 0
    return corpus.sentences[idx], f"sentence {idx}"


def head_matrix(
    atlas: Atlas,
    label: str,
    words: list[str],
    *,
    keys: KeyPolicy | None = None,
    cache: AttentionCache | None = None,
) -> tuple[torch.Tensor, str]:
    """One mapped head's (T, T) matrix over ``words`` and a title; a local LLM head runs alone
    (``heads="L.H"``: only the layers up to it), any other source's head is cut from its matrix."""
    label = str(label or "").strip()
    if label not in atlas.labels:
        raise ModelViewError(f"no head {label[:40]!r} in the map; click a cell of the grid (or map the heads first)")
    m = _LABEL.fullmatch(label)
    if atlas.source.get("kind") == "local" and m:
        description = {"kind": "local", "heads": f"{m[1]}.{m[2]}"}
        index = 0
    else:
        description = {k: v for k, v in atlas.source.items() if v is not None}
        index = atlas.labels.index(label)
    source = build_source(description, cache=cache, keys=keys)
    try:
        return source.score(words)[index], f"{source.describe()} · {label}"
    finally:
        source.close()


def picked_labels(text: str | None) -> list[str]:
    """The picked heads, in order, each once: ``L21.H4`` (or ``21.4``), separated by commas or spaces."""
    out: list[str] = []
    for item in re.split(r"[,\s]+", str(text or "").strip()):
        if not item:
            continue
        m = _LABEL.fullmatch(item) or re.fullmatch(r"(\d+)\.(\d+)", item)
        if not m:
            raise ModelViewError(f"cannot read picked head {item[:30]!r}; pick the local LLM's heads, e.g. L21.H4")
        label = f"L{int(m[1])}.H{int(m[2])}"
        if label not in out:
            out.append(label)
    return out


def add_pick(text: str | None, label: str) -> str:
    """The picked heads with ``label`` added (once), as the box shows them."""
    labels = picked_labels(text)
    if label not in labels:
        labels.append(label)
    return ", ".join(labels)


def use_heads(settings: SourceSettings, picked: str | None) -> SourceSettings:
    """The session's source set to the local LLM with the picked heads, one supplied head each; the web
    form's limits apply (at most ``FORM_LIMITS['n_heads']`` heads). One-line errors."""
    labels = picked_labels(picked)
    if not labels:
        raise ModelViewError("no heads picked; click cells of the grid first (or type L21.H4, ...)")
    top = int(FORM_LIMITS["n_heads"])
    if len(labels) > top:
        raise ModelViewError(f"{len(labels)} heads picked; the web form allows at most {top}")
    pairs = ",".join(f"{m[1]}.{m[2]}" for m in (_LABEL.fullmatch(label) for label in labels) if m)
    chosen = replace(settings, kind="local", llm_heads=pairs)
    chosen.description()  # the form's own checks (SourceFormError, one line)
    return chosen
