"""A small GPT in the spirit of nanoGPT, with externally supplied attention heads.

Each attention layer has ``n_external_heads`` heads whose weights are given (one (T, T) matrix per
head, the same for every layer) and ``n_learned_heads`` ordinary causal self-attention heads. An
external head applies its matrix to a learned value projection; all heads are concatenated and go
through a learned output projection. The model does not know where the matrices came from.

With ``mix_heads`` M > 0 the supplied heads are a bank of K matrices and each layer learns M softmax
weightings of them (logits start at zero: equal weights); each of the layer's M external heads uses its
convex mixture. A convex mixture of causal, row-stochastic matrices is causal and row-stochastic, so the
mixture can choose among the source's heads, per layer, without ever seeing a later word.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmcomp.model.config import GPTConfig


class MixedAttention(nn.Module):
    """Supplied heads (weights given) beside learned causal heads, one output projection."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.n_head < 1:
            raise ValueError("the model needs at least one attention head (external or learned)")
        self.n_ext, self.n_learned = cfg.n_layer_external, cfg.n_learned_heads
        self.n_bank = cfg.n_external_heads  # the supplied heads this layer receives
        # (M, K) logits over the bank, one row per mixed head; zero: equal weights
        self.mix_logits = nn.Parameter(torch.zeros(cfg.mix_heads, self.n_bank)) if cfg.mix_heads else None
        self.head_dim = max(1, cfg.n_embd // cfg.n_head)
        inner = self.head_dim * cfg.n_head  # n_embd, or just under it when the heads do not divide it
        self.value = nn.Linear(cfg.n_embd, self.n_ext * self.head_dim) if self.n_ext else None
        self.qkv = nn.Linear(cfg.n_embd, 3 * self.n_learned * self.head_dim) if self.n_learned else None
        self.proj = nn.Linear(inner, cfg.n_embd)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.last_learned_weights: torch.Tensor | None = None  # filled when keep_weights is set
        self.keep_weights = False

    def _heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        b, seq, _ = t.shape
        return t.view(b, seq, n, self.head_dim).transpose(1, 2)  # (B, n, T, hd)

    def mix_weights(self) -> torch.Tensor | None:
        """(M, K): each mixed head's weights over the bank (rows sum to 1), or None without a mixture."""
        return None if self.mix_logits is None else torch.softmax(self.mix_logits, dim=-1)

    def supplied_heads(self, att: torch.Tensor | None) -> torch.Tensor:
        """This layer's external heads (B, n_ext, T, T): the supplied ones, or their learned mixtures."""
        if att is None or att.shape[1] != self.n_bank:
            raise ValueError(f"the model expects {self.n_bank} supplied attention heads")
        if self.mix_logits is None:
            return att
        return torch.einsum("mk,bkij->bmij", self.mix_weights(), att)

    def forward(self, x: torch.Tensor, att: torch.Tensor | None) -> torch.Tensor:
        b, seq, _ = x.shape
        outs = []
        if self.value is not None:
            outs.append(self.supplied_heads(att) @ self._heads(self.value(x), self.n_ext))
        if self.qkv is not None:
            q, k, v = (self._heads(t, self.n_learned) for t in self.qkv(x).split(self.n_learned * self.head_dim, dim=2))
            if self.keep_weights:
                scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
                mask = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
                w = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
                self.last_learned_weights = w.detach()
                outs.append(w @ v)
            else:
                dp = self.dropout if self.training else 0.0
                outs.append(F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dp))
        y = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, seq, -1)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = MixedAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, att: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), att)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks, an output head (tied to the embeddings if configured)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError("GPTConfig.vocab_size must be set from the vocabulary")
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2 scaled init of residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hidden(self, idx: torch.Tensor, att: torch.Tensor | None = None) -> torch.Tensor:
        """Final normalised hidden states (B, T, C)."""
        _, seq = idx.shape
        if seq > self.config.block_size:
            raise ValueError(f"sequence of {seq} tokens is longer than block_size {self.config.block_size}")
        pos = torch.arange(seq, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x, att)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, att: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) token ids; att (B, n_external_heads, T, T) supplied weights (the bank, when mixing).
        Returns logits (B, T, V)."""
        return self.lm_head(self.hidden(idx, att))

    def token_losses(
        self, idx: torch.Tensor, att: torch.Tensor | None, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of each real target (targets == -100 are padding), and their mask.

        The output head runs only on real positions: with right-padded batches that skips a
        third of the largest matmul and softmax.
        """
        mask = targets != -100
        h = self.hidden(idx, att)[mask]
        return F.cross_entropy(self.lm_head(h), targets[mask], reduction="none"), mask

    def learned_attention(self, idx: torch.Tensor, att: torch.Tensor | None = None) -> torch.Tensor | None:
        """Weights of the learned heads in the last layer, (B, n_learned, T, T), for heatmaps."""
        last = self.blocks[-1].attn
        if last.qkv is None:
            return None
        last.keep_weights = True
        try:
            with torch.no_grad():
                self(idx, att)
            return last.last_learned_weights
        finally:
            last.keep_weights = False
            last.last_learned_weights = None
