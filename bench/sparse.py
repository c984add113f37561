"""Completion tokens per sentence, dense vs sparse answers of the OpenAI source, against the fake server.

    python -m bench.sparse            # sentences of data/example.txt grouped by length, and longer ones
    python -m bench.sparse --quick    # fewer sentences per length

The same sentences are scored in sentence mode twice, ``answer="dense"`` (the whole lower-triangular matrix)
and ``answer="sparse"`` (each word's ``top_k`` words as [j, score] pairs), each sentence on its own request, and
the completion tokens the fake server reports in ``usage`` (about three characters a token, as it counts for
every answer) are read per sentence. Dense grows with T² (T(T+1)/2 scores a head), sparse with T (at most k pairs
a word): the target is sparse <= 10·T tokens per head. Longer sentences are made by joining the corpus's.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.common import print_table
from llmcomp.attention.openai_source import OpenAISource
from llmcomp.attention.prompts import DEFAULT_HEADS
from llmcomp.testing.fake_server import FakeOpenAIServer

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example.txt"
LENGTHS = (4, 8, 12, 16, 32, 64)
TOP_K = 3
#: the target: sparse completion tokens per head at most this many times the sentence's words
TARGET_PER_WORD = 10


def sentences_of_length(n: int, count: int) -> list[list[str]]:
    """``count`` sentences of exactly ``n`` words: the corpus's words in order, cut into n-word windows."""
    from llmcomp.text import load_corpus

    words = [w for s in load_corpus(EXAMPLE).sentences for w in s]
    return [words[i * n : (i + 1) * n] for i in range(count) if (i + 1) * n <= len(words)]


def tokens_per_sentence(url: str, answer: str, sentences: list[list[str]]) -> list[int]:
    """Completion tokens of each sentence's answer (one request each, no cache), as the server reported them."""
    out = []
    src = OpenAISource(
        base_url=url, api_key="sk-bench", model="fake-model", heads=DEFAULT_HEADS, answer=answer, top_k=TOP_K
    )
    with src:
        for words in sentences:
            before = src.usage.completion_tokens
            src.score_many([words]).require_all()
            out.append(src.usage.completion_tokens - before)
    return out


def run(quick: bool = False) -> list[dict]:
    """One row per sentence length: median completion tokens per head, dense and sparse, and their ratio."""
    rows = []
    heads = len(DEFAULT_HEADS)
    with FakeOpenAIServer() as server:
        for n in LENGTHS:
            sentences = sentences_of_length(n, 3 if quick else 10)
            dense = statistics.median(tokens_per_sentence(server.url, "dense", sentences)) / heads
            sparse = statistics.median(tokens_per_sentence(server.url, "sparse", sentences)) / heads
            rows.append(
                {
                    "T": n,
                    "sentences": len(sentences),
                    "dense tokens/head": dense,
                    "sparse tokens/head": sparse,
                    "sparse/dense": sparse / dense,
                    "sparse/T": sparse / n,
                    "target": "ok" if sparse <= TARGET_PER_WORD * n else f"MISSED (> {TARGET_PER_WORD}·T)",
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 sentences per length instead of 10")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    print_table(
        f"completion tokens per sentence and head (median), {len(DEFAULT_HEADS)} heads, sparse top-{TOP_K}",
        rows,
        ["T", "sentences", "dense tokens/head", "sparse tokens/head", "sparse/dense", "sparse/T", "target"],
    )


if __name__ == "__main__":
    main()
