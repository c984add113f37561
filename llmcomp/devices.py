"""Which torch device to run on: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked in one place.

One home for the names, the choice ``auto`` makes and the error for a device that is not there, shared by
the trainer (``TrainConfig.device``) and the local LLM (``LocalLLMConfig.device``). Names are checked
without torch (configs validate before torch loads); torch is imported only to resolve one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from llmcomp.errors import LLMCompError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
#: where every config starts (``TrainConfig.device``, ``LocalLLMConfig.device``): a GPU if torch sees one
AUTO = "auto"
#: the local LLM's precisions (``LocalLLMConfig.precision``, the first its default): fp32, bf16 (on the CPU
#: bf16 weights in the lean pass, on CUDA autocast) or fp16 (autocast on CUDA only)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
#: the device kinds each precision runs on (None: every one)
PRECISION_DEVICES: dict[str, tuple[str, ...] | None] = {"fp32": None, "bf16": ("cpu", "cuda"), "fp16": ("cuda",)}
_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class DeviceError(LLMCompError, ValueError):
    """A device name that is not one, or a device this machine does not have (one line, naming the remedy)."""


def check_device_name(name: object) -> str:
    """``name`` if it names a device kind we run on; DeviceError otherwise (no torch needed)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DeviceError(f"unknown device {name!r}; choose {DEVICE_NAMES}")
    return name


def precision_error(precision: str, device_type: str, flag: str = "--llm-precision") -> str | None:
    """Why ``precision`` cannot run on a device of ``device_type`` (one line naming ``flag``), or None if it can."""
    kinds = PRECISION_DEVICES.get(precision, ())
    if kinds is None or device_type in kinds:
        return None
    where = (
        "a CUDA GPU only"
        if kinds == ("cuda",)
        else " or ".join("the CPU" if k == "cpu" else "a CUDA GPU" for k in kinds)
    )
    other = "bf16 or fp32" if precision == "fp16" and device_type == "cpu" else "fp32"
    return f"{flag} {precision} runs on {where} (the LLM runs on {device_type}); use {flag} {other}"


def available_devices() -> list[str]:
    """``auto``, ``cpu`` and the GPUs torch sees here (``cuda``, ``cuda:1``, ..., ``mps``): the choices a form
    offers. Imports torch."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = (["cuda"] if count else []) + [f"cuda:{i}" for i in range(1, count)]
    return [AUTO, "cpu", *gpus, *(["mps"] if mps is not None and mps.is_available() else [])]


def check_available(name: object, field: str) -> str:
    """``name`` if this machine has it (``auto`` and ``cpu`` always, without torch); else a one-line
    DeviceError that says, for the form's ``field``, which devices it has."""
    name = check_device_name(name)
    if name in (AUTO, "cpu"):
        return name
    have = available_devices()
    if name not in have and not (name == "cuda:0" and "cuda" in have):
        raise DeviceError(f"{field} {name!r}: this machine has no such device; choose one of {', '.join(have)}")
    return name


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """The torch device ``name`` means here: ``auto`` is cuda when torch sees a GPU, else mps, else cpu.
    An explicit GPU this machine lacks is a one-line DeviceError naming ``flag cpu`` and ``flag auto``."""
    import torch

    name = check_device_name(name)
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    remedy = f"use {flag} cpu, or {flag} auto to take a GPU only where there is one"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine; {remedy}")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); {remedy}")
    if name == "mps" and not has_mps:
        raise DeviceError(f"device 'mps' asked for, but torch sees no Apple GPU (MPS) here; {remedy}")
    return torch.device(name)


def seed_step(device: torch.device, seed: int) -> None:
    """Seed dropout for one step on ``device``. Only the generators in use are seeded: ``torch.manual_seed``
    seeds every backend and captures a stack trace each call (~1 ms a step)."""
    import torch

    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    elif device.type == "mps":
        torch.mps.manual_seed(seed)
