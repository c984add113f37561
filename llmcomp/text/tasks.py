"""Tasks: which positions of a sentence an earlier word decides, so loss and accuracy can be read there.

The overall validation loss averages over every word, and most words are not decided by attention
at all; a task names the few positions where the right attention should matter. A ``Task`` maps a
sentence (its words) to ``{i: j}``: position *i* whose NEXT word the task says an earlier word
decides, and *j* the index (0..i) of that deciding word, or None where the task cannot say which.
The trainer reports loss and top-1 accuracy at those positions and, where *j* is known, the
attention weight each source puts on it (docs/tasks.md).

Causality: every built-in task finds *i* and *j* from ``words[0..i]`` alone, except ``repeat``,
which also reads word *i+1* (the word to predict) to decide whether *i* counts. That is fine for
measuring (the model never sees the task) but such a task (``peeks_next``) must not drive an
attention source. Words only: this module is part of the text layer and imports no torch.

Register a Python rule with ``register_task("name", fn)`` (``fn(words)`` returns ``{i: j}`` or just
the positions) and name it anywhere a task is asked for: ``--task name``, ``Trainer(task="name")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from llmcomp.errors import LLMCompError
from llmcomp.text.binding import decided_positions
from llmcomp.text.task_corpora import agreement_targets, coreference_targets, induction_targets, ioi_targets

#: words -> {position: deciding word's index or None}, or just the positions
TaskFn = Callable[[list[str]], "Mapping[int, int | None] | Iterable[int]"]


class TaskError(LLMCompError, ValueError):
    """An unknown task, a malformed rule or a task that broke its contract, in one line."""


@dataclass(frozen=True)
class Task:
    """A named rule marking decided positions. Equal tasks mark the same positions (prepared data compares them)."""

    name: str
    find: TaskFn
    description: str = ""
    peeks_next: bool = False  # reads word i+1 to decide whether i counts: measurement only, never attention

    def targets(self, words: list[str]) -> dict[int, int | None]:
        """``{i: j}`` sorted by i, checked: 0 <= i < len(words) and j in 0..i (an earlier word, or i itself)."""
        found = self.find(list(words))
        pairs = found.items() if isinstance(found, Mapping) else ((i, None) for i in found)
        out: dict[int, int | None] = {}
        for i, j in pairs:
            i = int(i)
            if not 0 <= i < len(words):
                raise TaskError(f"task {self.name!r} marked position {i} in a sentence of {len(words)} words")
            if j is not None and not 0 <= int(j) <= i:
                raise TaskError(f"task {self.name!r}: target {j} of position {i} is not an earlier word (0..{i})")
            out[i] = None if j is None else int(j)
        return dict(sorted(out.items()))

    def decided(self, words: list[str]) -> list[int]:
        """Positions i whose next word an earlier word decides."""
        return list(self.targets(words))

    def target(self, words: list[str], i: int) -> int | None:
        """The index of the word that decides word i+1, where the task knows it."""
        return self.targets(words).get(i)

    def __call__(self, words: list[str]) -> list[int]:
        """A task is also a focus function (``words -> positions``), the older ``Trainer(focus=...)`` form."""
        return self.decided(words)


# --- declarative rules (frozen dataclasses: the same rule twice compares equal) --------------------
@dataclass(frozen=True)
class CopyAfter:
    """Position i holds a cue word seen earlier (at k < i): the task says word i+1 repeats word k+1."""

    cues: frozenset[str] = frozenset()  # empty: every word is a cue (the induction-head pattern)

    def __call__(self, words: list[str]) -> dict[int, int | None]:
        out: dict[int, int | None] = {}
        last: dict[str, int] = {}
        for i, w in enumerate(words):
            if w in last and (not self.cues or w in self.cues):
                out[i] = last[w] + 1  # <= i since last[w] < i
            last[w] = i
        return out


@dataclass(frozen=True)
class Recall:
    """Position i holds ``cue`` right after a key word seen earlier (at k < i-1): word i+1 is word k+offset.

    ``recall:cue=:,offset=3`` is the binding task's rule ("alice owns a cat ... alice : cat").
    """

    cue: str
    offset: int

    def __call__(self, words: list[str]) -> dict[int, int | None]:
        out: dict[int, int | None] = {}
        last: dict[str, int] = {}
        for i, w in enumerate(words):
            if w == self.cue and i >= 1 and words[i - 1] in last:
                j = last[words[i - 1]] + self.offset
                if 0 <= j <= i:
                    out[i] = j
            if i >= 1:
                last[words[i - 1]] = i - 1  # only keys strictly before the word in front of the cue
        return out


@dataclass(frozen=True)
class Repeat:
    """Position i whose next word already occurred in the sentence (latest at j <= i). Reads word i+1."""

    def __call__(self, words: list[str]) -> dict[int, int | None]:
        out: dict[int, int | None] = {}
        last: dict[str, int] = {}
        for i, w in enumerate(words):
            last[w] = i
            if i + 1 < len(words) and words[i + 1] in last:
                out[i] = last[words[i + 1]]
        return out


def _binding(words: list[str]) -> dict[int, int | None]:
    return dict(decided_positions(words))


TASKS: dict[str, Task] = {}


def register_task(name: str, task: Task | TaskFn, description: str = "", peeks_next: bool = False) -> Task:
    """Add a task by name (replacing one of that name); ``task`` is a Task or ``fn(words)``. Returns the Task."""
    if not name or ":" in name or "," in name or name != name.strip():
        raise TaskError(f"task name {name!r} must be non-empty, without ':' ',' or outer spaces")
    if name in _RULES or name in ("auto", "none"):
        raise TaskError(f"{name!r} is a built-in rule or choice; register your task under another name")
    if not isinstance(task, Task):
        if not callable(task):
            raise TaskError(f"task {name!r} must be a Task or a function of the words, got {type(task).__name__}")
        task = Task(name, task, description or (task.__doc__ or "").strip().split("\n")[0], peeks_next)
    TASKS[name] = task
    return task


def _rule_options(name: str, text: str) -> dict[str, str]:
    options = {}
    for part in filter(None, text.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise TaskError(f"task option {part!r} of {name!r} is not key=value (e.g. recall:cue=:,offset=3)")
        options[key.strip()] = value.strip()
    return options


def _copy_after(arg: str) -> Task:
    if "=" in arg or "," in arg:
        raise TaskError(f"copy-after takes cue words joined by '|', e.g. copy-after:the|a, got {arg!r}")
    cues = frozenset(w for w in arg.split("|") if w) if arg else frozenset()
    label = f"copy-after:{'|'.join(sorted(cues))}" if cues else "copy-after"
    return Task(label, CopyAfter(cues), "a cue word seen before decides the next word: the one that followed it")


def _recall(arg: str) -> Task:
    options = _rule_options("recall", arg)
    if set(options) != {"cue", "offset"} or not options["cue"]:
        raise TaskError("recall needs exactly cue=WORD and offset=N, e.g. recall:cue=:,offset=3")
    try:
        offset = int(options["offset"])
    except ValueError:
        raise TaskError(f"recall offset must be an integer, got {options['offset']!r}") from None
    return Task(f"recall:cue={options['cue']},offset={offset}", Recall(options["cue"], offset),
                "cue after a key seen before: the word offset after that key decides the next word")  # fmt: skip


#: parametrised rules: name -> build(the text after "name:")
_RULES: dict[str, Callable[[str], Task]] = {"copy-after": _copy_after, "recall": _recall}
RULE_HELP = {
    "copy-after[:W1|W2]": "a cue word seen before: the next word is the one that followed it (all words if none)",
    "recall:cue=C,offset=N": "cue C after a key word seen before: the next word is the word N after that key",
}

register_task("binding", _binding, "the binding grammar: 'name :' recalls the noun bound to name")
register_task(
    "induction", induction_targets, "a word seen before: the next word is the one that followed it (Olsson 2022)"
)
register_task("ioi", ioi_targets, "'when A and B ..., B gave a drink to': the next word is A (Wang 2022)")
register_task("agreement", agreement_targets, "the adverb before the verb: its number is the head noun's (Linzen 2016)")
register_task(
    "coreference", coreference_targets, "'PRONOUN , the': the next word is the antecedent agreeing in gender/number"
)
register_task("repeat", Repeat(), "the next word already occurred in the sentence (reads it: measurement only)", True)


def known_tasks() -> list[str]:
    """Registered names and rule forms, for help texts and errors."""
    return [*TASKS, *RULE_HELP]


def get_task(spec: str | Task) -> Task:
    """A registered task by name, or a rule such as ``copy-after:the`` or ``recall:cue=:,offset=3``."""
    if isinstance(spec, Task):
        return spec
    spec = spec.strip()
    if spec in TASKS:
        return TASKS[spec]
    name, _, arg = spec.partition(":")
    if name in _RULES:
        return _RULES[name](arg)
    raise TaskError(f"unknown task {spec!r}; known: {', '.join(known_tasks())}")


#: share of sentences a task must mark for "auto" to pick it
AUTO_SHARE = 0.5
#: the tasks "auto" tries, the generated corpora's own; on a tie the earlier wins (induction's rule is the
#: loosest: it also marks repeated names in binding and ioi lines, so it comes last)
AUTO_TASKS = ("binding", "ioi", "agreement", "coreference", "induction")


def auto_task(sentences: list[list[str]]) -> Task | None:
    """What "auto" means: of ``AUTO_TASKS``, the one marking a position in the most sentences, if that
    is at least ``AUTO_SHARE`` of them (each generated corpus gets its own task); else no task."""
    best, best_hits = None, 0
    for name in AUTO_TASKS:
        task = TASKS.get(name)
        hits = sum(1 for s in sentences if task.decided(s)) if task else 0
        if hits > best_hits:
            best, best_hits = task, hits
    return best if sentences and best_hits >= AUTO_SHARE * len(sentences) else None


def choose_task(name: str | Task | None, sentences: list[list[str]]) -> Task | None:
    """A task from a ``--task`` value: "auto" (``auto_task``), "none" or None (no task), or ``get_task``."""
    if name is None or isinstance(name, Task):
        return name
    name = name.strip()
    if name == "none":
        return None
    return auto_task(sentences) if name == "auto" else get_task(name)


def as_task(task: str | Task | TaskFn | None, name: str = "focus") -> Task | None:
    """A Task from a name, a Task or a bare function (``Trainer(focus=fn)``); None stays None."""
    if task is None or isinstance(task, Task):
        return task
    if isinstance(task, str):
        return get_task(task)
    if callable(task):
        return Task(name, task)
    raise TaskError(f"a task is a name, a Task or a function of the words, got {type(task).__name__}")
