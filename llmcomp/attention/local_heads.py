"""Which parts of the local LLM become supplied heads: the layer selection and the head selection.

One job: read, check and canonicalise what a person selects, resolve it against the model's shape
once that is known, and name the supplied heads that result. Two ways to select:

- **Groups averaged** (``heads`` None, the default): the ``layers`` selection's (layer, head) pairs,
  layer-major, split into ``n_heads`` contiguous groups, each averaged into one supplied head.
- **Chosen heads** (``heads`` set): each (layer, head) pair is one supplied head, in the order given.
  ``"21.4,23.5"`` (or ``"21.4+23.5"``: layer.head, 0-based) or a list of pairs; ``"all"`` is every
  pair of the selected ``layers``, layer-major (layer 0 head 0, layer 0 head 1, ...). Only layers up
  to the deepest chosen one run. ``top:...`` (heads an atlas ranks) is resolved by the application
  layer before a source is built, never here.

Layers: ``"all"``, ``"last-N"``, ``"first-N"``, ``"A-B"`` (inclusive), ``"3,7,11"``, ``"5"`` or a
list of ints (negative counts from the end).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmcomp.attention.local_model import LocalLLMError

LayerSpec = str | Sequence[int]
#: ``"all"``, ``"21.4,23.5"`` / ``"21.4+23.5"``, or a list of (layer, head) pairs
HeadSpec = str | Sequence[Sequence[int]]

_LAYER_STR = re.compile(r"all|(?:last|first)-\d+|\d+-\d+|-?\d+(?:,-?\d+)*")
_PAIR = re.compile(r"(\d+)\.(\d+)")
HEADS_SYNTAX = "write heads as layer.head pairs, e.g. '21.4,23.5' (or 21.4+23.5), or 'all'"


# --- layers ----------------------------------------------------------------------------------
def canonical_layers(layers: LayerSpec) -> str | list[int]:
    """Check a layer selection's syntax (the range is checked once the model is known)."""
    if isinstance(layers, str):
        s = layers.strip().lower().replace(" ", "")
        if not _LAYER_STR.fullmatch(s):
            raise LocalLLMError(
                f"cannot read layer selection {layers!r}; use 'all', 'last-N', 'first-N', 'A-B', '3,7,11' or a list of ints"
            )
        return s
    try:
        out = [int(x) for x in layers]
    except (TypeError, ValueError):
        raise LocalLLMError(f"layers must be a string or a list of ints, got {layers!r}") from None
    if not out:
        raise LocalLLMError("layers is an empty list; select at least one layer")
    return out


def resolve_layers(layers: LayerSpec, n_layers: int) -> list[int]:
    """Layer selection -> sorted, distinct 0-based layer indices for a model with ``n_layers`` layers."""
    spec = canonical_layers(layers)
    if spec == "all":
        idx = list(range(n_layers))
    elif isinstance(spec, str) and spec.startswith(("last-", "first-")):
        k = int(spec.split("-")[1])
        if not 1 <= k <= n_layers:
            raise LocalLLMError(f"layer selection {spec!r}: the model has {n_layers} layers")
        idx = list(range(n_layers - k, n_layers)) if spec.startswith("last") else list(range(k))
    elif isinstance(spec, str) and re.fullmatch(r"\d+-\d+", spec):
        a, b = (int(x) for x in spec.split("-"))
        if a > b:
            raise LocalLLMError(f"layer range {spec!r} is empty (write it low-high)")
        idx = list(range(a, b + 1))
    else:
        idx = [int(x) for x in spec.split(",")] if isinstance(spec, str) else list(spec)
    out = []
    for i in idx:
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise LocalLLMError(f"layer {i} is out of range; the model has {n_layers} layers (0-{n_layers - 1})")
        out.append(j)
    return sorted(set(out))


# --- heads -----------------------------------------------------------------------------------
def _pairs_of_text(text: str) -> list[tuple[int, int]]:
    parts = [p.strip() for p in re.split(r"[,+]", text)]
    pairs = []
    for part in parts:
        m = _PAIR.fullmatch(part)
        if not m:
            raise LocalLLMError(f"cannot read head {part!r} in {text!r}; {HEADS_SYNTAX}")
        pairs.append((int(m[1]), int(m[2])))
    return pairs


def _pairs_of_list(heads: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    pairs = []
    for item in heads:
        try:
            layer, head = (int(x) for x in item)
        except (TypeError, ValueError):
            raise LocalLLMError(f"cannot read head {item!r}; each one is a (layer, head) pair of ints") from None
        if layer < 0 or head < 0:
            raise LocalLLMError(f"head ({layer}, {head}) is negative; layers and heads count from 0")
        pairs.append((layer, head))
    return pairs


def canonical_heads(heads: HeadSpec | None) -> str | None:
    """A head selection's one written form (``"21.4,23.5"``, ``"all"`` or None), so that equal selections
    give equal specs and cache keys; syntax and duplicates are checked here, ranges once the model is known."""
    if heads is None:
        return None
    if isinstance(heads, str):
        text = heads.strip().lower().replace(" ", "")
        if text.startswith("top:"):
            raise LocalLLMError(
                f"heads={heads!r} names heads an atlas chooses; those are resolved into layer.head pairs before "
                "training, so give the local source the pairs themselves"
            )
        if text == "all":
            return "all"
        if not text:
            raise LocalLLMError(f"heads is empty; {HEADS_SYNTAX}")
        pairs = _pairs_of_text(text)
    else:
        pairs = _pairs_of_list(heads)
        if not pairs:
            raise LocalLLMError(f"heads is an empty list; {HEADS_SYNTAX}")
    seen: set[tuple[int, int]] = set()
    for pair in pairs:
        if pair in seen:
            raise LocalLLMError(f"head {pair[0]}.{pair[1]} is chosen twice; each pair is one supplied head")
        seen.add(pair)
    return ",".join(f"{layer}.{head}" for layer, head in pairs)


def chosen_pairs(heads: str) -> list[tuple[int, int]]:
    """The pairs of a canonical, explicit selection (not ``"all"``), in order."""
    return _pairs_of_text(heads)


def resolve_heads(heads: str, layers: LayerSpec, n_layers: int, n_model_heads: int) -> list[tuple[int, int]]:
    """A canonical head selection -> its (layer, head) pairs for a model of this shape, range-checked."""
    if heads == "all":
        return [(layer, h) for layer in resolve_layers(layers, n_layers) for h in range(n_model_heads)]
    pairs = chosen_pairs(heads)
    for layer, head in pairs:
        if layer >= n_layers or head >= n_model_heads:
            raise LocalLLMError(
                f"head {layer}.{head} is out of range; the model has {n_layers} layers x {n_model_heads} heads "
                f"(layer.head from 0.0 to {n_layers - 1}.{n_model_heads - 1})"
            )
    return pairs


def head_label(layer: int, head: int) -> str:
    """One chosen head's name, as the atlas and the app show it: ``L21.H4``."""
    return f"L{layer}.H{head}"


def group_labels(pairs: Sequence[tuple[int, int]], n_heads: int, n_model_heads: int) -> list[str]:
    """Names of the averaged groups of layer-major ``pairs``: ``"layers 0-29 avg"`` where a group holds
    whole layers, else its first and last head (``"L0.H0-L1.H4 avg"``)."""
    names = []
    for group in _split(list(pairs), n_heads):
        layers = sorted({layer for layer, _ in group})
        if len(group) == len(layers) * n_model_heads:
            contiguous = layers == list(range(layers[0], layers[-1] + 1))
            text = f"{layers[0]}-{layers[-1]}" if contiguous else ",".join(map(str, layers))
            names.append(f"layer {layers[0]} avg" if len(layers) == 1 else f"layers {text} avg")
        else:
            names.append(f"{head_label(*group[0])}-{head_label(*group[-1])} avg")
    return names


def _split(items: list, n: int) -> list[list]:
    """``n`` contiguous, nearly equal parts, the first ones longer (as ``torch.tensor_split`` splits)."""
    q, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + q + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out
