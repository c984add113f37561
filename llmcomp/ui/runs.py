"""The runs a browser may see, as the Train, Generate and Compare tabs list and look them up (shared
here so that no tab imports another)."""

from __future__ import annotations

from llmcomp.app.jobs import owner_tag
from llmcomp.training.run_summary import RunSummary, list_runs
from llmcomp.ui.common import AppContext, UserError

NEW_RUN = ""


def visible_runs(ctx: AppContext, owner: str | None) -> list[RunSummary]:
    """Runs this browser may see: its own and those made outside the app (CLI, experiments)."""
    return list_runs(ctx.paths.runs, visible_to=owner_tag(owner) or "", everyone=True)


def run_choices(runs: list[RunSummary], new_label: str | None = None) -> list[tuple[str, str]]:
    """Dropdown choices, newest first (and "start a new run" first when ``new_label`` is given)."""
    out = [(new_label, NEW_RUN)] if new_label else []
    for r in reversed(runs):
        val = f"val {r.final_val_loss:.3f}" if r.final_val_loss is not None else "no val yet"
        if r.best_val_loss is not None:
            val += f" · best {r.best_val_loss:.3f} at step {r.best_step}"
        out.append((f"{r.name} · {r.source} · step {r.steps}/{r.total_steps} · {val}", r.name))
    return out


def find_run(ctx: AppContext, owner: str | None, name: str) -> RunSummary:
    """A visible run by folder name (never a path from the client)."""
    for r in visible_runs(ctx, owner):
        if r.name == name:
            return r
    raise UserError(f"no saved run named {name!r}; refresh the list and pick one")
