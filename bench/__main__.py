"""Every benchmark, one table: ``python -m bench`` (``--quick`` for a faster pass).

Runs training throughput, scoring cost against the fake OpenAI server, local LLM throughput,
generation speed per source, app start-up, learning speed against a plain loop, the head atlas, the
completion tokens of sparse answers and the Batch API route's requests and cost,
then prints one table of medians and ratios. A benchmark that is missing or fails is reported as a row saying so;
the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
import traceback
from collections.abc import Callable

from bench.common import machine, print_table

Row = dict[str, object]

# module, title: run(quick) -> list[dict] in each module's own shape; the adapters below read it
BENCHMARKS = [
    ("bench.train_throughput", "training"),
    ("bench.scoring", "scoring (fake OpenAI)"),
    ("bench.local_llm", "local LLM"),
    ("bench.generation", "generation"),
    ("bench.startup", "app start-up"),
    ("bench.recipe", "learning speed (binding)"),
    ("bench.atlas", "head atlas (local LLM)"),
    ("bench.sparse", "sparse answers (fake OpenAI)"),
    ("bench.batch", "Batch API route (fake OpenAI)"),
]


def _train(rows: list[dict]) -> list[Row]:
    ref = rows[0]["tokens/s (median)"]
    return [
        {"case": r["loop"], "median": r["tokens/s (median)"], "unit": "tokens/s", "ratio": r["tokens/s (median)"] / ref,
         "ratio of": rows[0]["loop"], "note": f"x learned {r['x learned']:.2f}"}
        for r in rows
    ]  # fmt: skip


def _scoring(rows: list[dict]) -> list[Row]:
    rows = [r for r in rows if "summary" not in r]
    ref = rows[0]["sentences_per_s"]
    return [
        {"case": r["method"].strip(), "median": r["sentences_per_s"], "unit": "sentences/s",
         "ratio": r["sentences_per_s"] / ref, "ratio of": "(a) original",
         "note": f"{r['req_per_sentence']:.3g} requests/sentence"}
        for r in rows
    ]  # fmt: skip


def _local(rows: list[dict]) -> list[Row]:
    ref = rows[0]["sentences_per_s"]
    return [
        {"case": r["source"], "median": r["sentences_per_s"], "unit": "sentences/s",
         "ratio": r["sentences_per_s"] / ref, "ratio of": rows[0]["source"],
         "note": f"load {r['load_s']:.1f} s" if r.get("load_s") else ""}
        for r in rows
    ]  # fmt: skip


def _generation(rows: list[dict]) -> list[Row]:
    return [
        {"case": r["source"], "median": r["words/s (median)"], "unit": "words/s", "ratio": r["x learned"],
         "ratio of": "learned", "note": f"{r['words']} words x {r['runs']}"}
        for r in rows
    ]  # fmt: skip


def _startup(rows: list[dict]) -> list[Row]:
    return [
        {"case": r["start"], "median": r["seconds (median)"], "unit": f"s to {r['measure']}", "ratio": r["x bare gradio"],
         "ratio of": "bare gradio app", "note": f"min {r['min']:.1f}, max {r['max']:.1f}, {r['runs']} starts"}
        for r in rows
    ]  # fmt: skip


def _recipe(rows: list[dict]) -> list[Row]:
    return [
        {"case": f"{r['source']}: {r['loop']}", "median": r["steps to target"], "unit": "steps to target val loss",
         "ratio": r["x plain steps"], "ratio of": "plain loop",
         "note": f"target {r['target']:.3f}; at 600: val {r['val 600']:.3f}, focus {r['focus 600']:.2f}"}
        for r in rows
    ]  # fmt: skip


def _atlas(rows: list[dict]) -> list[Row]:
    return [
        {"case": r["what"], "median": r["seconds"], "unit": f"s for {r['sentences']} sentences",
         "ratio": r["ratio_vs_plain"], "ratio of": rows[0]["what"], "note": f"{r['s_per_200']:.1f} s per 200"}
        for r in rows
    ]  # fmt: skip


def _sparse(rows: list[dict]) -> list[Row]:
    return [
        {"case": f"T={r['T']}", "median": r["sparse tokens/head"], "unit": "completion tokens/head",
         "ratio": r["sparse/dense"], "ratio of": "dense answer", "note": f"{r['sparse/T']:.1f}·T (target <= 10·T)"}
        for r in rows
    ]  # fmt: skip


def _batch(rows: list[dict]) -> list[Row]:
    return [
        {"case": f"{r['mode']} mode, {r['route']}", "median": r["dollars"], "unit": "$ at gpt-4o-mini's price",
         "ratio": r["cost ratio"], "ratio of": "live route",
         "note": f"{r['live requests']} live requests, {r['batch lines']} batch lines"}
        for r in rows
    ]  # fmt: skip


ADAPTERS: dict[str, Callable[[list[dict]], list[Row]]] = {
    "bench.train_throughput": _train,
    "bench.scoring": _scoring,
    "bench.local_llm": _local,
    "bench.generation": _generation,
    "bench.startup": _startup,
    "bench.recipe": _recipe,
    "bench.atlas": _atlas,
    "bench.sparse": _sparse,
    "bench.batch": _batch,
}


def _generic(rows: list[dict]) -> list[Row]:
    """Rows of an unknown shape: the first text field as the case, the first number as the value."""
    out: list[Row] = []
    for r in rows:
        text = next((v for v in r.values() if isinstance(v, str)), "?")
        num = next((v for v in r.values() if isinstance(v, int | float) and not isinstance(v, bool)), None)
        out.append({"case": text, "median": num, "unit": "", "note": "shape not recognised"})
    return out


def run_all(quick: bool) -> list[Row]:
    table: list[Row] = []
    for module, title in BENCHMARKS:
        t0 = time.perf_counter()
        try:
            rows = importlib.import_module(module).run(quick=quick)
        except Exception as e:  # one broken benchmark must not hide the others
            traceback.print_exc()
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            table.append({"benchmark": title, "case": "MISSING", "note": f"{type(e).__name__}: {reason}"[:100]})
            continue
        try:
            adapted = ADAPTERS.get(module, _generic)(rows)
        except (KeyError, IndexError, TypeError, ZeroDivisionError):
            adapted = _generic(rows)
        seconds = time.perf_counter() - t0
        for k, r in enumerate(adapted):
            table.append({"benchmark": title if k == 0 else "", **r})
        print(f"[{title}: {seconds:.0f} s]", flush=True)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller inputs")
    args = p.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    table = run_all(args.quick)
    print(f"\ndate: {started}; machine: {machine()}, {os.cpu_count()} cores; load average at start {load}")
    print_table(
        f"llmcomp benchmarks{' (quick)' if args.quick else ''}: medians, and ratios to the named reference",
        table,
        ["benchmark", "case", "median", "unit", "ratio", "ratio of", "note"],
    )


if __name__ == "__main__":
    main()
