"""How to sample: the generation settings, torch-free, so the CLI and the web app read their defaults
from here before torch has loaded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerateConfig:
    max_words: int = 30
    temperature: float = 0.8
    top_k: int = 20  # 0 = no top-k filter
    seed: int | None = None
    stop_at_sentence_end: bool = True  # stop after . ! ? or </s>
    threads: int = 1  # torch threads for the small model (see llmcomp.threads); 0 = leave as is
