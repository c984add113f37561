"""Training data: examples from a corpus and its attention, the batches drawn from them, held-out loss.

``prepare_data`` scores the corpus once and encodes the train and validation splits; the result,
``PreparedData``, depends on the corpus, the source and the focus positions but not on the seed, so
several trainers (one per seed, as ``llmcomp compare`` runs them) can share one scoring pass through
``Trainer(..., prepared=...)`` or ``Trainer.use``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from llmcomp.attention.base import AttentionSource, PerSentenceSource, ProgressFn, ScoreStats
from llmcomp.attention.prefix_rows import assemble_rows, unique_prefixes
from llmcomp.model.gpt import GPT
from llmcomp.text.corpus import Corpus
from llmcomp.text.tasks import Task, as_task
from llmcomp.text.vocab import Vocab
from llmcomp.threads import torch_threads
from llmcomp.training.batching import Batch, Example, collate, encode_example

#: words -> indices i whose next word is measured separately (e.g. the binding task's recalls); a Task is one
FocusFn = Callable[[list[str]], Iterable[int]]


def build_examples(
    corpus: Corpus,
    matrices: list[torch.Tensor | None],
    indices: list[int],
    vocab: Vocab,
    focus: Task | FocusFn | None,
) -> list[Example]:
    """The encoded sentences ``indices`` of ``corpus``, with the task's decided positions and their deciding
    words (``focus``: a Task, or a bare function of the words giving positions only); sentences without a
    matrix are left out."""
    task = as_task(focus)
    out = []
    for i in indices:
        if matrices[i] is None:
            continue
        words = corpus.sentences[i]
        targets = task.targets(words) if task else {}
        out.append(encode_example(words, matrices[i], vocab, list(targets), targets))
    return out


@dataclass(frozen=True)
class PreparedData:
    """A corpus's train and validation examples under one attention source: score once, train many seeds.

    ``key`` records what the examples were built from (corpus content and split, source fingerprint),
    so a trainer refuses examples prepared for another corpus or source instead of training on them.
    """

    train_examples: list[Example]
    val_examples: list[Example]
    stats: ScoreStats = field(default_factory=ScoreStats)
    failures: dict[int, str] = field(default_factory=dict)  # sentence index -> reason, for sentences left out
    by_length: list[int] = field(default_factory=list)  # train example indices, shortest first (batch windows)
    key: dict[str, Any] = field(default_factory=dict)
    focus: Task | FocusFn | None = None
    #: True when the source's training rows may see later words (``prefix_causal`` False): ``val_examples`` were
    #: then scored prefix by prefix, as generation sees them, and ``val_seen_examples`` hold the same sentences
    #: under the training-time matrices (the ``val_loss_seen`` metric); both empty/False for causal sources.
    val_scored_by_prefix: bool = False
    val_seen_examples: list[Example] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Both splits have at least one example (training and validation can run)."""
        return bool(self.train_examples and self.val_examples)

    def batch(self, seed: int, batch_size: int, length_window: int, pad_id: int) -> Batch:
        """``batch_size`` train examples drawn by a generator seeded with ``seed`` alone (so a resumed run
        draws the batches of one that never stopped).

        With ``length_window`` > 1 the batch is drawn from a window of similar-length sentences
        (train examples sorted by length), so little compute goes to padding; every sentence
        remains equally likely to be drawn, up to the windows' clamping at the two ends.
        """
        g = torch.Generator().manual_seed(seed)
        n = len(self.train_examples)
        window = min(n, batch_size * length_window) if length_window > 1 else n
        start = int(torch.randint(n - window + 1, (1,), generator=g))
        picks = (start + torch.randint(window, (batch_size,), generator=g)).tolist()
        return collate([self.train_examples[self.by_length[i]] for i in picks], pad_id)


def data_key(corpus: Corpus, source: AttentionSource) -> dict[str, Any]:
    """What examples depend on besides the focus function: corpus content and split, source fingerprint."""
    return {
        "corpus_sha256": corpus.sha256,
        "val_idx": list(corpus.val_idx),
        "source": source.fingerprint(),
    }


def prepare_data(
    corpus: Corpus,
    source: AttentionSource,
    vocab: Vocab,
    focus: Task | FocusFn | None = None,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> PreparedData:
    """Score the whole corpus in one bulk call (cached sources make this near-free the second time).

    For a source whose rows may see later words (``prefix_causal`` False) the same call also scores every
    prefix of the validation sentences (``sentences_to_score``), and validation is built from those rows
    (``attention.prefix_rows``): the reported loss is then the one a generating model could reach."""
    sentences = sentences_to_score(corpus, source)
    # Per-sentence sources run many tiny ops: ``threads`` (one, by default); heavy sources choose their own.
    with torch_threads(threads if isinstance(source, PerSentenceSource) else None):
        result = source.score_many(sentences, progress=progress)
    n = len(corpus.sentences)
    matrices, failures = result.matrices[:n], {i: r for i, r in result.failures.items() if i < n}
    train = build_examples(corpus, matrices, corpus.train_idx, vocab, focus)
    val = seen = build_examples(corpus, matrices, corpus.val_idx, vocab, focus)
    by_prefix = not source.prefix_causal
    if by_prefix:
        held_out = [corpus.sentences[i] for i in corpus.val_idx]
        rows = assemble_rows(held_out, sentences, result)
        leak_free: list[torch.Tensor | None] = list(matrices)
        for i, m in zip(corpus.val_idx, rows.matrices, strict=True):
            leak_free[i] = m
        for k, reason in rows.failures.items():
            failures.setdefault(corpus.val_idx[k], reason)
        val = build_examples(corpus, leak_free, corpus.val_idx, vocab, focus)
        matrices = leak_free
    return PreparedData(
        train_examples=train,
        val_examples=val,
        stats=result.stats,
        failures={i: r for i, r in failures.items() if matrices[i] is None},
        by_length=sorted(range(len(train)), key=lambda i: len(train[i].x)),
        key=data_key(corpus, source),
        focus=focus,
        val_scored_by_prefix=by_prefix,
        val_seen_examples=seen if by_prefix else [],
    )


def sentences_to_score(corpus: Corpus, source: AttentionSource) -> list[list[str]]:
    """What preparing ``corpus`` for ``source`` scores, in one call: every sentence, then (for a source whose
    rows may see later words) each prefix of a validation sentence not already among them. The estimate and
    the budget check of a training run count this same list."""
    sentences = [list(s) for s in corpus.sentences]
    if source.prefix_causal:
        return sentences
    return sentences + unique_prefixes([corpus.sentences[i] for i in corpus.val_idx], exclude=sentences)


def evaluate(model: GPT, examples: list[Example], pad_id: int, batch_size: int = 64) -> dict[str, float]:
    """Token-weighted mean cross-entropy over the examples; at their focus (decided) positions also the loss,
    ``focus_acc`` (share whose top-1 prediction is the true next word) and, where the deciding word is known
    and the model has supplied heads, ``target_mass`` (the supplied weight on it, averaged over those heads)."""
    was_training = model.training
    model.eval()
    total = count = focus_total = focus_count = focus_right = mass_total = mass_count = 0.0
    device = next(model.parameters()).device  # batches are made on the CPU; the model may be on a GPU
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            b = collate(chunk, pad_id)
            x, y, att = b.x.to(device), b.y.to(device), b.att.to(device) if b.att.shape[1] else None
            mask = y != -100
            logits = model.lm_head(model.hidden(x, att)[mask])
            losses = F.cross_entropy(logits, y[mask], reduction="none")
            total += float(losses.sum())
            count += losses.numel()
            focus = b.focus.to(device)[mask]
            focus_total += float(losses[focus].sum())
            focus_count += int(focus.sum())
            focus_right += int((logits[focus].argmax(-1) == y[mask][focus]).sum())
            if att is not None:
                s, m = _target_mass(chunk, b.att, b.focus)
                mass_total, mass_count = mass_total + s, mass_count + m
    model.train(was_training)
    out = {"loss": total / max(count, 1)}
    if focus_count:
        out["focus_loss"] = focus_total / focus_count
        out["focus_acc"] = focus_right / focus_count
    if mass_count:
        out["target_mass"] = mass_total / mass_count
    return out


def _target_mass(examples: list[Example], att: torch.Tensor, focus: torch.Tensor) -> tuple[float, int]:
    """Sum over focus positions with a known deciding column of the head-averaged supplied weight there, and
    how many there were. ``att``: (B, H, T, T), row p of example b is what model position p attends with."""
    tgt = pad_sequence([_targets_of(e) for e in examples], batch_first=True, padding_value=-1)
    known = focus & (tgt >= 0)
    if not bool(known.any()):
        return 0.0, 0
    b_idx, p_idx = known.nonzero(as_tuple=True)
    weights = att[b_idx, :, p_idx, tgt[b_idx, p_idx]]  # (N, H)
    return float(weights.mean(-1).sum()), int(known.sum())


def _targets_of(e: Example) -> torch.Tensor:
    return e.target if e.target is not None else torch.full((len(e.x),), -1, dtype=torch.long)


VALIDATION_FIELDS = {  # evaluate's (and validate's) key -> the metrics stream's
    "seen_loss": "val_loss_seen",
    "focus_loss": "val_focus_loss",
    "focus_acc": "val_focus_acc",
    "target_mass": "val_target_mass",
}


def validation_record(val: dict[str, float]) -> dict[str, float]:
    """The metrics-stream fields of one validation. ``val_loss`` is the leak-free loss; the loss under
    training-time rows that may see later words is only ever ``val_loss_seen``, beside it."""
    record = {"val_loss": val["loss"], "val_ppl": math.exp(min(val["loss"], 50))}
    record.update({name: val[key] for key, name in VALIDATION_FIELDS.items() if key in val})
    return record
