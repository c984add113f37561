"""Convergence: the best validation loss so far, when to stop early, and what a validation curve says.

A default budget measures learning speed, not what a source can reach: a small corpus overfits long before
the last step, so the last validation loss is not the run's best. The trainer keeps the best validation
loss (and its step), saves that checkpoint beside the last, and stops once ``patience`` validations in a
row failed to beat it by more than ``min_delta``. Comparisons read the curve at a fixed budget (learning
speed) and its area (``val_auc``). No torch: tables and the web app read these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: why a run ended (``TrainResult.stop_reason``, the ``stop_reason`` of its last metrics record)
STEPS_DONE, EARLY_STOP, STOPPED = "steps", "early_stop", "stopped"
STOP_REASONS = {STEPS_DONE: "all steps done", EARLY_STOP: "early stop", STOPPED: "stopped"}


@dataclass
class EarlyStopping:
    """The best validation loss and its step, and how many validations since have not improved on it.

    ``patience`` 0 never stops (train every step); an improvement is a loss below ``best - min_delta``."""

    patience: int = 0
    min_delta: float = 0.0
    best_val_loss: float | None = None
    best_step: int | None = None
    bad: int = 0  # validations in a row without an improvement

    @classmethod
    def from_metrics(cls, metrics: list[dict[str, Any]], patience: int = 0, min_delta: float = 0.0) -> EarlyStopping:
        """The state after the validations in ``metrics`` (a resumed run continues where it stood)."""
        tracker = cls(patience, min_delta)
        for record in metrics:
            if _number(record.get("val_loss")) and _number(record.get("step")):
                tracker.update(int(record["step"]), float(record["val_loss"]))
        return tracker

    def update(self, step: int, val_loss: float) -> bool:
        """Count one validation; True when it is the new best (the caller saves that checkpoint)."""
        if self.best_val_loss is None or val_loss < self.best_val_loss - self.min_delta:
            self.best_val_loss, self.best_step, self.bad = val_loss, step, 0
            return True
        self.bad += 1
        return False

    @property
    def exhausted(self) -> bool:
        """Patience has run out: this many validations in a row did not improve."""
        return self.patience > 0 and self.bad >= self.patience


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validations(metrics: list[dict[str, Any]], budget: int | None = None) -> list[tuple[int, float]]:
    """(step, val_loss) of every validation, at or before step ``budget`` when given."""
    out = [
        (int(m["step"]), float(m["val_loss"])) for m in metrics if _number(m.get("val_loss")) and _number(m.get("step"))
    ]
    return [(s, v) for s, v in out if budget is None or s <= budget]


def val_at(metrics: list[dict[str, Any]], budget: int) -> float | None:
    """The validation loss at a fixed budget: the last validation at or before step ``budget``."""
    vals = validations(metrics, budget)
    return vals[-1][1] if vals else None


def val_auc(metrics: list[dict[str, Any]], budget: int | None = None) -> float | None:
    """The area under the validation curve up to ``budget``, normalised by its length: the mean validation
    loss over the validations at or before ``budget`` (every eval_every steps, so runs of different lengths,
    or stopped early, compare over the same steps). Lower = learned faster. None before any validation."""
    vals = [v for _, v in validations(metrics, budget)]
    return sum(vals) / len(vals) if vals else None


def stop_reason(metrics: list[dict[str, Any]]) -> str | None:
    """The reason the last metrics record gives for the end of its run, if any."""
    reason = metrics[-1].get("stop_reason") if metrics else None
    return reason if reason in STOP_REASONS else None
