"""The training loop through `Trainer`: it learns, evaluation never changes training, resume equals
an uninterrupted run bit for bit, bad steps are skipped and divergence stops the run with the last
good checkpoint intact, and the schedule, metrics file, time limit and signals do what they say."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tinygpt_cli import __version__, runstate
from tinygpt_cli import checkpoint as ckpt
from tinygpt_cli import train as train_mod
from tinygpt_cli.config import ModelConfig, TrainConfig
from tinygpt_cli.errors import DivergedError, UsageError
from tinygpt_cli.events import CheckpointSaved, EvalDone, Notice, RunDone, StepDone
from tinygpt_cli.model import GPT
from tinygpt_cli.runtime import StopSignals, resolve_device, resolve_dtype
from tinygpt_cli.train import Trainer, TrainRequest, check_writable, lr_at

TINY = {"d_model": 16, "num_blocks": 1, "num_heads": 2, "context_length": 16, "dropout": 0.0}
# the book's h_params keys (its table of hyperparameters plus max_token_value)
BOOK_KEYS = {"d_model", "num_blocks", "num_heads", "batch_size", "context_length", "max_iters",
             "learning_rate", "dropout", "eval_interval", "eval_iters", "device",
             "max_token_value"}



def make_trainer(cache, out: Path, *, resume: Path | None = None, model: dict | None = None,
                 **train) -> Trainer:
    cfg = TrainConfig(**{"batch_size": 4, "max_iters": 10, "eval_interval": 5, "eval_iters": 2,
                         "device": "cpu", **train})
    request = TrainRequest(train_config=cfg, model_options={**TINY, **(model or {})},
                           out=out, resume=resume)
    return Trainer(request, cache=cache)


def run_all(trainer: Trainer) -> list:
    try:
        return list(trainer.run())
    finally:
        trainer.close()


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def metrics(out: Path) -> list[dict]:
    lines = ckpt.related_path(out, "metrics").read_text().splitlines()
    return [json.loads(line) for line in lines]


# --- learning ----------------------------------------------------------------------------------

def test_one_batch_overfits_through_train_step(token_cache, tmp_path, monkeypatch):
    trainer = make_trainer(token_cache, tmp_path / "model.ckpt", model={"num_blocks": 2})
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(trainer.model_config.vocab_size, (2, 16), generator=gen)
    y = torch.randint(trainer.model_config.vocab_size, (2, 16), generator=gen)
    monkeypatch.setattr(train_mod, "get_batch", lambda *args, **kwargs: (x, y))
    losses = []
    for _ in range(100):
        losses.append(trainer.train_step(lr=1e-2).item())
        trainer.apply_update()
    assert losses[0] == pytest.approx(math.log(trainer.model_config.vocab_size), abs=0.5)
    assert losses[-1] < 0.05, losses[-10:]
    trainer.model.eval()  # and the model itself now predicts the batch
    _, loss = trainer.model(x, y)
    assert loss.item() < 0.05


def test_evaluation_schedule_does_not_change_training(token_cache, tmp_path):
    runs = {}
    for interval in (2, 5):
        out = tmp_path / f"every{interval}" / "model.ckpt"
        trainer = make_trainer(token_cache, out, max_iters=12, eval_interval=interval,
                               log_interval=1, model={"dropout": 0.2})
        events = run_all(trainer)
        runs[interval] = (events, weights(trainer), out)
    (ev2, w2, out2), (ev5, w5, out5) = runs[2], runs[5]
    assert [e.step for e in of(ev2, EvalDone)] == [0, 2, 4, 6, 8, 10, 11]
    assert [e.step for e in of(ev5, EvalDone)] == [0, 5, 10, 11]
    losses2 = [(e.step, e.loss) for e in of(ev2, StepDone)]
    losses5 = [(e.step, e.loss) for e in of(ev5, StepDone)]
    assert len(losses2) == 12
    assert losses2 == losses5  # bit-exact floats
    train2 = [(r["step"], r["loss"]) for r in metrics(out2) if r["type"] == "train"]
    train5 = [(r["step"], r["loss"]) for r in metrics(out5) if r["type"] == "train"]
    assert train2 == train5 and len(train2) == 12
    assert_same_weights(w2, w5)
    # evaluations at the same step see the same model and the same batches
    e2 = {e.step: (e.train_loss, e.valid_loss) for e in of(ev2, EvalDone)}
    e5 = {e.step: (e.train_loss, e.valid_loss) for e in of(ev5, EvalDone)}
    assert e2[10] == e5[10] and e2[11] == e5[11]


# --- the checkpoint ----------------------------------------------------------------------------

def test_checkpoint_holds_everything_to_continue(token_cache, tmp_path):
    out = tmp_path / "run" / "model.ckpt"
    # "auto" resolves to a device; h_params records that device, as the book's does
    device = "cpu" if torch.cuda.is_available() or torch.backends.mps.is_available() else "auto"
    trainer = make_trainer(token_cache, out, max_iters=3, eval_interval=2, device=device)
    events = run_all(trainer)
    done = of(events, RunDone)[0]
    assert done.reason == "finished" and done.steps == 3 and done.checkpoint == out

    state = torch.load(out, weights_only=True)  # plain tensors and Python types only
    vocab = token_cache.vocab
    assert_same_weights(state["model_state_dict"], weights(trainer))
    assert state["h_params"].keys() >= BOOK_KEYS
    assert state["h_params"]["max_token_value"] == vocab.size
    assert state["h_params"]["d_model"] == 16 and state["h_params"]["batch_size"] == 4
    assert state["h_params"]["device"] == "cpu"
    assert state["model_config"] == {**TINY, "vocab_size": vocab.size}
    tok = state["tokenizer"]
    assert (tok["encoding"], tok["mode"]) == ("cl100k_base", "compact")
    assert torch.is_tensor(tok["ids"]) and tok["ids"].tolist() == vocab.ids.tolist()
    opt = state["optimizer_state_dict"]
    assert len(opt["state"]) == len(list(trainer.model.parameters()))
    assert all(int(s["step"]) == 3 for s in opt["state"].values())
    assert state["step"] == 3
    assert state["best_valid_loss"] == done.best_valid_loss
    assert math.isfinite(state["best_valid_loss"]) and state["best_step"] in (0, 2)
    rng = state["rng"]
    assert torch.equal(rng["torch"], torch.get_rng_state())
    assert len(rng["batch_generators"]) == 1
    assert torch.equal(rng["batch_generators"][0], trainer.batch_gen.get_state())
    random.setstate(runstate._as_tuple(rng["python"]))  # a state Python accepts back
    assert state["tinygpt_version"] == __version__
    # the book's two keys rebuild the model on their own
    model = GPT(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model_state_dict"])
    # the best checkpoint sits beside it, and the checkpoint saved events name real files
    saved = of(events, CheckpointSaved)
    assert {e.path for e in saved} == {out, ckpt.related_path(out, "best")}
    assert ckpt.load(ckpt.related_path(out, "best"))["step"] == state["best_step"]


# --- resume ------------------------------------------------------------------------------------

def test_resume_equals_uninterrupted_run(token_cache, tmp_path):
    """10 steps, then --resume to 20 == 20 steps straight, with dropout so RNG state matters."""
    model = {"dropout": 0.2}
    straight = make_trainer(token_cache, tmp_path / "a" / "model.ckpt", max_iters=20,
                            model=model)
    full = run_all(straight)

    out = tmp_path / "b" / "model.ckpt"
    first = run_all(make_trainer(token_cache, out, max_iters=10, model=model))
    assert of(first, RunDone)[0].steps == 10
    resumed = make_trainer(token_cache, out, resume=out, max_iters=20, model=model)
    assert resumed.step == 10
    second = run_all(resumed)

    def evals(events, from_step=0):
        return [(e.step, e.train_loss, e.valid_loss, e.best) for e in of(events, EvalDone)
                if e.step >= from_step]

    assert evals(second) == evals(full, from_step=10)  # steps 10, 15, 19, bit-exact
    assert [e[0] for e in evals(second)] == [10, 15, 19]
    assert_same_weights(weights(resumed), weights(straight))
    a, b = of(full, RunDone)[0], of(second, RunDone)[0]
    assert (a.steps, a.best_valid_loss, a.best_step, a.final_valid_loss) == \
           (b.steps, b.best_valid_loss, b.best_step, b.final_valid_loss)
    # the metrics file gained the resumed records: one eval record per evaluation, none repeated
    steps = [r["step"] for r in metrics(out) if r["type"] == "eval"]
    assert steps == [0, 5, 9, 10, 15, 19]


def test_resume_from_checkpoints_saved_at_evaluation(token_cache, tmp_path):
    """A run killed right after an evaluation's save resumes from there as if nothing happened:
    no evaluation repeated, none lost, the same final weights and losses."""
    model = {"dropout": 0.2}
    out = tmp_path / "a" / "model.ckpt"
    straight = make_trainer(token_cache, out, max_iters=10, model=model)
    events = []
    for event in straight.run():
        events.append(event)
        if isinstance(event, CheckpointSaved) and event.path == out and event.step in (5, 9):
            (tmp_path / f"at{event.step}.ckpt").write_bytes(out.read_bytes())
    straight.close()
    done = of(events, RunDone)[0]

    for at, evaluated in ((5, [9]), (9, [])):
        resumed = make_trainer(token_cache, tmp_path / f"b{at}" / "model.ckpt",
                               resume=tmp_path / f"at{at}.ckpt", max_iters=10, model=model)
        second = run_all(resumed)
        assert [e.step for e in of(second, EvalDone)] == evaluated
        assert_same_weights(weights(resumed), weights(straight))
        again = of(second, RunDone)[0]
        assert (again.final_train_loss, again.final_valid_loss, again.best_valid_loss) == \
               (done.final_train_loss, done.final_valid_loss, done.best_valid_loss)


def test_resume_past_max_iters_is_a_usage_error(token_cache, tmp_path):
    out = tmp_path / "model.ckpt"
    run_all(make_trainer(token_cache, out, max_iters=3))
    with pytest.raises(UsageError, match="already done 3 steps"):
        make_trainer(token_cache, out, resume=out, max_iters=3)


# --- bad steps ---------------------------------------------------------------------------------

def nan_forward(monkeypatch, bad_steps: set[int], seen: dict[int, dict]):
    """Patch Trainer._forward: NaN loss (with a graph, so backward runs) at `bad_steps`, and a
    snapshot of the weights at the start of every step."""
    real = Trainer._forward

    def forward(self, x, y):
        seen[self.step] = weights(self)
        loss = real(self, x, y)
        return loss * float("nan") if self.step in bad_steps else loss

    monkeypatch.setattr(Trainer, "_forward", forward)


def test_a_nan_loss_is_skipped_with_a_notice(token_cache, tmp_path, monkeypatch):
    seen: dict[int, dict] = {}
    nan_forward(monkeypatch, {3}, seen)
    trainer = make_trainer(token_cache, tmp_path / "model.ckpt", max_iters=6, log_interval=1)
    events = run_all(trainer)
    notices = [e.message for e in of(events, Notice)]
    assert len(notices) == 1 and "step 3" in notices[0] and "nan" in notices[0]
    assert_same_weights(seen[3], seen[4])  # the NaN step changed nothing
    with pytest.raises(AssertionError):
        assert_same_weights(seen[2], seen[3])  # while a good step does change the weights
    assert [e.step for e in of(events, StepDone)] == [0, 1, 2, 4, 5]
    assert all(math.isfinite(e.loss) for e in of(events, StepDone))
    state = ckpt.load(tmp_path / "model.ckpt")
    assert of(events, RunDone)[0].reason == "finished" and state["step"] == 6
    assert all(int(s["step"]) == 5 for s in state["optimizer_state_dict"]["state"].values())
    assert ckpt.all_finite(state["model_state_dict"])


def test_a_checkpoint_is_reported_once_its_file_holds_it(token_cache, tmp_path, monkeypatch):
    """Saves are written in the background, slowly here: each CheckpointSaved event comes only
    once the file it names holds that step, and before the next save starts."""
    real_write = ckpt.write_bytes

    def slow_write(data, paths):
        time.sleep(0.05)  # a slow disk: several steps go by meanwhile
        real_write(data, paths)

    monkeypatch.setattr(ckpt, "write_bytes", slow_write)
    out = tmp_path / "model.ckpt"
    trainer = make_trainer(token_cache, out, max_iters=9, eval_interval=2)
    seen = []
    for event in trainer.run():
        if isinstance(event, CheckpointSaved):
            assert ckpt.load(event.path)["step"] == event.step
            seen.append((event.path.name, event.step))
    trainer.close()
    assert [step for name, step in seen if name == "model.ckpt"] == [0, 2, 4, 6, 8, 9]


def test_a_failed_background_write_stops_the_run_with_a_clear_error(token_cache, tmp_path,
                                                                    monkeypatch):
    def disk_full(data, paths):
        raise ckpt.CheckpointError(f"could not write the checkpoint {paths[0]}: No space left "
                                   "on device")

    out = tmp_path / "model.ckpt"
    trainer = make_trainer(token_cache, out, max_iters=30, eval_interval=5)
    events = []
    with pytest.raises(ckpt.CheckpointError, match="No space left on device"):
        for event in trainer.run():
            events.append(event)
            if isinstance(event, CheckpointSaved) and event.step == 5:
                monkeypatch.setattr(ckpt, "write_bytes", disk_full)
    trainer.close()
    assert ckpt.load(out)["step"] == 5  # the last save that worked is intact
    # noticed at a step after the failure once the writer thread has run, and at the latest at
    # the next save (step 15), which waits for it: never trained on to the end
    assert trainer.step <= 15


def test_nan_losses_in_a_row_raise_diverged_and_keep_the_last_good_checkpoint(
        token_cache, tmp_path, monkeypatch):
    seen: dict[int, dict] = {}
    nan_forward(monkeypatch, set(range(5, 100)), seen)
    out = tmp_path / "model.ckpt"
    trainer = make_trainer(token_cache, out, max_iters=50, eval_interval=4)
    events = []
    with pytest.raises(DivergedError, match="diverged"):
        for event in trainer.run():
            events.append(event)
    trainer.close()
    assert len(of(events, Notice)) == train_mod.MAX_BAD_STEPS  # steps 5 to 9, then the error
    assert max(e.step for e in of(events, CheckpointSaved)) == 8
    state = ckpt.load(out)
    assert state["step"] == 8
    assert ckpt.all_finite(state["model_state_dict"])
    assert_same_weights(state["model_state_dict"], seen[5])  # the last good update's weights


# --- schedule, metrics, limits, signals ---------------------------------------------------------

@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_lr_schedule_warms_up_then_decays_to_min_lr(schedule):
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110,
                      lr_schedule=schedule)
    warm = [lr_at(s, cfg) for s in range(11)]
    assert 0 < warm[0] < 1e-3
    assert all(a < b for a, b in zip(warm, warm[1:], strict=False))
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # the end of warmup: the full rate
    decay = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert lr_at(110, cfg) == pytest.approx(1e-4)  # the end: min_lr
    assert lr_at(500, cfg) == pytest.approx(1e-4)  # and it stays there
    assert lr_at(60, cfg) == pytest.approx(5.5e-4)  # halfway, for both shapes
    quarter = 1e-4 + (0.5 * (1 + math.cos(math.pi / 4)) if schedule == "cosine" else 0.75) * 9e-4
    assert lr_at(35, cfg) == pytest.approx(quarter)


def test_constant_schedule_and_no_warmup_is_the_books_rate():
    cfg = TrainConfig(learning_rate=3e-4, max_iters=20)
    assert {lr_at(s, cfg) for s in range(20)} == {3e-4}


def test_the_optimizer_uses_the_scheduled_rate(token_cache, tmp_path):
    trainer = make_trainer(token_cache, tmp_path / "model.ckpt", max_iters=8, warmup_iters=3,
                           lr_schedule="linear", min_lr=1e-5, log_interval=1)
    events = run_all(trainer)
    assert [e.lr for e in of(events, StepDone)] == [lr_at(s, trainer.cfg) for s in range(8)]
    assert trainer.optimizer.param_groups[0]["lr"] == lr_at(7, trainer.cfg)


def test_metrics_file_has_one_eval_record_per_evaluation_and_train_records_per_interval(
        token_cache, tmp_path):
    out = tmp_path / "model.ckpt"
    events = run_all(make_trainer(token_cache, out, max_iters=12, eval_interval=4,
                                  log_interval=3))
    records = metrics(out)
    evals = [r for r in records if r["type"] == "eval"]
    trains = [r for r in records if r["type"] == "train"]
    assert len(evals) + len(trains) + 1 == len(records)
    assert records[-1]["type"] == "report"  # the report card ends the file
    assert [r["step"] for r in evals] == [0, 4, 8, 11] == [e.step for e in of(events, EvalDone)]
    assert [r["valid_loss"] for r in evals] == \
           [round(e.valid_loss, 6) for e in of(events, EvalDone)]
    assert [r["step"] for r in trains] == [2, 5, 8, 11]
    assert all(math.isfinite(r["loss"]) and r["lr"] == 1e-3 for r in trains)


def test_max_time_stops_early_and_saves(token_cache, tmp_path):
    out = tmp_path / "model.ckpt"
    events = run_all(make_trainer(token_cache, out, max_iters=1_000_000, eval_interval=10_000,
                                  max_time=0.5))
    done = of(events, RunDone)[0]
    assert done.reason == "max_time" and done.signum is None
    assert 0 < done.steps < 1_000_000
    assert ckpt.load(out)["step"] == done.steps


def test_plan_steps_spends_the_time_left_and_keeps_the_end():
    plan = dict(step=100, max_iters=10**6, seconds_left=100.0, step_seconds=0.7,
                finish_seconds=3.0)
    assert train_mod.plan_steps(**plan) == 100 + int(97 / 0.7)  # 3 s kept for the end
    assert train_mod.plan_steps(**{**plan, "max_iters": 150}) == 150  # never past --max-iters
    assert train_mod.plan_steps(**{**plan, "seconds_left": 1.0}) == 101  # always one more step


def budget_run(token_cache, out, *, first_step_seconds=1.0, save_seconds=0.5):
    """A --max-time 100 s run on a fake clock: a step costs 1 s (the first one
    `first_step_seconds`, as a compiling or warming-up step does), an evaluation 2 s, a
    checkpoint write `save_seconds`. Returns (events, the clock at the end, the trainer)."""
    now = [0.0]
    trainer = make_trainer(token_cache, out, max_iters=100_000, eval_interval=10,
                           max_time=100.0, lr_schedule="cosine", learning_rate=1e-3,
                           min_lr=1e-4, fast=False)  # the saver writes on this thread
    trainer.clock = lambda: now[0]
    step, evaluate, save = trainer.train_step, trainer.evaluate, trainer.saver.save
    steps = [0]

    def train_step(*args, **kwargs):
        steps[0] += 1
        now[0] += first_step_seconds if steps[0] == 1 else 1.0
        return step(*args, **kwargs)

    def slow(function, seconds):
        def wrapped(*args, **kwargs):
            now[0] += seconds
            return function(*args, **kwargs)
        return wrapped

    trainer.train_step = train_step
    trainer.evaluate = slow(evaluate, 2.0)
    trainer.saver.save = slow(save, save_seconds)
    return run_all(trainer), now[0], trainer


@pytest.mark.parametrize("first_step_seconds, save_seconds", [(1.0, 0.5), (30.0, 0.5),
                                                              (1.0, 5.0)])
def test_a_time_budget_plans_the_schedule_to_end_at_min_lr_inside_it(token_cache, tmp_path,
                                                                     first_step_seconds,
                                                                     save_seconds):
    """The cosine schedule is planned over the steps the budget allows (a slow first step, or
    slow saves, included), so the learning rate is at --min-lr when the run ends, it never rises
    on the way, and the last evaluation and save end inside the budget, using most of it."""
    events, end, trainer = budget_run(token_cache, tmp_path / "model.ckpt",
                                      first_step_seconds=first_step_seconds,
                                      save_seconds=save_seconds)
    done = of(events, RunDone)[0]
    assert done.reason == "max_time"
    assert 90.0 <= end <= 100.0, end
    evals = of(events, EvalDone)
    assert evals[-1].step == done.steps - 1  # the last step was evaluated
    # the decay reached --min-lr at the end (one step short of it: the last evaluation comes
    # before the last step), not cut off halfway
    assert evals[-1].lr == pytest.approx(lr_at(done.steps - 1, trainer.cfg, done.steps))
    assert evals[-1].lr < 1.05e-4
    rates = [e.lr for e in evals]
    assert rates == sorted(rates, reverse=True)  # never up again once planned
    assert rates[1] > 5e-4  # and it did not rush: early on it was near the full rate


def test_a_signal_stops_after_the_current_step_and_saves(token_cache, tmp_path):
    out = tmp_path / "model.ckpt"
    trainer = make_trainer(token_cache, out, max_iters=1_000, log_interval=1)
    before = signal.getsignal(signal.SIGINT)
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, StepDone) and event.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # handled: the loop finishes step 3, then stops
    trainer.close()
    done = of(events, RunDone)[0]
    assert (done.reason, done.signum, done.steps) == ("interrupted", signal.SIGINT, 4)
    assert ckpt.load(out)["step"] == 4
    assert signal.getsignal(signal.SIGINT) == before  # handlers restored


def test_stop_signals_second_signal_leaves_at_once():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("the second signal did not interrupt")
    assert signal.getsignal(signal.SIGTERM) == previous


# --- devices and output paths ------------------------------------------------------------------

def test_resolve_device_and_dtype_on_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="no CUDA device"):
        resolve_device("cuda")


def test_check_writable_refuses_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="cannot write the checkpoint"):
        check_writable(tmp_path / "file" / "model.ckpt")
    (tmp_path / "dir").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        check_writable(tmp_path / "dir")
    check_writable(tmp_path / "new" / "model.ckpt")
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []


def test_the_live_rates_are_recent_and_the_summary_overall(token_cache, tmp_path, monkeypatch):
    """A fake clock: steps 0-9 take 1 s, later ones 3 s. StepDone and EvalDone report the rate of
    the steps since the previous record, RunDone the whole run's; the final losses name the
    evaluation they come from."""
    clock = {"now": 0.0}
    monkeypatch.setattr(train_mod, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    real_step = Trainer.train_step

    def timed_step(self, lr):
        clock["now"] += 1.0 if self.step < 10 else 3.0
        return real_step(self, lr)

    monkeypatch.setattr(Trainer, "train_step", timed_step)
    trainer = make_trainer(token_cache, tmp_path / "model.ckpt", max_iters=20, eval_interval=10,
                           log_interval=10)
    events = run_all(trainer)
    per_step = 4 * 16  # batch x context of make_trainer's run
    assert [e.tokens_per_sec for e in events if isinstance(e, StepDone)] == \
        [per_step / 1.0, per_step / 3.0]
    assert [e.tokens_per_sec for e in events if isinstance(e, EvalDone)] == \
        [0.0, per_step / 1.0, per_step / 3.0]  # at 0, 10 and 19
    (done,) = [e for e in events if isinstance(e, RunDone)]
    assert done.tokens_per_sec == pytest.approx(20 * per_step / 40.0)
    assert done.final_step == 19


def test_the_eta_follows_the_recent_pace():
    from tinygpt_cli.ui import eta

    assert eta([], 500) == eta([(5.0, 10)], 500) == "-:--:--"
    assert eta([(0.0, 0), (10.0, 50)], 500) == "0:01:30"  # 5 steps/s, 450 to go
    assert eta([(100.0, 50), (110.0, 100), (120.0, 150)], 8150) == "0:26:40"


# --- the report card ---------------------------------------------------------------------------

def test_the_report_card_counts_what_the_run_saw(token_cache, tmp_path):
    out = tmp_path / "model.ckpt"
    trainer = make_trainer(token_cache, out, max_iters=12, eval_interval=5, grad_accum=2)
    done = of(run_all(trainer), RunDone)[0]
    card = done.report
    tokens_per_step = 4 * 16 * 2  # batch x context x grad_accum, one process
    assert card["steps"] == 12 and card["tokens_seen"] == 12 * tokens_per_step
    assert card["parameters"] == sum(p.numel() for p in trainer.model.parameters())
    assert card["tokens_per_parameter"] == pytest.approx(card["tokens_seen"] / card["parameters"])
    assert card["epochs"] == pytest.approx(card["tokens_seen"] / len(token_cache.train))
    assert card["tokens_per_sec"] == pytest.approx(done.tokens_per_sec)
    assert card["peak_memory_bytes"] > 50 * 2**20  # torch alone is more
    assert metrics(out)[-1] == {"type": "report", **{k: round(v, 6) if isinstance(v, float)
                                                      else v for k, v in card.items()}}


def test_the_report_cards_validation_is_every_token_of_the_final_model(token_cache, tmp_path):
    from tinygpt_cli.evaluate import evaluate_checkpoint

    out = tmp_path / "model.ckpt"
    card = of(run_all(make_trainer(token_cache, out, max_iters=8)), RunDone)[0].report
    assert card["valid_measure"] == "full" and card["valid_step"] == 8
    full = evaluate_checkpoint(out, "cpu", full=True)["splits"]["valid"]
    assert card["valid_loss"] == pytest.approx(full["loss"], rel=1e-6)
    assert card["valid_bits_per_byte"] == pytest.approx(full["bits_per_byte"], rel=1e-6)
    assert card["valid_tokens_scored"] == full["tokens"] == len(token_cache.valid) - 1


def test_a_costly_full_pass_is_left_out_and_the_estimate_said(token_cache, tmp_path,
                                                               monkeypatch):
    from tinygpt_cli.evaluate import bits_per_byte

    monkeypatch.setattr(train_mod, "FULL_PASS_SECONDS", 0.0)
    monkeypatch.setattr(train_mod, "FULL_PASS_SHARE", 0.0)
    done = of(run_all(make_trainer(token_cache, tmp_path / "model.ckpt", max_iters=8)),
              RunDone)[0]
    card = done.report
    assert card["valid_measure"] == "estimate" and card["valid_step"] == 7
    assert card["valid_loss"] == done.final_valid_loss
    nbytes = token_cache.meta["splits"]["valid"]["bytes"]
    assert card["valid_bits_per_byte"] == pytest.approx(
        bits_per_byte(done.final_valid_loss, len(token_cache.valid), nbytes))


def test_every_evaluation_scores_the_same_validation_windows(token_cache, tmp_path):
    """With the weights held still, the validation estimate is the same at every evaluation
    (its windows are fixed), while the training split's windows are drawn afresh."""
    trainer = make_trainer(token_cache, tmp_path / "model.ckpt", max_iters=16, eval_interval=5)
    trainer.apply_update = lambda: None  # the model never changes
    evals = of(run_all(trainer), EvalDone)
    assert len(evals) == 4
    assert len({e.valid_loss for e in evals}) == 1
    assert len({e.train_loss for e in evals}) == 4


def test_a_signal_during_the_report_cards_pass_leaves_the_estimate(token_cache, tmp_path):
    trainer = make_trainer(token_cache, tmp_path / "model.ckpt", max_iters=6)
    run_all(trainer)
    asked = []
    card = trainer.report_card(64, 1000.0, trainer.clock(),
                               stop=lambda: asked.append(1) or True)
    assert asked and card["valid_measure"] == "estimate"


def test_a_timed_run_saves_its_plan_and_a_resume_without_a_budget_ends_there(token_cache,
                                                                           tmp_path):
    from tinygpt_cli.config import merge_settings

    out = tmp_path / "model.ckpt"
    events, _, _ = budget_run(token_cache, out)
    done = of(events, RunDone)[0]
    saved = ckpt.saved_run(out)
    assert saved["planned_steps"] == done.steps
    assert merge_settings(resumed=saved).train_config.max_iters == done.steps
    again = merge_settings(resumed=saved, command_line={"max_time": 50.0})
    assert again.train_config.max_iters == 100_000  # a new budget plans anew
