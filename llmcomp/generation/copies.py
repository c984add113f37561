"""Whether a generation copies a training sentence word for word.

A small model on a small corpus often recites its training sentences; a playground should say so.
The training sentences are found honestly: a run records its corpus's name, content hash and split,
and only a corpus at hand with that very hash (a bundled file, the one the visitor loaded, one named
on the command line) is used. When none matches, the check says that it could not be made, never
that the text is new. Torch-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmcomp.text.corpus import Corpus
from llmcomp.training.run_folder import CorpusInfo


@dataclass(frozen=True)
class CopyCheck:
    """The answer: ``index`` of the copied training sentence (its number in the corpus) or None;
    ``checked`` False when the training sentences were not at hand."""

    checked: bool
    corpus: str
    index: int | None = None
    sentence: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """One line for a person (empty when the text copies nothing)."""
        if not self.checked:
            return f"not checked for copies of training sentences: the training corpus ({self.corpus}) is not at hand"
        if self.index is None:
            return ""
        return f"copies training sentence {self.index} of {self.corpus} word for word"


def training_corpus(info: CorpusInfo | None, candidates: Iterable[Corpus]) -> Corpus | None:
    """The candidate with the run's content hash, split as the run split it; None when none matches
    (or the run did not record its hash)."""
    if info is None or not info.sha256:
        return None
    for corpus in candidates:
        if corpus.sha256 != info.sha256:
            continue
        changes = {"seed": info.split_seed, "val_fraction": info.val_fraction}
        changes = {k: v for k, v in changes.items() if v is not None}
        if all(getattr(corpus.config, k) == v for k, v in changes.items()):
            return corpus
        return Corpus(corpus.sentences, corpus.name, dataclasses.replace(corpus.config, **changes))
    return None


def find_copy(words: Sequence[str], n_prompt: int, corpus: Corpus | None, corpus_name: str = "") -> CopyCheck:
    """The longest training sentence that appears whole and contiguous in ``words`` (prompt plus
    generated words) and takes in at least one generated word: the model recited it, rather than the
    prompt holding it. ``corpus`` None: not checked."""
    if corpus is None:
        return CopyCheck(False, corpus_name or "unknown")
    first: dict[tuple[str, ...], int] = {}
    for i in corpus.train_idx:
        first.setdefault(tuple(corpus.sentences[i]), i)
    found: tuple[str, ...] = ()
    for end in range(max(n_prompt, 0) + 1, len(words) + 1):  # every span ending on a generated word
        for start in range(end):
            span = tuple(words[start:end])
            if len(span) > len(found) and span in first:
                found = span
    if not found:
        return CopyCheck(True, corpus.name)
    return CopyCheck(True, corpus.name, first[found], found)
