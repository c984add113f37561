"""``llmcomp runs``: list the runs of the runs folder by corpus, rename one (a display name), delete one.

The same application layer as the web app's Compare tab (``llmcomp.app.run_compare``, ``run_list``):
the same grouping, numbers, refusals. The command line is the machine's owner: it sees every run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

LIST_COLUMNS = ["run", "status", "source", "seed", "steps", "best val loss", "final val loss", "tokens/s",
                "training time", "folder"]  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser("runs", help="the runs folder: list runs by corpus, rename or delete a run")
    p.add_argument("--runs", default=None, help="the runs folder (default: $LLMCOMP_RUNS or $LLMCOMP_HOME/runs)")
    rsub = p.add_subparsers(dest="runs_command", required=True)
    lst = rsub.add_parser("list", help="every run, grouped by corpus, ranked by best validation loss")
    lst.add_argument("--wide", action="store_true", help="every column: hyperparameters, source settings, corpus")
    lst.set_defaults(func=cmd_list)
    ren = rsub.add_parser("rename", help="give a run a display name (its folder keeps its name)")
    ren.add_argument("name", help="the run's folder name, as `llmcomp runs list` prints it")
    ren.add_argument("display_name", help='the new name ("" clears it)')
    ren.set_defaults(func=cmd_rename)
    rm = rsub.add_parser("delete", help="delete a run's folder (never the attention cache); asks first")
    rm.add_argument("name", help="the run's folder name, as `llmcomp runs list` prints it")
    rm.add_argument("--yes", action="store_true", help="do not ask (for scripts)")
    rm.set_defaults(func=cmd_delete)


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    from llmcomp.settings import Paths

    paths = Paths.from_env()
    return Path(args.runs) if args.runs else paths.runs, paths.cache


def _runs(root: Path) -> list:
    from llmcomp.app import run_list

    return run_list.visible(root, None, public=False, live=True)


def cmd_list(args: argparse.Namespace) -> int:
    from llmcomp.app import run_compare

    root, _ = _paths(args)
    groups = run_compare.corpus_groups(_runs(root))
    if not groups:
        print(f"no runs in {root}")
        return 0
    for g in groups:
        print(f"== {g.describe} ({len(g.runs)} run{'s' if len(g.runs) != 1 else ''})")
        table = run_compare.runs_table(g.runs)
        if not args.wide:
            table = table[[c for c in LIST_COLUMNS if c in table.columns]]
        print(table.to_string(index=False))
        print()
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    from llmcomp.app import run_list

    root, _ = _paths(args)
    run = run_list.rename(_runs(root), args.name, args.display_name)
    print(f"{run.name} is now shown as {run_list.title(run)}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from llmcomp.app import run_list

    root, cache = _paths(args)
    runs = _runs(root)
    run = run_list.find(runs, args.name)
    if not args.yes:
        if not sys.stdin.isatty():
            raise run_list.RunError(f"delete {args.name}: confirm with --yes (no terminal to ask on)")
        answer = input(f"delete {run_list.title(run)} ({run.path})? the attention cache stays. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    path = run_list.delete(runs, args.name, root, protect=[cache])
    print(f"deleted {path}")
    return 0
