"""Which supplied heads a mixture model chose (``--mix``): its weights, ``mixture.json`` in the run folder,
and the lines that report them.

A model trained with ``GPTConfig.mix_heads`` M learns, per layer, M softmax weightings over the source's K
heads (the bank). After a run they say which of the source's heads the small model used: this module reads
them off the model, names the bank's heads (``source.head_labels()`` where a source has it, else
``head i``), and owns the file that keeps them (JSON only, every field checked on read). Torch-free at import.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcomp.errors import LLMCompError, one_line
from llmcomp.training.run_folder import read_small

if TYPE_CHECKING:
    from llmcomp.attention.base import AttentionSource
    from llmcomp.model.gpt import GPT

FILENAME = "mixture.json"
FORMAT_VERSION = 1
MAX_BYTES = 4_000_000  # 30 layers x 8 mixed heads x 300 bank heads as JSON is about 1.5 MB
SHOWN = 5  # bank heads named per mixed head in the report; the rest are summed


class MixtureError(LLMCompError, ValueError):
    """A mixture.json that cannot be used, with a one-line reason."""


@dataclass(frozen=True)
class Mixture:
    """Per layer, per mixed head, the weights over the bank (each row sums to 1), and the bank's labels."""

    labels: list[str]
    layers: list[list[list[float]]]  # (n_layer, mix_heads, K)
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "step": self.step, "labels": self.labels, "layers": self.layers}


def mixture_weights(model: GPT) -> list[list[list[float]]] | None:
    """Each layer's (mix_heads, K) softmax weights as lists, or None for a model without a mixture."""
    rows = [block.attn.mix_weights() for block in model.blocks]
    if any(w is None for w in rows):
        return None
    return [w.detach().cpu().tolist() for w in rows]


def bank_labels(source: AttentionSource | None, n: int) -> list[str]:
    """Names of the source's ``n`` heads: its ``head_labels()`` when it has them (and they fit), else head i."""
    got = getattr(source, "head_labels", None)
    try:
        got = got() if callable(got) else got
    except Exception:  # noqa: BLE001 - a label is a nicety; the weights are reported either way
        got = None
    if isinstance(got, list | tuple) and len(got) == n and all(isinstance(x, str) for x in got):
        return [one_line(x, 80) for x in got]
    return [f"head {i}" for i in range(n)]


def model_mixture(model: GPT, source: AttentionSource | None, step: int | None = None) -> Mixture | None:
    """The model's mixture with the source's head labels, or None without one."""
    layers = mixture_weights(model)
    if layers is None:
        return None
    return Mixture(bank_labels(source, model.config.n_external_heads), layers, step)


def write_mixture(folder: str | Path, mixture: Mixture) -> Path:
    """Write ``mixture.json`` into ``folder`` (whole or not at all)."""
    path = Path(folder) / FILENAME
    tmp = path.with_name(f".{FILENAME}.tmp")
    tmp.write_text(json.dumps(mixture.to_dict(), allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def save_run_mixture(
    folder: str | Path, model: GPT, source: AttentionSource | None, step: int | None
) -> Mixture | None:
    """Write the model's mixture into its run folder (nothing for a model without one); return it."""
    mixture = model_mixture(model, source, step)
    if mixture is not None:
        write_mixture(folder, mixture)
    return mixture


def read_mixture(folder: str | Path) -> Mixture | None:
    """The run folder's mixture; None if it has none; MixtureError if the file is damaged or crafted."""
    path = Path(folder) / FILENAME
    if not os.path.lexists(path):
        return None
    try:
        data = json.loads(read_small(path, MAX_BYTES))
        why = _check(data)
    except (OSError, ValueError, RecursionError) as e:
        why = one_line(e, 200)
    if why:
        raise MixtureError(f"{path} cannot be read ({why}); train the run again to rewrite it")
    return Mixture(list(data["labels"]), data["layers"], data.get("step"))


def _check(data: Any) -> str | None:
    """Why ``data`` is not a mixture: every row K finite weights in [0, 1] summing to 1, K labels."""
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        return f"not a format {FORMAT_VERSION} mixture"
    labels, layers, step = data.get("labels"), data.get("layers"), data.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        return "step must be a whole number"
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and len(x) <= 200 for x in labels):
        return "labels must be a list of names"
    if not isinstance(layers, list) or not layers:
        return "layers must be a list"
    for layer in layers:
        if not isinstance(layer, list) or not layer:
            return "each layer must be a list of mixed heads"
        for row in layer:
            if not isinstance(row, list) or len(row) != len(labels):
                return f"each mixed head needs {len(labels)} weights, one per label"
            ok = all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) for w in row)
            if not ok or not all(0 <= w <= 1 for w in row) or abs(sum(row) - 1) > 1e-3:
                return "weights must be numbers in [0, 1] that sum to 1 per mixed head"
    return None


def mixture_lines(mixture: Mixture, shown: int = SHOWN) -> list[str]:
    """One line per layer and mixed head: the bank heads by weight, heaviest first (``shown`` of them)."""
    out = []
    for li, layer in enumerate(mixture.layers, 1):
        for hi, row in enumerate(layer, 1):
            order = sorted(range(len(row)), key=lambda k: -row[k])
            parts = [f"{mixture.labels[k]} {row[k]:.3f}" for k in order[:shown]]
            if len(order) > shown:
                parts.append(f"{len(order) - shown} others {sum(row[k] for k in order[shown:]):.3f}")
            head = f", mixed head {hi}" if len(layer) > 1 else ""
            out.append(f"layer {li}{head}: " + ", ".join(parts))
    return out
