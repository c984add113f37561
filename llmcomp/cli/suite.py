"""``llmcomp compare --suite``: a SuiteConfig from the compare flags, a line per run, the printed tables.

The suite itself is ``llmcomp.experiments.suite``; defaults are SuiteConfig's (read when the command
runs, so ``--help`` loads no torch).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcomp.experiments.labels import split_sources

if TYPE_CHECKING:
    from llmcomp.experiments.suite import SuiteConfig


def suite_config_from_args(args: Any) -> SuiteConfig:
    """A SuiteConfig from ``llmcomp compare --suite`` arguments (missing ones take SuiteConfig's defaults)."""
    from llmcomp.cli.compare import CLI_DEFAULT_SOURCES, config_from_args
    from llmcomp.experiments.suite import SuiteConfig

    base = SuiteConfig()
    compare = config_from_args(args, base=base.compare)
    raw = getattr(args, "sources", None)
    sources = base.sources if raw is None or raw == CLI_DEFAULT_SOURCES else split_sources(raw)
    tasks = getattr(args, "tasks", None)
    max_sentences = compare.max_sentences if compare.max_sentences is not None else base.max_sentences
    compare.max_sentences = None  # set per task by the suite
    return SuiteConfig(
        tasks=[t.strip() for t in tasks.split(",") if t.strip()] if tasks else base.tasks,
        sources=sources,
        max_sentences=max_sentences,
        compare=compare,
        out=Path(args.out) if getattr(args, "out", None) else None,
    )


class _Lines:
    """One line per task, per source and per finished run (on stderr), with the time since the start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.quarter = 0  # the last quarter of a source's scoring that was reported

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f} s] {text}", file=sys.stderr, flush=True)

    def __call__(self, e: dict[str, Any]) -> None:
        kind = e["event"]
        if kind == "task":
            self.say(f"task {e['index'] + 1}/{e['total']}: {e['task']}")
        elif kind == "source":
            self.say(f"  {e['task']}: {e['label']} ({e['index'] + 1}/{e['total']}): scoring")
            self.quarter = 0
        elif kind == "scoring":  # slow sources (the local LLM on an empty cache): a line per quarter
            s = e["stats"]
            quarter = 4 * s.done // s.sentences if s.sentences else 0
            if quarter > self.quarter:
                self.quarter = quarter
                self.say(f"    {e['label']}: {s.done}/{s.sentences} sentences scored ({s.cached} from the cache)")
        elif kind == "run":
            r = e["record"]
            best = "–" if r.best_val_loss is None else f"{r.best_val_loss:.3f}"
            acc = "–" if r.final_val_focus_acc is None else f"{r.final_val_focus_acc:.2f}"
            self.say(f"  {e['task']}: {r.label} seed {r.seed}: {r.steps} steps ({r.stop_reason or 'steps'}), "
                     f"best val {best} at {r.best_step}, focus acc {acc}")  # fmt: skip
        elif kind == "failed":
            self.say(f"  warning: {e['task']}: {e['label']} left out: {e['reason']}")
        elif kind == "task_done":
            self.say(f"task {e['task']} done in {e['seconds']:.0f} s")


def _check_dollars(config: SuiteConfig, paths: list[Path], args: argparse.Namespace) -> None:
    """``--max-dollars`` over every task's paid sources, on each corpus as its comparison trains on it."""
    from llmcomp.cli.common import cli_prices
    from llmcomp.cli.compare import check_max_dollars
    from llmcomp.experiments.compare_sources import resolve_sources
    from llmcomp.experiments.suite import task_sources
    from llmcomp.text.corpus import Corpus, load_corpus

    prices = cli_prices(args)
    if prices.max_dollars is None:
        return
    work = []
    for task, path in zip(config.tasks, paths, strict=True):
        corpus = load_corpus(path, config.compare.corpus)
        if config.max_sentences:  # as compare cuts it (SuiteConfig.max_sentences)
            corpus = Corpus(corpus.sentences[: config.max_sentences], name=corpus.name, config=corpus.config)
        work.append((task, resolve_sources(task_sources(config.sources, task), corpus)[0], corpus))
    check_max_dollars(work, config.compare.cache, prices, "this suite")


def run_suite_cli(args: argparse.Namespace) -> int:
    """Run the suite, print every table and the summary; exit status 1 when a source failed."""
    from llmcomp.cli.device_flags import check_devices
    from llmcomp.experiments.suite import check_tasks, run_suite, task_sources
    from llmcomp.settings import Paths
    from llmcomp.training.run_folder import new_run_dir

    config = suite_config_from_args(args)
    check_devices(config.compare)
    paths = check_tasks(config)  # one-line errors before anything is created
    for task in config.tasks:
        task_sources(config.sources, task)
    _check_dollars(config, paths, args)
    if config.out is None:
        config.out = new_run_dir(Paths.from_env().runs, "suite")
    c = config.compare
    print(
        f"suite: tasks {', '.join(config.tasks)}; sources {', '.join(config.sources)}; {len(c.seeds)} seed(s); "
        f"{config.max_sentences or 'all'} sentences per task; budget {c.steps} steps, converged up to "
        f"{c.max_steps} (patience {c.patience}); model {c.model.n_layer} layer(s) x {c.model.n_embd}; "
        f"cache {c.cache or 'none'}; writing to {config.out}",
        file=sys.stderr,
    )
    lines = _Lines()
    result = run_suite(config, progress=lines)
    for label, reason in result.failures.items():
        print(f"error: {label} could not be compared: {reason}", file=sys.stderr)
    print()
    print(result.markdown)
    print()
    lines.say(f"suite done; summary: {result.files.get('summary.md')}  all tables: {result.files.get('suite.md')}")
    return 1 if result.failures else 0
