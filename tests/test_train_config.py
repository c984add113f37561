"""TrainConfig owns its defaults and its rules: what the CLI and the app both apply."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from llmcomp.errors import LLMCompError
from llmcomp.model import GPTConfig
from llmcomp.training import TrainConfig


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"steps": 0}, "steps must be a whole number of at least 1"),
        ({"batch_size": 0}, "batch size must be"),
        ({"eval_every": 0}, "eval_every"),
        ({"lr": 0.0}, "learning rate must be above 0 and at most 1"),
        ({"lr": 1.5}, "learning rate"),
        ({"lr": math.nan}, "learning rate"),
        ({"log_every": 0}, "log_every"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"min_lr_ratio": 2.0}, "min_lr_ratio"),
    ],
)
def test_invalid_configs_are_one_line_errors_even_after_replace(changes, message):
    with pytest.raises(LLMCompError, match=message) as e:
        TrainConfig(**changes)
    assert "\n" not in str(e.value)
    with pytest.raises(LLMCompError, match=message):
        replace(TrainConfig(), **changes)


def test_warmup_follows_the_run_length_unless_given():
    assert TrainConfig().warmup == 30  # the default run (a 2000-step cap): as before
    assert TrainConfig(steps=100).warmup == 10 and TrainConfig(steps=5).warmup == 1
    assert TrainConfig(steps=100, warmup_steps=40).warmup == 40
    assert replace(TrainConfig(steps=600), steps=20).warmup == 2  # derived from the run it ends up in
    short = TrainConfig(steps=20, lr=0.01, min_lr_ratio=0.1)  # the default (1.0) keeps the rate constant
    assert short.lr_at(short.warmup - 1) == pytest.approx(0.01)  # a short run reaches its learning rate
    assert short.lr_at(19) < 0.01 * 0.2  # and decays towards lr * min_lr_ratio by its end


def test_log_and_eval_intervals_follow_the_run():
    assert TrainConfig().log_every == 10 and TrainConfig().eval_interval == 50
    assert TrainConfig(steps=12, eval_every=50).log_every == 1  # about 20 log lines even in a short run
    assert TrainConfig(steps=12, eval_every=50).eval_interval == 12
    assert TrainConfig(steps=600, eval_every=3).log_every == 3  # every validation is logged
    assert TrainConfig(steps=600, log_every=7).log_every == 7


def test_model_defaults_agree():
    """One dropout default: GPTConfig's (the CLI and the app used to say 0.1 beside its 0.0)."""
    assert GPTConfig().dropout == 0.0 and TrainConfig().steps == 2000


@pytest.mark.parametrize(
    "changes, message",
    [({"n_layer": 0}, "n_layer must be"), ({"n_embd": -4}, "n_embd"), ({"dropout": 1.0}, "dropout"),
     ({"n_learned_heads": 1.5}, "n_learned_heads")],
)  # fmt: skip
def test_invalid_model_configs_are_one_line_errors(changes, message):
    with pytest.raises(LLMCompError, match=message):
        GPTConfig(**changes)
    assert GPTConfig(n_layer=1, n_embd=16, dropout=0.1).n_head == 1
