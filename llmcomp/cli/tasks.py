"""``llmcomp tasks``: list the tasks, and write a task's generated corpus (``tasks make ioi --out f.txt``)."""

from __future__ import annotations

import argparse
from typing import Any

from llmcomp.text.task_corpora import TaskCorpusConfig


def add_parser(sub: Any) -> None:
    p = sub.add_parser("tasks", help="tasks whose right attention is known: list them, make their corpora")
    tsub = p.add_subparsers(dest="tasks_command", required=True)
    lst = tsub.add_parser("list", help="every task: its rule, and whether it has a generator")
    lst.set_defaults(func=cmd_list)
    d = TaskCorpusConfig()
    make = tsub.add_parser("make", help="write a task's generated corpus, one sentence per line")
    make.add_argument("name", help="induction, ioi, agreement, coreference or binding")
    make.add_argument("--sentences", type=int, default=d.sentences, help="number of lines (default: %(default)s)")
    make.add_argument("--seed", type=int, default=d.seed, help="generator seed (default: %(default)s)")
    make.add_argument("--out", required=True, help="the .txt file to write")
    make.set_defaults(func=cmd_make)


def cmd_list(args: argparse.Namespace) -> int:
    from llmcomp.text.task_corpora import GENERATORS
    from llmcomp.text.tasks import RULE_HELP, TASKS

    width = max(map(len, [*TASKS, *RULE_HELP]))
    for name, task in TASKS.items():
        notes = [n for n, on in (("generator", name in GENERATORS), ("measurement only", task.peeks_next)) if on]
        print(f"{name:<{width}}  {task.description}" + (f" [{', '.join(notes)}]" if notes else ""))
    for form, text in RULE_HELP.items():
        print(f"{form:<{width}}  {text}")
    return 0


def cmd_make(args: argparse.Namespace) -> int:
    from llmcomp.text.task_corpora import generate, write_lines

    lines = generate(args.name, args.sentences, args.seed)
    path = write_lines(args.out, lines)
    print(f"wrote {len(lines)} {args.name} sentences to {path}")
    return 0
