"""The OpenAI source against hostile servers: every fault kind of the fake server, and a server that never answers.

    python -m bench.hostile            # every kind on 12 sentences, then a never-answering server on
                                       # data/example.txt with the defaults (about 2 minutes)
    python -m bench.hostile --quick    # every kind on 4 sentences; the never-answering run is skipped

Each kind is applied to every request of a fresh fake server (``llmcomp.testing.hostile.run_fault``), with
deadlines of 2 s and 2 retries so that the table comes quickly; a sentence ends scored, failed with a reason, or
the run stops with one line (``ScoringAborted``); anything else is a crash (target 0). The never-answering run
uses the source's defaults (60 s deadline, 8 requests in flight, 5 retries, a breaker at 8 failures in a row)
on the whole of data/example.txt: before the deadline and the breaker it would have taken about 47 hours.
Also: ``extract_json`` on N unclosed braces, which took 0.3/1.2/4.5/11.5 s for N = 2k/4k/8k/16k when quadratic.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from bench.common import print_table
from llmcomp.attention import answers
from llmcomp.testing.faults import FAULTS
from llmcomp.testing.hostile import run_fault

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data" / "example.txt"
#: Short deadlines and retries for the table of kinds (the never-answering run uses the defaults).
OPTIONS = {"timeout": 2.0, "max_retries": 2, "backoff_base": 0.05, "backoff_max": 0.2, "max_corrective_retries": 1}


def example_sentences() -> list[list[str]]:
    from llmcomp.text import load_corpus

    return load_corpus(EXAMPLE).sentences


def fault_rows(sentences: list[list[str]]) -> list[dict]:
    rows = []
    for kind in FAULTS:
        o = run_fault(kind, sentences, {"delay": 4.0}, cache=None, **OPTIONS)
        rows.append(
            {
                "fault": kind,
                "scored": o.scored,
                "failed (reason)": o.failed,
                "stopped (1 line)": "yes" if o.aborted else "",
                "crashed": o.crashed or "",
                "wall_s": o.seconds,
                "reason": (o.reason or "")[:90],
            }
        )
    return rows


def extraction_rows() -> list[dict]:
    rows = []
    for n in (2048, 4096, 8192, 16384, 65536, 262_000):
        t = time.perf_counter()
        with contextlib.suppress(answers.AnswerError):
            answers.extract_json("{" * n)
        rows.append({"braces": n, "seconds": time.perf_counter() - t})
    return rows


def never_answering() -> dict:
    sentences = example_sentences()
    o = run_fault("hang", sentences, cache=None)  # the source's defaults
    return {"sentences": len(sentences), "wall_s": o.seconds, "line": o.aborted or o.crashed or o.reason}


def run(quick: bool = False) -> list[dict]:
    """One row per fault kind, then the summary (with the never-answering run unless ``quick``)."""
    sentences = example_sentences()[: 4 if quick else 12]
    rows = fault_rows(sentences)
    summary = {
        "faults": len(rows),
        "sentences": len(sentences) * len(rows),
        "scored": sum(r["scored"] for r in rows),
        "failed": sum(r["failed (reason)"] for r in rows),
        "stopped": sum(1 for r in rows if r["stopped (1 line)"]),
        "crashed": sum(1 for r in rows if r["crashed"]),
        "extraction": extraction_rows(),
        "never": None if quick else never_answering(),
    }
    return [*rows, {"summary": summary}]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 sentences a kind; skip the never-answering run")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    s = rows.pop()["summary"]
    per = s["sentences"] // s["faults"]
    print_table(
        f"hostile servers: every fault kind on every request, {per} sentences each",
        rows,
        ["fault", "scored", "failed (reason)", "stopped (1 line)", "crashed", "wall_s", "reason"],
    )
    print(
        f"\nfaults tried {s['faults']}; sentences {s['sentences']}: scored {s['scored']}, failed with a reason "
        f"{s['failed']}, in runs stopped with one line {s['stopped'] * per} ({s['stopped']} runs); "
        f"crashed {s['crashed']} (target 0)"
    )
    print_table("extract_json on N unclosed braces (linear: 2x the braces, about 2x the time)", s["extraction"],
                ["braces", "seconds"])  # fmt: skip
    never = s["never"]
    if never is None:
        print("\nnever-answering server on data/example.txt: skipped (--quick)")
    else:
        print(
            f"\nnever-answering server on data/example.txt ({never['sentences']} sentences, the defaults): "
            f"ended after {never['wall_s']:.0f} s with: {never['line']}"
        )


if __name__ == "__main__":
    main()
