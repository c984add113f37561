"""Training configuration: every default the CLI and the app show, and the rules a config must meet.

No torch here, so the CLI's ``--help`` and the web app read these defaults before torch has loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmcomp.devices import AUTO, DeviceError, check_device_name
from llmcomp.errors import LLMCompError


class TrainConfigError(LLMCompError, ValueError):
    """A training configuration that cannot train, with a one-line reason naming the value."""


@dataclass
class TrainConfig:
    """How a model trains. The CLI's and the app's defaults are read from here, and so are the rules a
    config must meet: an invalid one raises TrainConfigError (one line) when it is made, and again after
    ``dataclasses.replace``.

    Left as None, ``warmup_steps`` and ``log_every`` follow the run's length: a warm-up of a tenth of
    the run, at most 30 steps (a fixed 30 would never reach the learning rate in a short run), and a
    log line about 20 times a run, at least every 10 steps and every validation."""

    # a cap: early stopping (``patience``) ends a run once validation stops improving. The learning rate is
    # constant after warm-up, so the cap does not change the curve, only how far it may go (docs/results.md)
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    # cosine decays to lr * min_lr_ratio; 1 keeps the rate constant after warm-up, which learned faster within
    # a default run than a decay to 0.1 (docs/benchmarks.md, ``python -m bench.recipe``)
    min_lr_ratio: float = 1.0
    warmup_steps: int | None = None  # None: min(30, max(1, steps // 10)); read it as ``warmup``
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 50  # above ``steps`` is fine: the last step is always validated
    log_every: int | None = None  # None: max(1, min(10, eval_interval, steps // 20 or 1)), set when made
    checkpoint_every: int = 0  # 0: only at the end (and when stopped)
    seed: int = 0
    # torch threads while training. Small models run fastest on one: extra OpenMP threads mostly
    # spin-wait, and on a shared machine that can make every step ten times slower. 0 = leave as is.
    threads: int = 1
    # batches come from windows of batch_size * length_window sentences of similar length (1 = off, uniform
    # draws). Off by default: same-length batches saved padding but their correlated gradients delayed learning
    # most of all the differences from a plain loop (docs/benchmarks.md, ``python -m bench.recipe``)
    length_window: int = 1
    # early stopping: stop once this many validations in a row have not lowered the best validation loss by
    # more than min_delta (0 = never stop early: train every step). ``steps`` is then a cap; the best
    # checkpoint is kept beside the last (llmcomp.training.convergence, docs/results.md)
    patience: int = 3
    min_delta: float = 0.0
    # where the model trains: auto (cuda when torch sees a GPU, else mps, else cpu), cpu, cuda, cuda:N or mps.
    # Placement only: checkpoints are saved from CPU tensors and leave it out (llmcomp.devices; docs/operations.md)
    device: str = AUTO

    def __post_init__(self) -> None:
        self.validate()
        if self.log_every is None:
            self.log_every = max(1, min(10, self.eval_interval, self.steps // 20 or 1))

    def validate(self) -> None:
        """Raise TrainConfigError naming the first value that cannot train."""

        def whole(name: str, minimum: int, what: str | None = None) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise TrainConfigError(f"{what or name} must be a whole number of at least {minimum}, got {value!r}")

        whole("steps", 1)
        whole("batch_size", 1, "the batch size")
        whole("eval_every", 1, "eval_every (validate every N steps)")
        for name, minimum in (
            ("checkpoint_every", 0),
            ("seed", 0),
            ("threads", 0),
            ("length_window", 1),
            ("patience", 0),
        ):
            whole(name, minimum)
        for name in ("warmup_steps", "log_every"):
            if getattr(self, name) is not None:
                whole(name, 0 if name == "warmup_steps" else 1)
        try:
            check_device_name(self.device)
        except DeviceError as e:
            raise TrainConfigError(str(e)) from None
        if not isinstance(self.lr, int | float) or not (0 < self.lr <= 1):
            raise TrainConfigError(f"the learning rate must be above 0 and at most 1 (try 0.003), got {self.lr!r}")
        if not (0 <= self.min_lr_ratio <= 1) or not (self.weight_decay >= 0) or not (self.grad_clip >= 0):
            raise TrainConfigError("min_lr_ratio must be in 0..1, weight_decay and grad_clip 0 or more")
        if (
            isinstance(self.min_delta, bool)
            or not isinstance(self.min_delta, int | float)
            or not (0 <= self.min_delta < math.inf)
        ):
            raise TrainConfigError(
                f"min_delta (the least improvement that counts) must be 0 or more, got {self.min_delta!r}"
            )

    @property
    def warmup(self) -> int:
        """Warm-up steps: ``warmup_steps``, or a tenth of the run capped at 30 when it is None."""
        return min(30, max(1, self.steps // 10)) if self.warmup_steps is None else self.warmup_steps

    @property
    def eval_interval(self) -> int:
        """Steps between validations within this run (``eval_every`` capped at ``steps``)."""
        return min(self.eval_every, self.steps)

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to lr * min_lr_ratio at the last step."""
        warmup = self.warmup
        if step < warmup:
            return self.lr * (step + 1) / warmup
        span = max(1, self.steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        min_lr = self.lr * self.min_lr_ratio
        return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (self.lr - min_lr)
