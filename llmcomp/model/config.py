"""The model's configuration and its defaults (no torch: the CLI and the app read them before torch loads)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llmcomp.errors import LLMCompError


class ModelConfigError(LLMCompError, ValueError):
    """A model configuration that cannot be built, with a one-line reason naming the value."""


@dataclass
class GPTConfig:
    """The model's size. An invalid value raises ModelConfigError when the config is made."""

    vocab_size: int = 0  # set from the vocabulary
    block_size: int = 66  # longest sequence, <s> included
    n_layer: int = 2
    n_embd: int = 64
    n_external_heads: int = 1  # set from the attention source
    n_learned_heads: int = 0
    # a learned mixture (``--mix``): each layer has this many heads, each a softmax over the source's
    # n_external_heads supplied heads (the bank), weights learned per layer; 0: the supplied heads as they are
    mix_heads: int = 0
    dropout: float = 0.0
    # a separate output head: tying it to the token embeddings slowed learning on the binding task (the
    # recall formed about 100 steps later at this size; docs/benchmarks.md, ``python -m bench.recipe``)
    tie_weights: bool = False

    def __post_init__(self) -> None:
        minimum = {"vocab_size": 0, "block_size": 1, "n_layer": 1, "n_embd": 1, "n_external_heads": 0,
                   "n_learned_heads": 0, "mix_heads": 0}  # fmt: skip
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ModelConfigError(f"{name} must be a whole number of at least {low}, got {value!r}")
        if not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ModelConfigError(f"dropout must be at least 0 and below 1, got {self.dropout!r}")
        if not isinstance(self.tie_weights, bool):
            raise ModelConfigError(f"tie_weights must be true or false, got {self.tie_weights!r}")
        if self.mix_heads and not self.n_external_heads:
            raise ModelConfigError("mix_heads needs supplied heads to mix; choose a source that supplies heads")

    @property
    def n_layer_external(self) -> int:
        """External heads in each layer: the mixed heads with a mixture, else the supplied ones."""
        return self.mix_heads or self.n_external_heads

    @property
    def n_head(self) -> int:
        return self.n_layer_external + self.n_learned_heads

    def to_dict(self) -> dict:
        return asdict(self)
