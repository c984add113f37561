"""A lean forward pass of the local LLM for batches of whole sentences: the same attention, less work.

One job: piece attention of a right-padded batch, as ``local_model.piece_attention`` gives it, for
LLaMA-family models on the CPU, in float32 or (opt-in, ``precision="bf16"``) with bfloat16 weights. Why a second path: the first runs transformers' own decoder
with ``output_attentions`` and forward hooks installed per call, so it holds the model's lock (one pass
at a time) and computes everything of every layer. This one calls the same model's own submodules
(embedding, RMSNorm, rotary embedding, projections, MLP) and does what transformers' eager attention
does (scores times ``scaling``, masked, softmax in float32), with three differences that change no
number beyond float rounding:

- **BOS once.** Every sentence starts with BOS at position 0, and causal attention makes its keys
  and values at every layer the same in every sentence: they are computed once per model and put in
  front of each batch's keys and values (on the example corpus BOS is one piece in ten).
- **No lock, no hooks.** Passes share nothing but the weights, so several can run at once on
  several threads (``local_llm`` runs two single-thread passes on a 2-core CPU: unlike two intra-op
  threads, neither ever waits for the other).
- **Nothing after the deepest selected layer's attention weights** (its values, output projection and
  MLP are never computed).

Right padding: a real piece's query only sees positions up to its own, all real, so the causal mask
alone keeps padding out of every real row, and a sentence's rows are the same in whatever batch it
runs. Models of other types (or fp16, or a GPU) take the hook path.

**bf16** (opt-in; fp32 stays the default): the seven projections of each layer (q, k, v, o, gate, up,
down) are bfloat16 GEMMs on a bf16 copy of their weights, made once per model and kept like BOS's keys
and values (autocast would cast every weight on every call, which costs as much as the GEMM itself).
Everything else stays float32 as under autocast: the residual stream, norms, rotary embedding, and
here also the attention scores and softmax; rows are re-normalised to sum to 1. A CPU with AVX512_BF16
runs these GEMMs about twice as fast as float32 ones (docs/benchmarks.md); the matrices move by about
1e-2 (tests/test_local_speed.py), which is why bf16 enters the cache key.
"""

from __future__ import annotations

import threading
import weakref

import torch
import torch.nn.functional as F

from llmcomp.attention.local_model import LoadedModel

#: decoder types whose layers are exactly what ``_layers`` computes (norm, rotary, grouped-query attention, MLP)
FAST_TYPES = ("llama",)

_BOS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # decoder -> {precision: [(keys, values) per layer]}
_HALF: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # decoder -> [{projection: (weight, bias)} per layer]
_BOS_LOCK = threading.Lock()
#: the precisions this pass runs (``LocalLLMConfig.precision``); fp16 takes the hook path on a CUDA GPU
PRECISIONS = ("fp32", "bf16")
_PROJECTIONS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
                "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}  # fmt: skip
Half = list[dict[str, tuple[torch.Tensor, torch.Tensor | None]]]


def supports(model: LoadedModel) -> bool:
    """Whether this model's layers are the kind this module runs (else the hook path runs them)."""
    config = getattr(model.decoder, "config", None)
    return getattr(config, "model_type", None) in FAST_TYPES and hasattr(model.decoder, "rotary_emb")


def batch_attention(
    model: LoadedModel, batch: list[list[int]], layers: list[int], precision: str = "fp32"
) -> torch.Tensor:
    """(B, len(layers) * heads, P, P) float32 attention of the selected layers over a right-padded batch,
    each sentence starting with BOS (``local_align``). Row 0 (BOS sees only itself) is (1, 0, ...).
    ``precision`` bf16: the projections on the model's bf16 weights (module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"the lean pass runs {' or '.join(PRECISIONS)}, not {precision}")
    if any(ids[0] != model.bos_id for ids in batch):
        raise ValueError("every sentence of a batch starts with the model's BOS")
    width = max(len(ids) for ids in batch)
    rest = torch.full((len(batch), width - 1), model.pad_id, dtype=torch.long)
    for b, ids in enumerate(batch):
        rest[b, : len(ids) - 1] = torch.tensor(ids[1:], dtype=torch.long)
    with torch.inference_mode():
        half = _half_weights(model) if precision == "bf16" else None
        bos = _bos_keys_values(model, precision, half)
        weights, _ = _layers(model, rest, bos, layers, half)
        rows = torch.stack([weights[i] for i in layers], dim=1).flatten(1, 2).float()  # (B, L*H, P-1, P)
        if half is not None:
            rows = rows / rows.sum(-1, keepdim=True).clamp_min(1e-12)
        att = rows.new_zeros(len(batch), rows.shape[1], width, width)
        att[:, :, 1:, :] = rows
        att[:, :, 0, 0] = 1.0
    return att


def _bos_keys_values(model: LoadedModel, precision: str, half: Half | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's keys and values of BOS alone at position 0, computed once per model and precision."""
    decoder = model.decoder
    with _BOS_LOCK:
        known = _BOS.setdefault(decoder, {})
        if precision not in known:
            known[precision] = _layers(model, torch.tensor([[model.bos_id]]), None, None, half)[1]
        return known[precision]


def _half_weights(model: LoadedModel) -> Half:
    """A bf16 copy of every layer's projection weights (and biases), made once per model."""
    decoder = model.decoder
    with _BOS_LOCK:
        if decoder not in _HALF:
            _HALF[decoder] = [
                {
                    name: (
                        module.weight.detach().to(torch.bfloat16).contiguous(),
                        None if module.bias is None else module.bias.detach().to(torch.bfloat16),
                    )
                    for name, module in ((n, layer.get_submodule(path)) for n, path in _PROJECTIONS.items())
                }  # fmt: skip
                for layer in decoder.layers
            ]
        return _HALF[decoder]


def _project(module: torch.nn.Module, h: torch.Tensor, weights: tuple | None) -> torch.Tensor:
    """``module(h)``; with bf16 ``weights`` (``h`` already bf16), a bf16 GEMM whose output is float32."""
    return module(h) if weights is None else F.linear(h, *weights).float()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, kv heads, S, d) -> (B, kv heads * n_rep, S, d), each kv head serving n_rep query heads."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def _layers(
    model: LoadedModel,
    ids: torch.Tensor,
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None,
    layers: list[int] | None,
    half: Half | None = None,
) -> tuple[dict[int, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Run ``ids`` (B, P) after a one-position ``prefix`` (BOS's keys and values per layer; None: no prefix).
    Returns the selected layers' attention weights (B, heads, P, prefix + P), stopping after the deepest
    one, and (with ``layers`` None: every layer, nothing selected) each layer's keys and values. ``half``
    (``_half_weights``): the projections in bf16, all else float32."""
    decoder = model.decoder
    start = 0 if prefix is None else 1
    b, p = ids.shape
    x = decoder.embed_tokens(ids)
    cos, sin = decoder.rotary_emb(x, torch.arange(start, start + p)[None])
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    masked = torch.ones(p, p, dtype=torch.bool).triu(1)  # a later position is never seen
    if start:
        masked = torch.cat([torch.zeros(p, start, dtype=torch.bool), masked], dim=1)
    lowest = torch.finfo(x.dtype).min
    deepest = len(decoder.layers) - 1 if layers is None else max(layers)
    weights: dict[int, torch.Tensor] = {}
    kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    bf16 = (lambda t: t.to(torch.bfloat16)) if half is not None else (lambda t: t)
    for i, layer in enumerate(decoder.layers[: deepest + 1]):
        attn = layer.self_attn
        hw = half[i] if half is not None else {}
        h = bf16(layer.input_layernorm(x))
        q = _project(attn.q_proj, h, hw.get("q")).view(b, p, -1, attn.head_dim).transpose(1, 2)
        k = _project(attn.k_proj, h, hw.get("k")).view(b, p, -1, attn.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if prefix is not None:
            k = torch.cat([prefix[i][0].expand(b, -1, -1, -1), k], dim=2)
        scores = torch.matmul(q, _repeat_kv(k, attn.num_key_value_groups).transpose(2, 3)) * attn.scaling
        w = torch.softmax(scores.masked_fill(masked, lowest), dim=-1, dtype=torch.float32).to(q.dtype)
        if layers is not None and i in layers:
            weights[i] = w
            if i == deepest:
                break
        v = _project(attn.v_proj, h, hw.get("v")).view(b, p, -1, attn.head_dim).transpose(1, 2)
        if prefix is not None:
            v = torch.cat([prefix[i][1].expand(b, -1, -1, -1), v], dim=2)
        if layers is None:
            kv.append((k, v))
        out = torch.matmul(w, _repeat_kv(v, attn.num_key_value_groups)).transpose(1, 2).reshape(b, p, -1)
        x = x + _project(attn.o_proj, bf16(out), hw.get("o"))
        if half is None:
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        else:  # the MLP's own sum: gate and up stay bf16 into down, as under autocast
            h = bf16(layer.post_attention_layernorm(x))
            mid = layer.mlp.act_fn(F.linear(h, *hw["gate"])) * F.linear(h, *hw["up"])
            x = x + F.linear(mid, *hw["down"]).float()
    return weights, kv
