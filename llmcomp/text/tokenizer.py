"""Word-level tokenizer: lowercase words and punctuation as separate tokens.

The rules, in order:

1. Unicode NFKC normalisation, then lowercasing.
2. Typographic variants fold to ASCII: curly single quotes and the modifier apostrophe become
   ``'``; curly double quotes and guillemets become ``"``; en and em dashes (and the horizontal
   bar) become ``—``, a token of its own.
3. A word is a run of Unicode letters. An apostrophe or hyphen *between* letters stays inside the
   word: "don't", "daughter's", "well-known", "o'clock" are one token each.
4. A number is a run of digits with inner ``.`` or ``,`` groups: "3.14", "1,000".
5. Every other non-space character is a token by itself: ``.``, ``,``, ``"``, a leading or
   trailing ``'``, a lone ``-``.
"""

from __future__ import annotations

import re
import unicodedata

_FOLD = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u02bc": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2013": "\u2014",
        "\u2015": "\u2014",
        "\u2212": "-",
    }
)

_LETTERS = r"[^\W\d_]+"
_TOKEN = re.compile(rf"{_LETTERS}(?:['\-]{_LETTERS})*|\d+(?:[.,]\d+)*|\S")

SENTENCE_END = frozenset({".", "!", "?", "\u2026"})
_CLOSERS = frozenset({'"', "'", ")", "]"})
_NO_SPACE_BEFORE = frozenset({".", ",", "!", "?", ";", ":", "\u2026", ")", "]", "'s"})


def normalize(text: str) -> str:
    """NFKC, lowercase and fold typographic quotes and dashes (rules 1-2)."""
    return unicodedata.normalize("NFKC", text).lower().translate(_FOLD)


def tokenize(text: str) -> list[str]:
    """Split text into lowercase word and punctuation tokens."""
    return _TOKEN.findall(normalize(text))


def split_sentences(tokens: list[str]) -> list[list[str]]:
    """Cut a token stream after sentence-ending punctuation (and any closing quotes after it)."""
    sentences: list[list[str]] = []
    current: list[str] = []
    for i, tok in enumerate(tokens):
        current.append(tok)
        ends = tok in SENTENCE_END or (tok in _CLOSERS and current[:-1] and current[-2] in SENTENCE_END)
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if ends and not (nxt in _CLOSERS or nxt in SENTENCE_END):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def detokenize(words: list[str]) -> str:
    """Join tokens for display: no space before closing punctuation."""
    out = ""
    for w in words:
        if out and w not in _NO_SPACE_BEFORE and not out.endswith(("(", "[")):
            out += " "
        out += w
    return out
