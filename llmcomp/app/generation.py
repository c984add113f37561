"""Generating from a saved run, as the web app's Generate tab and its data endpoint both do: the
run's checkpoint, its source rebuilt under the caller's key policy (the owner key's budget reserved
first), the sampled words with their probabilities, the model's own heads, and whether the text
copies a training sentence. The caller has already checked that the run is theirs to use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmcomp.app import scoring
from llmcomp.app.sources import build_source
from llmcomp.generation.config import GenerateConfig
from llmcomp.generation.copies import CopyCheck, find_copy, training_corpus

if TYPE_CHECKING:
    import torch

    from llmcomp.app.keys import KeyPolicy
    from llmcomp.attention.cache import AttentionCache
    from llmcomp.generation import Generation
    from llmcomp.text.corpus import Corpus
    from llmcomp.training.run_summary import RunSummary


@dataclass
class Outcome:
    """One generation and what the app says about it."""

    run: str
    generation: Generation
    learned: torch.Tensor | None  # the model's own heads in its last layer over <s> + words, or None
    source: str  # the source, described
    source_kind: str
    checkpoint: str  # "best" or "last"
    step: int
    copy: CopyCheck

    def messages(self) -> list[tuple[str, str]]:
        """(text, kind) lines for the notes box: what happened first, then warnings and the copy check."""
        gen = self.generation
        first = (
            f"{len(gen.words)} word(s) generated; stopped by {gen.stopped_by}; attention: {self.source}; "
            f"model: {self.run}, its {self.checkpoint} checkpoint (step {self.step})"
        )
        out = [(first, "ok")]
        if gen.unknown:
            out.append((f"unknown word(s) read as <unk>: {', '.join(sorted(set(gen.unknown)))}", "warn"))
        if self.learned is not None and gen.attention.shape[0] == 0:
            out.append(("this model learned its own attention (no supplied heads); shown below", "info"))
        if self.copy.note:
            out.append((self.copy.note, "warn" if self.copy.index is not None else "info"))
        return out


def generate_from_run(
    run: RunSummary,
    prompt: str,
    config: GenerateConfig,
    keys: KeyPolicy,
    cache: AttentionCache | None,
    corpora: Iterable[Corpus] = (),
    progress: Callable[[int, int], None] | None = None,
) -> Outcome:
    """Sample from ``run``'s generation checkpoint (its best when it kept one); ``corpora`` are the
    corpora at hand to find its training sentences in (by content hash)."""
    from llmcomp.generation import Generator
    from llmcomp.training import load_checkpoint

    ck = load_checkpoint(run.generation_checkpoint)
    source = build_source(ck.source_spec, keys=keys, cache=cache)
    try:
        if keys.uses_owner_key(source):  # reserve for every prefix it may score, before any request
            scoring.check_budget(source, scoring.generation_prefixes(prompt, config.max_words), keys)
        generator = Generator(ck.model, ck.vocab, source)
        gen = generator.generate(prompt, config, progress=progress)
        description = source.describe()
    finally:
        keys.charge(source)
        source.close()
    learned = generator.learned_attention(gen)
    corpus = training_corpus(run.corpus, corpora)
    name = run.corpus.name if run.corpus else "not recorded"
    copy = find_copy(gen.all_words, len(gen.prompt_words), corpus, name)
    which = "best" if run.generation_checkpoint != run.checkpoint else "last"
    return Outcome(run.name, gen, learned, description, source.kind, which, ck.step, copy)


def corpora_at_hand(own: Corpus | None, bundled: Callable[[str], Corpus], names: Iterable[str]) -> Iterator[Corpus]:
    """Where a run's training sentences may be: the caller's own corpus, then each bundled one
    (loaded only when the ones before did not match)."""
    if own is not None:
        yield own
    for name in names:
        yield bundled(name)


PROBABILITY_COLUMNS = ["#", "word", "p(word)", "likeliest next words"]


def probability_rows(gen: Generation) -> list[list[str | int]]:
    """One row per sampled token, for the tab's table and the CLI's ``--show-probs``: its position in
    the text, the word taken, its probability, and the likeliest words with theirs."""
    return [
        [len(gen.prompt_words) + i, c.word, f"{c.prob:.3f}", " · ".join(f"{w} {p:.3f}" for w, p in c.top)]
        for i, c in enumerate(gen.choices)
    ]
