"""Throughput of the local LLM attention source once loaded, against the uniform baseline.

    python -m bench.local_llm            # ~200 sentences of data/example.txt, 3 repeats
    python -m bench.local_llm --quick    # 40 sentences, 1 repeat

The chosen-heads rows compare heads from layers up to 3 with heads that need all 30 layers (the
ratio is time against the latter, same sentences, same run). The rows marked "hook path" run every
pass through transformers' decoder with hooks, one at a time, as the source did before
``local_forward``; ``vs_hook_path`` is their time over the default's, in the same run. "one pass at
a time" is the lean pass without the second worker. The "bf16" row is the opt-in ``precision="bf16"``
(bf16 projection weights in the lean pass); ``vs_fp32`` is the fp32 row's time over its own. No cache
is used: every repeat scores every sentence afresh. Medians (and the best) over the repeats; each repeat runs the configurations in turn.
The machine's load average is printed with each row: with other processes busy, torch's default of
one thread per core collapses (threads spin-wait on each other), which is why the local source runs
single-thread passes (two at once on two cores) unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

from bench.common import machine, print_table
from llmcomp.attention import AttentionSource, make_source
from llmcomp.attention.local_model import is_loaded, load_model
from llmcomp.text import load_corpus
from llmcomp.threads import torch_threads

DEEP_HEADS = "local, heads 21.4+29.4 (all 30 layers run)"
HOOK = ", hook path"  # the same configuration with LocalLLMSource.fast off: the baseline of vs_hook_path
BF16 = ", bf16"  # the same configuration with precision="bf16" (opt-in): vs_fp32 is fp32's time over its own
EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example.txt"


def sentences(n: int) -> list[list[str]]:
    """The first n sentences of data/example.txt, or simple generated 8-15 word sentences without it."""
    if EXAMPLE.is_file():
        return load_corpus(EXAMPLE).sentences[:n]
    rng = random.Random(0)
    subjects = ["the old man", "my sister", "a small dog", "the teacher", "our neighbours", "the children"]
    verbs = ["walked to", "looked at", "talked about", "waited near", "cleaned", "painted"]
    objects = ["the red house", "a quiet park", "the long river", "their new car", "the school garden"]
    tails = ["after lunch", "every morning", "in the rain", "before the storm came", "with great care", "yesterday"]
    return [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)} .".split()
        for _ in range(n)
    ]


def time_once(source: AttentionSource, data: list[list[str]]) -> float:
    """Seconds for one uncached pass over ``data``."""
    t = time.perf_counter()
    source.score_many(data).require_all()
    return time.perf_counter() - t


def make(kind: str, options: dict) -> AttentionSource:
    """A source for one row: ``hook`` turns the lean pass off (LocalLLMSource.fast), ``workers`` caps its threads."""
    options = dict(options)
    hook, workers = options.pop("hook", False), options.pop("workers", None)
    source = make_source(kind, **options)
    if hook:
        source.fast = False  # type: ignore[attr-defined]
    if workers is not None:
        source.workers = workers  # type: ignore[attr-defined]
    return source


def run(quick: bool = False) -> list[dict]:
    """One row per configuration: median and best seconds, sentences/s and slowdown against uniform."""
    data = sentences(40 if quick else 200)
    repeats = 1 if quick else 3
    words = sum(len(s) for s in data) / len(data)
    load_s = None
    if not is_loaded():
        t = time.perf_counter()
        load_model()
        load_s = time.perf_counter() - t
    deep = {"heads": "21.4,29.4", "batch_size": 16}
    configs: list[tuple[str, str, dict]] = [
        ("uniform (reference)", "uniform", {}),
        # chosen heads: only layers up to the deepest chosen one run (LocalLLMConfig.heads)
        (DEEP_HEADS, "local", deep),
        (DEEP_HEADS + HOOK, "local", {**deep, "hook": True}),
        (DEEP_HEADS + ", one pass at a time", "local", {**deep, "workers": 1}),
        (DEEP_HEADS + BF16, "local", {**deep, "precision": "bf16"}),  # opt-in; vs_fp32 in this run
        ("local, all layers, batch 16", "local", {"batch_size": 16}),
        ("local, all layers, batch 16" + HOOK, "local", {"batch_size": 16, "hook": True}),
        ("local, all layers, batch 16, 2 threads", "local", {"batch_size": 16, "torch_threads": 2}),
        (
            "local, all layers, batch 16, 2 threads" + HOOK,
            "local",
            {"batch_size": 16, "torch_threads": 2, "hook": True},
        ),
        ("local, heads 1.4+3.4 (layers 0-3 run)", "local", {"heads": "1.4,3.4", "batch_size": 16}),
    ]
    if not quick:
        configs += [
            ("local, all layers, batch 1", "local", {"batch_size": 1}),
            ("local, first-8 layers, batch 16", "local", {"layers": "first-8", "batch_size": 16}),
        ]
    sources = [make(kind, options) for _, kind, options in configs]
    times: list[list[float]] = [[] for _ in configs]
    loads = [0.0] * len(configs)
    with torch_threads(1):  # the baseline's tiny ops too; the local source sets its own while scoring
        for source in sources:
            source.score_many(data[:8]).require_all()  # warm-up
        for _ in range(repeats):  # configurations in turn: a burst of load from elsewhere spreads over all
            for k, source in enumerate(sources):
                loads[k] = max(loads[k], os.getloadavg()[0])
                times[k].append(time_once(source, data))
                loads[k] = max(loads[k], os.getloadavg()[0])
    rows = [
        {
            "source": label,
            "sentences": len(data),
            "mean_words": round(words, 1),
            "seconds": statistics.median(t),
            "best_seconds": min(t),
            "load_avg": load,
            "torch_threads": options.get("torch_threads", 1),
        }
        for (label, _, options), t, load in zip(configs, times, loads, strict=True)
    ]
    seconds = {r["source"]: r["seconds"] for r in rows}
    for r in rows:
        r["sentences_per_s"] = r["sentences"] / r["seconds"]
        r["best_sentences_per_s"] = r["sentences"] / r["best_seconds"]
        r["slowdown_vs_uniform"] = r["seconds"] / rows[0]["seconds"]
        r["time_vs_30_layers"] = r["seconds"] / seconds[DEEP_HEADS] if r["source"].startswith("local, heads") else ""
        hook = seconds.get(r["source"] + HOOK)
        r["vs_hook_path"] = hook / r["seconds"] if hook else ""
        fp32 = seconds.get(r["source"].removesuffix(BF16)) if r["source"].endswith(BF16) else None
        r["vs_fp32"] = fp32 / r["seconds"] if fp32 else ""
        r["load_s"] = load_s
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 sentences, 1 repeat")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    if rows[0]["load_s"] is not None:
        print(f"model load (this process): {rows[0]['load_s']:.1f} s")
    print(
        f"{machine()}, {os.cpu_count()} CPUs; {rows[0]['sentences']} sentences of {rows[0]['mean_words']} words on average"
    )
    print("uncached passes; load avg = the machine's 1-minute load average while measuring (it is shared)")
    print_table(
        "local LLM attention throughput",
        rows,
        [
            "source",
            "torch_threads",
            "seconds",
            "sentences_per_s",
            "best_sentences_per_s",
            "slowdown_vs_uniform",
            "vs_hook_path",
            "vs_fp32",
            "time_vs_30_layers",
            "load_avg",
        ],
    )


if __name__ == "__main__":
    main()
