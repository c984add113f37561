"""Checkpoints: safetensors for tensors, JSON for everything else. Loading never runs code.

A checkpoint is a folder:

* ``model.safetensors``: model weights
* ``optimizer.safetensors``: AdamW moments (for resume)
* ``checkpoint.json``: model config, train config, step, attention-source spec and fingerprint,
  vocabulary fingerprint, library version
* ``vocab.json``: the vocabulary
* ``metrics.jsonl``: the metrics stream up to this step

A save is written whole into a new sibling folder, synced, then swapped in for the old one in one rename
(``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames, recovered by the next save or load): a kill
mid-save leaves the previous checkpoint or the new one, never a mix of two steps. The safetensors files
record their step; a load refuses any that disagree with ``checkpoint.json``, reads only regular files of
bounded size and checks every field first (``checkpoint_check``): a crafted checkpoint is one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import math
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from llmcomp.errors import LLMCompError, one_line
from llmcomp.model.gpt import GPT, GPTConfig
from llmcomp.text.vocab import Vocab
from llmcomp.training.checkpoint_check import check_meta, check_metrics, weights_asked
from llmcomp.training.metrics_log import MAX_METRICS_BYTES, read_jsonl
from llmcomp.training.run_folder import MAX_RECORD_BYTES, read_small

FORMAT_VERSION = 1
MAX_VOCAB_BYTES = 64_000_000  # a vocabulary of a million words is about 10 MB
FILES = ("model.safetensors", "optimizer.safetensors", "vocab.json", "metrics.jsonl", "checkpoint.json")


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


# --- saving: a whole new folder, then one swap ----------------------------------------------------
def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # a platform that cannot open folders (Windows) syncs them with their files
    with contextlib.suppress(OSError):  # a file system that cannot sync folders keeps renames as it can
        os.fsync(fd)
    os.close(fd)


def _old(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.old")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _recover(folder: Path) -> None:
    """Finish what a killed save left: put back a checkpoint moved aside, remove half-written folders."""
    old = _old(folder)
    if not os.path.lexists(folder) and old.is_dir():
        os.rename(old, folder)  # killed between the two renames: the previous checkpoint is whole
    elif old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    for stale in folder.parent.glob(f".{glob.escape(folder.name)}.new-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _swap_in(new: Path, folder: Path) -> None:
    if not os.path.lexists(folder):
        os.rename(new, folder)
    elif _exchange(new, folder):
        shutil.rmtree(new)  # it holds the previous checkpoint now
    else:
        old = _old(folder)
        os.rename(folder, old)
        os.rename(new, folder)
        shutil.rmtree(old, ignore_errors=True)
    _sync_dir(folder.parent)


def save_checkpoint(ckpt: Checkpoint, folder: str | Path) -> Path:
    """Write the checkpoint to ``folder``, atomically: a kill at any point leaves the old one or this one."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _recover(folder)
    new = folder.with_name(f".{folder.name}.new-{secrets.token_hex(4)}")
    new.mkdir()
    try:
        tag = {"step": str(ckpt.step)}  # each tensor file says which step it holds: a load checks they agree
        tied = ckpt.model.lm_head.weight is ckpt.model.wte.weight  # a tied head is stored once, as wte
        state = {k: v.detach().cpu().contiguous() for k, v in ckpt.model.state_dict().items()
                 if not (tied and k == "lm_head.weight")}  # fmt: skip
        _write_synced(new / "model.safetensors", safetensors_bytes(state, metadata=tag))
        if ckpt.optimizer_state:
            _write_synced(new / "optimizer.safetensors", safetensors_bytes(ckpt.optimizer_state, metadata=tag))
        _write_synced(new / "vocab.json", ckpt.vocab.to_json().encode("utf-8"))
        _write_synced(new / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in ckpt.metrics).encode("utf-8"))
        meta = {
            "format_version": FORMAT_VERSION,
            "model_config": ckpt.model.config.to_dict(),
            "train_config": ckpt.train_config,
            "step": ckpt.step,
            "source_spec": ckpt.source_spec,
            "source_fingerprint": ckpt.source_fingerprint,
            "vocab_fingerprint": ckpt.vocab.fingerprint(),
        }
        _write_synced(new / "checkpoint.json", json.dumps(meta, indent=2).encode("utf-8"))
        _sync_dir(new)
        _swap_in(new, folder)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    return folder


# --- loading: every file regular and bounded, every field checked, nothing built before it fits ----------
def _header(path: Path, step: int, what: str) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a safetensors file declares (its header only), if it is a regular file (a FIFO would
    hang, a device never end) and the step it records (none in files saved before steps were) is ``step``."""
    if not stat.S_ISREG(path.lstat().st_mode):
        raise ValueError(f"{path.name} is not a regular file")
    with safe_open(str(path), framework="pt") as f:
        saved = (f.metadata() or {}).get("step")
        if saved is not None and saved != str(step):
            raise CheckpointError(
                f"checkpoint {path.parent}: {what} are from step {one_line(saved, 40)} but checkpoint.json is "
                f"at step {step} (a save was cut short); use an earlier checkpoint"
            )
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not iterable


def _tensors(path: Path, step: int, what: str, fit: Callable[[dict], None] | None = None) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, read once its header is checked (``_header``, then ``fit``)."""
    try:
        shapes = _header(path, step, what)
        if fit is not None:
            fit(shapes)
        return load_file(str(path))
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path.parent}: {path.name} is corrupt or truncated ({one_line(e, 300)})"
        ) from None


def _fit(cfg: GPTConfig, shapes: dict[str, tuple[int, ...]], folder: Path) -> None:
    """Hold the config's sizes to the weights file before a model is built (block_size 10**12 would ask for
    256 TB). A model of this config stores each of these products in its weights, so none can exceed them."""
    blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
    if len(blocks) != cfg.n_layer or blocks != set(range(len(blocks))):  # never range(n_layer): it may be 10**9
        raise CheckpointError(
            f"checkpoint {folder}: weights do not fit the saved config (n_layer {cfg.n_layer}, "
            f"the weights hold {len(blocks)} layers)"
        )
    held = sum(math.prod(s) for s in shapes.values())
    for name, size in weights_asked(cfg).items():
        if size > held:
            raise CheckpointError(
                f"checkpoint {folder}: weights do not fit the saved config ({name} asks for {size:,} weights; "
                f"the file holds {held:,})"
            )


def _load_into(model: GPT, state: dict[str, torch.Tensor], folder: Path) -> None:
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {folder}: weights do not fit the saved config ({one_line(e, 300)})"
        ) from None
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise CheckpointError(f"checkpoint {folder}: weights do not fit the saved config (missing {missing[:3]})")
    if missing and model.lm_head.weight is not model.wte.weight:  # saved by a tied model: its head was wte
        with torch.no_grad():
            model.lm_head.weight.copy_(model.wte.weight)


def load_checkpoint(folder: str | Path, with_optimizer: bool = False) -> Checkpoint:
    """Read a checkpoint folder; raise CheckpointError naming what is missing or damaged."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir() and _old(folder).is_dir():
        folder = _old(folder)  # a save was cut between its two renames: the previous checkpoint is whole
    meta_path = folder / "checkpoint.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint (no checkpoint.json); pass the folder training wrote")
    try:
        meta = json.loads(read_small(meta_path, MAX_RECORD_BYTES))
        why = check_meta(meta)
        if why:
            raise ValueError(why)
        vocab = Vocab.from_json(read_small(folder / "vocab.json", MAX_VOCAB_BYTES))
        cfg = GPTConfig(**meta["model_config"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise CheckpointError(f"checkpoint {folder} has a damaged config or vocabulary ({one_line(e, 300)})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        shown = one_line(repr(meta.get("format_version")), 40)
        raise CheckpointError(f"checkpoint {folder} has format {shown}; expected {FORMAT_VERSION}")
    if vocab.fingerprint() != meta.get("vocab_fingerprint") or len(vocab) != cfg.vocab_size:
        raise CheckpointError(f"checkpoint {folder}: vocab.json does not match the model it was saved with")
    step = meta["step"]
    state = _tensors(folder / "model.safetensors", step, "the weights", lambda shapes: _fit(cfg, shapes, folder))
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise CheckpointError(f"checkpoint {folder}: model.safetensors holds NaN or infinite weights")
    model = GPT(cfg)  # its size bounded by the file's (_fit)
    _load_into(model, state, folder)
    model.eval()
    opt_state: dict[str, torch.Tensor] = {}
    if with_optimizer and (folder / "optimizer.safetensors").exists():
        opt_state = _tensors(folder / "optimizer.safetensors", step, "the optimizer moments")
    metrics: list[dict[str, Any]] = []
    mpath = folder / "metrics.jsonl"
    if os.path.lexists(mpath):
        try:
            metrics = read_jsonl(mpath, MAX_METRICS_BYTES)
        except (OSError, ValueError, RecursionError) as e:
            raise CheckpointError(f"checkpoint {folder}: metrics.jsonl is damaged ({one_line(e, 300)})") from None
    why = check_metrics(metrics, step)
    if why:
        raise CheckpointError(f"checkpoint {folder}: {why}")
    return Checkpoint(model=model, vocab=vocab, step=step, source_spec=meta["source_spec"],
                      source_fingerprint=meta["source_fingerprint"], train_config=meta["train_config"],
                      metrics=metrics, optimizer_state=opt_state, path=folder)  # fmt: skip


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Flatten AdamW state to named tensors for safetensors."""
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            out[f"{idx}.{name}"] = torch.as_tensor(value).detach().cpu().clone().contiguous()  # device-free
    return out


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)
