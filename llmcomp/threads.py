"""A scoped torch thread count.

llmcomp's models are tiny: extra OpenMP threads mostly spin-wait, and on a shared machine that
can make every operation ten times slower. Work that runs many small operations (training,
generation, baseline scoring) runs on one thread and restores the caller's setting afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch threads inside the block (``None`` or 0: leave the setting alone)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(before)
