"""The patterns a head atlas scores heads against: which cell (i, j) of each row is the target.

``self``, ``previous`` and ``first`` are fixed shapes; ``spread`` has no target (the atlas reads the
row's entropy); every registered task (``llmcomp.text.tasks``) is a pattern whose targets are its
decided positions with a known deciding word. Words only, no torch: the web app lists the patterns
before torch has loaded.
"""

from __future__ import annotations

from collections.abc import Callable

from llmcomp.errors import LLMCompError
from llmcomp.text.tasks import TASKS, TaskError, get_task

#: words -> {row i: target column j}, j <= i
TargetFn = Callable[[list[str]], dict[int, int]]
BUILTIN = ("self", "previous", "first", "spread")


class AtlasError(LLMCompError, ValueError):
    """An unknown pattern, a source without heads, or an atlas file that cannot be read."""


def _self(words: list[str]) -> dict[int, int]:
    return {i: i for i in range(len(words))}


def _previous(words: list[str]) -> dict[int, int]:
    return {i: i - 1 for i in range(1, len(words))}


def _first(words: list[str]) -> dict[int, int]:
    return {i: 0 for i in range(1, len(words))}


_TARGETS: dict[str, TargetFn] = {"self": _self, "previous": _previous, "first": _first}


def default_patterns() -> list[str]:
    """The built-in patterns and one per registered task."""
    return [*BUILTIN, *TASKS]


def pattern_targets(name: str) -> TargetFn | None:
    """The target function of a pattern (None for ``spread``): a built-in, ``task:<name>`` or a task's
    name or rule (``binding``, ``copy-after:the``); the task's decided positions with a known word."""
    name = name.strip()
    if name == "spread":
        return None
    if name in _TARGETS:
        return _TARGETS[name]
    try:
        task = get_task(name.removeprefix("task:"))
    except TaskError:
        raise AtlasError(
            f"unknown pattern {name!r}; choose from {', '.join(default_patterns())} or task:<rule>"
        ) from None
    return lambda words: {i: j for i, j in task.targets(words).items() if j is not None}
