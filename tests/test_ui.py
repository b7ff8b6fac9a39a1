"""The live display's progress bar: steps for a run of --max-iters, the budget for a
--max-time run (whose steps are planned as it goes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinygpt_cli import ui
from tinygpt_cli.config import ModelConfig, TrainConfig
from tinygpt_cli.events import EvalDone, RunStarted, StepDone


def started(max_time: float) -> RunStarted:
    return RunStarted("cpu", "float32", 1, {"total": 10, "embedding": 4, "other": 6}, 256, 0,
                      5000, ModelConfig(vocab_size=100), TrainConfig(max_time=max_time), {},
                      Path("model.ckpt"), None)


@pytest.mark.parametrize("max_time", [0.0, 120.0])
def test_the_bar_counts_steps_or_the_budget(max_time):
    display = ui.LiveTrainDisplay()
    with display:
        display.handle(started(max_time))
        display.handle(StepDone(99, 5.0, 1e-3, 1000.0, 30.0))
        display.handle(EvalDone(100, 5.0, 5.0, True, 1e-3, 1000.0, None, 31.0))
        task = display.progress.tasks[0]
        if max_time:
            assert (task.completed, task.total) == (30.0, 120.0)  # a quarter of the budget
            assert task.fields["label"] == "step 100"
            assert task.fields["eta"] == "1:30"  # what the budget has left
        else:
            assert (task.completed, task.total) == (100, 5000)
            assert task.fields["label"] == "step 100/5000"


def test_a_timed_run_that_max_iters_ends_first_fills_the_bar_by_steps():
    display = ui.LiveTrainDisplay()
    with display:
        display.handle(RunStarted("cpu", "float32", 1, {"total": 10, "embedding": 4, "other": 6},
                                  256, 0, 200, ModelConfig(vocab_size=100),
                                  TrainConfig(max_time=600.0), {}, Path("model.ckpt"), None))
        for step, elapsed in ((49, 5.0), (99, 10.0)):
            display.handle(StepDone(step, 5.0, 1e-3, 1000.0, elapsed))
        task = display.progress.tasks[0]
        assert task.completed == pytest.approx(300.0)  # half the steps: half the bar
        assert task.fields["eta"] == "0:10"  # 100 steps left at 10 steps a second
