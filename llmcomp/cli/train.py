"""``llmcomp train``: one training run, through the application layer (``llmcomp.app.training``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from llmcomp.cli.batch import add_batch_args
from llmcomp.cli.common import (
    ScoringBar,
    add_corpus_args,
    add_price_args,
    add_source_args,
    cli_builder,
    cli_description,
    cli_prices,
    load_cli_corpus,
    make_cli_source,
)
from llmcomp.cli.device_flags import add_device_flag, llm_device
from llmcomp.model.config import GPTConfig
from llmcomp.training.config import TrainConfig


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model with a chosen attention source")
    add_corpus_args(p)
    add_source_args(p, default=None)
    add_price_args(p)
    add_batch_args(p)
    g = p.add_argument_group("model and training (defaults: GPTConfig and TrainConfig)")
    g.add_argument("--steps", type=int, default=TrainConfig.steps, help="default: %(default)s")
    g.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="default: %(default)s")
    g.add_argument("--lr", type=float, default=TrainConfig.lr, help="default: %(default)s")
    g.add_argument("--eval-every", type=int, default=TrainConfig.eval_every, help="default: %(default)s")
    g.add_argument(
        "--patience",
        type=int,
        default=TrainConfig.patience,
        help="stop after this many validations without improvement (0: train every step); default: %(default)s",
    )
    g.add_argument(
        "--min-delta",
        type=float,
        default=TrainConfig.min_delta,
        help="least improvement that counts; default: %(default)s",
    )
    g.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every, help="0: only at the end")
    g.add_argument("--seed", type=int, default=TrainConfig.seed, help="default: %(default)s")
    add_device_flag(g)
    g.add_argument("--n-layer", type=int, default=GPTConfig.n_layer, help="default: %(default)s")
    g.add_argument("--n-embd", type=int, default=GPTConfig.n_embd, help="default: %(default)s")
    g.add_argument(
        "--learned-heads", type=int, default=GPTConfig.n_learned_heads, help="learned heads beside the supplied ones"
    )
    g.add_argument(
        "--mix",
        type=int,
        default=GPTConfig.mix_heads,
        metavar="M",
        help="learn, per layer, M heads that each mix the source's heads by softmax weights (0: use them as "
        "they are); the chosen weights are printed and kept in the run's mixture.json; default: %(default)s",
    )
    g.add_argument("--dropout", type=float, default=GPTConfig.dropout, help="default: %(default)s")
    g.add_argument(
        "--task",
        default="auto",
        help="where focus loss, accuracy and target mass are measured: binding, repeat, copy-after:WORD, "
        "recall:cue=C,offset=N, a registered name, or none (default: auto, binding on the binding corpus)",
    )
    g = p.add_argument_group("run folder")
    g.add_argument("--run-dir", help="output folder (default: a new folder under $LLMCOMP_RUNS)")
    g.add_argument(
        "--resume",
        help="run folder or checkpoint folder to continue, in that run's folder (same corpus; the source is "
        "rebuilt from the checkpoint unless --attention is given)",
    )
    g.add_argument("--stop-at", type=int, help="stop at this step (resume later to reach --steps)")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from llmcomp.app.scoring import check_budget
    from llmcomp.app.training import TrainRequest, resume_point, start_training
    from llmcomp.text.tasks import choose_task
    from llmcomp.training.data import sentences_to_score
    from llmcomp.training.mixture import mixture_lines, model_mixture
    from llmcomp.training.run_summary import LEAK_NOTE

    corpus = load_cli_corpus(args)
    task = choose_task(getattr(args, "task", "auto"), corpus.sentences)
    spec = resume_point(args.resume).source_spec if args.resume and args.attention is None else None
    kind = (spec or {}).get("kind") or args.attention or "uniform"
    if kind == "local":
        args.source_device = llm_device(args)  # one --device for the model and the LLM, unless --llm-device differs
    if spec is not None:
        source, choice = make_cli_source(args, spec=spec), None
    else:
        args.attention = args.attention or "uniform"
        source, choice = chosen_source(args, corpus)
    try:
        model_cfg = GPTConfig(
            n_layer=args.n_layer,
            n_embd=args.n_embd,
            n_learned_heads=args.learned_heads,
            dropout=args.dropout,
            mix_heads=args.mix,
        )
        train_cfg = TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            eval_every=args.eval_every,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            patience=args.patience,
            min_delta=args.min_delta,
            device=args.device,
        )
        request = TrainRequest(
            corpus, source, model_cfg, train_cfg, run_dir=args.run_dir, resume=args.resume, task=task,
            head_choice=choice,
        )  # fmt: skip
        prices = cli_prices(args)
        check = None if prices.max_dollars is None else lambda src, sents: check_budget(src, sents, prices=prices)
        run = start_training(request, check=check)
        trainer = run.trainer
        stats = corpus.stats()
        print(
            f"corpus {corpus.name}: {stats.sentences} sentences ({len(corpus.train_idx)} train, "
            f"{len(corpus.val_idx)} val), vocab {len(trainer.vocab)}; attention: {source.describe()}; "
            f"model: {trainer.model.num_params():,} parameters; run: {run.run_dir}"
        )
        if not source.prefix_causal:
            print(f"warning: {source.describe()}: {LEAK_NOTE}", file=sys.stderr)
        bar = ScoringBar(len(sentences_to_score(corpus, source)))
        end = min(args.stop_at or train_cfg.steps, train_cfg.steps)
        steps: list[Any] = []
        last_val: list[float] = []

        def scored() -> None:
            bar.close()
            if trainer.failed_sentences:
                n = len(trainer.failed_sentences)
                print(f"warning: {n} sentence(s) had no attention and are left out", file=sys.stderr)
            steps.append(tqdm(total=end, initial=trainer.step, desc="training", unit="step", dynamic_ncols=True))

        def on_metric(m: dict[str, Any]) -> None:
            steps[0].n = m["step"]
            if "val_loss" in m:
                last_val.append(m["val_loss"])
            post = {"loss": f"{m['train_loss']:.3f}", "tok/s": f"{m['tokens_per_s']:.0f}"}
            if last_val:
                post["val"] = f"{last_val[-1]:.3f}"
            steps[0].set_postfix(post, refresh=False)
            steps[0].refresh()

        try:
            result = run.run(on_metric=on_metric, on_scoring=bar, stop_at=args.stop_at, after_prepare=scored)
        finally:
            bar.close()
            for s in steps:
                s.close()
    finally:
        source.close()
    val = result.final_val_loss
    print(
        f"step {result.step}: val loss {val:.4f}{seen_note(result.metrics)}"
        if val is not None
        else f"step {result.step}"
    )
    print(best_line(result))
    if task is not None:
        print(task_line(task.name, result.metrics))
    mixture = model_mixture(trainer.model, source, result.step)
    if mixture is not None:
        print("heads the model chose (softmax weights over the source's heads, per layer):")
        print("\n".join("  " + line for line in mixture_lines(mixture)))
    print(f"checkpoint: {result.checkpoint}")
    if result.best_checkpoint is not None:
        print(f"best checkpoint: {result.best_checkpoint} (generate uses it; --last for the last)")
    return 0


def chosen_source(args: argparse.Namespace, corpus: Any) -> tuple[Any, Any]:
    """The flags' source; ``--llm-heads top:K:PATTERN`` first picks K heads on the training split
    (``app.head_choice``) and says which."""
    from llmcomp.app.head_choice import HeadChoiceConfig, parse_top, source_for_corpus

    description = cli_description(args)
    if parse_top(description.get("heads")) is None:
        return cli_builder(args)(description), None
    limit = HeadChoiceConfig.max_sentences or len(corpus.train_idx)
    bar = ScoringBar(min(limit, len(corpus.train_idx)), desc="head atlas (training split)")
    try:
        source, choice = source_for_corpus(corpus, description, cli_builder(args), progress=bar)
    finally:
        bar.close()
    picked = ", ".join(f"{label} {score:.3f}" for label, score in zip(choice.labels, choice.scores, strict=True))
    print(f"heads {description['heads']}: {picked} ({choice.sentences} training sentences)")
    return source, choice


def best_line(result: Any) -> str:
    """The run's best validation loss and its step, and why it ended (the best is what generate uses)."""
    from llmcomp.training.convergence import STOP_REASONS

    why = STOP_REASONS.get(result.stop_reason, result.stop_reason)
    if result.best_val_loss is None:
        return f"ended: {why}"
    return f"best val loss {result.best_val_loss:.4f} at step {result.best_step}; ended: {why}"


def seen_note(metrics: list[dict[str, Any]]) -> str:
    """`` (leak-free; under training-time rows X)`` when the run reported ``val_loss_seen``, else nothing."""
    last = next((m for m in reversed(metrics) if "val_loss" in m), {})
    seen = last.get("val_loss_seen")
    return "" if seen is None else f" (leak-free; under the training-time rows: {seen:.4f})"


def task_line(name: str, metrics: list[dict[str, Any]]) -> str:
    """The last validation's numbers at the task's decided positions, in one line."""
    last = next((m for m in reversed(metrics) if "val_loss" in m), {})
    if "val_focus_loss" not in last:
        return f"task {name}: no decided positions in the validation sentences"
    mass = last.get("val_target_mass")
    return f"task {name}: focus loss {last['val_focus_loss']:.4f}, focus accuracy {last['val_focus_acc']:.3f}, " + (
        f"target mass {mass:.3f}" if mass is not None else "target mass – (no supplied heads or targets)"
    )
