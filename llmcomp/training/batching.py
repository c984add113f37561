"""Turn sentences and their word-level attention into padded model batches.

The model reads ``<s> w0 .. w(n-1)`` and predicts ``w0 .. w(n-1) </s>``. Word i sits at model
position i+1 and predicts word i+1, so row i of a source's (T, T) matrix, over words 0..i, is
exactly what position i+1 needs. ``<s>`` (position 0) attends only to itself and no word attends
to it: the supplied matrix is embedded as the lower-right block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from llmcomp.text.vocab import Vocab


def with_bos(att: torch.Tensor) -> torch.Tensor:
    """(H, T, T) word attention -> (H, T+1, T+1) model attention with <s> in front."""
    h, t, _ = att.shape
    out = torch.zeros(h, t + 1, t + 1, dtype=torch.float32)
    out[:, 0, 0] = 1.0
    out[:, 1:, 1:] = att
    return out


@dataclass
class Example:
    """One encoded sentence: inputs (<s> + words), targets (words + </s>), attention, focus positions."""

    x: torch.Tensor
    y: torch.Tensor
    att: torch.Tensor
    focus: torch.Tensor  # bool (T+1,): target positions measured separately (e.g. decided words)
    # long (T+1,): at a focus position, the model column of the word that decides its target (a task's
    # target j sits at column j+1); -1 where not known. None: built without it (counts as all -1)
    target: torch.Tensor | None = None


def encode_example(
    words: Sequence[str],
    att: torch.Tensor,
    vocab: Vocab,
    focus_words: Sequence[int] = (),
    deciding: Mapping[int, int | None] | None = None,
) -> Example:
    """``focus_words``: indices i of words whose *next* word is measured separately; ``deciding``: for some
    of them, the index j <= i of the word that decides it (a task's targets)."""
    ids = [vocab.bos_id, *vocab.encode(words), vocab.eos_id]
    focus = torch.zeros(len(words) + 1, dtype=torch.bool)
    for i in focus_words:
        focus[i + 1] = True
    target = torch.full((len(words) + 1,), -1, dtype=torch.long)
    for i, j in (deciding or {}).items():
        if j is not None:
            target[i + 1] = j + 1
    return Example(torch.tensor(ids[:-1]), torch.tensor(ids[1:]), with_bos(att), focus, target)


@dataclass
class Batch:
    x: torch.Tensor  # (B, T) input ids, right-padded with <pad>
    y: torch.Tensor  # (B, T) targets, -100 where padded
    att: torch.Tensor  # (B, H, T, T) supplied attention, zero rows and columns where padded
    focus: torch.Tensor  # (B, T) bool

    @property
    def n_tokens(self) -> int:
        return int((self.y != -100).sum())


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    """Right-pad to the longest example, a few whole-batch ops rather than several per example
    (this runs every training step, and small torch ops cost microseconds each)."""
    t = max(len(e.x) for e in examples)
    x = pad_sequence([e.x for e in examples], batch_first=True, padding_value=pad_id)
    y = pad_sequence([e.y for e in examples], batch_first=True, padding_value=-100)
    focus = pad_sequence([e.focus for e in examples], batch_first=True, padding_value=False)
    att = torch.stack([F.pad(e.att, (0, t - e.att.shape[-1], 0, t - e.att.shape[-1])) for e in examples])
    return Batch(x, y, att, focus)
