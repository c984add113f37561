"""Sources as a comparison names them: ``"oracle:shift=1"`` is the kind ``oracle`` with ``shift=1``.

The kinds, and which of them are baselines, come from the catalogue (``llmcomp.attention.registry``),
so a label that names no source is refused here with the list of kinds, and the baselines a
comparison runs by default are the catalogue's. Cheap to import: no torch.
"""

from __future__ import annotations

from typing import Any

from llmcomp.attention.registry import BASELINES, SOURCES
from llmcomp.errors import LLMCompError

#: the ``--sources`` default that ``llmcomp compare`` declares; it means "auto" (see ``compare.auto_sources``)
CLI_DEFAULT_SOURCES = ",".join((*BASELINES, "local"))


class CompareError(LLMCompError, ValueError):
    """A comparison that cannot run or a folder that cannot be read, with a one-line reason."""


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_source(label: str) -> tuple[str, dict[str, Any]]:
    """``"oracle:shift=1:weight=0.5"`` -> ``("oracle", {"shift": 1, "weight": 0.5})``; CompareError for a
    kind the catalogue does not have or an option not written ``option=value``."""
    kind, *parts = label.strip().split(":")
    kind = kind.strip()
    if kind not in SOURCES:
        raise CompareError(f"unknown attention source {kind!r} in {label!r}; choose one of: {', '.join(SOURCES)}")
    options: dict[str, Any] = {}
    for part in parts:
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise CompareError(f"cannot read source option {part!r} in {label!r}; write kind:option=value")
        options[key.strip()] = _value(val.strip())
    return kind, options
