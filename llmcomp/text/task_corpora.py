"""Generated corpora in which the right attention is known: induction, ioi, agreement, coreference, binding.

Each task has a generator (seeded lines of real, lowercase English, one sentence per line, one
full stop at its end, so neither ``--split lines`` nor ``auto`` ever cuts a line) and a rule that
finds, from ``words[0..i]`` alone, each position *i* whose next word an earlier word *j* decides
(``{i: j}``; the rules are registered as tasks in ``llmcomp.text.tasks``, so they drive oracles,
focus metrics and atlas patterns). On a generated line the rule marks exactly the positions the
generator built; on other text it marks whatever fits its grammar (docs/tasks.md):

- ``induction``: ``lamp river chair , river chair .``: at the second ``river`` (i) the next word is
  the word that followed the first ``river`` (j): Olsson et al. 2022.
- ``ioi``: ``when mary and john went to the store , john gave a drink to mary .``: at the last
  ``to`` the next word is the name that was not repeated: Wang et al. 2022.
- ``agreement``: ``the key to the cabinets usually is old .``: at the adverb before the verb, the
  verb's number is the head noun's (``key``, j = 1) across one to three attractors: Linzen et al. 2016.
- ``coreference``: ``the king met the queen , and she , the queen , smiled .``: after ``she , the``
  the next word is the antecedent (the one noun that agrees with the pronoun in gender or number).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmcomp.errors import LLMCompError
from llmcomp.text.binding import generate_binding_corpus
from llmcomp.text.task_words import (
    AGREEMENT_ADJECTIVES,
    AGREEMENT_ADVERBS,
    AGREEMENT_NOUNS,
    AGREEMENT_PREPS,
    AGREEMENT_VERBS,
    COREF_ENDINGS,
    COREF_FEMALE,
    COREF_MALE,
    COREF_PRONOUNS,
    COREF_VERBS,
    INDUCTION_WORDS,
    IOI_GIVE,
    IOI_MOVES,
    IOI_NAMES,
    IOI_OBJECTS,
    IOI_OPENERS,
    IOI_PLACES,
    coref_features,
)
from llmcomp.text.tokenizer import detokenize


class TaskCorpusError(LLMCompError, ValueError):
    """A task corpus that cannot be generated or written, in one line."""


@dataclass(frozen=True)
class TaskCorpusConfig:
    """Defaults of ``llmcomp tasks make``: the bundled files are 2,000 lines from seed 7."""

    sentences: int = 2000
    seed: int = 7
    max_sentences: int = 1_000_000


def _is_word(w: str) -> bool:
    return w[:1].isalpha()


# --- rules: {i: j} from words[0..i] ------------------------------------------------------------------
def induction_targets(words: list[str]) -> dict[int, int]:
    """A word seen before (latest at k) whose follower there was a word: the next word is word k+1."""
    out: dict[int, int] = {}
    last: dict[str, int] = {}
    for i, w in enumerate(words):
        if _is_word(w) and w in last and _is_word(words[last[w] + 1]):
            out[i] = last[w] + 1  # last[w] < i, so the target is at most i
        last[w] = i
    return out


def ioi_targets(words: list[str]) -> dict[int, int]:
    """``OPENER A and B ...``, then ``S GIVE a OBJECT to`` with S one of A, B: the next word is the other."""
    if len(words) < 4 or words[0] not in IOI_OPENERS or words[2] != "and" or words[1] == words[3]:
        return {}
    other = {words[1]: 3, words[3]: 1}
    return {
        i: other[words[i - 4]]
        for i in range(8, len(words))
        if words[i] == "to" and words[i - 2] == "a" and words[i - 3] in IOI_GIVE and words[i - 4] in other
    }


def agreement_targets(words: list[str]) -> dict[int, int]:
    """``the HEAD PREP the ...``, then the first adverb after an attractor: the verb's number is HEAD's (j = 1)."""
    if len(words) < 6 or words[0] != "the" or not _is_word(words[1]) or words[2] not in AGREEMENT_PREPS:
        return {}
    for i in range(5, len(words)):
        if words[i] in AGREEMENT_ADVERBS:
            return {i: 1}
    return {}


def coreference_targets(words: list[str]) -> dict[int, int]:
    """``PRONOUN , the``: the next word is the one earlier ``the NOUN`` agreeing with the pronoun."""
    out: dict[int, int] = {}
    nouns: list[tuple[int, tuple[str, str]]] = []  # (position, (gender, number)) of each "the NOUN" so far
    for i, w in enumerate(words):
        if i >= 2 and w == "the" and words[i - 1] == "," and words[i - 2] in COREF_PRONOUNS:
            gender, number = COREF_PRONOUNS[words[i - 2]]
            fits = [p for p, (g, n) in nouns if p < i - 2 and n == number and gender in (None, g)]
            if len({words[p] for p in fits}) == 1:  # one antecedent (mentioned once or more): its latest mention
                out[i] = fits[-1]
        features = coref_features(w) if i >= 1 and words[i - 1] == "the" else None
        if features:
            nouns.append((i, features))
    return out


# --- generators: one line of tokens ------------------------------------------------------------------
def induction_sentence(rng: random.Random) -> list[str]:
    """Four to eight distinct words, a comma, then the same words again from a random one on."""
    seq = rng.sample(INDUCTION_WORDS, rng.randint(4, 8))
    start = rng.randint(0, len(seq) - 2)  # at least two repeated words: at least one decided position
    return [*seq, ",", *seq[start:], "."]


def ioi_sentence(rng: random.Random) -> list[str]:
    """ABBA or BABA: the subject of the second clause is either name; the indirect object is the other."""
    a, b = rng.sample(IOI_NAMES, 2)
    subject, receiver = (a, b) if rng.random() < 0.5 else (b, a)
    head = [rng.choice(IOI_OPENERS), a, "and", b, *rng.choice(IOI_MOVES).split(), rng.choice(IOI_PLACES), ","]
    return [*head, subject, rng.choice(IOI_GIVE), "a", rng.choice(IOI_OBJECTS), "to", receiver, "."]


def agreement_sentence(rng: random.Random) -> list[str]:
    """``the HEAD (PREP the ATTRACTOR){1,3} ADVERB is|are ADJECTIVE .``; attractors mostly of the other number."""
    pairs = rng.sample(AGREEMENT_NOUNS, 1 + rng.randint(1, 3))
    plural = rng.random() < 0.5
    words = ["the", pairs[0][plural]]
    for pair in pairs[1:]:
        other = plural if rng.random() < 0.3 else not plural  # 70% attractors of the other number
        words += [rng.choice(AGREEMENT_PREPS), "the", pair[other]]
    return [*words, rng.choice(AGREEMENT_ADVERBS), AGREEMENT_VERBS[plural], rng.choice(AGREEMENT_ADJECTIVES), "."]


def _coref_pair(rng: random.Random) -> tuple[str, str, str]:
    """(antecedent, the other noun, pronoun): the two differ in gender (he/she) or in number (they)."""
    if rng.random() < 0.5:  # gender: a male and a female singular noun
        male, female = rng.choice(list(COREF_MALE)), rng.choice(list(COREF_FEMALE))
        return (male, female, "he") if rng.random() < 0.5 else (female, male, "she")
    table_one, table_many = rng.choice((COREF_MALE, COREF_FEMALE)), rng.choice((COREF_MALE, COREF_FEMALE))
    one = rng.choice(list(table_one))
    many = rng.choice([p for s, p in table_many.items() if s != one])
    pronoun = "he" if table_one is COREF_MALE else "she"
    return (one, many, pronoun) if rng.random() < 0.5 else (many, one, "they")


def coreference_sentence(rng: random.Random) -> list[str]:
    """``the N1 VERB the N2 , and PRONOUN , the ANTECEDENT , ENDING .``, the antecedent first or second."""
    antecedent, other, pronoun = _coref_pair(rng)
    first, second = (antecedent, other) if rng.random() < 0.5 else (other, antecedent)
    head = ["the", first, rng.choice(COREF_VERBS), "the", second, ",", "and"]
    return [*head, pronoun, ",", "the", antecedent, ",", *rng.choice(COREF_ENDINGS).split(), "."]


def _lines(sentence: Callable[[random.Random], list[str]]) -> Callable[[int, int], list[str]]:
    def generate(n: int, seed: int) -> list[str]:
        rng = random.Random(seed)
        return [detokenize(sentence(rng)) for _ in range(n)]

    generate.__doc__ = sentence.__doc__
    return generate


#: task name -> generate(n sentences, seed) -> lines of text
GENERATORS: dict[str, Callable[[int, int], list[str]]] = {
    "induction": _lines(induction_sentence),
    "ioi": _lines(ioi_sentence),
    "agreement": _lines(agreement_sentence),
    "coreference": _lines(coreference_sentence),
    "binding": lambda n, seed: generate_binding_corpus(n, seed),
}
GENERATORS["binding"].__doc__ = "names bound to nouns, then recalled: 'tina keeps a jar ; tina : jar .'"


def generate(name: str, n: int, seed: int = TaskCorpusConfig.seed) -> list[str]:
    """``n`` lines of task ``name``'s corpus, the same for the same seed."""
    if name not in GENERATORS:
        raise TaskCorpusError(f"no generator for task {name!r}; choose one of: {', '.join(GENERATORS)}")
    if not 1 <= n <= TaskCorpusConfig.max_sentences:
        raise TaskCorpusError(f"--sentences must be 1..{TaskCorpusConfig.max_sentences}, got {n}")
    return GENERATORS[name](n, seed)


def write_lines(path: str | Path, lines: list[str]) -> Path:
    """Write a corpus file: UTF-8, one sentence per line (what ``load_corpus`` reads back unchanged)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as e:
        raise TaskCorpusError(f"cannot write {path}: {e.strerror or e}; choose another --out") from None
    return path
