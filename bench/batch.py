"""The Batch API route against the live route, on the same corpus, against the fake server's Files and Batches API.

    python -m bench.batch            # data/example.txt (450 sentences), sentence and prefix mode
    python -m bench.batch --quick    # its first 60 sentences

Each mode scores the corpus twice into fresh caches: live (one request per unit) and ``--batch`` (the fake server
runs the batch's lines with the same answers). Read from the server: live requests and batch lines. The cost is
the tokens the server reported for the run, priced at gpt-4o-mini's table price, live and with the Batch API's
discount (``attention.prices``). Targets: 0 live requests for a corpus scored by batch; its cost 50% of live.
Wall time is the fake server's, not OpenAI's (a real batch takes minutes to hours): it shows the route's own
overhead (writing, uploading, reading files), not a speed-up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import print_table
from llmcomp.attention import AttentionCache
from llmcomp.attention.openai_config import BatchConfig
from llmcomp.attention.openai_source import OpenAISource
from llmcomp.attention.prices import cost
from llmcomp.testing.fake_server import FakeOpenAIServer

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example.txt"
PRICED_AS = "gpt-4o-mini"


def score(server: FakeOpenAIServer, sentences: list[list[str]], mode: str, batch: bool, folder: Path) -> dict:
    """One pass into a fresh cache: live requests, batch lines, tokens, dollars and seconds."""
    server.reset_counts()
    cache = AttentionCache(folder / f"{mode}-{'batch' if batch else 'live'}.sqlite")
    src = OpenAISource(
        base_url=server.url, api_key="sk-bench", model=PRICED_AS, mode=mode, cache=cache, max_concurrency=16,
        batch=BatchConfig(poll=0.01) if batch else None,
    )  # fmt: skip
    start = time.perf_counter()
    with src:
        result = src.score_many(sentences)
    seconds = time.perf_counter() - start
    cache.close()
    stats, s = server.stats(), result.stats
    dollars = cost(PRICED_AS, s.prompt_tokens, s.completion_tokens, batch=batch).dollars
    return {
        "mode": mode,
        "route": "batch" if batch else "live",
        "sentences": len(sentences),
        "failed": len(result.failures),
        "live requests": stats["requests"],
        "batch lines": stats["batch_lines"],
        "tokens": s.prompt_tokens + s.completion_tokens,
        "dollars": dollars,
        "seconds": seconds,
    }


def run(quick: bool = False) -> list[dict]:
    """Live then batch, per mode; ``cost ratio`` is batch dollars over live dollars of the same mode."""
    from llmcomp.text import load_corpus

    sentences = load_corpus(EXAMPLE).sentences[: 60 if quick else None]
    rows = []
    with FakeOpenAIServer() as server, tempfile.TemporaryDirectory() as tmp:
        for mode in ("sentence", "prefix"):
            live = score(server, sentences, mode, False, Path(tmp))
            batch = score(server, sentences, mode, True, Path(tmp))
            for row in (live, batch):
                row["cost ratio"] = row["dollars"] / live["dollars"]
                row["target"] = "" if row is live else _verdict(row)
                rows.append(row)
    return rows


def _verdict(row: dict) -> str:
    ok = row["live requests"] == 0 and abs(row["cost ratio"] - 0.5) < 0.01 and not row["failed"]
    return "ok" if ok else "MISSED (live requests, failures or cost != 50%)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 sentences instead of 450")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    columns = ["mode", "route", "sentences", "failed", "live requests", "batch lines", "tokens", "dollars"]
    print_table(
        f"the Batch API route vs live, priced as {PRICED_AS} (fake server)",
        rows,
        [*columns, "cost ratio", "seconds", "target"],
    )


if __name__ == "__main__":
    main()
