"""One base class for every error llmcomp reports to a person (one line, actionable)."""


class LLMCompError(Exception):
    """Raised with a message fit to show as it is; the CLI and UI print it without a traceback."""
