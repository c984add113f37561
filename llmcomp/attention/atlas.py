"""A head atlas: how closely each head of a multi-head source follows named attention patterns.

Which of an LLM's 270 heads look at the previous word, the first word, or the word a task says
decides the next one? ``head_atlas`` scores every head of a source against patterns over a corpus,
so heads can be read off a ranked table or a layer x head grid, and chosen by data
(``llmcomp.app.head_choice``). This module is also the one writer and reader of the atlas file
(``atlas.json``, and ``atlas.csv`` for spreadsheets).

Score (TransformerLens' head-detection score): for a pattern that names a target cell (i, j) per
row, the attention on the target divided by the row's total attention, averaged over every row
that has a target. ``argmax`` (Clark et al., 2019, "What does BERT look at?"): how often the
target is the row's largest weight (ties share the hit). ``spread`` has no target: the row's
entropy over log(i+1) (1 = uniform over the prefix, 0 = all on one word), rows i >= 1.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmcomp.attention.patterns import BUILTIN, AtlasError, TargetFn, default_patterns, pattern_targets  # noqa: F401
from llmcomp.threads import torch_threads

if TYPE_CHECKING:
    from llmcomp.attention.base import AttentionSource, ProgressFn

FORMAT, VERSION = "llmcomp-atlas", 1
MAX_ATLAS_BYTES = 20_000_000
BATCH = 32  # sentences per score_many call: memory stays (batch x heads x T x T)
_LABEL = re.compile(r"L(\d+)\.H(\d+)")


def head_labels(source: AttentionSource) -> list[str]:
    """The source's names for its heads (``L21.H4`` for the local LLM's pairs), else ``head i``."""
    labels = getattr(source, "head_labels", None)
    return list(labels()) if callable(labels) else [f"head {h}" for h in range(source.n_heads)]


@dataclass
class Atlas:
    """Scores (patterns x heads) in [0, 1], the argmax rate (NaN for ``spread``) and rows counted."""

    labels: list[str]
    patterns: list[str]
    scores: torch.Tensor
    argmax: torch.Tensor
    rows: list[int]
    sentences: int
    source: dict[str, Any] = field(default_factory=dict)

    def _row(self, pattern: str) -> int:
        if pattern not in self.patterns:
            raise AtlasError(f"the atlas has no pattern {pattern!r}; it has {', '.join(self.patterns)}")
        return self.patterns.index(pattern)

    def ranked(self, pattern: str) -> list[tuple[str, float]]:
        """(label, score), best first (ties keep head order); empty when no row had a target."""
        p = self._row(pattern)
        if self.rows[p] == 0:
            return []
        order = sorted(range(len(self.labels)), key=lambda h: -float(self.scores[p, h]))
        return [(self.labels[h], float(self.scores[p, h])) for h in order]

    def grid(self, pattern: str) -> tuple[list[int], list[int], list[list[float | None]]] | None:
        """(layers, heads, values[layer][head]) when every label reads ``L{l}.H{h}``, else None."""
        p = self._row(pattern)
        cells = [_LABEL.fullmatch(label) for label in self.labels]
        if not cells or not all(cells):
            return None
        pos = [(int(m.group(1)), int(m.group(2))) for m in cells if m]
        layers, heads = sorted({lh[0] for lh in pos}), sorted({lh[1] for lh in pos})
        values: list[list[float | None]] = [[None] * len(heads) for _ in layers]
        for h, (layer, head) in enumerate(pos):
            values[layers.index(layer)][heads.index(head)] = float(self.scores[p, h])
        return layers, heads, values

    # --- the file format ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        def nums(t: torch.Tensor) -> list[list[float | None]]:
            return [[None if math.isnan(v) else round(v, 6) for v in row] for row in t.tolist()]

        return {"format": FORMAT, "version": VERSION, "labels": self.labels, "patterns": self.patterns,
                "scores": nums(self.scores), "argmax": nums(self.argmax), "rows": self.rows,
                "sentences": self.sentences, "source": self.source}  # fmt: skip

    @classmethod
    def from_json(cls, data: Any) -> Atlas:
        """An Atlas from parsed JSON, every field checked; AtlasError naming the first fault."""
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise AtlasError(f"not an atlas file (format {FORMAT!r}, version {VERSION})")
        labels, patterns, rows = data.get("labels"), data.get("patterns"), data.get("rows")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise AtlasError("atlas labels must be a non-empty list of strings")
        if not isinstance(patterns, list) or not patterns or not all(isinstance(x, str) for x in patterns):
            raise AtlasError("atlas patterns must be a non-empty list of strings")
        if not isinstance(rows, list) or len(rows) != len(patterns) or not all(_count(x) for x in rows):
            raise AtlasError("atlas rows must be one non-negative integer per pattern")
        if not _count(data.get("sentences")) or not isinstance(data.get("source", {}), dict):
            raise AtlasError("atlas sentences must be a non-negative integer and source an object")
        scores = _table(data.get("scores"), len(patterns), len(labels), "scores", allow_none=False)
        argmax = _table(data.get("argmax"), len(patterns), len(labels), "argmax", allow_none=True)
        return cls(labels, patterns, scores, argmax, rows, data["sentences"], data.get("source", {}))

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), allow_nan=False), encoding="utf-8")
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> Atlas:
        path = Path(path)
        if path.stat().st_size > MAX_ATLAS_BYTES:
            raise AtlasError(f"{path.name} is larger than {MAX_ATLAS_BYTES} bytes; not an atlas")
        try:
            data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AtlasError(f"{path.name} is not valid JSON ({e})") from None
        return cls.from_json(data)

    def write_csv(self, path: str | Path) -> Path:
        """One row per (pattern, head): pattern, head, score, argmax, rows, rank (1 = best)."""
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["pattern", "head", "score", "argmax", "rows", "rank"])
            for p, name in enumerate(self.patterns):
                rank = {label: r for r, (label, _s) in enumerate(self.ranked(name), 1)}
                for h, label in enumerate(self.labels):
                    a = float(self.argmax[p, h])
                    w.writerow([name, label, f"{float(self.scores[p, h]):.6f}", "" if math.isnan(a) else f"{a:.6f}",
                                self.rows[p], rank.get(label, "")])  # fmt: skip
        return path


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _no_constant(name: str) -> None:
    raise AtlasError(f"atlas files hold no {name}")


def _table(x: Any, n: int, m: int, name: str, allow_none: bool) -> torch.Tensor:
    if not isinstance(x, list) or len(x) != n or not all(isinstance(r, list) and len(r) == m for r in x):
        raise AtlasError(f"atlas {name} must be {n} rows of {m} numbers")
    out = torch.full((n, m), math.nan)
    for p, row in enumerate(x):
        for h, v in enumerate(row):
            if v is None and allow_none:
                continue
            if not isinstance(v, int | float) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise AtlasError(f"atlas {name}[{p}][{h}] = {v!r} is not a number in [0, 1]")
            out[p, h] = float(v)
    return out


# --- scoring ------------------------------------------------------------------------------------
def _score_sentence(
    m: torch.Tensor, words: list[str], targets: list[TargetFn | None], sums: torch.Tensor, hits: torch.Tensor,
    rows: list[int],
) -> None:  # fmt: skip
    """Add one sentence's (heads, T, T) matrix to the running sums of every pattern."""
    total = m.sum(-1).clamp_min(1e-30)  # (H, T): 1 for a valid row, but the score is defined as a share
    for p, fn in enumerate(targets):
        if fn is None:  # spread: normalised entropy of rows 1..T-1
            if len(words) < 2:
                continue
            w = (m[:, 1:, :] / total[:, 1:, None]).clamp_min(0)
            ent = -(w * torch.log(w.clamp_min(1e-30))).sum(-1)  # (H, T-1)
            norm = torch.log(torch.arange(2, len(words) + 1, dtype=torch.float32))
            sums[p] += (ent / norm).clamp(0, 1).sum(-1)
            rows[p] += len(words) - 1
            continue
        cells = fn(words)
        if not cells:
            continue
        i = torch.tensor(list(cells), dtype=torch.long)
        j = torch.tensor(list(cells.values()), dtype=torch.long)
        on = m[:, i, j]  # (H, R)
        sums[p] += (on / total[:, i]).sum(-1)
        top = m[:, i, :].amax(-1)
        ties = (m[:, i, :] >= top[..., None] - 1e-6).sum(-1).clamp_min(1)
        hits[p] += ((on >= top - 1e-6).float() / ties).sum(-1)
        rows[p] += len(cells)


def head_atlas(
    source: AttentionSource,
    sentences: Sequence[Sequence[str]],
    patterns: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    batch: int = BATCH,
) -> Atlas:
    """Score every head of ``source`` against ``patterns`` (default: ``default_patterns()``) over
    ``sentences``, scored ``batch`` at a time through ``score_many`` (so a cache serves them).
    Sentences the source fails on are left out (``Atlas.sentences`` counts those used)."""
    from llmcomp.attention.base import ScoreStats

    names = list(dict.fromkeys(p.strip() for p in (patterns or default_patterns())))
    targets = [pattern_targets(p) for p in names]
    n_p = len(names)
    sums = hits = torch.zeros(0)  # sized by the first matrix: some sources know their heads once loaded
    rows, used, done = [0] * n_p, 0, ScoreStats(sentences=len(sentences))
    data = [list(s) for s in sentences]
    for start in range(0, len(data), batch):
        chunk = data[start : start + batch]
        base = ScoreStats(**vars(done))

        def relay(s: ScoreStats, base: ScoreStats = base) -> None:
            if progress:
                now = ScoreStats(**vars(base))
                now.add(s)
                now.sentences = done.sentences
                progress(now)

        result = source.score_many(chunk, progress=relay)
        for words, m in zip(chunk, result.matrices, strict=True):
            if m is None:
                continue
            if used == 0:
                sums, hits = (torch.zeros(n_p, m.shape[0], dtype=torch.float64) for _ in range(2))
            with torch_threads(1):  # many tiny ops: a second thread only spin-waits (20 s -> 1.4 s per 200)
                _score_sentence(m.to(torch.float32), words, targets, sums, hits, rows)
            used += 1
        result.stats.sentences = 0
        done.add(result.stats)
    if used == 0:
        raise AtlasError(f"{source.describe()} scored none of the {len(data)} sentence(s); nothing to map")
    labels = head_labels(source)
    if not labels or len(labels) != sums.shape[1]:
        raise AtlasError(f"{source.describe()} supplies {sums.shape[1]} heads but names {len(labels)}")
    counts = torch.tensor(rows, dtype=torch.float64).clamp_min(1)[:, None]
    scores = (sums / counts).clamp(0, 1).to(torch.float32)
    argmax = (hits / counts).clamp(0, 1).to(torch.float32)
    argmax[[p for p, fn in enumerate(targets) if fn is None]] = math.nan
    return Atlas(labels, names, scores, argmax, rows, used, source.spec())
