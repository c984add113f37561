"""``llmcomp score`` (fill the attention cache, with a cost estimate) and ``llmcomp cache``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from llmcomp.cli.batch import add_batch_args
from llmcomp.cli.common import (
    ScoringBar,
    add_corpus_args,
    add_price_args,
    add_source_args,
    cli_prices,
    load_cli_corpus,
    make_cli_source,
)
from llmcomp.errors import one_line

if TYPE_CHECKING:
    from llmcomp.attention.cache import AttentionCache, ImportReport


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("score", help="score a corpus's attention into the cache (with a cost estimate)")
    add_corpus_args(p)
    add_source_args(p, default="local")
    add_price_args(p)
    add_batch_args(p)
    p.add_argument("--dry-run", action="store_true", help="estimate requests, tokens and dollars; send nothing")
    p.add_argument("--out", help="also write the matrices as JSON lines")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("cache", help="inspect, export or import the attention cache")
    p.add_argument(
        "action", choices=["stats", "export", "import", "batches"], help="batches: the Batch API's, recorded"
    )
    p.add_argument("file", nargs="?", help="JSONL file to export to or import from")
    p.add_argument("--cache", help="cache file (default: $LLMCOMP_CACHE or .llmcomp/attention-cache.sqlite)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="import: replace entries the cache already holds with another value (default: keep them)",
    )
    p.set_defaults(func=cmd_cache)


def cmd_score(args: argparse.Namespace) -> int:
    from llmcomp.app.scoring import check_dollars, dollars_of, estimate, score

    corpus = load_cli_corpus(args)
    prices = cli_prices(args)
    source = make_cli_source(args)
    try:
        if hasattr(source, "estimate_all") and args.dry_run:
            for est in source.estimate_all(corpus.sentences).values():
                money = dollars_of(source, est.prompt_tokens, est.completion_tokens, prices)
                print(f"estimate: {est}; {money}")
            check_dollars(estimate(source, corpus.sentences, prices=prices), prices.max_dollars)
            return 0
        if hasattr(source, "estimate"):
            est = estimate(source, corpus.sentences, prices=prices)
            print(f"estimate: {est.detail}")
            check_dollars(est, prices.max_dollars)  # before the bar: a refused run shows none
        elif args.dry_run:
            print(f"{source.kind} is computed locally: no requests, no tokens")
            return 0
        bar = ScoringBar(len(corpus.sentences))
        start = time.perf_counter()
        try:
            result = score(source, corpus.sentences, progress=bar, prices=prices)
        finally:
            bar.close()
        s, wall = result.stats, time.perf_counter() - start
        batched = f" + {s.batched} in batches" if s.batched else ""
        print(
            f"{s.sentences} sentences in {wall:.1f}s: {s.scored} scored, {s.cached} cached, {s.failed} failed, "
            f"{s.fallbacks} fallbacks; {s.requests} requests{batched}, {s.prompt_tokens} prompt + {s.completion_tokens} "
            "completion tokens"
        )
        if source.cache is not None:
            c = source.cache
            print(f"cache: {c.path} ({len(c)} entries, hit rate {c.hit_rate:.0%})")
        for i, reason in list(result.failures.items())[:10]:
            print(f"failed #{i}: {one_line(reason)}", file=sys.stderr)  # a server's words: escaped
        if args.out:
            from llmcomp.attention.file_source import write_lines

            write_lines(args.out, corpus.sentences, result.matrices, not source.prefix_causal, source.spec())
            print(f"matrices written to {args.out}")
        return 0 if not result.failures or args.fallback else 1
    finally:
        source.close()


def cmd_cache(args: argparse.Namespace) -> int:
    from llmcomp.attention import AttentionCache
    from llmcomp.settings import Paths

    if args.action in ("export", "import") and not args.file:
        print(f"error: cache {args.action} needs a FILE argument", file=sys.stderr)
        return 2
    cache = AttentionCache(args.cache or Paths.from_env().cache)
    try:
        if args.action == "batches":
            from llmcomp.cli.batch import print_batches

            print_batches(str(cache.path))
        elif args.action == "stats":
            print(f"{cache.path}: {len(cache)} entries")
        elif args.action == "export":
            print(f"exported {cache.export_jsonl(args.file)} entries to {args.file}")
        elif args.action == "import":
            return _report_import(cache.import_report(args.file, overwrite=args.overwrite), cache, args.overwrite)
    finally:
        cache.close()
    return 0


def _report_import(r: ImportReport, cache: AttentionCache, overwrite: bool) -> int:
    """Say what an import did, entry by entry kind; 1 when lines were rejected (their first reasons on stderr)."""
    parts = [f"imported {r.added} new entries into {one_line(str(cache.path))}"]
    if overwrite:
        parts.append(f"replaced {r.replaced} that held another value")
    elif r.kept:
        parts.append(f"kept {r.kept} already cached with another value (--overwrite replaces them)")
    if r.same:
        parts.append(f"{r.same} already cached as they are")
    parts.append(f"rejected {r.rejected} invalid line(s)")
    print("; ".join(parts))
    for reason in r.reasons:  # already one escaped line each
        print(f"rejected {reason}", file=sys.stderr)
    return 1 if r.rejected else 0
