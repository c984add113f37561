"""Train tab: hyperparameters, Start/Stop, a live loss plot fed by polling the background job.

Training runs in a worker thread owned by the process (``llmcomp.training.jobs``); the click
handlers only start and stop it, and a ``gr.Timer`` polls its snapshot every second. The job
belongs to the browser that started it (an id kept in the browser), so a refreshed page or a
second tab of the same browser re-attaches, and other visitors see only that the trainer is busy.
"""

from __future__ import annotations

import html
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from llmcomp.plots import loss_figure
from llmcomp.training.jobs import JobSnapshot, TrainingJob, format_seconds, owner_tag
from llmcomp.training.run_summary import RunSummary, list_runs
from llmcomp.ui import sources
from llmcomp.ui.attention_tab import charge_owner_key
from llmcomp.ui.common import AppContext, error, note, owner_of, progress_bar
from llmcomp.ui.sources import USER_ERRORS, one_line
from llmcomp.ui.state import Session

NEW_RUN = ""


@dataclass
class TrainTab:
    setup: gr.HTML
    resume: gr.Dropdown
    message: gr.HTML
    progress: gr.HTML
    status: gr.HTML
    plot: gr.Plot
    job: gr.JSON
    seen: gr.State
    timer: gr.Timer
    describe_setup: Callable[..., Any]  # handler: what a new run would train on, and the runs to resume
    training_status: Callable[..., Any]  # handler: the poll (also run on page load to re-attach)

    @property
    def poll_outputs(self) -> list:
        return [self.status, self.progress, self.plot, self.job, self.seen]


def visible_runs(ctx: AppContext, owner: str | None) -> list[RunSummary]:
    """Runs this browser may see: its own and those made outside the app (CLI, experiments)."""
    return list_runs(ctx.paths.runs, visible_to=owner_tag(owner) or "", everyone=True)


def run_choices(runs: list[RunSummary], new_label: str | None = None) -> list[tuple[str, str]]:
    out = [(new_label, NEW_RUN)] if new_label else []
    for r in reversed(runs):
        val = f"val {r.final_val_loss:.3f}" if r.final_val_loss is not None else "no val yet"
        out.append((f"{r.name} · {r.source} · step {r.steps}/{r.total_steps} · {val}", r.name))
    return out


def find_run(ctx: AppContext, owner: str | None, name: str) -> RunSummary:
    """A visible run by folder name (never a path from the client)."""
    for r in visible_runs(ctx, owner):
        if r.name == name:
            return r
    raise sources.SourceFormError(f"no saved run named {name!r}; refresh the list and pick one")


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
        "run": Path(snap.run_dir).name if snap.run_dir else None,
        "summary": snap.summary(),
    }


def build(ctx: AppContext, session: gr.State) -> TrainTab:
    setup = gr.HTML(elem_id="train-setup")
    with gr.Row():
        steps = gr.Number(300, precision=0, minimum=1, label="Steps", elem_id="train-steps")
        batch_size = gr.Number(32, precision=0, minimum=1, maximum=512, label="Batch size", elem_id="train-batch")
        lr = gr.Number(3e-3, minimum=1e-6, maximum=1.0, label="Learning rate", elem_id="train-lr")
        eval_every = gr.Number(25, precision=0, minimum=1, label="Validate every (steps)", elem_id="train-eval")
    with gr.Row():
        n_layer = gr.Slider(1, 6, value=2, step=1, label="Layers", elem_id="train-layers")
        n_embd = gr.Dropdown([16, 32, 64, 128, 256], value=64, label="Width (n_embd)", elem_id="train-width")
        learned_heads = gr.Slider(0, 8, value=0, step=1, label="Learned heads beside the supplied ones")
        dropout = gr.Slider(0.0, 0.5, value=0.1, step=0.05, label="Dropout")
        seed = gr.Number(0, precision=0, label="Seed")
    with gr.Row():
        resume = gr.Dropdown(
            [("(start a new run)", NEW_RUN)],
            value=NEW_RUN,
            label="Run (resume one, or start new)",
            allow_custom_value=True,
            elem_id="train-resume",
            scale=3,
        )
        refresh = gr.Button("↻", scale=0, min_width=50, elem_id="train-refresh")
    with gr.Row():
        start_btn = gr.Button("Start", variant="primary", elem_id="start-btn")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
        download_btn = gr.Button("Download checkpoint (.zip)", elem_id="download-ckpt-btn")
    message = gr.HTML(elem_id="train-message")
    progress = gr.HTML(elem_id="train-progress")
    status = gr.HTML(elem_id="train-status")
    plot = gr.Plot(label="Loss", elem_id="loss-plot")
    ckpt_file = gr.File(label="Checkpoint", elem_id="ckpt-file", visible=False)
    with gr.Accordion("Job details (JSON)", open=False):
        job = gr.JSON(elem_id="job-json")
    seen = gr.State("")
    timer = gr.Timer(1.0)

    def describe_setup(state: Session, request: gr.Request):
        corpus = ctx.corpus_of(state)
        choices = run_choices(visible_runs(ctx, owner_of(state, request)), "(start a new run)")
        text = (
            f"<p><b>Corpus:</b> {html.escape(corpus.name)} ({len(corpus.train_idx):,} training and "
            f"{len(corpus.val_idx):,} validation sentences) · <b>Attention:</b> "
            f"{html.escape(sources.settings_label(state.settings))} (change them in the Corpus and Attention tabs). "
            "A new run scores the whole corpus first (cached sources are instant the second time).</p>"
        )
        return text, gr.update(choices=choices)

    def start_training(
        steps, batch_size, lr, eval_every, n_layer, n_embd, learned_heads, dropout, seed, resume,
        state: Session, request: gr.Request,
    ):  # fmt: skip
        """Start training in the background (one run at a time per server); poll training_status."""
        from llmcomp.model import GPTConfig
        from llmcomp.training import TrainConfig, Trainer, load_checkpoint

        owner = owner_of(state, request)
        try:
            ctx.jobs.check_free(owner)
            steps, batch_size, eval_every = int(steps), int(batch_size), int(eval_every)
            if steps < 1 or batch_size < 1 or eval_every < 1:
                raise sources.SourceFormError("steps, batch size and 'validate every' must be at least 1")
            if not 0 < float(lr) <= 1:
                raise sources.SourceFormError("the learning rate must be between 0 and 1 (try 0.003)")
            corpus = ctx.corpus_of(state)
            tcfg = TrainConfig(
                steps=steps,
                batch_size=batch_size,
                lr=float(lr),
                eval_every=min(eval_every, steps),
                log_every=max(1, min(10, eval_every, steps // 20 or 1)),
                seed=int(seed or 0),
                warmup_steps=min(30, max(1, steps // 10)),
            )
            if resume:
                run = find_run(ctx, owner, str(resume))
                if steps <= run.steps:
                    raise sources.SourceFormError(
                        f"run {run.name} is already at step {run.steps}; set Steps above {run.steps} to continue it"
                    )
                spec = load_checkpoint(run.checkpoint).source_spec
                built = sources.build_from_spec(spec, state.api_key, ctx.cache(), ctx.budget, state.owner_key_usage)
                run_dir, resume_from = run.path, run.checkpoint
            else:
                built = sources.build(state.settings, state.api_key, ctx.cache(), ctx.budget, state.owner_key_usage)
                stamp = time.strftime("%Y%m%d-%H%M%S")
                run_dir = ctx.paths.runs / f"{stamp}-{built.source.kind}-{secrets.token_hex(2)}"
                resume_from = None
            if built.owner_key:
                est = built.source.estimate(corpus.sentences)
                ctx.budget.check(state.owner_key_usage, est.requests, est.prompt_tokens + est.completion_tokens)
            mcfg = GPTConfig(
                n_layer=int(n_layer), n_embd=int(n_embd), n_learned_heads=int(learned_heads), dropout=float(dropout)
            )
            trainer = Trainer(corpus, built.source, mcfg, tcfg, run_dir=run_dir, resume_from=resume_from)
        except USER_ERRORS as e:
            return error(one_line(e))

        def finished(job: TrainingJob) -> None:
            charge_owner_key(ctx, built, built.source, state)
            built.source.close()

        label = f"{built.source.describe()} on {corpus.name}"
        try:
            ctx.jobs.start(trainer, owner=owner, label=label, on_finish=finished)
        except USER_ERRORS as e:
            built.source.close()
            return error(one_line(e))
        what = (
            f"resumed {Path(run_dir).name} at step {trainer.step}" if resume_from else f"started {Path(run_dir).name}"
        )
        return note(f"{what}: {label}, {trainer.model.num_params():,} parameters", "ok")

    def stop_training(state: Session, request: gr.Request):
        """Stop this browser's running training job (it saves a checkpoint first)."""
        try:
            snap = ctx.jobs.stop(owner_of(state, request))
        except USER_ERRORS as e:
            return error(one_line(e))
        return note(f"stopping at step {snap.step}; the checkpoint is saved when the current step ends", "busy")

    def training_status(state: Session, seen: str, request: gr.Request):
        """The training job of this browser: status line, progress, loss plot and details."""
        owner = owner_of(state, request)
        job = ctx.jobs.job_for(owner)
        active = ctx.jobs.active()
        if job is None:
            if active is not None:
                snap = active.snapshot()
                where = f"step {snap.step}/{snap.total_steps}" if snap.status == "training" else "scoring"
                text = note(f"another session is training ({where}); you can start a run when it ends", "busy")
                return text, "", gr.skip(), {"status": "busy", "summary": "another session is training"}, seen
            return (
                note("no training run in this browser yet; press Start", "info"),
                "",
                gr.skip(),
                {"status": "idle", "summary": "no training run in this browser yet"},
                seen,
            )
        snap = job.snapshot()
        kind = {"failed": "error", "finished": "ok", "stopped": "warn"}.get(snap.status, "busy")
        if snap.status == "scoring":
            bar_label = (
                f"scoring attention: {snap.scoring.get('done', 0):,} of {snap.scoring.get('sentences', 0):,} sentences"
            )
        else:
            bar_label = f"step {snap.step:,} of {snap.total_steps:,} ({snap.progress:.0%})"
        bar = progress_bar(int(snap.progress * 1000), 1000, bar_label)
        key = f"{snap.job_id}:{len(snap.metrics)}:{snap.status}"
        fig = gr.skip() if key == seen else loss_figure(list(snap.metrics), total_steps=snap.total_steps)
        extra = ""
        if snap.status == "training" and snap.eta_s is not None:
            extra = f" (about {format_seconds(snap.eta_s)} left)"
        return note(snap.summary() + extra, kind), bar, fig, job_json(snap), key

    def download_checkpoint(resume, state: Session, request: gr.Request):
        """Zip a run's checkpoint folder (the selected run, else this browser's latest job)."""
        owner = owner_of(state, request)
        try:
            if resume:
                folder = find_run(ctx, owner, str(resume)).checkpoint
            else:
                job = ctx.jobs.job_for(owner)
                if job is None:
                    raise sources.SourceFormError("no run to download yet: train one, or pick a saved run above")
                snap = job.snapshot()
                if snap.running:
                    raise sources.SourceFormError(
                        "the checkpoint is written when the run finishes or is stopped; stop it or wait"
                    )
                if not snap.checkpoint:
                    raise sources.SourceFormError(f"the last run {snap.status} without a checkpoint")
                folder = Path(snap.checkpoint)
            if not (folder / "checkpoint.json").is_file():
                raise sources.SourceFormError(f"{folder.parent.name} has no checkpoint yet")
        except USER_ERRORS as e:
            return gr.skip(), error(one_line(e))
        out = ctx.session_dir(state, request) / f"{folder.parent.name}-checkpoint"
        archive = shutil.make_archive(str(out), "zip", root_dir=folder)
        size = Path(archive).stat().st_size
        return archive, note(f"{Path(archive).name} ({size / 1e6:.1f} MB): weights, config, vocabulary, metrics", "ok")

    tab = TrainTab(setup, resume, message, progress, status, plot, job, seen, timer, describe_setup, training_status)
    timer.tick(
        training_status,
        [session, seen],
        tab.poll_outputs,
        api_name="training_status",
        concurrency_limit=None,
        show_progress="hidden",
    )
    start_btn.click(
        start_training,
        [steps, batch_size, lr, eval_every, n_layer, n_embd, learned_heads, dropout, seed, resume, session],
        message,
        api_name="start_training",
    ).then(training_status, [session, seen], tab.poll_outputs, api_visibility="private", show_progress="hidden")
    stop_btn.click(stop_training, session, message, api_name="stop_training", concurrency_limit=None)
    download_btn.click(
        download_checkpoint, [resume, session], [ckpt_file, message], api_name="download_checkpoint"
    ).then(lambda: gr.update(visible=True), None, ckpt_file, api_visibility="private", show_progress="hidden")
    refresh.click(describe_setup, session, [setup, resume], api_visibility="private")
    return tab
