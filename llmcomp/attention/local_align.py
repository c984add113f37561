"""Words <-> pieces for the local LLM: which tokens belong to which word, and piece attention -> word matrices.

One job: the exact mapping between the project's words and the model's pieces (tokens), in both
directions. It is its own module because this is the part that decides what a "word attention
matrix" of an LLM means; it is pure tokenizer and tensor arithmetic, runs no model and holds no
state (``local_model`` loads and runs the LLM, ``local_llm`` is the source that joins the two).

How a sentence becomes a (heads, T, T) word matrix:

1. **Pieces.** The words are turned into text joined by single spaces, but tokenised *word by word*
   (the first word bare, every later word with its leading space) and the ids concatenated. Each
   piece therefore belongs to exactly one word, and a word's pieces never depend on the words after
   it. The model's BOS token is put in front on purpose: LLaMA-style models park most of their
   attention on the first token (the "sink"), and it should land on BOS, not on word 0.
2. **Rows (queries).** Word i's row is the row of its *last* piece, the first point at which the
   whole word has been read. The model is causal, so that row only sees pieces of words 0..i.
3. **Columns (keys).** Word j's column is the *sum* of the attention on its pieces.
4. **Sink.** The BOS column is handled by ``sink``: ``"drop"`` (default) removes it and renormalises
   each model head's row over words 0..i; ``"pool"`` removes it, sums the heads of an output group
   and then renormalises, so heads that mostly look at the sink count for little; ``"self"`` moves
   the sink mass onto the diagonal (attending to the sink read as "attend to yourself").
   Renormalisation adds a tiny floor so that no row is ever all zero.
5. **Layers and heads.** The selected layers' heads are listed layer-major (layer a head 0..8, then
   layer b ...) and split into ``n_heads`` contiguous, nearly equal groups; each output head is the
   mean of its group. ``n_heads=1`` averages everything; ``n_heads`` equal to the number of selected
   layers gives one output head per layer; one layer and ``n_heads=9`` gives the model's own heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from llmcomp.attention.base import AttentionError, normalize_scores

if TYPE_CHECKING:
    from llmcomp.attention.local_model import LoadedModel

#: Bump when the way pieces, sink, layers or heads become word matrices changes (invalidates the cache).
AGGREGATION_VERSION = 1
SINK_POLICIES = ("drop", "pool", "self")
FLOOR = 1e-8

SinkPolicy = Literal["drop", "pool", "self"]


# --- words -> pieces -------------------------------------------------------------------------
@dataclass(frozen=True)
class Alignment:
    """BOS plus every word's pieces, and which word each piece belongs to."""

    ids: list[int]  # ids[0] is BOS
    word_of_piece: list[int]  # -1 for BOS
    last_piece: list[int]  # per word: position in ids of its last piece

    @property
    def n_words(self) -> int:
        return len(self.last_piece)


def word_texts(words: Sequence[str]) -> list[str]:
    """The text of each word as it appears in the sentence joined by single spaces."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def align_words(model: LoadedModel, words: Sequence[str]) -> Alignment:
    """Tokenise word by word (exact alignment, and no word's pieces depend on a later word)."""
    if any(not w or w.isspace() for w in words):
        raise AttentionError("the sentence has an empty word")
    per_word = model.pieces(word_texts(words)) if words else []
    ids, owner, last = [model.bos_id], [-1], []
    for j, p in enumerate(per_word):
        if not p:
            raise AttentionError(f"word {j} ({words[j]!r}) produced no tokens")
        ids.extend(p)
        owner.extend([j] * len(p))
        last.append(len(ids) - 1)
    return Alignment(ids=ids, word_of_piece=owner, last_piece=last)


# --- pieces -> words -------------------------------------------------------------------------
def aggregate(att: torch.Tensor, al: Alignment, n_heads: int, sink: SinkPolicy) -> torch.Tensor:
    """Piece attention (pairs, P, P) of one sentence (pairs = layer-major (layer, head)) -> (n_heads, T, T)."""
    t = al.n_words
    rows = att[:, al.last_piece, : len(al.ids)]  # (pairs, T, P): each word read at its last piece
    owner = torch.tensor(al.word_of_piece)
    to_word = (owner[:, None] == torch.arange(t)[None, :]).to(rows.dtype)  # (P, T); the BOS row is all zero
    words = rows @ to_word  # (pairs, T, T): attention summed over each key word's pieces
    groups = torch.tensor_split(torch.arange(att.shape[0]), n_heads)
    if sink == "pool":
        summed = torch.stack([words[g].sum(0) for g in groups])
        return normalize_scores(summed, floor=FLOOR)
    if sink == "self":
        words = words + torch.diag_embed(rows[:, :, 0])
    per_head = normalize_scores(words, floor=FLOOR)
    return torch.stack([per_head[g].mean(0) for g in groups])
