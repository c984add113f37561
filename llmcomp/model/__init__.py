"""A small GPT whose attention heads may be supplied from outside.

``GPTConfig`` loads without torch (the CLI and the app read its defaults before torch has loaded);
``GPT`` imports torch on first use.
"""

from typing import Any

from llmcomp.model.config import GPTConfig

__all__ = ["GPT", "GPTConfig"]


def __getattr__(name: str) -> Any:
    if name == "GPT":
        from llmcomp.model.gpt import GPT

        return GPT
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
