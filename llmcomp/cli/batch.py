"""The Batch API's flags (``llmcomp score --batch``, ``train --batch``) and ``llmcomp cache batches``."""

from __future__ import annotations

import argparse
from typing import Any


def add_batch_args(p: argparse.ArgumentParser) -> None:
    """``--batch`` and how it waits; defaults from ``BatchConfig`` (torch-free)."""
    from llmcomp.attention.openai_config import BatchConfig

    g = p.add_argument_group("Batch API (openai source; docs/sources.md)")
    g.add_argument(
        "--batch",
        action="store_true",
        help="send the requests as OpenAI Batch API files (half price, answers within 24 h); run the same command "
        "again to resume waiting for its batches",
    )
    g.add_argument("--batch-poll", type=float, default=BatchConfig.poll, help="seconds between status checks")
    g.add_argument(
        "--batch-wait",
        type=float,
        default=BatchConfig.wait,
        help="longest wait for the batches in seconds (they keep running after; 0: submit and stop)",
    )
    g.add_argument(
        "--batch-live-retry",
        action=argparse.BooleanOptionalAction,
        default=BatchConfig.live_retry,
        help="ask again live a request whose batch line failed or answered invalidly",
    )


def batch_config(args: argparse.Namespace) -> Any:
    """The ``BatchConfig`` the flags ask for, or None without ``--batch``."""
    if not getattr(args, "batch", False):
        return None
    from llmcomp.attention.openai_config import BatchConfig

    return BatchConfig(poll=args.batch_poll, wait=args.batch_wait, live_retry=args.batch_live_retry)


def print_batches(cache_file: str) -> None:
    """Every batch recorded in a cache file, newest first: id, status, requests, endpoint and outcome."""
    from datetime import datetime

    from llmcomp.attention.batch_store import BatchStore
    from llmcomp.errors import one_line

    store = BatchStore(cache_file)
    try:
        records = store.all()
    finally:
        store.close()
    if not records:
        print(f"{cache_file}: no batches recorded")
    for r in records:
        when = datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M")
        state = "open" if r.open else r.outcome or "closed"
        print(one_line(f"{r.id}  {when}  {r.status}  {len(r.units):,} requests  {r.endpoint}  {state}"))
