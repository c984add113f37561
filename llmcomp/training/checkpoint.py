"""Checkpoints: safetensors for tensors, JSON for everything else. Loading never runs code.

A checkpoint is a folder:

* ``model.safetensors``: model weights
* ``optimizer.safetensors``: AdamW moments (for resume)
* ``checkpoint.json``: model config, train config, step, attention-source spec and fingerprint,
  vocabulary fingerprint, library version
* ``vocab.json``: the vocabulary
* ``metrics.jsonl``: the metrics stream up to this step
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmcomp.errors import LLMCompError
from llmcomp.model.gpt import GPT, GPTConfig
from llmcomp.text.vocab import Vocab

FORMAT_VERSION = 1


class CheckpointError(LLMCompError, ValueError):
    """A checkpoint that cannot be used, with a one-line reason."""


@dataclass
class Checkpoint:
    model: GPT
    vocab: Vocab
    step: int
    source_spec: dict[str, Any]
    source_fingerprint: dict[str, Any]
    train_config: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)
    path: Path | None = None


def _write_atomic(path: Path, writer) -> None:
    tmp = path.with_name(path.name + ".tmp")
    writer(tmp)
    tmp.replace(path)


def save_checkpoint(ckpt: Checkpoint, folder: str | Path) -> Path:
    """Write every file to a temporary name first, so a crash never leaves a half-written file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in ckpt.model.state_dict().items() if k != "lm_head.weight"}
    _write_atomic(folder / "model.safetensors", lambda p: save_file(state, str(p)))
    if ckpt.optimizer_state:
        _write_atomic(folder / "optimizer.safetensors", lambda p: save_file(ckpt.optimizer_state, str(p)))
    _write_atomic(folder / "vocab.json", lambda p: p.write_text(ckpt.vocab.to_json(), encoding="utf-8"))
    _write_atomic(
        folder / "metrics.jsonl",
        lambda p: p.write_text("".join(json.dumps(m) + "\n" for m in ckpt.metrics), encoding="utf-8"),
    )
    meta = {
        "format_version": FORMAT_VERSION,
        "model_config": ckpt.model.config.to_dict(),
        "train_config": ckpt.train_config,
        "step": ckpt.step,
        "source_spec": ckpt.source_spec,
        "source_fingerprint": ckpt.source_fingerprint,
        "vocab_fingerprint": ckpt.vocab.fingerprint(),
    }
    _write_atomic(folder / "checkpoint.json", lambda p: p.write_text(json.dumps(meta, indent=2), encoding="utf-8"))
    return folder


def load_checkpoint(folder: str | Path, with_optimizer: bool = False) -> Checkpoint:
    """Read a checkpoint folder; raise CheckpointError naming what is missing or damaged."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    meta_path = folder / "checkpoint.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint (no checkpoint.json); pass the folder training wrote")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        vocab = Vocab.from_json((folder / "vocab.json").read_text(encoding="utf-8"))
        cfg = GPTConfig(**meta["model_config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {folder} has a damaged config or vocabulary ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {folder} has format {meta.get('format_version')}; expected {FORMAT_VERSION}")
    if vocab.fingerprint() != meta.get("vocab_fingerprint") or len(vocab) != cfg.vocab_size:
        raise CheckpointError(f"checkpoint {folder}: vocab.json does not match the model it was saved with")
    try:
        state = load_file(str(folder / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {folder}: model.safetensors is corrupt or truncated ({e})") from None
    model = GPT(cfg)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {folder}: weights do not fit the saved config ({str(e).splitlines()[0]})"
        ) from None
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise CheckpointError(f"checkpoint {folder}: weights do not fit the saved config (missing {missing[:3]})")
    model.eval()
    opt_state: dict[str, torch.Tensor] = {}
    if with_optimizer and (folder / "optimizer.safetensors").is_file():
        try:
            opt_state = load_file(str(folder / "optimizer.safetensors"))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {folder}: optimizer.safetensors is corrupt ({e})") from None
    metrics = []
    mpath = folder / "metrics.jsonl"
    if mpath.is_file():
        metrics = [json.loads(line) for line in mpath.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Checkpoint(
        model=model,
        vocab=vocab,
        step=int(meta["step"]),
        source_spec=meta["source_spec"],
        source_fingerprint=meta["source_fingerprint"],
        train_config=meta["train_config"],
        metrics=metrics,
        optimizer_state=opt_state,
        path=folder,
    )


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Flatten AdamW state to named tensors for safetensors."""
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            out[f"{idx}.{name}"] = torch.as_tensor(value).detach().clone().contiguous()
    return out


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)
