"""The model's configuration and its defaults (no torch: the CLI and the app read them before torch loads)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class GPTConfig:
    vocab_size: int = 0  # set from the vocabulary
    block_size: int = 66  # longest sequence, <s> included
    n_layer: int = 2
    n_embd: int = 64
    n_external_heads: int = 1  # set from the attention source
    n_learned_heads: int = 0
    dropout: float = 0.0

    @property
    def n_head(self) -> int:
        return self.n_external_heads + self.n_learned_heads

    def to_dict(self) -> dict:
        return asdict(self)
