"""Experiment trackers: Weights & Biases and TensorBoard, as subscribers to the training events.

Each tracker is fed the same events as the UI (`handle(event)`) and is closed once at the end
(`close()`, also after an error). Their packages are optional extras, imported only when a tracker
is made; without them the constructor raises a UsageError that says what to install.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .errors import UsageError


class TrackerUnavailable(UsageError):
    """A tracker was asked for but its package is not installed, or it could not start."""


def run_config(model_config: object, train_config: object) -> dict:
    """The run's hyperparameters as one flat dict (the book's h_params), for a tracker's config."""
    return {**asdict(model_config), **asdict(train_config)}


class _Subscriber:
    """Dispatch `handle(event)` to `on_<EventClassName>`; events a tracker ignores cost nothing."""

    def handle(self, event: object) -> None:
        method = getattr(self, f"on_{type(event).__name__}", None)
        if method is not None:
            method(event)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WandbTracker(_Subscriber):
    """Log to Weights & Biases as the book does: wandb.init(project, config), then the losses at
    every evaluation. WANDB_MODE=offline logs locally (sync later with `wandb sync`)."""

    def __init__(self, project: str, config: dict, run_name: str | None = None) -> None:
        try:
            import wandb
        except ImportError:
            raise TrackerUnavailable(
                "--wandb needs the wandb package: pip install 'tinygpt[wandb]'") from None
        self.finished = False  # a run that never reached RunDone shows as failed in W&B
        try:
            self.run = wandb.init(project=project, config=config, name=run_name)
        except wandb.errors.Error as exc:  # not logged in, no network, a bad project name
            raise TrackerUnavailable(
                f"--wandb: could not start a W&B run ({str(exc).strip().splitlines()[0]})",
                hint="run `wandb login`, or set WANDB_MODE=offline to log locally and "
                "`wandb sync` later") from None

    def on_RunStarted(self, e) -> None:  # noqa: N802 - named after the event class
        # what the config passed in cannot know yet: the model's size and where it runs
        self.run.config.update({"parameters": e.params["total"],
                                "tokens_per_step": e.tokens_per_step, "device": e.device,
                                "dtype": e.dtype, "world_size": e.world_size,
                                "data_path": e.data.get("path"),
                                "data_sha256": e.data.get("sha256")}, allow_val_change=True)

    def on_EvalDone(self, e) -> None:  # noqa: N802
        self.run.log({"train_loss": e.train_loss, "valid_loss": e.valid_loss,
                      "tokens_per_sec": e.tokens_per_sec, "lr": e.lr}, step=e.step)

    def on_RunDone(self, e) -> None:  # noqa: N802
        self.run.summary.update({
            "checkpoint": str(e.checkpoint), "steps": e.steps, "stop_reason": e.reason,
            "best_valid_loss": e.best_valid_loss, "best_step": e.best_step,
            "final_train_loss": e.final_train_loss, "final_valid_loss": e.final_valid_loss})
        self.finished = True

    def close(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if self.finished else 1)
            self.run = None


class TensorBoardTracker(_Subscriber):
    """Scalars for TensorBoard (`tensorboard --logdir DIR`): loss/train, loss/valid,
    tokens_per_sec and lr at each evaluation, loss/train_running at each log interval."""

    def __init__(self, log_dir: Path) -> None:
        try:
            import tensorboard  # noqa: F401 - torch's writer needs it; fail here, clearly
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrackerUnavailable(
                "--tensorboard needs the tensorboard package: "
                "pip install 'tinygpt[tensorboard]'") from None
        try:
            self.writer = SummaryWriter(log_dir=str(log_dir))
        except OSError as exc:
            raise TrackerUnavailable(
                f"--tensorboard: cannot write to {log_dir}: {exc.strerror or exc}") from None

    def on_RunStarted(self, e) -> None:  # noqa: N802
        config = {**asdict(e.model_config), **asdict(e.train_config),
                  "parameters": e.params["total"], "tokens_per_step": e.tokens_per_step,
                  "device": e.device, "data": e.data.get("path")}
        # a fenced block: TensorBoard's text tab renders markdown
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str)
                             + "\n```", global_step=e.start_step)

    def on_StepDone(self, e) -> None:  # noqa: N802
        self.writer.add_scalar("loss/train_running", e.loss, e.step)

    def on_EvalDone(self, e) -> None:  # noqa: N802
        self.writer.add_scalar("loss/train", e.train_loss, e.step)
        self.writer.add_scalar("loss/valid", e.valid_loss, e.step)
        self.writer.add_scalar("tokens_per_sec", e.tokens_per_sec, e.step)
        self.writer.add_scalar("lr", e.lr, e.step)

    def on_RunDone(self, e) -> None:  # noqa: N802
        self.writer.add_text("checkpoint", f"{e.checkpoint} ({e.reason} after {e.steps} steps; "
                             f"best valid loss {e.best_valid_loss} at step {e.best_step})",
                             global_step=e.steps)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
