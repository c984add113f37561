"""Corpus: load a .txt file into validated, tokenised sentences with a fixed held-out split."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from llmcomp.errors import LLMCompError, one_line
from llmcomp.text.notices import cut_lines_notice, tokenizer_notice
from llmcomp.text.tokenizer import split_sentences, tokenize
from llmcomp.text.vocab import Vocab

SplitMode = Literal["auto", "lines", "paragraphs"]


class CorpusError(LLMCompError, ValueError):
    """A corpus that cannot be used, with a one-line reason a person can act on."""


class SentenceTooLongError(CorpusError):
    """A sentence over ``max_words``. What a person can do about it depends on where they are (a flag on
    the command line, a split mode in the web app), so the entry point words the remedy (``advise``)."""

    def __init__(self, name: str, line_no: int, words: int, limit: int,
                 remedy: str = "split it, or raise CorpusConfig.max_words"):  # fmt: skip
        self.name, self.line_no, self.words, self.limit = name, line_no, words, limit
        super().__init__(f"{name} line {line_no} has a sentence of {words} words; the limit is {limit} ({remedy})")

    def advise(self, remedy: str) -> SentenceTooLongError:
        """The same error, with the remedy that exists where it is shown."""
        return SentenceTooLongError(self.name, self.line_no, self.words, self.limit, remedy)


@dataclass
class CorpusConfig:
    """How text becomes sentences, what is rejected, and how validation is held out."""

    # lines: each non-empty line is one sequence, never cut; paragraphs: join wrapped lines, cut after . ! ?;
    # auto: paragraphs when blank lines separate them, else lines cut after inner . ! ? (with a notice)
    split: SplitMode = "auto"
    max_bytes: int = 5_000_000
    max_words: int = 64  # per sentence; longer ones are rejected, never silently cut
    # 5 MB of `a b.` lines is a million sentences: training on them took minutes and gigabytes before one step.
    # Real prose runs at about 80 bytes a sentence and 5 bytes a word, far inside these at max_bytes.
    max_sentences: int = 200_000
    max_total_words: int = 2_000_000
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
    #: one line each: what loading did to the text that its author may not expect (see text/notices.py)
    notices: list[str] = field(default_factory=list)

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


#: byte-order marks of the encodings a "Unicode" save in some editors writes (UTF-32 LE starts like UTF-16 LE):
#: such a file is full of NUL bytes, and calling it binary would send its owner astray
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
    (b"\xff\xfe", "utf-16-le", "UTF-16"),
    (b"\xfe\xff", "utf-16-be", "UTF-16"),
)
#: control characters a plain-text corpus may hold: tab, line ends, form feed (page breaks)
_ALLOWED_CONTROLS = "\t\n\r\f"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def _reads_as(data: bytes, codec: str) -> bool:
    try:
        data.decode(codec)
    except UnicodeDecodeError:
        return False
    return True


def _decode(data: bytes, name: str, config: CorpusConfig) -> str:
    if len(data) > config.max_bytes:
        raise CorpusError(
            f"{name} is {len(data):,} bytes; the limit is {config.max_bytes:,} (raise max_bytes or use a smaller file)"
        )
    if b"\x00" in data:  # a BOM alone is no proof: the bytes must read in that encoding (a line end has a NUL)
        for bom, codec, encoding in _BOMS:
            if data.startswith(bom) and _reads_as(data, codec):
                raise CorpusError(f"{name} is {encoding} text: save it as UTF-8 (plain .txt) and load it again")
    if b"\x00" in data:
        raise CorpusError(f"{name} looks binary (it contains NUL bytes); give a plain UTF-8 .txt file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{name} is not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); re-save it as UTF-8 text"
        ) from None
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in _ALLOWED_CONTROLS)
    if controls > max(8, len(text) // 100):
        raise CorpusError(f"{name} looks binary ({controls} control characters); give a plain UTF-8 .txt file")
    return text


def _check_controls(text: str, name: str) -> None:
    """Refuse ESC, BEL, BS and the like: they carry no words, and quoted back they act on a terminal."""
    found = _CONTROL.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1  # as an editor counts lines
        raise CorpusError(
            f"{name} line {line} holds a control character ({one_line(found.group())}); remove it, "
            "or re-save the file as plain text"
        )


def _layout(lines: list[str], mode: SplitMode) -> Literal["lines", "paragraphs"]:
    """What ``auto`` reads the text as: paragraphs when a blank line separates two lines, else lines."""
    if mode == "auto":
        return "paragraphs" if any(not ln.strip() for ln in lines[1:-1]) else "lines"
    return mode


def _chunks(lines: list[str], layout: Literal["lines", "paragraphs"]) -> list[tuple[int, str]]:
    """(first line number, text) pieces: each line, or each blank-line-separated paragraph."""
    if layout == "lines":
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
    shown = one_line(name, 200)  # a file's name is the uploader's text too: quoted safely, kept as it is
    if isinstance(text, bytes):
        text = _decode(text, shown, config)
    elif len(text.encode()) > config.max_bytes:
        raise CorpusError(
            f"{shown} is over the {config.max_bytes:,}-byte limit (raise max_bytes or use a smaller file)"
        )
    _check_controls(text, shown)
    sentences: list[list[str]] = []
    words = cut = 0
    lines = text.splitlines()
    layout = _layout(lines, config.split)
    chunks = _chunks(lines, layout)
    for line_no, chunk in chunks:
        tokens = tokenize(chunk)
        # --split lines: the line is the sequence, whatever full stops it holds (a recall keeps its binding)
        pieces = ([tokens] if tokens else []) if config.split == "lines" else split_sentences(tokens)
        if layout == "lines" and len(pieces) > 1:
            cut += 1  # auto read this line as several sentences: said once, in a notice
        for sentence in pieces:
            if len(sentence) > config.max_words:
                raise SentenceTooLongError(shown, line_no, len(sentence), config.max_words)
            sentences.append(sentence)
            words += len(sentence)
            if len(sentences) > config.max_sentences:  # stop here: the rest would only cost time and memory
                raise CorpusError(
                    f"{shown} has more than {config.max_sentences:,} sentences (line {line_no}); the limit is "
                    f"{config.max_sentences:,} (use a smaller file, or raise max_sentences)"
                )
            if words > config.max_total_words:
                raise CorpusError(
                    f"{shown} has more than {config.max_total_words:,} words (line {line_no}); the limit is "
                    f"{config.max_total_words:,} (use a smaller file, or raise max_total_words)"
                )
    if not sentences:
        raise CorpusError(f"{shown} is empty: it has no words; give UTF-8 text with one sentence per line")
    if len(sentences) < config.min_sentences:
        raise CorpusError(
            f"{shown} has {len(sentences)} sentences; at least {config.min_sentences} are needed to hold out "
            "a validation set"
        )
    said = (cut_lines_notice(cut, len(chunks)), tokenizer_notice(text))
    return Corpus(sentences=sentences, name=name, config=config, notices=[n for n in said if n])


def load_corpus(path: str | Path, config: CorpusConfig | None = None) -> Corpus:
    """Read a .txt corpus from disk (size-checked before it is read whole; never a FIFO or a device)."""
    path = Path(path)
    config = config or CorpusConfig()
    if not path.exists():
        raise CorpusError(f"no corpus file at {one_line(str(path))}")
    if not path.is_file():
        raise CorpusError(f"{one_line(str(path))} is not a regular file; give a UTF-8 .txt file")
    size, shown = path.stat().st_size, one_line(path.name, 200)
    if size > config.max_bytes:
        raise CorpusError(
            f"{shown} is {size:,} bytes; the limit is {config.max_bytes:,} (raise max_bytes or use a smaller file)"
        )
    return parse_corpus(path.read_bytes(), name=path.name, config=config)
