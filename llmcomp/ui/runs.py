"""The runs a browser may see, as the Train, Generate and Compare tabs list and look them up (shared
here so that no tab imports another)."""

from __future__ import annotations

from llmcomp.app import run_list
from llmcomp.app.jobs import owner_tag
from llmcomp.training.run_summary import RunSummary
from llmcomp.ui.common import AppContext, UserError

NEW_RUN = ""


def visible_runs(ctx: AppContext, owner: str | None, live: bool = False) -> list[RunSummary]:
    """Runs this browser or API client may see: on a private server (loopback or a login) every run; on a
    public one its own and those made outside the app (CLI, experiments). ``live`` adds runs in progress."""
    return run_list.visible(ctx.paths.runs, owner_tag(owner), ctx.public, live=live)


def run_label(r: RunSummary) -> str:
    """A run as a picker names it: its display name (when it has one) and its folder."""
    return f"{r.display_name} · {r.name}" if r.display_name else r.name


def run_choices(runs: list[RunSummary], new_label: str | None = None) -> list[tuple[str, str]]:
    """Dropdown choices, newest first (and "start a new run" first when ``new_label`` is given)."""
    out = [(new_label, NEW_RUN)] if new_label else []
    for r in reversed(runs):
        val = f"val {r.final_val_loss:.3f}" if r.final_val_loss is not None else "no val yet"
        if r.best_val_loss is not None:
            val += f" · best {r.best_val_loss:.3f} at step {r.best_step}"
        out.append((f"{run_label(r)} · {r.source} · step {r.steps}/{r.total_steps} · {val}", r.name))
    return out


def find_run(ctx: AppContext, owner: str | None, name: str) -> RunSummary:
    """A visible run by folder name (never a path from the client)."""
    for r in visible_runs(ctx, owner):
        if r.name == name:
            return r
    raise UserError(f"no saved run named {name!r}; refresh the list and pick one")
