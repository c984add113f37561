"""Learning speed: ``llmcomp``'s trainer with its defaults against a plain training loop, same model, same data.

Issue 12: on the binding-recall corpus a plain loop learned in a third of the steps ``llmcomp train`` needed.
Both loops here train the library's GPT (2 layers, d=64) on the same split of ``data/binding.txt`` (2,000
sentences, 1,800 for training) and are validated every 50 steps on the same 200 sentences:

* ``plain loop``: written here, nanoGPT-style: uniformly random batches of 64 training sentences, AdamW at a
  constant 3e-3 with torch's defaults, no warm-up, no clipping, no dropout, an untied output head;
* ``llmcomp defaults``: ``Trainer`` with ``TrainConfig()`` and ``GPTConfig()`` as they are (steps aside).

For each attention source (uniform, as ``llmcomp train`` defaults to, and learned, where the recall can be
learned within the run) it reports the validation loss and the focus loss (on the recalled nouns,
``decided_positions``) at steps 200, 400 and 600, and the steps each loop needs to reach a target validation
loss: the plain loop's median loss at two thirds of the run, so the plain loop always reaches it. Medians over
seeds; ``x plain steps`` is the trainer's steps over the plain loop's (above 1: the defaults learn slower).
A loop that never reaches the target counts as one validation past the end (shown as ">600").

Run: ``python -m bench.recipe [--quick]`` (one seed instead of three).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch

from bench.common import machine, print_table
from llmcomp.attention import make_source
from llmcomp.model import GPT, GPTConfig
from llmcomp.settings import DATA_DIR
from llmcomp.text import load_corpus
from llmcomp.text.binding import decided_positions
from llmcomp.threads import torch_threads
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.batching import collate
from llmcomp.training.data import PreparedData, evaluate

SOURCES = ("uniform", "learned")
STEPS = 600
CHECKS = (200, 400, 600)
EVAL_EVERY = 50
PLAIN = "plain loop"
DEFAULTS = "llmcomp defaults"
Curve = dict[int, dict[str, float]]  # step -> {"loss", "focus_loss"}


def binding_focus(words: list[str]) -> list[int]:
    """The recall cues: positions whose next word an earlier word decides."""
    return list(decided_positions(words))


def plain_loop(prepared: PreparedData, cfg: GPTConfig, pad_id: int, seed: int, steps: int = STEPS) -> Curve:
    """The hand-written loop the defaults are held to (module docstring); validated every EVAL_EVERY steps."""
    torch.manual_seed(seed)
    model = GPT(replace(cfg, tie_weights=False, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    train, curve = prepared.train_examples, {}
    model.train()
    for step in range(1, steps + 1):
        b = collate([train[i] for i in torch.randint(len(train), (64,), generator=g).tolist()], pad_id)
        loss = model.token_losses(b.x, b.att if b.att.shape[1] else None, b.y)[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % EVAL_EVERY == 0:
            curve[step] = evaluate(model, prepared.val_examples, pad_id, 128)
    return curve


def defaults_loop(trainer: Trainer, seed: int, steps: int = STEPS) -> Curve:
    """``Trainer`` with the library's defaults (only steps, seed and the validation interval set)."""
    cfg = TrainConfig(steps=steps, seed=seed, eval_every=EVAL_EVERY)
    t = Trainer(trainer.corpus, trainer.source, None, cfg, focus=trainer.focus, prepared=trainer.prepared)
    metrics = t.run().metrics
    return {m["step"]: {"loss": m["val_loss"], "focus_loss": m["val_focus_loss"]} for m in metrics if "val_loss" in m}


def steps_to(curve: Curve, target: float, steps: int = STEPS) -> int:
    """First validated step at or below ``target``; one validation past the end if never."""
    return min((s for s, v in curve.items() if v["loss"] <= target), default=steps + EVAL_EVERY)


def compare_source(kind: str, seeds: list[int], steps: int = STEPS) -> list[dict]:
    """Both loops on one source over ``seeds``: one row per loop, medians, and the trainer's step ratio."""
    corpus = load_corpus(DATA_DIR / "binding.txt")
    base = Trainer(corpus, make_source(kind), None, TrainConfig(steps=1), focus=binding_focus)
    base.prepare()
    assert base.prepared is not None
    curves = {
        PLAIN: [plain_loop(base.prepared, base.model.config, base.vocab.pad_id, s, steps) for s in seeds],
        DEFAULTS: [defaults_loop(base, s, steps) for s in seeds],
    }
    at = (2 * steps // 3) // EVAL_EVERY * EVAL_EVERY
    target = statistics.median(c[at]["loss"] for c in curves[PLAIN])
    rows = []
    for loop, cs in curves.items():
        row: dict = {"source": kind, "loop": loop}
        for s in (c for c in CHECKS if c <= steps):
            row[f"val {s}"] = statistics.median(c[s]["loss"] for c in cs)
            row[f"focus {s}"] = statistics.median(c[s]["focus_loss"] for c in cs)
        reached = statistics.median(steps_to(c, target, steps) for c in cs)
        row["target"] = target
        row["steps to target"] = reached if reached <= steps else f">{steps}"
        row["_steps"] = reached
        row["seeds"] = len(cs)
        rows.append(row)
    for row in rows:
        row["x plain steps"] = row["_steps"] / rows[0]["_steps"]
    return rows


def run(quick: bool = False) -> list[dict]:
    seeds = [0] if quick else [0, 1, 2]
    with torch_threads(1):  # as the trainer trains by default; the loops run one after another
        rows = [r for kind in SOURCES for r in compare_source(kind, seeds)]
    columns = ["source", "loop", *(f"{k} {s}" for s in CHECKS for k in ("val", "focus"))]
    print_table(
        f"learning speed on binding.txt: medians over {len(seeds)} seed(s), 2x64 model; {machine()}",
        rows,
        [*columns, "target", "steps to target", "x plain steps"],
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed instead of three")
    run(quick=p.parse_args().quick)


if __name__ == "__main__":
    main()
