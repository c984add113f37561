"""Where llmcomp keeps its files, from the environment (or ``.env``) with working defaults.

``LLMCOMP_HOME`` (default ``./.llmcomp``) holds the attention cache and the runs folder; each can
be moved on its own with ``LLMCOMP_CACHE`` and ``LLMCOMP_RUNS``. Hugging Face Spaces wipe the disk
on restart, so point these at persistent storage there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
EXAMPLE_CORPUS = DATA_DIR / "example.txt"


@dataclass
class Paths:
    home: Path
    cache: Path  # sqlite file of scored attention
    runs: Path  # one folder per training run

    @classmethod
    def from_env(cls) -> Paths:
        load_dotenv(override=False)
        home = Path(os.environ.get("LLMCOMP_HOME", ".llmcomp")).expanduser()
        return cls(
            home=home,
            cache=Path(os.environ.get("LLMCOMP_CACHE", home / "attention-cache.sqlite")).expanduser(),
            runs=Path(os.environ.get("LLMCOMP_RUNS", home / "runs")).expanduser(),
        )
