"""``llmcomp compare``: the arguments, a CompareConfig from them, progress bars, the printed table.

Model and training defaults are CompareConfig's (read when the command runs, so ``--help`` does not
load torch): a flag left out keeps them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmcomp.attention.registry import BASELINES
from llmcomp.cli.common import add_corpus_args, add_price_args, cli_prices, print_corpus_notices
from llmcomp.cli.device_flags import add_device_flag, add_llm_flags, llm_options
from llmcomp.experiments.labels import parse_source, split_sources
from llmcomp.text.corpus import CorpusConfig

if TYPE_CHECKING:
    from llmcomp.attention.base import ScoreStats
    from llmcomp.experiments.compare import CompareConfig

#: the declared ``--sources`` default; compare reads it as "auto" (experiments.labels.CLI_DEFAULT_SOURCES)
CLI_DEFAULT_SOURCES = ",".join((*BASELINES, "local"))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="train the same model with each attention source and tabulate")
    add_corpus_args(p)
    add_price_args(p)
    p.add_argument(
        "--sources",
        default=CLI_DEFAULT_SOURCES,
        help="comma-separated labels, kind:option=value each (e.g. local:layers=last-2, openai:floor=0.2:score_max=5; "
        "options as docs/sources.md lists them), or auto (the default); with --suite, {task} stands for each task",
    )
    p.add_argument("--seeds", type=int, help="seeds per source (default: CompareConfig's, 3)")
    p.add_argument("--steps", type=int, help="steps per run (default: CompareConfig's, 300)")
    p.add_argument(
        "--converge",
        action="store_true",
        help="train each run with early stopping up to --max-steps; report the loss at --steps (learning speed) "
        "and the converged (best) loss",
    )
    p.add_argument("--max-steps", type=int, help="with --converge: the cap on steps (default: CompareConfig's, 3000)")
    p.add_argument("--patience", type=int, help="with --converge: validations without improvement before stopping")
    p.add_argument("--out", help="folder for the runs, table and plot (default: a new folder under $LLMCOMP_RUNS)")
    p.add_argument(
        "--suite",
        action="store_true",
        help="the task suite: every source on each task corpus data/<task>.txt (--corpus and --task are ignored), "
        "converged; one table per task and a summary (defaults: SuiteConfig; docs/results.md)",
    )
    p.add_argument("--tasks", help="with --suite: comma-separated tasks (default: all of SuiteConfig's)")
    g = p.add_argument_group("model and training (shared by every source; defaults: CompareConfig)")
    g.add_argument("--n-layer", type=int)
    g.add_argument("--n-embd", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--eval-every", type=int)
    g.add_argument("--dropout", type=float)
    g.add_argument(
        "--mix",
        type=int,
        metavar="M",
        help="each source's heads mixed by M learned softmax weightings per layer (GPTConfig.mix_heads; "
        "0: as they are); each run folder keeps its weights in mixture.json",
    )
    g.add_argument(
        "--max-sentences", type=int, help="use only the first N sentences of the corpus (with --suite: of each)"
    )
    g.add_argument("--focus", choices=["auto", "on", "off"], default="auto", help="loss on decided positions")
    g.add_argument(
        "--task",
        help="where focus loss, accuracy and target mass are measured: binding, repeat, copy-after:WORD, "
        "recall:cue=C,offset=N, a registered name, or none (default: auto, binding on the binding corpus)",
    )
    g.add_argument("--threads", type=int, help="torch threads (1 is often faster on a busy 2-core machine)")
    add_device_flag(g)
    add_llm_flags(g)
    g.add_argument("--cache", help="attention cache for local/openai (default: $LLMCOMP_CACHE)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the attention cache")
    p.set_defaults(func=run_cli)


def _given(args: Any, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def config_from_args(args: Any, base: CompareConfig | None = None) -> CompareConfig:
    """A CompareConfig from ``llmcomp compare`` arguments (missing ones take ``base``'s, by default
    CompareConfig's defaults)."""
    from llmcomp.experiments.compare import CompareConfig
    from llmcomp.settings import Paths

    base = base or CompareConfig()
    raw = getattr(args, "sources", None)
    # the declared default means the automatic list (plus oracle on the binding corpus, openai if configured)
    sources = None if raw is None or raw == CLI_DEFAULT_SOURCES else split_sources(raw)
    seeds = _given(args, "seeds", len(base.seeds))
    model = replace(
        base.model,
        n_layer=_given(args, "n_layer", base.model.n_layer),
        n_embd=_given(args, "n_embd", base.model.n_embd),
        dropout=_given(args, "dropout", base.model.dropout),
        mix_heads=_given(args, "mix", base.model.mix_heads),
    )
    train = replace(
        base.train,
        batch_size=_given(args, "batch_size", base.train.batch_size),
        lr=_given(args, "lr", base.train.lr),
        eval_every=_given(args, "eval_every", base.train.eval_every),
        device=_given(args, "device", base.train.device),
    )
    local = base.source_options.get("local", {}) | llm_options(args)
    corpus = CorpusConfig(
        split=_given(args, "split", CorpusConfig.split),
        max_words=_given(args, "max_words", CorpusConfig.max_words),
        val_fraction=_given(args, "val_fraction", CorpusConfig.val_fraction),
    )
    focus = {"auto": None, "on": True, "off": False}[getattr(args, "focus", None) or "auto"]
    cache = None if getattr(args, "no_cache", False) else Path(getattr(args, "cache", None) or Paths.from_env().cache)
    return CompareConfig(
        sources=sources,
        seeds=list(range(seeds)),
        steps=_given(args, "steps", base.steps),
        model=model,
        train=train,
        corpus=corpus,
        focus=focus,
        task=_given(args, "task", base.task),
        cache=cache,
        max_sentences=_given(args, "max_sentences", base.max_sentences),
        threads=getattr(args, "threads", None),
        converge=bool(getattr(args, "converge", False)) or base.converge,
        max_steps=_given(args, "max_steps", base.max_steps),
        patience=_given(args, "patience", base.patience),
        source_options={**base.source_options, **({"local": local} if local else {})},
    )


class _Bars:
    """tqdm bars for the CLI: one per source while it is scored, one for all training steps."""

    def __init__(self, total_steps: int):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.scoring = None
        self.training = tqdm(total=total_steps, desc="training", unit="step", dynamic_ncols=True, position=1)
        self.done = 0  # steps of finished runs

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "source":
            self._close_scoring()
            label = f"{event['label']} ({event['index'] + 1}/{event['total']})"
            self.scoring = self.tqdm(desc=f"attention {label}", unit="sent", dynamic_ncols=True, position=0)
        elif kind == "scoring" and self.scoring is not None:
            s: ScoreStats = event["stats"]
            self.scoring.total = s.sentences
            self.scoring.n = s.done
            self.scoring.set_postfix(cached=s.cached, failed=s.failed, req=s.requests, refresh=False)
            self.scoring.refresh()
        elif kind == "metric":
            m = event["record"]
            self.training.n = self.done + m["step"]
            post = {"source": event["label"], "seed": event["seed"], "loss": f"{m['train_loss']:.3f}"}
            if "val_loss" in m:
                post["val"] = f"{m['val_loss']:.3f}"
            self.training.set_postfix(post, refresh=False)
            self.training.refresh()
        elif kind == "run":
            self.done += event["record"].steps
        elif kind == "failed":
            self._close_scoring()
            self.training.write(f"warning: {event['label']} left out: {event['reason']}")

    def _close_scoring(self) -> None:
        if self.scoring is not None:
            self.scoring.close()
            self.scoring = None

    def close(self) -> None:
        self._close_scoring()
        self.training.close()


def check_max_dollars(work: list[tuple[str, list[str], Any]], cache: Any, prices: Any, what: str) -> None:
    """``--max-dollars``: the paid sources' estimates summed over ``work`` ((prefix, labels, corpus) each:
    a suite's tasks, or one comparison with no prefix), refused (one line) before anything is sent."""
    from llmcomp.app.budget import BudgetError
    from llmcomp.app.scoring import estimate
    from llmcomp.app.sources import build_source
    from llmcomp.attention.registry import PAID
    from llmcomp.training.data import sentences_to_score

    if prices.max_dollars is None:
        return
    total, parts = 0.0, []
    for prefix, labels, corpus in work:
        for label in labels:
            kind, options = parse_source(label)
            if kind not in PAID:
                continue
            name = f"{prefix}/{label}" if prefix else label
            source = build_source({"kind": kind, **options}, cache=cache)
            try:
                cost = estimate(source, sentences_to_score(corpus, source), prices=prices).cost
            finally:
                source.close()
            if cost is None or cost.dollars is None:
                raise BudgetError(
                    f"--max-dollars cannot be checked for {name}: {cost.basis if cost else 'no estimate'}"
                )
            total += cost.dollars
            parts.append(f"{name}: {cost}")
    if total > prices.max_dollars:
        raise BudgetError(
            f"{what} would cost about ${total:,.2f} ({'; '.join(parts)}), more than --max-dollars "
            f"{prices.max_dollars:g}; nothing was sent"
        )


def run_cli(args: argparse.Namespace) -> int:
    """``llmcomp compare``: train every source with every seed, write the folder, print the table."""
    from llmcomp.cli.device_flags import check_devices
    from llmcomp.experiments.compare import compare, resolve_task
    from llmcomp.experiments.compare_sources import resolve_sources
    from llmcomp.settings import Paths
    from llmcomp.text.corpus import Corpus, load_corpus
    from llmcomp.training.run_folder import new_run_dir

    if getattr(args, "suite", False):
        from llmcomp.cli.suite import run_suite_cli

        return run_suite_cli(args)
    config = config_from_args(args)
    check_devices(config)  # a GPU this machine lacks: one line, before the corpus is even read
    corpus = load_corpus(args.corpus, config.corpus)
    print_corpus_notices(corpus)
    if config.max_sentences:
        corpus = Corpus(corpus.sentences[: config.max_sentences], name=corpus.name, config=corpus.config)
        config = replace(config, max_sentences=None)
    labels, notes = resolve_sources(config.sources, corpus)
    for label in labels:
        parse_source(label)  # a label that cannot build a source stops here, before any training
    config.sources = labels
    check_max_dollars([("", labels, corpus)], config.cache, cli_prices(args), "this comparison")
    for note in notes:
        print(note, file=sys.stderr)
    out = getattr(args, "out", None)
    config.out = Path(out) if out else new_run_dir(Paths.from_env().runs, f"compare-{Path(corpus.name).stem}")
    task = resolve_task(config, corpus)
    budget = f"{config.steps} steps each"
    if config.converge:
        budget = (
            f"up to {config.max_steps} steps each (early stopping, patience {config.patience}; budget {config.steps})"
        )
    print(
        f"comparing {', '.join(labels)} on {corpus.name} ({len(corpus.train_idx)} train / {len(corpus.val_idx)} val "
        f"sentences), {len(config.seeds)} seed(s) x {budget}; model {config.model.n_layer} layer(s) "
        f"x {config.model.n_embd}; task {task.name if task else 'none'}; writing to {config.out}",
        file=sys.stderr,
    )
    cap = config.max_steps if config.converge else config.steps  # early stops end a run sooner
    bars = _Bars(len(labels) * len(config.seeds) * cap)
    try:
        result = compare(corpus, config, progress=bars)
    finally:
        bars.close()
    for label, reason in result.failures.items():
        print(f"error: {label} could not be compared: {reason}", file=sys.stderr)
    print()
    print(result.markdown)
    print()
    print(f"table: {result.files.get('table.md')}  plot: {result.files.get('curves.html')}")
    return 1 if result.failures else 0
