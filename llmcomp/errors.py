"""One base class for every error llmcomp reports to a person (one line, actionable), and ``one_line``,
the one way a message that quotes untrusted text (a file's words, a server's answer) is made safe to show."""

from __future__ import annotations

import re


class LLMCompError(Exception):
    """Raised with a message fit to show as it is; the CLI and UI print it without a traceback."""


#: runs of whitespace a message may hold, collapsed to one space (NEL and the Unicode line breaks too)
_SPACE = re.compile(r"[ \t\n\r\f\v\x85\u2028\u2029]+")
#: what must never reach a terminal or a page as itself: C0 and C1 controls (ESC, BEL, BS, CSI ...), DEL,
#: and the bidirectional overrides that make text read differently from what it holds
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text_or_exc: object, limit: int = 400) -> str:
    """``text_or_exc`` (an exception's message, or any text) as one line of at most ``limit`` characters:
    whitespace collapsed, control characters written as escapes (ESC as ``\\x1b``), cut with "…" when longer.

    Untrusted text in a message could otherwise move the cursor, recolour or clear a terminal, ring its bell
    or spread over many lines; an exception with an empty message reads as its type's name."""
    if isinstance(text_or_exc, BaseException):
        text = str(text_or_exc).strip() or type(text_or_exc).__name__
    else:
        text = str(text_or_exc)
    text = _UNSAFE.sub(_escape, _SPACE.sub(" ", text).strip())
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text
