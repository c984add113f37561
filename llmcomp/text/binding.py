"""Binding-recall task: a generated corpus in which one earlier word decides the next word.

Each sentence binds a few names to nouns, then asks for some of them back::

    alice owns a cat, bob keeps a lamp, carol has a boat; bob: lamp, alice: cat.

After ``bob :`` the next word can only be ``lamp``, the noun bound to bob earlier in the same
sentence. Names and nouns come from separate pools and are drawn uniformly, so neither frequency
nor position gives the noun away: a model gets it right only by attending to the deciding word.
An attention that points at it (the oracle) can predict it almost exactly; uniform attention
blurs it with every other word of the sentence.

``decided_positions`` finds those positions from the words alone (causally), so the oracle and
the "loss on decided positions" metric work on any sentence, not only on generated ones.

Write the bundled file with ``python -m llmcomp.text.binding --out data/binding.txt --n 2000 --seed 7``.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

from llmcomp.text.tokenizer import detokenize

VERBS = ("owns", "has", "keeps")  # all mean the same binding; variety only
ARTICLE = "a"
RECALL = ":"  # "name :" asks for the noun bound to name

NAMES = (
    "alice", "bob", "carol", "dave", "emma", "frank", "grace", "harry", "ivy", "jack", "kate", "leo",
    "mia", "nick", "olga", "paul", "rosa", "sam", "tina", "victor", "wendy", "yusuf", "zoe", "omar",
)  # fmt: skip
NOUNS = (
    "cat", "dog", "lamp", "boat", "kite", "drum", "hat", "bike", "book", "clock", "cup", "fish",
    "goat", "horse", "jar", "key", "map", "pen", "ring", "rope", "sock", "tent", "vase", "wagon",
    "bell", "box", "chair", "coat", "desk", "flute", "glove", "harp", "ladder", "mug", "piano", "radio",
)  # fmt: skip


class BindingError(ValueError):
    """A binding-task configuration that cannot generate sentences."""


@dataclass
class BindingConfig:
    """Shape of the generated sentences. Clause and recall counts are drawn uniformly per sentence."""

    min_clauses: int = 2
    max_clauses: int = 4
    min_recalls: int = 1
    max_recalls: int = 3  # never more than the sentence's clauses: each name is recalled at most once
    names: tuple[str, ...] = NAMES
    nouns: tuple[str, ...] = NOUNS

    def check(self) -> None:
        if not 1 <= self.min_clauses <= self.max_clauses:
            raise BindingError(f"need 1 <= min_clauses <= max_clauses, got {self.min_clauses}..{self.max_clauses}")
        if not 1 <= self.min_recalls <= self.max_recalls:
            raise BindingError(f"need 1 <= min_recalls <= max_recalls, got {self.min_recalls}..{self.max_recalls}")
        if self.min_recalls > self.min_clauses:
            raise BindingError("min_recalls exceeds min_clauses; a sentence cannot recall a name it never bound")
        if len(set(self.names)) < self.max_clauses or len(set(self.nouns)) < self.max_clauses:
            raise BindingError(f"name and noun pools need at least max_clauses={self.max_clauses} distinct words")
        if set(self.names) & set(self.nouns):
            raise BindingError("name and noun pools overlap; keep them separate so a noun is never also a name")
        pool = set(self.names) | set(self.nouns)
        if not all(w.isalpha() and w.islower() for w in pool):
            raise BindingError("names and nouns must be lowercase single words (letters only)")
        if pool & {*VERBS, ARTICLE}:
            raise BindingError(f"names and nouns must not be the grammar words {VERBS + (ARTICLE,)}")

    @property
    def max_words(self) -> int:
        """Longest possible sentence: 5 tokens per clause (incl. separator), 4 per recall."""
        return 5 * self.max_clauses + 4 * min(self.max_recalls, self.max_clauses)


def binding_sentence(rng: random.Random, config: BindingConfig) -> list[str]:
    """One sentence as tokens: clauses joined by ",", then ";", then recalls joined by ",", then "."."""
    n = rng.randint(config.min_clauses, config.max_clauses)
    names = rng.sample(config.names, n)
    nouns = rng.sample(config.nouns, n)
    words: list[str] = []
    for k, (name, noun) in enumerate(zip(names, nouns, strict=True)):
        words += [name, rng.choice(VERBS), ARTICLE, noun, "," if k < n - 1 else ";"]
    asked = rng.sample(range(n), rng.randint(config.min_recalls, min(config.max_recalls, n)))
    for k, idx in enumerate(asked):
        words += [names[idx], RECALL, nouns[idx], "," if k < len(asked) - 1 else "."]
    return words


def generate_binding_corpus(n_sentences: int, seed: int, config: BindingConfig | None = None) -> list[str]:
    """``n_sentences`` lines of text, the same for the same seed and config."""
    config = config or BindingConfig()
    config.check()
    rng = random.Random(seed)
    return [detokenize(binding_sentence(rng, config)) for _ in range(n_sentences)]


def decided_positions(words: list[str]) -> dict[int, int]:
    """Map each query position i whose next word is decided by an earlier word to that word's index j.

    A query is a ``RECALL`` token at i right after a name; the deciding word is the noun of the
    latest earlier clause "name VERB a noun" with that name (j <= i - 2). Row i uses only
    words[0..i], so a prefix gives the same answer for every position inside it.
    """
    out: dict[int, int] = {}
    owned: dict[str, int] = {}  # name -> index of its noun, from clauses seen so far
    for i, w in enumerate(words):
        # a clause "name VERB a noun" completes at i (its noun)
        if i >= 3 and words[i - 2] in VERBS and words[i - 1] == ARTICLE:
            owned[words[i - 3]] = i
        if w == RECALL and i >= 1 and words[i - 1] in owned:
            out[i] = owned[words[i - 1]]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the binding-recall corpus, one sentence per line.")
    p.add_argument("--out", type=Path, default=Path("data/binding.txt"))
    p.add_argument("--n", type=int, default=2000, help="number of sentences")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    lines = generate_binding_corpus(args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} sentences to {args.out}")


if __name__ == "__main__":
    main()
