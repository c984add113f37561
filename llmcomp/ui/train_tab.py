"""Train tab: hyperparameters, Start/Stop, a live loss plot fed by polling the background job.

Training runs in a worker thread owned by the process (``llmcomp.app.jobs``); the click handlers
only start and stop it, and a ``gr.Timer`` polls its snapshot every second. The job belongs to the
browser that started it (an id kept in the browser), so a refreshed page or a second tab of the
same browser re-attaches, and other visitors see only that the trainer is busy. Each poll renews the
run's lease: a run that no page polls for ``train_actions.TRAINING_LEASE_S`` is stopped (and saved),
so a closed page never holds the server's one training slot.

Layout and wiring only: what the buttons do is in ``llmcomp.ui.train_actions``.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from llmcomp.training.run_summary import LEAK_NOTE
from llmcomp.ui import train_actions as act
from llmcomp.ui.common import AppContext, UserError, failed
from llmcomp.ui.runs import NEW_RUN
from llmcomp.ui.state import Session


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
    device: gr.Dropdown  # its choices: what this machine has, filled when the page loads (app.py)
    describe_setup: Callable[..., Any]  # handler: what a new run would train on, and the runs to resume
    training_status: Callable[..., Any]  # handler: the poll (also run on page load to re-attach)

    @property
    def poll_outputs(self) -> list:
        return [self.status, self.progress, self.plot, self.job, self.seen]


def build(ctx: AppContext, session: gr.State, form_first: Callable[[Any], Any]) -> TrainTab:
    """``form_first(trigger)``: an event that puts the Attention tab's form into the session, run before Start
    (a source chosen a moment ago may have its change event handled after the click)."""
    D = act.form_defaults()  # noqa: N806 - the configs' defaults, read once per page
    setup = gr.HTML(label="What a new run trains on", elem_id="train-setup")
    with gr.Row():
        steps = gr.Number(D["steps"], precision=0, minimum=1, label="Steps", elem_id="train-steps")
        batch_size = gr.Number(
            D["batch_size"], precision=0, minimum=1, maximum=512, label="Batch size", elem_id="train-batch"
        )
        lr = gr.Number(D["lr"], minimum=1e-6, maximum=1.0, label="Learning rate", elem_id="train-lr")
        eval_every = gr.Number(
            D["eval_every"], precision=0, minimum=1, label="Validate every (steps)", elem_id="train-eval"
        )
        patience = gr.Number(
            D["patience"], precision=0, minimum=0, label="Stop early after (validations without improvement; 0: never)",
            elem_id="train-patience",
        )  # fmt: skip
    with gr.Row():
        n_layer = gr.Slider(1, 6, value=D["n_layer"], step=1, label="Layers", elem_id="train-layers")
        n_embd = gr.Dropdown([16, 32, 64, 128, 256], value=D["n_embd"], label="Width (n_embd)", elem_id="train-width")
        learned_heads = gr.Slider(
            0,
            8,
            value=D["n_learned_heads"],
            step=1,
            label="Learned heads beside the supplied ones",
            elem_id="train-learned",
        )
        mix_heads = gr.Slider(
            0,
            4,
            value=D["mix_heads"],
            step=1,
            label="Mixed heads per layer (learned weights over the source's heads; 0: off)",
            elem_id="train-mix",
        )
        dropout = gr.Slider(0.0, 0.5, value=D["dropout"], step=0.05, label="Dropout", elem_id="train-dropout")
        seed = gr.Number(D["seed"], precision=0, label="Seed", elem_id="train-seed")
        device = gr.Dropdown(
            [D["device"], "cpu"], value=D["device"], label="Device", allow_custom_value=True, elem_id="train-device",
            info="where the model trains: auto takes a GPU where there is one",
        )  # fmt: skip
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
    message = gr.HTML(label="Training message", elem_id="train-message")
    progress = gr.HTML(label="Training progress", elem_id="train-progress")
    status = gr.HTML(label="Training status", elem_id="train-status")
    badge = gr.HTML(
        label="Leak-free validation badge", elem_id="train-leak-badge"
    )  # beside the loss: validation scored prefix by prefix
    plot = gr.Plot(label="Loss", elem_id="loss-plot")
    ckpt_file = gr.File(label="Checkpoint", elem_id="ckpt-file", visible=False)
    with gr.Accordion("Job details (JSON)", open=False):
        job = gr.JSON(label="Training job", elem_id="job-json")
    seen = gr.State("")
    timer = gr.Timer(1.0)

    # --- handlers: thin, named as the API documents them ---------------------------------------
    def describe_setup(state: Session, request: gr.Request):
        return act.describe_setup(ctx, state, request)

    def start_training(
        steps, batch_size, lr, eval_every, n_layer, n_embd, learned_heads, dropout, seed, resume, mix_heads, patience,
        device, state: Session, request: gr.Request,
    ):  # fmt: skip
        """Start training in the background (one run at a time per server); poll training_status. patience:
        stop once this many validations in a row have not improved the best loss (0: train every step);
        device: auto, cpu or a GPU this machine has (the local LLM's is the Attention tab's)."""
        try:
            form = {
                "steps": int(steps), "batch_size": int(batch_size), "lr": float(lr), "eval_every": int(eval_every),
                "seed": int(seed or 0), "n_layer": int(n_layer), "n_embd": int(n_embd),
                "n_learned_heads": int(learned_heads), "dropout": float(dropout), "mix_heads": int(mix_heads),
                "patience": int(patience), "device": str(device or D["device"]),
            }  # fmt: skip
        except (TypeError, ValueError):
            return failed(UserError("fill in every number: steps, batch size, learning rate, ..."))
        return act.start(ctx, state, request, form, str(resume or ""))

    def stop_training(state: Session, request: gr.Request):
        """Stop this browser's running training job (it saves a checkpoint first)."""
        return act.stop(ctx, state, request)

    def training_status(state: Session, seen: str, request: gr.Request):
        """The training job of this browser: status line, progress, loss plot and details."""
        return act.status(ctx, state, seen, request)

    def download_checkpoint(resume, state: Session, request: gr.Request):
        """Zip a run's checkpoint folder (the selected run, else this browser's latest job)."""
        return act.download(ctx, state, request, str(resume or ""))

    # --- wiring -------------------------------------------------------------------------------
    tab = TrainTab(
        setup, resume, message, progress, status, plot, job, seen, timer, device, describe_setup, training_status
    )
    timer.tick(
        training_status,
        [session, seen],
        tab.poll_outputs,
        api_name="training_status",
        concurrency_limit=None,
        show_progress="hidden",
    )
    form_first(start_btn.click).then(
        start_training,
        [
            steps,
            batch_size,
            lr,
            eval_every,
            n_layer,
            n_embd,
            learned_heads,
            dropout,
            seed,
            resume,
            mix_heads,
            patience,
            device,
            session,
        ],  # fmt: skip
        message,
        api_name="start_training",
    ).then(training_status, [session, seen], tab.poll_outputs, api_visibility="private", show_progress="hidden")
    stop_btn.click(stop_training, session, message, api_name="stop_training", concurrency_limit=None)
    download_btn.click(
        download_checkpoint, [resume, session], [ckpt_file, message], api_name="download_checkpoint"
    ).then(lambda: gr.update(visible=True), None, ckpt_file, api_visibility="private", show_progress="hidden")
    refresh.click(describe_setup, session, [setup, resume], api_visibility="private")
    job.change(leak_badge, job, badge, api_visibility="private", show_progress="hidden")
    return tab


def leak_badge(job: dict[str, Any] | None) -> str:
    """A label beside the loss when the run reports ``val_loss_seen``: its source's training rows may see later
    words, so the val loss shown is scored prefix by prefix (leak-free) and the other is only beside it."""
    metrics = (job or {}).get("metrics") or []
    seen = [m["val_loss_seen"] for m in metrics if isinstance(m, dict) and isinstance(m.get("val_loss_seen"), float)]
    if not seen:
        return ""
    title = html.escape(f"This source {LEAK_NOTE}.", quote=True)
    return (
        f'<span class="llmcomp-badge" title="{title}" style="border:1px solid #b45309;border-radius:6px;'
        f'padding:1px 6px;color:#b45309;font-size:0.85em">leak-free val loss · training-time rows: {seen[-1]:.3f}'
        "</span>"
    )
