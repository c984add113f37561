"""What the Train tab's buttons do, and how a training job is worded for people: the tab lays out
components and wires them here; starting, stopping and watching runs is the application layer's
(``llmcomp.app.jobs``, ``llmcomp.app.sources``, ``llmcomp.app.scoring``)."""

from __future__ import annotations

import dataclasses
import html
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from llmcomp.app import scoring
from llmcomp.app.jobs import JobSnapshot, clock, owner_tag
from llmcomp.app.sources import build_source
from llmcomp.devices import check_available
from llmcomp.plots import loss_figure
from llmcomp.ui.common import USER_ERRORS, AppContext, UserError, failed, format_seconds, note, owner_of, progress_bar
from llmcomp.ui.runs import find_run, run_choices, visible_runs
from llmcomp.ui.state import Session

if TYPE_CHECKING:
    from llmcomp.app.training_job import TrainingJob

#: a run that no page of its browser has polled for this long is stopped (a checkpoint is saved, so it can
#: be resumed): a closed page must not hold the one training slot. The Train tab polls every second; a
#: hidden tab may be throttled to a poll a minute, hence the margin. API clients poll training_status.
TRAINING_LEASE_S = 300.0
TRAIN_FIELDS = ("steps", "batch_size", "lr", "eval_every", "seed", "patience", "device")  # TrainConfig's
MODEL_FIELDS = ("n_layer", "n_embd", "n_learned_heads", "dropout", "mix_heads")  # GPTConfig's
FORM_FIELDS = TRAIN_FIELDS + MODEL_FIELDS


def form_defaults() -> dict[str, Any]:
    """The form's starting values: TrainConfig's and GPTConfig's own defaults (torch-free modules)."""
    from llmcomp.model.config import GPTConfig
    from llmcomp.training.config import TrainConfig

    defaults = {f.name: f.default for c in (TrainConfig, GPTConfig) for f in dataclasses.fields(c)}
    return {name: defaults[name] for name in FORM_FIELDS}


def status_line(snap: JobSnapshot) -> str:
    """One line about a training job, for the status box."""
    if snap.status == "idle":
        return "no training run yet"
    started = f"started {clock(snap.started_at)}"
    if snap.status == "scoring":
        s = snap.scoring
        return (
            f"scoring attention: {s.get('done', 0)}/{s.get('sentences', 0)} sentences "
            f"({s.get('cached', 0)} cached, {s.get('failed', 0)} failed) · {started}"
        )
    parts = [f"step {snap.step}/{snap.total_steps}"]
    if snap.last_val_loss is not None:
        parts.append(f"val loss {snap.last_val_loss:.3f}")
    best = best_of(snap)
    if best["best_val_loss"] is not None:
        parts.append(f"best {best['best_val_loss']:.3f} at step {best['best_step']}")
    if best["stop_reason"] == "early_stop":
        parts.append("stopped early: validation stopped improving (the best checkpoint is kept)")
    if snap.tokens_per_s:
        parts.append(f"{snap.tokens_per_s:,.0f} tokens/s")
    if snap.status == "training":
        if snap.eta_s is not None:
            parts.append(f"ETA {format_seconds(snap.eta_s)}")
        return "training: " + " · ".join(parts) + f" · {started}"
    if snap.status == "failed":
        return f"failed at step {snap.step}: {snap.error}"
    return f"{snap.status}: " + " · ".join(parts) + (f" ({snap.error})" if snap.error else "")


def best_of(snap: JobSnapshot) -> dict[str, Any]:
    """The run's best validation loss so far, its step, and why the run ended (from its metrics)."""
    from llmcomp.training.convergence import stop_reason

    tracked = next((m for m in reversed(snap.metrics) if "best_val_loss" in m), {})
    return {"best_val_loss": tracked.get("best_val_loss"), "best_step": tracked.get("best_step"),
            "stop_reason": stop_reason(list(snap.metrics))}  # fmt: skip


def job_json(snap: JobSnapshot) -> dict[str, Any]:
    """What the API reports about a job (no paths, no owner)."""
    return {
        "status": snap.status,
        "step": snap.step,
        "total_steps": snap.total_steps,
        "progress": round(snap.progress, 4),
        "eta_s": None if snap.eta_s is None else round(snap.eta_s, 1),
        "tokens_per_s": None if snap.tokens_per_s is None else round(snap.tokens_per_s, 1),
        "scoring": dict(snap.scoring),
        "metrics": [dict(m) for m in snap.metrics],
        "error": snap.error,
        **best_of(snap),
        "run": Path(snap.run_dir).name if snap.run_dir else None,
        "summary": status_line(snap),
    }


def describe_setup(ctx: AppContext, state: Session, request: gr.Request):
    corpus = ctx.corpus_of(state)
    choices = run_choices(visible_runs(ctx, owner_of(state, request)), "(start a new run)")
    text = (
        f"<p><b>Corpus:</b> {html.escape(corpus.name)} ({len(corpus.train_idx):,} training and "
        f"{len(corpus.val_idx):,} validation sentences) · <b>Attention:</b> "
        f"{html.escape(state.settings.label())} (change them in the Corpus and Attention tabs). "
        "A new run scores the whole corpus first (cached sources are instant the second time).</p>"
    )
    return text, gr.update(choices=choices)


def start(ctx: AppContext, state: Session, request: gr.Request, form: dict[str, Any], resume: str) -> str:
    """Start a run (new, or resuming a visible one) as this browser's background job."""
    from llmcomp.app.training import TrainRequest, resume_point, start_training
    from llmcomp.model.config import GPTConfig
    from llmcomp.training.config import TrainConfig

    owner, keys = owner_of(state, request), ctx.keys(state)
    source = None
    try:
        ctx.jobs.check_free(owner)
        check_available(form["device"], "Training device")  # a GPU this machine lacks: one line, in the form's words
        corpus = ctx.corpus_of(state)
        tcfg = TrainConfig(**{k: form[k] for k in TRAIN_FIELDS})
        mcfg = GPTConfig(**{k: form[k] for k in MODEL_FIELDS})
        run_path = find_run(ctx, owner, resume).path if resume else None
        description = resume_point(run_path).source_spec if run_path else state.settings.description()
        source = build_source(description, keys=keys, cache=ctx.cache())
        req = TrainRequest(
            corpus, source, mcfg, tcfg, runs_root=ctx.paths.runs, resume=run_path, owner=owner_tag(owner), task="auto"
        )
        run = start_training(req, check=lambda src, sentences: scoring.check_budget(src, sentences, keys))
        label = f"{source.describe()} on {corpus.name}"

        def finished(job: TrainingJob) -> None:
            keys.charge(job.trainer.source)
            job.trainer.source.close()

        ctx.jobs.start(run, owner=owner, label=label, on_finish=finished, lease_s=TRAINING_LEASE_S)
    except USER_ERRORS as e:
        if source is not None:
            source.close()
        return failed(e)
    name, step = run.run_dir.name, run.trainer.step
    what = f"resumed {name} at step {step}" if run.resumed else f"started {name}"
    return note(f"{what}: {label}, {run.trainer.model.num_params():,} parameters", "ok")


def stop(ctx: AppContext, state: Session, request: gr.Request) -> str:
    try:
        snap = ctx.jobs.stop(owner_of(state, request))
    except USER_ERRORS as e:
        return failed(e)
    if snap.status == "scoring":
        return note("stopping: the scoring pass is cancelled now (what was scored stays in the cache)", "busy")
    return note(f"stopping at step {snap.step}; the checkpoint is saved when the current step ends", "busy")


def status(ctx: AppContext, state: Session, seen: str, request: gr.Request):
    """(status box, progress bar, loss plot, job details, seen key) for this browser's job."""
    job = ctx.jobs.job_for(owner_of(state, request))
    active = ctx.jobs.active()
    if job is None:
        if active is not None:
            snap = active.snapshot()
            where = f"step {snap.step}/{snap.total_steps}" if snap.status == "training" else "scoring"
            text = note(f"another session is training ({where}); you can start a run when it ends", "busy")
            return text, "", gr.skip(), {"status": "busy", "summary": "another session is training"}, seen
        idle = "no training run in this browser yet"
        return note(f"{idle}; press Start", "info"), "", gr.skip(), {"status": "idle", "summary": idle}, seen
    job.touch()  # this browser is watching its run: renew the run's lease
    snap = job.snapshot()
    kind = {"failed": "error", "finished": "ok", "stopped": "warn"}.get(snap.status, "busy")
    if snap.status == "scoring":
        s = snap.scoring
        bar_label = f"scoring attention: {s.get('done', 0):,} of {s.get('sentences', 0):,} sentences"
    else:
        bar_label = f"step {snap.step:,} of {snap.total_steps:,} ({snap.progress:.0%})"
    bar = progress_bar(int(snap.progress * 1000), 1000, bar_label)
    key = f"{snap.job_id}:{len(snap.metrics)}:{snap.status}"
    fig = gr.skip() if key == seen else loss_figure(list(snap.metrics), total_steps=snap.total_steps)
    return note(status_line(snap), kind) + mixture_note(snap), bar, fig, job_json(snap), key  # the ETA is in the line


def mixture_note(snap: JobSnapshot) -> str:
    """Which of the source's heads an ended ``--mix`` run chose (its ``mixture.json``), one line per layer."""
    from llmcomp.training.mixture import MixtureError, mixture_lines, read_mixture

    if snap.running or not snap.run_dir:
        return ""
    try:
        mixture = read_mixture(snap.run_dir)
    except MixtureError as e:
        return failed(e)
    if mixture is None:
        return ""
    lines = ["heads the model chose (softmax weights over the source's heads):", *mixture_lines(mixture)]
    return note(" · ".join(lines), "info")


def download(ctx: AppContext, state: Session, request: gr.Request, resume: str):
    """Zip a run's checkpoint folder (the selected run, else this browser's latest job)."""
    owner = owner_of(state, request)
    try:
        if resume:
            folder = find_run(ctx, owner, resume).checkpoint
        else:
            job = ctx.jobs.job_for(owner)
            if job is None:
                raise UserError("no run to download yet: train one, or pick a saved run above")
            snap = job.snapshot()
            if snap.running:
                raise UserError("the checkpoint is written when the run finishes or is stopped; stop it or wait")
            if not snap.checkpoint:
                raise UserError(f"the last run {snap.status} without a checkpoint")
            folder = Path(snap.checkpoint)
        if not (folder / "checkpoint.json").is_file():
            raise UserError(f"{folder.parent.name} has no checkpoint yet")
    except USER_ERRORS as e:
        return gr.skip(), failed(e)
    out = ctx.session_dir(state, request) / f"{folder.parent.name}-checkpoint"
    archive = shutil.make_archive(str(out), "zip", root_dir=folder)
    size = Path(archive).stat().st_size
    return archive, note(f"{Path(archive).name} ({size / 1e6:.1f} MB): weights, config, vocabulary, metrics", "ok")
