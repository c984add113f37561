"""The state a run trains and a checkpoint saves: a model sized for a corpus and source, or one resumed.

Resuming is refused, with a one-line reason, when the checkpoint's vocabulary or attention source
differ from the run's: its embeddings or its supplied heads would not fit the new batches.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from llmcomp.attention.base import AttentionSource
from llmcomp.errors import one_line
from llmcomp.model.gpt import GPT, GPTConfig
from llmcomp.text.corpus import Corpus
from llmcomp.text.vocab import Vocab
from llmcomp.training.checkpoint import Checkpoint, CheckpointError, load_checkpoint


def new_model(corpus: Corpus, vocab: Vocab, source: AttentionSource, config: GPTConfig | None, seed: int) -> GPT:
    """A GPT for ``vocab``, the corpus's longest sentences and the source's heads, initialised from ``seed``."""
    cfg = config or GPTConfig()
    learned = cfg.n_learned_heads or getattr(source, "learned_heads", 0)
    cfg = replace(
        cfg,
        vocab_size=len(vocab),
        block_size=max(cfg.block_size, corpus.config.max_words + 2),
        n_external_heads=source.n_heads,
        n_learned_heads=learned,
        mix_heads=cfg.mix_heads if source.n_heads else 0,  # a source with no heads (learned) has nothing to mix
    )
    torch.manual_seed(seed)
    return GPT(cfg)


def resumable_checkpoint(path: str | Path, vocab: Vocab, source: AttentionSource) -> Checkpoint:
    """The checkpoint at ``path`` with its optimizer state, if it was trained on ``vocab`` with ``source``
    and the trainer can continue from it (moments that fit the model, a last metric with its time)."""
    ck = load_checkpoint(path, with_optimizer=True)
    why = _unresumable(ck)
    if why:
        raise CheckpointError(f"checkpoint {ck.path} cannot be resumed: {why}")
    if ck.vocab != vocab:
        raise CheckpointError(
            f"checkpoint vocabulary ({len(ck.vocab)} tokens) differs from this corpus's "
            f"({len(vocab)} tokens); resume with the corpus it was trained on"
        )
    if ck.source_fingerprint != source.fingerprint():
        raise CheckpointError(
            f"checkpoint was trained with attention {ck.source_spec.get('kind')!r}, not {source.kind!r}; "
            "resume with the same source"
        )
    return ck


def _unresumable(ck: Checkpoint) -> str | None:
    """Why the trainer could not continue from ``ck`` (it would fail mid-run, not with one line), or None."""
    if ck.metrics and not isinstance(ck.metrics[-1].get("elapsed"), int | float):
        return "its last metrics record has no elapsed time"
    shapes = [tuple(p.shape) for p in _param_order(ck.model)]
    for key, value in ck.optimizer_state.items():
        idx, _, name = key.partition(".")
        if not idx.isdigit() or int(idx) >= len(shapes) or name not in ("step", "exp_avg", "exp_avg_sq"):
            return f"optimizer.safetensors holds an unknown entry {one_line(key, 60)!r}"
        if not torch.isfinite(value).all():
            return f"optimizer.safetensors holds NaN or infinite values ({key})"
        want = () if name == "step" else shapes[int(idx)]
        if tuple(value.shape) != want:
            return f"optimizer.safetensors entry {key} has shape {tuple(value.shape)}, not {want}"
    return None


def _decay_split(model: GPT) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(decayed, not decayed): weight decay on matrices only, not on biases, norms or a mixture's logits
    (decay would pull the logits back to equal weights and bias which heads the mixture reports it chose)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.endswith("mix_logits")]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or n.endswith("mix_logits")]
    return decay, no_decay


def _param_order(model: GPT) -> list[torch.nn.Parameter]:
    """The parameters in the optimizer's order (its state is saved by that index): decayed, then the rest."""
    decay, no_decay = _decay_split(model)
    return decay + no_decay


def new_optimizer(model: GPT, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (``_decay_split``)."""
    decay, no_decay = _decay_split(model)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), fused=True)
