"""The summary table as GitHub markdown, as ``llmcomp compare`` prints it and writes it to ``summary.md``."""

from __future__ import annotations

import math

import pandas as pd

from llmcomp.training.run_summary import LEAK_NOTE


def _fmt(x: float, nd: int = 3) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.{nd}f}"


def table_markdown(table: pd.DataFrame, reference: str = "uniform", budget: int | None = None) -> str:
    """The summary table as GitHub markdown: mean ± sample std across seeds, then min–max. ``budget``: a
    convergence run's fixed budget, whose validation loss (learning speed) then gets its own column."""
    focus = table["val_focus_loss_mean"].notna().any() if len(table) else False
    head = ["source", "seeds", "val loss (mean ± std)", "val loss min–max", f"Δ vs {reference}, paired", "perplexity"]
    head += [*([f"val loss at step {budget}"] if budget else []), "best val loss (mean ± std)", "best step"]
    head += [f"val AUC to step {budget}" if budget else "val AUC"]
    if focus:
        head += ["focus loss (mean ± std)", "focus loss min–max", "focus acc (mean ± std)", "target mass"]
    head += ["tokens/s", "attention s", "requests", "tokens", "cached"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    leaky: list[str] = []
    for r in table.to_dict("records"):
        if not pd.isna(r.get("val_loss_seen_mean", math.nan)):
            leaky.append(f"{r['source']} {_fmt(r['val_loss_seen_mean'])}")
        cells = [
            f"{r['source']} †" if not pd.isna(r.get("val_loss_seen_mean", math.nan)) else r["source"],
            str(r["seeds"]),
            f"{_fmt(r['val_loss_mean'])} ± {_fmt(r['val_loss_std'])}",
            f"{_fmt(r['val_loss_min'])}–{_fmt(r['val_loss_max'])}",
            f"{r['delta_vs_reference_mean']:+.3f} ± {_fmt(r['delta_vs_reference_std'])}"
            if not pd.isna(r["delta_vs_reference_mean"])
            else "–",
            f"{_fmt(r['val_ppl_mean'], 2)} ± {_fmt(r['val_ppl_std'], 2)}",
            *([f"{_fmt(r['budget_val_loss_mean'])} ± {_fmt(r['budget_val_loss_std'])}"] if budget else []),
            f"{_fmt(r['best_val_loss_mean'])} ± {_fmt(r['best_val_loss_std'])}",
            _fmt(r["best_step_mean"], 0),
            f"{_fmt(r['val_auc_mean'])} ± {_fmt(r['val_auc_std'])}",
        ]
        if focus:
            cells += [
                f"{_fmt(r['val_focus_loss_mean'])} ± {_fmt(r['val_focus_loss_std'])}",
                f"{_fmt(r['val_focus_loss_min'])}–{_fmt(r['val_focus_loss_max'])}",
                f"{_fmt(r['val_focus_acc_mean'])} ± {_fmt(r['val_focus_acc_std'])}",
                "–"
                if pd.isna(r["target_mass_mean"])
                else f"{_fmt(r['target_mass_mean'])} ± {_fmt(r['target_mass_std'])}",
            ]
        speed = r["tokens_per_s_mean"]
        cells += [
            "–" if pd.isna(speed) else f"{speed:,.0f}",
            _fmt(r["attention_seconds"], 1),
            f"{r['requests']:,}",
            f"{r['tokens']:,}",
            f"{r['cached']:,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if leaky:
        lines += ["", f"† {LEAK_NOTE}. val_loss_seen (mean): {', '.join(leaky)}."]
    return "\n".join(lines)
