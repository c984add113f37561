"""Library objects as plain JSON records: what the web app's data endpoints return (beside the figures
the page draws), so a script gets numbers, not HTML or plotly JSON.

Every record holds only JSON types (no NaN or infinity: those become null), names its parts, and
never a server path or a secret: runs are named by their run name, sources by their spec.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from llmcomp.app.generation import Outcome
    from llmcomp.training.run_summary import RunSummary

#: the summary fields a run record carries (RunSummary's, less its path and raw metrics)
RUN_FIELDS = (
    "name", "kind", "label", "source", "seed", "steps", "total_steps", "status", "stop_reason",
    "best_val_loss", "best_step", "final_val_loss", "final_val_ppl", "final_val_focus_loss",
    "final_val_focus_acc", "final_val_target_mass", "final_val_loss_seen", "tokens_per_s", "train_seconds",
    "attention_seconds", "api_requests", "api_tokens",
)  # fmt: skip


def plain(value: Any) -> Any:
    """``value`` with only JSON types: tuples as lists, non-finite floats as None, tensors as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # a tensor or an array
        return plain(value.tolist())
    return value


def attention_record(
    matrix: torch.Tensor,
    words: list[str],
    labels: list[str],
    heads: list[int],
    source: str,
    spec: dict[str, Any],
    corpus: str,
    sentence_index: int,
) -> dict[str, Any]:
    """One sentence's matrices for the chosen ``heads``: ``matrices[h][i][j]`` is how much word ``i``
    attends to word ``j`` (each row sums to 1; ``j > i`` is 0 for a causal source)."""
    return {
        "corpus": corpus,
        "sentence_index": sentence_index,
        "words": list(words),
        "heads": [labels[h] for h in heads],
        "head_indices": list(heads),
        "source": source,
        "source_spec": plain(dict(spec)),
        "matrices": [plain(matrix[h].float()) for h in heads],
    }


def choose_heads(choice: str | int | None, n: int, labels: list[str]) -> list[int]:
    """Head indices from a choice: ``all``/empty/-1 for every head, a number, a label, or several
    separated by commas. Raises ValueError naming the heads there are."""
    text = str("" if choice is None else choice).strip()
    if text.lower() in ("", "all", "-1"):
        return list(range(n))
    out = []
    for part in (p.strip() for p in text.split(",")):
        if part.lstrip("-").isdigit() and 0 <= int(part) < n:
            out.append(int(part))
        elif part in labels[:n]:
            out.append(labels.index(part))
        else:
            raise ValueError(f"no head {part!r}: this source has {n} head(s), {', '.join(labels[:n])} (or all)")
    return out


def run_record(run: RunSummary) -> dict[str, Any]:
    """A run summary: losses, steps, speed, status, and its corpus (name, hash, size, split)."""
    out = {name: getattr(run, name) for name in RUN_FIELDS}
    c = run.corpus
    out["corpus"] = (
        None
        if c is None
        else {"name": c.name, "sha256": c.sha256, "sentences": c.sentences, "split_seed": c.split_seed,
              "val_fraction": c.val_fraction}
    )  # fmt: skip
    return plain(out)


def metrics_record(run: RunSummary) -> dict[str, Any]:
    """A run's metrics stream as records (one per logged step, as ``metrics.jsonl`` holds them)."""
    return plain({"run": run.name, "records": [dict(m) for m in run.metrics]})


def generation_record(outcome: Outcome) -> dict[str, Any]:
    """A generation: its words, each sampled token with its probability and the likeliest
    alternatives, the supplied attention over all words, and the copy check."""
    gen = outcome.generation
    return plain(
        {
            "run": outcome.run,
            "checkpoint": outcome.checkpoint,
            "step": outcome.step,
            "text": gen.text,
            "prompt_words": gen.prompt_words,
            "generated_words": gen.words,
            "unknown_words": gen.unknown,
            "stopped_by": gen.stopped_by,
            "choices": [
                {
                    "position": len(gen.prompt_words) + i,
                    "word": c.word,
                    "prob": c.prob,
                    "top": [{"word": w, "prob": p} for w, p in c.top],
                }
                for i, c in enumerate(gen.choices)
            ],  # fmt: skip
            "source": outcome.source,
            "attention": {"words": gen.all_words, "matrices": gen.attention.float()},
            "copies": {
                "checked": outcome.copy.checked,
                "corpus": outcome.copy.corpus,
                "sentence_index": outcome.copy.index,
                "sentence": list(outcome.copy.sentence),
            },
        }
    )
