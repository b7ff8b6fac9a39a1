"""DistributedDataParallel through torchrun: 2 gloo processes on CPU, as CI can run it."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TINY = ["--d-model", "16", "--num-blocks", "1", "--num-heads", "2", "--context-length", "16",
        "--batch-size", "2", "--dropout", "0"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, TINYGPT_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(tmp_path: Path, corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tinygpt_cli", "train", "--data", str(corpus), "--out", str(out), *TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=240)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_gloo_ranks_train_save_once_and_generate(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "run" / "model.ckpt"
    proc = _torchrun(tmp_path, corpus, out, "--max-iters", "12", "--eval-interval", "6")
    assert proc.returncode == 0, proc.stderr[-3000:]

    # rank 0 alone prints: one book line per evaluation (0, 6, 11), each with finite losses
    lines = re.findall(r"^Step: (\d+), Training Loss: ([\d.]+), Validation Loss: ([\d.]+)$",
                       proc.stdout, flags=re.M)
    assert [int(step) for step, _, _ in lines] == [0, 6, 11]
    assert all(math.isfinite(float(t)) and math.isfinite(float(v)) for _, t, v in lines)
    # the tokens per step reported are per-rank batch x context x ranks
    assert "2 processes" in proc.stderr and f"{2 * 16 * 2} tokens" in proc.stderr

    # one checkpoint (plus the best copy), written by rank 0 only: no duplicate metric records
    assert sorted(p.name for p in out.parent.glob("*.ckpt")) == ["model.best.ckpt", "model.ckpt"]
    records = [json.loads(line) for line in out.with_name("model.metrics.jsonl").open()]
    evals = [r["step"] for r in records if r["type"] == "eval"]
    assert evals == [0, 6, 11]

    state = torch.load(out, weights_only=True)
    assert state["step"] == 12 and state["world_size"] == 2
    assert len(state["rng"]["batch_generators"]) == 2
    # each rank drew different batches: their generator states differ
    first, second = state["rng"]["batch_generators"]
    assert not torch.equal(first, second)

    # a single process generates from the DDP checkpoint
    gen = subprocess.run([sys.executable, "-m", "tinygpt_cli", "generate", "--checkpoint",
                          str(out), "--max-new-tokens", "8", "--prompt", "Cotton"],
                         capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert gen.stdout.startswith("Cotton") and len(gen.stdout) > len("Cotton")


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_resume_under_ddp_continues_to_the_total(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "run" / "model.ckpt"
    first = _torchrun(tmp_path, corpus, out, "--max-iters", "4", "--eval-interval", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    again = _torchrun(tmp_path, corpus, out, "--max-iters", "8", "--eval-interval", "2",
                      "--resume", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stderr
    steps = [int(s) for s in re.findall(r"^Step: (\d+),", again.stdout, flags=re.M)]
    assert steps == [4, 6, 7]
    assert torch.load(out, weights_only=True)["step"] == 8


def _torchrun_patched(tmp_path: Path, script_text: str, corpus: Path,
                      out: Path) -> subprocess.CompletedProcess:
    """2 processes of `tinygpt train` (40 steps, evaluated every 5) through a script that
    patches tinygpt first (`script_text`, which ends by calling the CLI's main)."""
    script = tmp_path / "patched_tinygpt.py"
    script.write_text(script_text)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), "train", "--data", str(corpus), "--out", str(out), *TINY,
           "--max-iters", "40", "--eval-interval", "5"]
    env = {**_env(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


FAILING_DISK = """
import os, sys
from tinygpt_cli import checkpoint
from tinygpt_cli.cli import main

real_fsync, calls = os.fsync, []

def fsync(fd):  # the first save (step 0: two files, each synced and then its folder) works
    calls.append(fd)
    if len(calls) > 4:
        raise OSError(28, "No space left on device")
    real_fsync(fd)

checkpoint.os.fsync = fsync
sys.argv[0] = "tinygpt"
main()
"""


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_a_failed_save_on_rank_0_stops_every_rank(tmp_path: Path, corpus: Path) -> None:
    """Process 0 writes in the background; when a write fails, every process stops with it and
    says why (rather than waiting in the next collective until its peer's exit breaks it), and
    the last good checkpoint stays."""
    out = tmp_path / "run" / "model.ckpt"
    proc = _torchrun_patched(tmp_path, FAILING_DISK, corpus, out)
    assert proc.returncode != 0
    assert "error: could not write the checkpoint" in proc.stderr
    assert "No space left on device" in proc.stderr
    assert "error: process 0 could not write a checkpoint" in proc.stderr  # rank 1's own line
    assert "Connection closed by peer" not in proc.stderr
    assert torch.load(out, weights_only=True)["step"] == 0


ONE_RANK_STOPPED = """
import os, sys
from tinygpt_cli import train
from tinygpt_cli.cli import main

real, calls = train.estimate_loss, []

def estimate_loss(*args, stop=None, **kwargs):  # process 1 alone sees a signal, at step 5
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:
        stop = lambda: True
    return real(*args, stop=stop, **kwargs)

train.estimate_loss = estimate_loss
sys.argv[0] = "tinygpt"
main()
"""


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_a_signal_on_one_rank_during_an_evaluation_stops_every_rank_together(
        tmp_path: Path, corpus: Path) -> None:
    """Every process must take the same path out of a stopped evaluation (their next collective
    would otherwise never match): the stop is agreed in the evaluation's own all-reduce, the
    step is saved, and the run ends as interrupted, with no evaluation recorded at that step."""
    out = tmp_path / "run" / "model.ckpt"
    proc = _torchrun_patched(tmp_path, ONE_RANK_STOPPED, corpus, out)
    # the processes left as a stopped run does (torchrun then reports an exit code of 143, with
    # a traceback of its own, and ends any process still finishing); none crashed in tinygpt's
    # code, none waited for the others' evaluations
    assert "/tinygpt_cli/" not in proc.stderr, proc.stderr
    assert "exitcode  : 143" in proc.stderr, proc.stderr
    assert "Training interrupted" in proc.stderr
    state = torch.load(out, weights_only=True)
    assert state["step"] == 5 and state["evaluated_step"] == 0
