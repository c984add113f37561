"""Oracle attention: knows which earlier word decides the next one, and points at it.

It is the upper bound an external attention can reach on a task (``task``, default the
binding-recall task, ``llmcomp.text.binding``; any task of ``llmcomp.text.tasks`` that reads only
``words[0..i]``, such as ``induction``, ``ioi``, ``agreement``, ``coreference``): at each decided
position the row puts ``weight`` on the deciding word; every other row is uniform over the prefix. Uniform elsewhere, not the identity: an oracle
that is the identity outside its pointer rows starves other positions of context and did worse
than plain uniform overall (measured on the binding task; docs/tasks.md).

``shift`` moves every pointer by that many positions (clamped to 0..i, so it never looks ahead).
It exists to show that the advantage comes from pointing at the right word, not from the
pattern's shape: a misaligned oracle should lose it. On sentences without decided positions the
oracle is exactly the uniform baseline.
"""

from __future__ import annotations

import torch

from llmcomp.attention.base import AttentionError, PerSentenceSource, normalize_scores
from llmcomp.text.tasks import TaskError, get_task

DEFAULT_TASK = "binding"  # the default is left out of spec() so older specs and cache keys stay as they were


class OracleSource(PerSentenceSource):
    kind = "oracle"

    def __init__(self, n_heads: int = 1, shift: int = 0, weight: float = 1.0, task: str = DEFAULT_TASK, **kw):
        super().__init__(n_heads=n_heads, **kw)
        if not 0.0 <= weight <= 1.0:
            raise AttentionError(f"oracle weight must be in [0, 1], got {weight}")
        try:
            self._task = get_task(str(task))
        except TaskError as e:
            raise AttentionError(f"oracle task: {e}") from None
        if self._task.peeks_next:
            raise AttentionError(
                f"oracle task {self._task.name!r} reads the word it predicts, so it cannot drive attention; "
                "choose a causal task such as binding, induction, ioi, agreement or coreference"
            )
        self.shift, self.weight, self.task = int(shift), float(weight), self._task.name

    def spec(self):
        extra = {} if self.task == DEFAULT_TASK else {"task": self.task}
        return {**super().spec(), "shift": self.shift, "weight": self.weight, **extra}

    def pointers(self, words: list[str]) -> dict[int, int]:
        """Row -> the column it points at, after the shift (always within 0..row)."""
        targets = self._task.targets(list(words))
        return {i: min(max(j + self.shift, 0), i) for i, j in targets.items() if j is not None}

    def matrix(self, words):
        t = len(words)
        m = normalize_scores(torch.ones(t, t))
        for i, j in self.pointers(words).items():
            m[i] *= 1.0 - self.weight
            m[i, j] += self.weight
        return m.expand(self.n_heads, t, t).clone()

    def describe(self) -> str:
        extra = (f", task {self.task}" if self.task != DEFAULT_TASK else "") + (
            f", shift {self.shift}" if self.shift else ""
        )
        return f"oracle ({self.n_heads} head{'s' if self.n_heads != 1 else ''}, weight {self.weight:g}{extra})"
