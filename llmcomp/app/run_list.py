"""The runs a caller may see, and what may be done to them: rename (a display name) and delete.

One rule of visibility for the web app's tabs, its API and the CLI: on a private server (bound to
loopback, or behind a login) every run is everyone's; on a public one a visitor sees their own runs
and those made outside the app (CLI, experiments). A run is always looked up by name among the listed
runs, never from a path a client sent.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from llmcomp.errors import LLMCompError
from llmcomp.training import run_folder
from llmcomp.training.run_summary import RunSummary, in_progress, list_runs


class RunError(LLMCompError, ValueError):
    """A run that cannot be found, renamed or deleted, with a one-line reason."""


def visible(runs_dir: str | Path, owner: str | None, public: bool, live: bool = False) -> list[RunSummary]:
    """The runs a caller may see, oldest first. ``owner`` is the caller's owner tag (hashed; None for
    a caller with no id), ``public`` whether the server is public. ``live`` adds runs in progress."""
    if not public:
        return list_runs(runs_dir, visible_to=None, live=live)
    return list_runs(runs_dir, visible_to=owner or "", everyone=True, live=live)


def editable(runs: list[RunSummary], owner: str | None, public: bool) -> list[RunSummary]:
    """The listed runs a caller may rename or delete: on a private server all of them; on a public one only
    the caller's own (a visitor sees the CLI's runs but may not delete them)."""
    return list(runs) if not public else [r for r in runs if owner and r.owner == owner]


def find(runs: list[RunSummary], name: str) -> RunSummary:
    """A run by its folder name among ``runs`` (the listed ones): a name never becomes a path unchecked."""
    for r in runs:
        if r.name == name:
            return r
    raise RunError(f"no run named {name!r} in the list; refresh it and pick one")


def title(run: RunSummary) -> str:
    """How a run is named for people: its display name, else its folder's name."""
    return run.display_name or run.name


def rename(runs: list[RunSummary], name: str, display_name: str) -> RunSummary:
    """Give the listed run ``name`` a display name (stored in its run.json; "" clears it). Returns the run
    as read back."""
    run = find(runs, name)
    try:
        run_folder.set_display_name(run.path, display_name)
    except ValueError as e:
        raise RunError(f"cannot rename {name}: {e}") from e
    run.display_name = " ".join(display_name.split()) or None
    return run


def delete(runs: list[RunSummary], name: str, runs_dir: str | Path, protect: Iterable[Path] = (),
           busy: Iterable[str | Path | None] = ()) -> Path:  # fmt: skip
    """Delete the listed run ``name``: its own folder and nothing else (the attention cache and other runs
    stay). Refuses a run in progress (by its record, or listed in ``busy``: the folders this process's jobs
    write, however long their scoring takes), a folder outside ``runs_dir`` and one that holds a ``protect``
    path (the attention cache). Returns the deleted path."""
    run = find(runs, name)
    root, path = Path(runs_dir).resolve(), run.path
    try:
        record = run_folder.read_record(path)
    except ValueError:
        record = None  # a damaged record is no run in progress
    live = {Path(p).resolve() for p in busy if p}
    if run.status == "training" or in_progress(record, path) or path.resolve() in live:
        raise RunError(f"{title(run)} is in progress: stop it first, then delete it")
    if path.is_symlink() or not path.resolve().is_relative_to(root) or path.resolve() == root:
        raise RunError(f"{name} is not a run folder inside the runs folder; delete it by hand")
    if not (path / run_folder.CHECKPOINT).is_dir() and not (path / run_folder.RECORD).is_file():
        raise RunError(f"{name} holds no checkpoint or run record: not a run folder; delete it by hand")
    inside = [p for p in map(Path, protect) if p.resolve().is_relative_to(path.resolve())]
    if inside:
        raise RunError(f"{name} holds {inside[0].name}, which must stay; delete the run by hand")
    shutil.rmtree(path)
    return path
