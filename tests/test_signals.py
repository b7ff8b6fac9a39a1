"""Ctrl-C (SIGINT) and SIGTERM stop every long command within about a second of the signal, with
one line and exit code 128 + the signal, and leave nothing half-written.

Each case starts the real command in its own process, waits until it is inside the long part of
its work (an evaluation of minutes, a tokenization, a generation of 10^8 tokens), signals it, and
checks what it left. The bound on the time to stop is a hang check far below what the work would
take without the stop (minutes), not a speed target.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import train_tiny

from tinygpt_cli import checkpoint as ckpt

STOPS_WITHIN = 15.0  # seconds from the signal to the exit; the work itself would take minutes
LONG_EVAL = ["--eval-iters", "131072", "--batch-size", "16"]  # 2 x 34M tokens to score
TINY = ["--d-model", "16", "--num-blocks", "1", "--num-heads", "2", "--context-length", "16"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path, Path]:
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "tinygpt_cli", *args], stdout=o,
                                stderr=e, env=env, cwd=tmp_path)
    return proc, out, err


def wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no sign of {what} after {timeout} s"
        time.sleep(0.05)


def stop(proc: subprocess.Popen, signum: int) -> float:
    """Signal the (still running) command and return how long it took to exit."""
    assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before the signal"
    proc.send_signal(signum)
    sent = time.monotonic()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the command was still running 60 s after the signal") from None
    return time.monotonic() - sent


def error_lines(err: Path) -> list[str]:
    text = err.read_text(encoding="utf-8")
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if line.startswith("error:")]


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders of an atomic write that did not finish."""
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or ".old-" in p.name)


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_during_a_training_evaluation_saves_and_stops_at_once(tmp_path, corpus,
                                                                      signum):
    """The first signal used to wait for the whole evaluation (tens of seconds, or minutes):
    now the evaluation is given up within a forward pass, the step is saved, the run ends."""
    out = tmp_path / "run" / "model.ckpt"
    proc, _, err = start(tmp_path, "train", "--data", str(corpus), "--out", str(out),
                         "--cache-dir", str(tmp_path / "cache"), "--max-iters", "20", *TINY,
                         *LONG_EVAL)
    # the metrics file is opened just before the loop, whose first act is the step-0 evaluation
    wait_for(proc, out.with_name("model.metrics.jsonl").exists, "the training loop")
    time.sleep(0.5)
    took = stop(proc, signum)
    assert proc.returncode == 128 + signum, err.read_text()
    assert took < STOPS_WITHIN, f"{took:.1f} s from the signal to the exit"
    assert error_lines(err) == []  # a stop asked for is not an error: it is reported and saved
    state = ckpt.load(out)
    assert state["step"] == 0 and state["evaluated_step"] is None
    assert leftovers(out.parent) == []


def run_tiny(out: Path, corpus: Path, cache: Path, resume: Path | None = None) -> list:
    """8 steps with dropout, evaluated at 0, 4 and 7 (in-process)."""
    from helpers import TINY_MODEL

    from tinygpt_cli.config import TrainConfig
    from tinygpt_cli.train import Trainer, TrainRequest

    config = TrainConfig(device="cpu", dtype="float32", max_iters=8, eval_interval=4,
                         eval_iters=2)
    trainer = Trainer(TrainRequest(train_config=config, model_options={**TINY_MODEL,
                                                                       "dropout": 0.2},
                                   data=corpus, cache_dir=cache, out=out, resume=resume))
    try:
        return list(trainer.run())
    finally:
        trainer.close()


def test_a_run_stopped_during_its_evaluation_resumes_exactly(tmp_path, corpus, monkeypatch):
    """Stopped during its step-4 evaluation and resumed, a run ends with the same weights and
    the same evaluations as the run that was never stopped (the cut evaluation is made again).
    With dropout: the random state saved at the stop must be the one of that step."""
    from tinygpt_cli import train as train_module

    cache = tmp_path / "cache"
    straight = tmp_path / "straight" / "model.ckpt"
    run_tiny(straight, corpus, cache)
    real, calls = train_module.estimate_loss, []

    def signal_at_step_4(*args, stop=None, **kwargs):
        calls.append(1)  # the second evaluation is step 4's: a signal arrives during it
        return real(*args, stop=(lambda: True) if len(calls) == 2 else stop, **kwargs)

    out = tmp_path / "stopped" / "model.ckpt"
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "estimate_loss", signal_at_step_4)
        done = run_tiny(out, corpus, cache)[-1]
    assert done.reason == "interrupted" and done.steps == 4
    assert ckpt.load(out)["evaluated_step"] == 0  # the cut evaluation was not recorded
    run_tiny(out, corpus, cache, resume=out)
    a, b = ckpt.load(straight), ckpt.load(out)
    assert a["step"] == b["step"] == 8 and a["last_losses"] == b["last_losses"]
    for name, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][name]), name
    records = [[json.loads(line) for line in path.with_name("model.metrics.jsonl").read_text()
                .splitlines()] for path in (straight, out)]
    evals = [[(r["step"], r["valid_loss"]) for r in rs if r["type"] == "eval"] for rs in records]
    assert [step for step, _ in evals[0]] == [0, 4, 7] and evals[0] == evals[1]


@pytest.fixture
def trained(tmp_path, corpus) -> Path:
    out = tmp_path / "run" / "model.ckpt"
    train_tiny(out, corpus, tmp_path / "cache", max_iters=1, eval_interval=1, eval_iters=1)
    return out


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_during_eval_stops_it_at_once(tmp_path, trained, signum):
    before = trained.read_bytes()
    cache = tmp_path / "eval-cache"
    proc, out, err = start(tmp_path, "eval", "-c", str(trained), "--cache-dir", str(cache),
                           *LONG_EVAL)
    # eval tokenizes the checkpoint's corpus into its own cache first, then evaluates (minutes)
    wait_for(proc, lambda: any(cache.glob("*/meta.json")), "the corpus tokenized")
    time.sleep(0.5)
    took = stop(proc, signum)
    assert proc.returncode == 128 + signum, err.read_text()
    assert took < STOPS_WITHIN, f"{took:.1f} s from the signal to the exit"
    (line,) = error_lines(err)
    assert line == ("error: interrupted" if signum == signal.SIGINT
                    else "error: stopped by SIGTERM")
    assert out.read_text() == ""  # no partial results
    assert trained.read_bytes() == before


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_during_generate_ends_the_line_and_stops(tmp_path, trained, signum):
    proc, out, err = start(tmp_path, "generate", "-c", str(trained), "-n", "100000000")
    wait_for(proc, lambda: out.stat().st_size > 0, "generated text")
    took = stop(proc, signum)
    assert proc.returncode == 128 + signum, err.read_text()
    assert took < STOPS_WITHIN, f"{took:.1f} s from the signal to the exit"
    assert len(error_lines(err)) == 1
    assert out.read_bytes().endswith(b"\n")  # the error does not land on the cut-off line


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_during_tokenize_leaves_no_partial_cache(tmp_path, corpus, signum):
    """A corpus of ~40 MB takes many seconds to tokenize here; stopped part way, the half-built
    cache is removed and an existing cache (of another corpus) is untouched."""
    root = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-m", "tinygpt_cli", "tokenize", str(corpus),
                           "--cache-dir", str(root)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    kept = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    big = tmp_path / "big.txt"
    line = "The quick brown fox jumps over the lazy dog; 0123456789 times. "
    with open(big, "w", encoding="utf-8") as f:
        for i in range(600_000):
            f.write(f"{line}{i}\n")
    text = big.read_bytes()
    # one thread: several seconds of work on any machine; signalled once tokens are written
    proc, _, err = start(tmp_path, "tokenize", str(big), "--cache-dir", str(root), "--threads",
                         "1")
    wait_for(proc, lambda: any(p.stat().st_size > 0 for p in root.glob(".*.tmp-*/raw.u32")),
             "tokens being written")
    took = stop(proc, signum)
    assert proc.returncode == 128 + signum, err.read_text()
    assert took < STOPS_WITHIN, f"{took:.1f} s from the signal to the exit"
    assert len(error_lines(err)) == 1
    assert leftovers(root) == []
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == kept
    assert big.read_bytes() == text


def test_the_stopped_checkpoint_is_the_weights_of_its_step(tmp_path, corpus):
    """In-process: a stop asked for during the step-0 evaluation saves the untrained weights of
    step 0, with no evaluation recorded, and the run reports it was interrupted."""
    from tinygpt_cli import train as train_module

    calls = {"n": 0}
    real = train_module.estimate_loss

    def stop_during(*args, stop=None, **kwargs):
        calls["n"] += 1
        return real(*args, stop=lambda: True, **kwargs)  # as if a signal came at once

    out = tmp_path / "run" / "model.ckpt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "estimate_loss", stop_during)
        events = train_tiny(out, corpus, tmp_path / "cache", max_iters=5, eval_interval=1,
                            eval_iters=2)
    done = events[-1]
    assert calls["n"] == 1 and done.reason == "interrupted" and done.steps == 0
    state = ckpt.load(out)
    assert state["step"] == 0 and state["evaluated_step"] is None
    # the weights the run starts from: its seed's initialization, untouched by any step
    from tinygpt_cli.config import ModelConfig
    from tinygpt_cli.model import GPT

    torch.manual_seed(state["train_config"]["seed"])
    initial = GPT(ModelConfig(**state["model_config"]))
    for name, value in initial.state_dict().items():
        assert torch.equal(value, state["model_state_dict"][name]), name
