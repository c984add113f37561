"""Choosing the local LLM's heads by data: ``heads="top:K:PATTERN"`` resolved into explicit pairs.

The local source takes explicit heads (``"21.4,23.5"``) and refuses ``top:`` selections: which heads
are best for a pattern depends on the corpus, so the choice belongs here, before a source is built.
``resolve_heads`` maps every head of the same selection (``heads="all"``) with
``llmcomp.attention.atlas`` over the TRAINING split only (``corpus.train_idx``: a choice that read
validation sentences would leak them into the model it is then measured on), takes the K best for
PATTERN and returns the description with those pairs. ``HeadChoice`` records what was chosen and
from how much data; this module owns its file, ``heads.json`` in the run folder.

Train (``llmcomp.app.training``, CLI and web app) and compare (``llmcomp.experiments.compare``)
both go through ``source_for_corpus``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcomp.errors import LLMCompError
from llmcomp.training.run_folder import HEADS, read_small

if TYPE_CHECKING:
    from llmcomp.attention.base import AttentionSource, ProgressFn
    from llmcomp.text.corpus import Corpus

HEADS_FORMAT = 1
_TOP = re.compile(r"top:(\d+):(.+)")
_LABEL = re.compile(r"L(\d+)\.H(\d+)")


class HeadChoiceError(LLMCompError, ValueError):
    """A ``top:K:PATTERN`` that cannot be resolved, or a heads.json that cannot be read."""


@dataclass
class HeadChoiceConfig:
    """How much of the training split the atlas reads (the first N training sentences)."""

    # 200 sentences of the local LLM with all 270 heads take about 30 s on a 2-core CPU (bench/atlas.py)
    max_sentences: int | None = 200


@dataclass(frozen=True)
class TopHeads:
    k: int
    pattern: str


def parse_top(heads: Any) -> TopHeads | None:
    """``"top:4:binding"`` -> TopHeads(4, "binding"); None for any other heads value."""
    if not isinstance(heads, str) or not heads.strip().lower().startswith("top:"):
        return None
    m = _TOP.fullmatch(heads.strip())
    if not m or int(m[1]) < 1 or not m[2].strip():
        raise HeadChoiceError(f"cannot read heads={heads!r}; write top:K:PATTERN, e.g. top:4:binding (K >= 1)")
    return TopHeads(int(m[1]), m[2].strip())


@dataclass
class HeadChoice:
    """The heads an atlas chose: pattern, K, their labels and scores, and the training sentences it read."""

    pattern: str
    k: int
    labels: list[str]
    scores: list[float]
    sentences: int
    heads: str  # the explicit selection the source was built with, e.g. "21.4,23.5"
    split: str = "train"
    source: dict[str, Any] = field(default_factory=dict)  # the atlas source's spec (heads="all")

    def to_json(self) -> dict[str, Any]:
        return {"format": HEADS_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any) -> HeadChoice:
        """Every field checked; HeadChoiceError naming the first fault."""
        if not isinstance(data, dict) or data.get("format") != HEADS_FORMAT:
            raise HeadChoiceError(f"not a heads.json of format {HEADS_FORMAT}")
        labels, scores = data.get("labels"), data.get("scores")
        if not isinstance(labels, list) or not all(isinstance(x, str) and _LABEL.fullmatch(x) for x in labels):
            raise HeadChoiceError("heads.json labels must be a list of L{layer}.H{head}")
        if not isinstance(scores, list) or len(scores) != len(labels) or not all(_unit(x) for x in scores):
            raise HeadChoiceError("heads.json scores must be one number in [0, 1] per label")
        k, n = data.get("k"), data.get("sentences")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (k, n)) or k != len(labels):
            raise HeadChoiceError("heads.json k must equal the number of labels and sentences be a count")
        for name in ("pattern", "heads", "split"):
            if not isinstance(data.get(name), str):
                raise HeadChoiceError(f"heads.json {name} must be text")
        if data["split"] != "train" or data["heads"] != pairs_of(labels):
            raise HeadChoiceError("heads.json must name the training split and the pairs of its labels")
        if not isinstance(data.get("source", {}), dict):
            raise HeadChoiceError("heads.json source must be an object")
        return cls(data["pattern"], k, labels, [float(x) for x in scores], n, data["heads"], "train",
                   data.get("source", {}))  # fmt: skip

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / HEADS
        path.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False), encoding="utf-8")
        return path

    @classmethod
    def read(cls, run_dir: str | Path) -> HeadChoice | None:
        """The run's choice, or None when its heads were not chosen by data."""
        path = Path(run_dir) / HEADS
        if not path.exists():
            return None
        try:
            return cls.from_json(json.loads(read_small(path)))
        except (OSError, ValueError) as e:
            raise HeadChoiceError(f"{path} cannot be read ({e})") from None


def _unit(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and 0.0 <= x <= 1.0


def pairs_of(labels: list[str]) -> str:
    """``["L21.H4", "L23.H5"]`` -> ``"21.4,23.5"`` (the local source's heads option)."""
    out = []
    for label in labels:
        m = _LABEL.fullmatch(label)
        if not m:
            raise HeadChoiceError(
                f"head {label!r} is not a local LLM pair (L<layer>.H<head>); top:K needs the local source"
            )
        out.append(f"{m[1]}.{m[2]}")
    return ",".join(out)


Builder = Callable[[Mapping[str, Any]], "AttentionSource"]


def resolve_heads(
    corpus: Corpus,
    description: Mapping[str, Any],
    *,
    build: Builder | None = None,
    config: HeadChoiceConfig | None = None,
    progress: ProgressFn | None = None,
) -> tuple[dict[str, Any], HeadChoice | None]:
    """``description`` with ``heads="top:K:PATTERN"`` replaced by the K best pairs for PATTERN on the
    training split, and the choice; any other description comes back as it is, with None.

    ``build`` makes the atlas source from a description (default: ``build_source`` without a cache:
    all heads of a sentence take ~250 KB)."""
    from llmcomp.attention.atlas import head_atlas, pattern_targets

    top = parse_top(description.get("heads"))
    if top is None:
        return dict(description), None
    if description.get("kind") != "local":
        raise HeadChoiceError(f"heads=top:K:PATTERN chooses the local LLM's heads, not {description.get('kind')!r}'s")
    pattern_targets(top.pattern)  # an unknown pattern fails before the model runs
    config = config or HeadChoiceConfig()
    train = [corpus.sentences[i] for i in corpus.train_idx][: config.max_sentences]
    atlas_description = {k: v for k, v in description.items() if k not in ("heads", "n_heads")} | {"heads": "all"}
    if build is None:
        from llmcomp.app.sources import build_source

        build = build_source
    source = build(atlas_description)
    try:
        atlas = head_atlas(source, train, [top.pattern], progress=progress)
    finally:
        source.close()
    ranked = atlas.ranked(top.pattern)
    if not ranked:
        raise HeadChoiceError(f"no training sentence has a target for pattern {top.pattern!r}; choose another")
    if top.k > len(ranked):
        raise HeadChoiceError(f"top:{top.k} asks for more heads than the {len(ranked)} the selected layers have")
    best = ranked[: top.k]
    labels = [label for label, _ in best]
    choice = HeadChoice(top.pattern, top.k, labels, [round(s, 6) for _, s in best], atlas.sentences,
                        pairs_of(labels), source=atlas.source)  # fmt: skip
    resolved = {k: v for k, v in description.items() if k != "n_heads"} | {"heads": choice.heads}
    return resolved, choice


def source_for_corpus(
    corpus: Corpus,
    description: Mapping[str, Any],
    build: Builder,
    *,
    config: HeadChoiceConfig | None = None,
    progress: ProgressFn | None = None,
) -> tuple[AttentionSource, HeadChoice | None]:
    """The source a training run on ``corpus`` uses: ``top:`` heads resolved first (on the training
    split, atlas source built by ``build`` without its cache), then ``build(description)``."""
    resolved, choice = resolve_heads(corpus, description, config=config, progress=progress)
    return build(resolved), choice
