"""``--device``, ``--llm-device`` and ``--llm-precision``: where the model trains and the local LLM runs.

One definition for every command that has them (train, compare and its suite; score and train get the
LLM's two from ``common.SOURCE_FLAGS`` with the other source flags). Defaults are the configs':
``TrainConfig.device`` and ``LocalLLMConfig``'s (a flag left out sets nothing). Checking a device
against this machine imports torch, so it happens when a command runs, never for ``--help``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from llmcomp.cli.common import SOURCE_FLAGS, _dest
from llmcomp.training.config import TrainConfig

if TYPE_CHECKING:
    from llmcomp.experiments.compare import CompareConfig

#: the local LLM's options that these flags set (``SOURCE_FLAGS`` has their flag and help)
LLM_OPTIONS = ("device", "precision")


def add_device_flag(g: Any) -> None:
    """``--device`` (``TrainConfig.device``) into the argument group ``g``."""
    g.add_argument(
        "--device",
        default=TrainConfig.device,
        help="where the model trains (and the local LLM scores, unless --llm-device says otherwise): auto (a CUDA "
        "GPU if torch sees one, else mps, else cpu), cpu, cuda, cuda:N or mps; default: %(default)s",
    )


def add_llm_flags(g: Any) -> None:
    """``--llm-device`` and ``--llm-precision``, as ``common.add_source_args`` defines them, into ``g``
    (for a command without the source flags)."""
    for option in LLM_OPTIONS:
        _group, flag, text = SOURCE_FLAGS[option]
        g.add_argument(flag, dest=_dest(option), metavar=option.upper(), help=text)


def llm_device(args: argparse.Namespace) -> str | None:
    """The local LLM's device: ``--llm-device``, else ``--device`` when it was changed from its default
    (one flag moves both), else None (``LocalLLMConfig``'s)."""
    given = getattr(args, _dest("device"), None)
    device = getattr(args, "device", None)
    return given if given is not None else device if device not in (None, TrainConfig.device) else None


def llm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The local LLM's options these flags give (typed as the source declares them; {} when none is)."""
    from llmcomp.cli.common import source_options

    options = source_options(args, "local")
    device = llm_device(args)
    return options | ({"device": device} if device is not None else {})


def check_devices(config: CompareConfig) -> None:
    """A device this machine lacks, or a precision it cannot run there (fp16 off a CUDA GPU), stops a comparison here in one
    line, before anything is scored or trained (not once per source, as each run would find it)."""
    from llmcomp.devices import AUTO, DeviceError, precision_error, resolve_device

    resolve_device(config.train.device, "--device")
    local = config.source_options.get("local", {})
    where = resolve_device(str(local.get("device") or AUTO), "--llm-device")  # AUTO: LocalLLMConfig's
    refused = precision_error(str(local.get("precision") or "fp32"), where.type)
    if refused is not None:
        raise DeviceError(refused)
