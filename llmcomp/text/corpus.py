"""Corpus: load a .txt file into validated, tokenised sentences with a fixed held-out split."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from llmcomp.errors import LLMCompError
from llmcomp.text.tokenizer import split_sentences, tokenize
from llmcomp.text.vocab import Vocab

SplitMode = Literal["auto", "lines", "paragraphs"]


class CorpusError(LLMCompError, ValueError):
    """A corpus that cannot be used, with a one-line reason a person can act on."""


@dataclass
class CorpusConfig:
    """How text becomes sentences, what is rejected, and how validation is held out."""

    split: SplitMode = "auto"  # lines: a line may hold several sentences; paragraphs: join wrapped lines
    max_bytes: int = 5_000_000
    max_words: int = 64  # per sentence; longer ones are rejected, never silently cut
    min_sentences: int = 10
    val_fraction: float = 0.1
    seed: int = 1234  # seed of the held-out split


@dataclass
class CorpusStats:
    sentences: int
    words: int
    vocab: int
    mean_length: float
    max_length: int
    length_histogram: dict[int, int]
    top_words: list[tuple[str, int]]


@dataclass
class Corpus:
    """Tokenised sentences plus the held-out split (by sentence, seeded)."""

    sentences: list[list[str]]
    name: str = "corpus"
    config: CorpusConfig = field(default_factory=CorpusConfig)

    def __post_init__(self) -> None:
        order = list(range(len(self.sentences)))
        random.Random(self.config.seed).shuffle(order)
        n_val = max(1, round(len(order) * self.config.val_fraction))
        self.val_idx: list[int] = sorted(order[:n_val])
        self.train_idx: list[int] = sorted(order[n_val:])

    @cached_property
    def sha256(self) -> str:
        """Content hash of the sentences (not the name or split): two runs are comparable only when
        they trained on the same sentences, whatever the files were called."""
        blob = json.dumps(self.sentences, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @property
    def train(self) -> list[list[str]]:
        return [self.sentences[i] for i in self.train_idx]

    @property
    def val(self) -> list[list[str]]:
        return [self.sentences[i] for i in self.val_idx]

    def vocab(self) -> Vocab:
        """Vocabulary over the whole corpus, so every corpus word can be generated."""
        return Vocab.build(self.sentences)

    def stats(self) -> CorpusStats:
        lengths = [len(s) for s in self.sentences]
        counts = Counter(w for s in self.sentences for w in s)
        return CorpusStats(
            sentences=len(lengths),
            words=sum(lengths),
            vocab=len(counts),
            mean_length=sum(lengths) / len(lengths),
            max_length=max(lengths),
            length_histogram=dict(sorted(Counter(lengths).items())),
            top_words=counts.most_common(20),
        )


def _decode(data: bytes, name: str, config: CorpusConfig) -> str:
    if len(data) > config.max_bytes:
        raise CorpusError(
            f"{name} is {len(data):,} bytes; the limit is {config.max_bytes:,} (raise max_bytes or use a smaller file)"
        )
    if b"\x00" in data:
        raise CorpusError(f"{name} looks binary (it contains NUL bytes); give a plain UTF-8 .txt file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{name} is not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); re-save it as UTF-8 text"
        ) from None
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f")
    if controls > max(8, len(text) // 100):
        raise CorpusError(f"{name} looks binary ({controls} control characters); give a plain UTF-8 .txt file")
    return text


def _chunks(text: str, mode: SplitMode) -> list[tuple[int, str]]:
    """(first line number, text) pieces: each line, or each blank-line-separated paragraph."""
    lines = text.splitlines()
    if mode == "auto":
        mode = "paragraphs" if any(not ln.strip() for ln in lines[1:-1]) else "lines"
    if mode == "lines":
        return [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    chunks, start, buf = [], 0, []
    for i, ln in enumerate(lines + [""]):
        if ln.strip():
            if not buf:
                start = i + 1
            buf.append(ln.strip())
        elif buf:
            chunks.append((start, " ".join(buf)))
            buf = []
    return chunks


def parse_corpus(text: str | bytes, name: str = "corpus", config: CorpusConfig | None = None) -> Corpus:
    """Tokenise and validate corpus text; raises CorpusError with a one-line reason."""
    config = config or CorpusConfig()
    if isinstance(text, bytes):
        text = _decode(text, name, config)
    elif len(text.encode()) > config.max_bytes:
        raise CorpusError(f"{name} is over the {config.max_bytes:,}-byte limit (raise max_bytes or use a smaller file)")
    sentences: list[list[str]] = []
    for line_no, chunk in _chunks(text, config.split):
        for sentence in split_sentences(tokenize(chunk)):
            if len(sentence) > config.max_words:
                raise CorpusError(
                    f"{name} line {line_no} has a sentence of {len(sentence)} words; the limit is "
                    f"{config.max_words} (split it, or raise max_words)"
                )
            sentences.append(sentence)
    if not sentences:
        raise CorpusError(f"{name} is empty: it has no words; give UTF-8 text with one sentence per line")
    if len(sentences) < config.min_sentences:
        raise CorpusError(
            f"{name} has {len(sentences)} sentences; at least {config.min_sentences} are needed to hold out "
            "a validation set"
        )
    return Corpus(sentences=sentences, name=name, config=config)


def load_corpus(path: str | Path, config: CorpusConfig | None = None) -> Corpus:
    """Read a .txt corpus from disk (size-checked before it is read whole)."""
    path = Path(path)
    config = config or CorpusConfig()
    if not path.is_file():
        raise CorpusError(f"no corpus file at {path}")
    size = path.stat().st_size
    if size > config.max_bytes:
        raise CorpusError(
            f"{path.name} is {size:,} bytes; the limit is {config.max_bytes:,} (raise max_bytes or use a smaller file)"
        )
    return parse_corpus(path.read_bytes(), name=path.name, config=config)
