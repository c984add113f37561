"""Time of a head atlas over the local LLM's 270 heads, against the plain local pass on the same sentences.

    python -m bench.atlas            # 200 sentences of data/example.txt, 3 repeats
    python -m bench.atlas --quick    # 40 sentences, 1 repeat

The target (issue 13): 200 sentences with ``heads="all"`` in at most 30 s on a 2-core CPU once the
model is loaded. No cache: every repeat scores afresh. Medians (and the best) over the repeats; the
ratio is against the plain local pass (default local source: all layers averaged into one head)
measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench.common import machine, print_table
from bench.local_llm import sentences
from llmcomp.attention import make_source
from llmcomp.attention.atlas import head_atlas
from llmcomp.attention.local_model import is_loaded, load_model

TARGET_S = 30.0


def _times(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run(quick: bool = False) -> list[dict]:
    data = sentences(40 if quick else 200)
    repeats = 1 if quick else 3
    load_s = None
    if not is_loaded():
        t = time.perf_counter()
        load_model()
        load_s = time.perf_counter() - t
    plain, every = make_source("local"), make_source("local", heads="all")
    plain.score_many(data[:8]).require_all()  # warm-up
    configs = [
        ("plain local pass (reference)", lambda: plain.score_many(data).require_all()),
        ("local heads=all, score_many only", lambda: every.score_many(data).require_all()),
        ("atlas: heads=all, 6 patterns", lambda: head_atlas(every, data)),
    ]
    rows = []
    for label, fn in configs:
        load_before = os.getloadavg()[0]
        times = _times(fn, repeats)
        rows.append({"what": label, "sentences": len(data), "seconds": statistics.median(times),
                     "best_seconds": min(times), "load_avg": max(load_before, os.getloadavg()[0])})  # fmt: skip
    for r in rows:
        r["ratio_vs_plain"] = r["seconds"] / rows[0]["seconds"]
        r["s_per_200"] = r["seconds"] * 200 / r["sentences"]
        r["load_s"] = load_s
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 sentences, 1 repeat")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    if rows[0]["load_s"] is not None:
        print(f"model load (this process): {rows[0]['load_s']:.1f} s")
    print(f"{machine()}, {os.cpu_count()} CPUs; target: 200 sentences of the atlas in {TARGET_S:.0f} s")
    cols = ["what", "sentences", "seconds", "best_seconds", "s_per_200", "ratio_vs_plain", "load_avg"]
    print_table("head atlas over the local LLM (uncached)", rows, cols)


if __name__ == "__main__":
    main()
