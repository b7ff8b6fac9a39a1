"""The events a training run emits, in order: RunStarted, then StepDone, EvalDone,
CheckpointSaved, Sample and Notice as they happen, and RunDone last.

The trainer yields them; `ui.py` turns them into the live table or the book's plain lines, the
trackers log them, and `metrics.py` records the step and evaluation ones. Plain data, stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import ModelConfig, TrainConfig


@dataclass(frozen=True)
class RunStarted:
    device: str
    dtype: str
    world_size: int
    params: dict[str, int]
    tokens_per_step: int
    start_step: int
    max_iters: int
    model_config: ModelConfig
    train_config: TrainConfig
    data: dict
    out: Path
    resumed_from: Path | None


@dataclass(frozen=True)
class StepDone:
    """Every log interval: the mean loss and the tokens/s of the steps since the last one."""

    step: int
    loss: float
    lr: float
    tokens_per_sec: float
    elapsed: float


@dataclass(frozen=True)
class EvalDone:
    """An evaluation; tokens_per_sec is that of the steps since the one before."""

    step: int
    train_loss: float
    valid_loss: float
    best: bool
    lr: float
    tokens_per_sec: float
    mfu: float | None
    elapsed: float


@dataclass(frozen=True)
class CheckpointSaved:
    path: Path
    step: int
    best: bool


@dataclass(frozen=True)
class Notice:
    """Something the user should know: a warning, or (`warning=False`) a plain remark."""

    message: str
    warning: bool = True


@dataclass(frozen=True)
class Sample:
    """A short continuation of the sample prompt, so people watch the model learn."""

    step: int
    prompt: str
    text: str


@dataclass(frozen=True)
class RunDone:
    reason: str  # "finished", "interrupted" (see signum) or "max_time"
    steps: int
    final_train_loss: float | None
    final_valid_loss: float | None
    best_valid_loss: float | None
    best_step: int | None
    seconds: float
    tokens_per_sec: float
    mfu: float | None
    checkpoint: Path
    signum: int | None = None
    final_step: int | None = None  # the evaluation the final losses come from
    report: dict | None = None  # the report card (`Trainer.report_card`)


Event = RunStarted | StepDone | EvalDone | CheckpointSaved | Notice | Sample | RunDone
