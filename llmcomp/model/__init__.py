"""A small GPT whose attention heads may be supplied from outside."""

from llmcomp.model.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
