"""Sources as a comparison names them: ``"oracle:shift=1"`` is the kind ``oracle`` with ``shift=1``.

The kinds, and which of them are baselines, come from the catalogue (``llmcomp.attention.registry``),
so a label that names no source is refused here with the list of kinds, and the baselines a
comparison runs by default are the catalogue's. Cheap to import: no torch.
"""

from __future__ import annotations

import re
from typing import Any

from llmcomp.attention.registry import BASELINES, SOURCES
from llmcomp.errors import LLMCompError

#: the ``--sources`` default that ``llmcomp compare`` declares; it means "auto" (see ``compare_sources.auto_sources``)
CLI_DEFAULT_SOURCES = ",".join((*BASELINES, "local"))


class CompareError(LLMCompError, ValueError):
    """A comparison that cannot run or a folder that cannot be read, with a one-line reason."""


#: a ``:`` that starts another option (``name=``); other colons belong to a value (``base_url=http://h:8000/v1``)
_OPTION_START = re.compile(r":(?=\s*[A-Za-z_]\w*\s*=)")
#: a ``,`` that starts another label (a kind or ``auto``); other commas belong to a value (``layers=0,1,2``)
_LABEL_START = re.compile(r",(?=\s*(?:auto|{})\s*(?::|,|$))".format("|".join(map(re.escape, SOURCES))))


def split_sources(text: str) -> list[str]:
    """``--sources`` text -> labels: ``"uniform,local:layers=0,1,2,openai:heads=meaning,syntax"`` is three
    labels, because a comma starts a label only where a kind's name (or ``auto``) follows it."""
    return [label.strip() for label in _LABEL_START.split(text) if label.strip()]


def parse_source(label: str) -> tuple[str, dict[str, Any]]:
    """``"oracle:shift=1:weight=0.5"`` -> ``("oracle", {"shift": 1, "weight": 0.5})``, each value typed as
    the source declares it (``registry.parse_option``). CompareError, one line, for a kind the catalogue
    does not have, an option not written ``option=value``, an option the kind does not take (naming
    those it does) or a value that cannot be read."""
    from llmcomp.attention.registry import parse_option

    head, *parts = _OPTION_START.split(label.strip())
    kind, _sep, stray = (x.strip() for x in head.partition(":"))
    if kind not in SOURCES:
        raise CompareError(f"unknown attention source {kind!r} in {label!r}; choose one of: {', '.join(SOURCES)}")
    options: dict[str, Any] = {"path": stray} if kind == "file" and stray else {}  # file:PATH, as file:path=PATH
    if stray and not options:
        raise CompareError(f"cannot read source option {stray!r} in {label!r}; write kind:option=value")
    for part in parts:
        key, _sep, val = part.partition("=")
        try:
            options[key.strip()] = parse_option(kind, key.strip(), val.strip())
        except LLMCompError as e:
            raise CompareError(f"{label!r}: {e}") from None
    return kind, options
