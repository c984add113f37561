"""What each way of asking an LLM for attention costs, against the fake server at a fixed latency.

    python -m bench.scoring            # 520 sentences, 3 repeats of each cold pass
    python -m bench.scoring --quick    # 100 sentences, 1 repeat

The fake OpenAI-compatible server runs in its own process with 50 ms added to every request, so
wall times reflect request counts and concurrency, as they would against a real API. Measured:

(a) the original method: one unbatched request per ordered word pair (T*T per sentence), on a
    subset of sentences at the same concurrency, extrapolated to the corpus (said in the output);
(b) sentence mode, (c) prefix mode, (d) batched pair mode, each on a fresh cache, then the same
    corpus again on the warm cache;
and sentence mode at concurrency 1 against concurrency 16: both on a subset (start-up costs, such as
opening 16 connections, weigh on the short run at 16), and the whole corpus at 16 (row b) against
the subset at 1, per sentence.
Medians over the repeats. Tokens are the fake server's ``usage`` (about 4 prompt characters and 3
completion characters per token), so they compare methods, not bills.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import machine, print_table
from llmcomp.attention import AttentionCache, answers, prompts
from llmcomp.attention.openai_source import OpenAISource

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data" / "example.txt"
LATENCY_MS = 50.0
CONCURRENCY = 16


def corpus(n: int) -> list[list[str]]:
    """n distinct sentences: data/example.txt first, topped up with simple generated ones."""
    out: list[list[str]] = []
    if EXAMPLE.is_file():
        from llmcomp.text import load_corpus

        out = load_corpus(EXAMPLE).sentences[:n]
    rng = random.Random(0)
    subjects = ["the old man", "my sister", "a small dog", "the teacher", "our neighbours", "the children", "a farmer"]
    verbs = ["walked to", "looked at", "talked about", "waited near", "cleaned", "painted", "visited"]
    objects = ["the red house", "a quiet park", "the long river", "their new car", "the school garden", "a busy shop"]
    tails = ["after lunch", "every morning", "in the rain", "before the storm came", "with great care", "yesterday"]
    seen = {tuple(s) for s in out}
    while len(out) < n:
        s = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)} .".split()
        if tuple(s) not in seen:
            seen.add(tuple(s))
            out.append(s)
    return out


class FakeServerProcess:
    """``python -m llmcomp.testing.fake_server`` on a free port, in its own process (own GIL)."""

    def __init__(self, latency_ms: float):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "llmcomp.testing.fake_server", "--port", "0", "--latency-ms", str(latency_ms)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if " on http" not in line:
            self.proc.kill()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.url = line.split(" on ", 1)[1].split()[0]

    def requests(self) -> int:
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/_stats", timeout=10) as r:
            return json.loads(r.read())["requests"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def original_method(url: str, sentences: list[list[str]], concurrency: int) -> dict:
    """One request per ordered word pair, no batching, no cache: T*T requests per sentence."""
    from openai import AsyncOpenAI

    heads = ["meaning"]

    async def go() -> tuple[int, int]:
        client = AsyncOpenAI(base_url=url, api_key="sk-bench", max_retries=3)
        sem = asyncio.Semaphore(concurrency)
        tokens = 0

        async def one(q: str, k: str) -> None:
            nonlocal tokens
            words, idx = prompts.pair_words([(q, k)])
            async with sem:
                resp = await client.chat.completions.create(
                    model="fake-model",
                    messages=prompts.build_messages("pair", words, heads, 9, idx),
                    response_format=prompts.response_format("json_schema", "pair", heads),
                    temperature=0,
                )
            answers.parse_vector_answer(json.loads(resp.choices[0].message.content), 1, heads, 9, "one")
            tokens += resp.usage.completion_tokens

        jobs = [one(q, k) for s in sentences for q in s for k in s]
        await asyncio.gather(*jobs)
        await client.close()
        return len(jobs), tokens

    t = time.perf_counter()
    requests, tokens = asyncio.run(go())
    return {"seconds": time.perf_counter() - t, "requests": requests, "completion_tokens": tokens}


def score_pass(url: str, mode: str, sentences: list[list[str]], cache: AttentionCache, concurrency: int) -> dict:
    src = OpenAISource(
        base_url=url, model="fake-model", api_key="sk-bench", mode=mode, cache=cache, max_concurrency=concurrency
    )
    try:
        t = time.perf_counter()
        result = src.score_many(sentences)
        seconds = time.perf_counter() - t
    finally:
        src.close()
    if result.failures:
        raise RuntimeError(
            f"{mode}: {len(result.failures)} sentence(s) failed, e.g. {next(iter(result.failures.values()))}"
        )
    s = result.stats
    return {"seconds": seconds, "requests": s.requests, "completion_tokens": s.completion_tokens, "cached": s.cached}


def run(quick: bool = False) -> list[dict]:
    """One row per method: requests, tokens and wall time per corpus; medians over the repeats."""
    n = 100 if quick else 520
    repeats = 1 if quick else 3
    subset_a = 5 if quick else 20
    subset_c1 = 30 if quick else 100
    data = corpus(n)
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    server = FakeServerProcess(LATENCY_MS)
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="llmcomp-bench-"))
    try:
        # (a) the original method, on a subset, extrapolated
        before = server.requests()
        a = original_method(server.url, data[:subset_a], CONCURRENCY)
        assert server.requests() - before == a["requests"]
        per = a["seconds"] / subset_a
        rows.append(
            {
                "method": f"(a) original: 1 request per word pair [{subset_a} sentences, extrapolated]",
                "req_per_sentence": a["requests"] / subset_a,
                "completion_tok_per_sentence": a["completion_tokens"] / subset_a,
                "wall_s": per * n,
                "sentences_per_s": 1 / per,
            }
        )
        for label, mode in (
            ("(b) sentence mode", "sentence"),
            ("(c) prefix mode", "prefix"),
            ("(d) pair mode, batched", "pair"),
        ):
            cold, warm = [], []
            for r in range(repeats):
                cache = AttentionCache(tmp / f"{mode}-{r}.sqlite")
                before = server.requests()
                cold.append(score_pass(server.url, mode, data, cache, CONCURRENCY))
                assert server.requests() - before == cold[-1]["requests"], "request counts disagree"
                before = server.requests()
                warm.append(score_pass(server.url, mode, data, cache, CONCURRENCY))
                warm[-1]["server_requests"] = server.requests() - before
                cache.close()
            c_s = statistics.median(x["seconds"] for x in cold)
            w_s = statistics.median(x["seconds"] for x in warm)
            rows.append(
                {
                    "method": label,
                    "req_per_sentence": statistics.median(x["requests"] for x in cold) / n,
                    "completion_tok_per_sentence": statistics.median(x["completion_tokens"] for x in cold) / n,
                    "wall_s": c_s,
                    "sentences_per_s": n / c_s,
                }
            )
            rows.append(
                {
                    "method": f"    {mode} again, warm cache",
                    "req_per_sentence": max(x["server_requests"] for x in warm) / n,
                    "completion_tok_per_sentence": 0.0,
                    "wall_s": w_s,
                    "sentences_per_s": n / w_s,
                }
            )
        # concurrency 1 against concurrency 16, sentence mode, on a subset
        conc = {}
        for c in (1, CONCURRENCY):
            times = []
            for r in range(repeats):
                cache = AttentionCache(tmp / f"conc-{c}-{r}.sqlite")
                times.append(score_pass(server.url, "sentence", data[:subset_c1], cache, c)["seconds"])
                cache.close()
            conc[c] = statistics.median(times)
        for c in (1, CONCURRENCY):
            rows.append(
                {
                    "method": f"(b) sentence mode, concurrency {c} [{subset_c1} sentences, extrapolated]",
                    "req_per_sentence": 1.0,
                    "wall_s": conc[c] / subset_c1 * n,
                    "sentences_per_s": subset_c1 / conc[c],
                }
            )
    finally:
        server.close()
    a_req = rows[0]["req_per_sentence"]
    for r in rows:
        r["requests_vs_a"] = r["req_per_sentence"] / a_req
    summary = {
        "sentences": n,
        "mean_words": sum(map(len, data)) / n,
        "repeats": repeats,
        "latency_ms": LATENCY_MS,
        "concurrency": CONCURRENCY,
        "fewer_requests_than_a": a_req / rows[1]["req_per_sentence"],
        # the corpus at concurrency 16 (row b) against the subset at concurrency 1, per sentence
        "c16_over_c1": (rows[1]["wall_s"] / n) / (conc[1] / subset_c1),
        "c16_over_c1_same_subset": conc[CONCURRENCY] / conc[1],
        "warm_sentences_per_s": min(r["sentences_per_s"] for r in rows if "warm" in r["method"]),
        "warm_requests": sum(r["req_per_sentence"] for r in rows if "warm" in r["method"]),
        "load_before": load_before,
        "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    rows.append({"summary": summary})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 sentences, 1 repeat")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    s = rows.pop()["summary"]
    print(f"machine: {machine()}; load average before/after: {s['load_before']} / {s['load_after']}")
    print(
        f"{s['sentences']} sentences ({s['mean_words']:.1f} words on average), fake server with {s['latency_ms']:g} ms "
        f"per request in its own process, concurrency {s['concurrency']} unless stated; medians of {s['repeats']} "
        "cold pass(es), each on a fresh cache. (a) is measured on the subset shown and extrapolated to the corpus."
    )
    print_table(
        "scoring cost per method",
        rows,
        ["method", "req_per_sentence", "requests_vs_a", "completion_tok_per_sentence", "wall_s", "sentences_per_s"],
    )
    sentence_req = rows[1]["req_per_sentence"]
    checks = [
        (f"sentence mode: {sentence_req:g} request/sentence", sentence_req == 1.0),
        (
            f"sentence mode needs {s['fewer_requests_than_a']:.0f}x fewer requests than (a) (target >= 50x)",
            s["fewer_requests_than_a"] >= 50,
        ),
        (
            f"concurrency {s['concurrency']} takes {s['c16_over_c1']:.3f} of concurrency-1 wall time per sentence "
            f"(corpus at 16 against the subset at 1; {s['c16_over_c1_same_subset']:.3f} on the same subset, "
            "start-up included) (target <= 0.1)",
            s["c16_over_c1"] <= 0.1,
        ),
        (
            f"warm cache: {s['warm_requests']:g} requests, >= {s['warm_sentences_per_s']:,.0f} sentences/s (target 0 and >= 1000)",
            s["warm_requests"] == 0 and s["warm_sentences_per_s"] >= 1000,
        ),
    ]
    print("\ntargets")
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {text}")


if __name__ == "__main__":
    main()
