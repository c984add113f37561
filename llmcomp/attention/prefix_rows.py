"""The rows generation sees: each row of a sentence scored from the words up to it, and nothing after.

A source whose rows may depend on later words (``prefix_causal`` False, e.g. OpenAI ``sentence`` mode)
gives training rows that generation can never have: when the model generates word i+1, words after i do
not exist yet. Generation therefore scores row i from ``words[:i+1]`` alone (its last row), and leak-free
validation must do the same, or a source that peeks at the next word reports a loss no model can reach.

This module is the one home of that rule: ``unique_prefixes`` lists what must be scored (every prefix of
every sentence, once), ``assemble_rows`` builds each sentence's (H, T, T) matrix from the prefixes' last
rows, and ``score_prefix_rows`` does both around ONE ``score_many`` call, so a network source batches,
caches and budgets the prefixes like any other sentences.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmcomp.attention.base import AttentionSource, ProgressFn, ScoreResult, ScoreStats, Words


def prefixes(words: Words) -> list[list[str]]:
    """``words[:1]``, ``words[:2]``, ..., ``words`` itself: the prefix whose last row is each row."""
    words = list(words)
    return [words[: k + 1] for k in range(len(words))]


def unique_prefixes(sentences: Sequence[Words], exclude: Sequence[Words] = ()) -> list[list[str]]:
    """Every prefix of every sentence, each once, in first-seen order, leaving out those in ``exclude``
    (sentences already being scored, such as the whole corpus during training)."""
    seen = {tuple(s) for s in exclude}
    out: list[list[str]] = []
    for words in sentences:
        for p in prefixes(words):
            if tuple(p) not in seen:
                seen.add(tuple(p))
                out.append(p)
    return out


def row_from_prefix(prefix_matrix: torch.Tensor) -> torch.Tensor:
    """The last row of a prefix's matrix, (H, k): how the prefix's last word attends to words 0..k-1."""
    return prefix_matrix[:, -1, :]


def assemble_rows(sentences: Sequence[Words], scored: Sequence[Words], result: ScoreResult) -> ScoreResult:
    """Each sentence's (H, T, T) matrix whose row i is the last row of ``words[:i+1]``'s matrix.

    ``scored`` are the sentences ``result`` scored (in order; they must include every prefix). A sentence
    with a prefix that has no matrix has none either, with that prefix's reason; one whose prefix was
    filled by the source's fallback keeps the matrix and reports the reason, as ``ScoreResult`` does."""
    index = {tuple(s): i for i, s in enumerate(scored)}
    matrices: list[torch.Tensor | None] = []
    failures: dict[int, str] = {}
    for n, words in enumerate(sentences):
        rows: list[torch.Tensor] = []
        for p in prefixes(words):
            i = index.get(tuple(p))
            if i is None:
                raise ValueError(f"prefix {' '.join(p)!r} was not scored")
            if i in result.failures:
                failures.setdefault(n, f"prefix of {len(p)} word(s): {result.failures[i]}")
            m = result.matrices[i]
            if m is None:
                break
            rows.append(row_from_prefix(m))
        if len(rows) < len(words):
            matrices.append(None)
            continue
        h, t = (rows[0].shape[0] if rows else 0), len(words)
        att = torch.zeros(h, t, t)
        for k, row in enumerate(rows):
            att[:, k, : k + 1] = row
        matrices.append(att)
    stats = ScoreStats(**vars(result.stats))
    return ScoreResult(matrices=matrices, failures=failures, stats=stats)


def score_prefix_rows(
    source: AttentionSource, sentences: Sequence[Words], progress: ProgressFn | None = None
) -> ScoreResult:
    """Leak-free matrices for ``sentences``: every distinct prefix scored in one ``score_many`` call.
    The stats count prefixes (what was requested), not sentences."""
    scored = unique_prefixes(sentences)
    return assemble_rows(sentences, scored, source.score_many(scored, progress=progress))
