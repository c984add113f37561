"""Vocabulary: word <-> id, with the special tokens the model needs."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)


class Vocab:
    """Ids 0-3 are <pad>, <unk>, <s> (sentence start) and </s> (sentence end); words follow."""

    def __init__(self, words: Sequence[str]):
        self.itos: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary has duplicate words")

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_count: int = 1) -> Vocab:
        """Most frequent words first, ties broken alphabetically so the ids are deterministic."""
        counts = Counter(w for s in sentences for w in s)
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi and word not in SPECIALS

    def encode(self, words: Sequence[str]) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def unknown(self, words: Sequence[str]) -> list[str]:
        """The words this vocabulary would map to <unk>."""
        return [w for w in words if w not in self]

    def to_json(self) -> str:
        return json.dumps({"itos": self.itos}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        data = json.loads(text)
        itos = data["itos"]
        if list(itos[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError("vocabulary file does not start with the special tokens")
        return cls(itos[len(SPECIALS) :])

    def fingerprint(self) -> str:
        """Short hash that changes whenever any id would change."""
        return hashlib.sha256("\n".join(self.itos).encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos
