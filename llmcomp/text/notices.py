"""Notices about a corpus that loaded but may not read the way its author meant: one line each.

Nothing here refuses a corpus; a notice says what was done to the text, how often, and how to avoid it,
so that a silent change (a line cut in two, ``n12`` read as ``n`` ``12``) is never silent.
"""

from __future__ import annotations

from llmcomp.errors import one_line
from llmcomp.text.tokenizer import tokenize

#: the page that states the tokenizer's rules
TOKENIZER_DOCS = "docs/tasks.md"


def cut_lines_notice(cut: int, lines: int) -> str | None:
    """Said when ``auto`` cut lines at inner full stops: each piece became its own sequence."""
    if not cut:
        return None
    return (
        f"{cut:,} of {lines:,} lines hold more than one sentence and were cut at inner full stops; "
        'set split to lines (--split lines; CorpusConfig(split="lines")) to keep each line one sequence'
    )


def _is_word(token: str) -> bool:
    return any(ch.isalnum() for ch in token)


def broken_words(text: str) -> tuple[int, int, str | None]:
    """(distinct whitespace-separated words the tokenizer cuts into several words or numbers, distinct words
    holding a letter or digit, the first cut word). Punctuation coming off a word (``dog.``) is no cut."""
    broken, total, first = 0, 0, None
    for raw in dict.fromkeys(text.split()):  # distinct, in order of first appearance
        pieces = sum(1 for tok in tokenize(raw) if _is_word(tok))
        if not pieces:
            continue
        total += 1
        if pieces > 1:
            broken += 1
            first = first or raw
    return broken, total, first


def tokenizer_notice(text: str) -> str | None:
    """Said when the tokenizer cuts more than half of the corpus's distinct words (``n12`` -> ``n`` ``12``)."""
    broken, total, first = broken_words(text)
    if not first or 2 * broken <= total:
        return None
    example = " ".join(tok for tok in tokenize(first))
    return (
        f"the tokenizer cuts {broken:,} of {total:,} distinct words into several tokens "
        f"({one_line(first, 40)} -> {one_line(example, 60)}): a word is a run of letters and a number a run of "
        f"digits ({TOKENIZER_DOCS}, the tokenizer); use letters-only names to keep words whole"
    )
