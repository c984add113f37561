"""Experiments built on the library: the attention-source comparison (``llmcomp compare``)."""

from llmcomp.experiments.compare import (
    CompareConfig,
    CompareError,
    CompareResult,
    compare,
    load_run,
    summarize_runs,
)

__all__ = ["CompareConfig", "CompareError", "CompareResult", "compare", "load_run", "summarize_runs"]
