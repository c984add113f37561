"""Attention sources (baselines, local LLM, OpenAI-compatible, oracle) and their cache.

The public names are listed in ``__init__.pyi`` and imported on first use (lazy_loader), so that
``import llmcomp.attention`` does not import torch until something needs it.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach_stub(__name__, __file__)
