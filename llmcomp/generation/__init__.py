"""Generation: prompt in, words out, with attention from the same source as training.

``GenerateConfig`` loads without torch (the CLI and the app read its defaults before torch has
loaded); the rest (``llmcomp.generation.generator``) imports torch on first use.
"""

import importlib
from typing import Any

from llmcomp.generation.config import GenerateConfig

__all__ = ["Choice", "GenerateConfig", "Generation", "GenerationError", "Generator", "generate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("llmcomp.generation.generator"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
