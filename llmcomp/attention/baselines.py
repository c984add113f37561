"""Baseline attention sources: the yardsticks every LLM-supplied source is compared with.

* ``uniform``: each word attends equally to itself and every earlier word.
* ``previous``: half on the previous word, half on itself (the first word: all on itself).
* ``gaussian``: hard-coded Gaussians (You, Sun and Iyyer, 2020): head 0 centred on the previous
  word, head 1 on the current word, truncated to the prefix and renormalised.
* ``random``: frozen random weights by position, drawn once from a seed (Synthesizer "Random",
  frozen). The same for every sentence; row i only uses the first i+1 columns.
* ``learned``: no external heads at all; the model learns ordinary causal self-attention.
"""

from __future__ import annotations

import math

import torch

from llmcomp.attention.base import AttentionSource, PerSentenceSource, normalize_scores


class UniformSource(PerSentenceSource):
    kind = "uniform"

    def matrix(self, words):
        t = len(words)
        return normalize_scores(torch.ones(t, t)).expand(self.n_heads, t, t).clone()


class PreviousSource(PerSentenceSource):
    kind = "previous"

    def matrix(self, words):
        t = len(words)
        scores = torch.eye(t) + torch.diag(torch.ones(max(t - 1, 0)), -1)
        return normalize_scores(scores).expand(self.n_heads, t, t).clone()


class GaussianSource(PerSentenceSource):
    kind = "gaussian"

    def __init__(self, n_heads: int = 2, sigma: float = 1.0, **kw):
        super().__init__(n_heads=n_heads, **kw)
        self.sigma = sigma

    def spec(self):
        return {**super().spec(), "sigma": self.sigma}

    def matrix(self, words):
        t = len(words)
        pos = torch.arange(t, dtype=torch.float32)
        dist = pos[None, :] - pos[:, None]  # j - i
        heads = []
        for h in range(self.n_heads):
            centre = -1.0 if h % 2 == 0 else 0.0  # previous word, then current word, alternating
            heads.append(torch.exp(-((dist - centre) ** 2) / (2 * self.sigma**2)))
        return normalize_scores(torch.stack(heads))


class RandomSource(PerSentenceSource):
    kind = "random"

    def __init__(self, n_heads: int = 1, seed: int = 0, max_len: int = 256, **kw):
        super().__init__(n_heads=n_heads, **kw)
        self.seed, self.max_len = seed, max_len
        g = torch.Generator().manual_seed(seed)
        self._logits = torch.randn(n_heads, max_len, max_len, generator=g)

    def spec(self):
        return {**super().spec(), "seed": self.seed, "max_len": self.max_len}

    def matrix(self, words):
        t = len(words)
        if t > self.max_len:
            raise ValueError(f"random source covers {self.max_len} words; the sentence has {t}")
        logits = self._logits[:, :t, :t]
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        return torch.softmax(logits.masked_fill(~causal, -math.inf), dim=-1)


class LearnedSource(AttentionSource):
    """Zero external heads: the model's own learned heads do all the attending."""

    kind = "learned"

    def __init__(self, learned_heads: int = 4, **kw):
        kw.pop("n_heads", None)
        super().__init__(n_heads=0, **kw)
        self.learned_heads = learned_heads  # how many the model gets when no learned heads are asked for

    def spec(self):
        return {**super().spec(), "learned_heads": self.learned_heads}

    def _score_batch(self, sentences, stats, progress):
        return [torch.zeros(0, len(w), len(w)) for w in sentences]
