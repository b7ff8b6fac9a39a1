"""`tinygpt train` through Typer: the book's lines on stdout off a terminal, resume equal to an
uninterrupted run, --config/--preset, one "error:" line (no traceback) for every bad input, and in
subprocesses: SIGINT/SIGTERM save, say how to resume, and exit 130/143."""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_user_error
from typer.testing import CliRunner

from tinygpt_cli import checkpoint as ckpt
from tinygpt_cli.cli import app
from tinygpt_cli.data import max_context_length
from tinygpt_cli.train import Trainer

BOOK_LINE = re.compile(r"^Step: \d+, Training Loss: \d+\.\d{3}, Validation Loss: \d+\.\d{3}$")
# --threads 1: a run is bit-identical to another only on the same thread count (auto may pick
# another count for each run), and the resume tests compare runs bit for bit
TINY = ["--device", "cpu", "--d-model", "16", "--num-blocks", "1", "--num-heads", "2",
        "--context-length", "16", "--batch-size", "4", "--eval-iters", "2", "--dropout", "0.0",
        "--threads", "1"]



def invoke(*args: str | Path):
    return CliRunner().invoke(app, ["train", *map(str, args)])


def train(corpus: Path, out: Path, *args: str | Path):
    """A tiny run that must succeed."""
    result = invoke("--data", corpus, *TINY, "--out", out, *args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def book_lines(result) -> dict[int, str]:
    lines = result.stdout.splitlines()
    assert all(BOOK_LINE.match(line) for line in lines), lines  # stdout holds nothing else
    return {int(line.split(",")[0].removeprefix("Step: ")): line for line in lines}


# --- the happy path ----------------------------------------------------------------------------

def test_off_a_terminal_stdout_has_the_books_lines(corpus, tmp_path):
    out = tmp_path / "run" / "model.ckpt"
    result = train(corpus, out, "--max-iters", "12", "--eval-interval", "5")
    lines = book_lines(result)
    assert sorted(lines) == [0, 5, 10, 11]  # every eval_interval, and max_iters - 1
    assert "Training finished" in result.stderr
    state = ckpt.load(out)
    assert state["step"] == 12
    assert ckpt.related_path(out, "best").exists()
    assert ckpt.related_path(out, "metrics").exists()


def test_resume_prints_the_same_losses_as_an_uninterrupted_run(corpus, tmp_path):
    opts = ["--dropout", "0.2", "--eval-interval", "5"]  # dropout: RNG restoration matters
    straight = book_lines(train(corpus, tmp_path / "a.ckpt", *opts, "--max-iters", "20"))
    out = tmp_path / "b.ckpt"
    first = book_lines(train(corpus, out, *opts, "--max-iters", "10"))
    # model and training settings come from the checkpoint; --device is this machine's choice
    resumed = invoke("--data", corpus, "--device", "cpu", "--out", out, "--resume", out,
                     "--max-iters", "20", "--threads", "1")
    assert resumed.exit_code == 0, resumed.output
    second = book_lines(resumed)
    assert sorted(first) == [0, 5, 9] and sorted(second) == [10, 15, 19]
    assert second[19] == straight[19]
    assert second[10] == straight[10] and second[15] == straight[15]
    a = ckpt.load(tmp_path / "a.ckpt")["model_state_dict"]
    b = ckpt.load(out)["model_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_keeps_the_runs_training_settings(corpus, tmp_path):
    out = tmp_path / "model.ckpt"
    train(corpus, out, "--max-iters", "3", "--learning-rate", "3e-3", "--batch-size", "3",
          "--eval-interval", "2", "--lr-schedule", "linear", "--seed", "7")
    result = invoke("--data", corpus, "--device", "cpu", "--out", out, "--resume", out,
                    "--max-iters", "5", "--eval-iters", "1")
    assert result.exit_code == 0, result.output
    cfg = ckpt.load(out)["train_config"]
    assert (cfg["learning_rate"], cfg["batch_size"], cfg["eval_interval"], cfg["lr_schedule"],
            cfg["seed"]) == (3e-3, 3, 2, "linear", 7)
    assert (cfg["max_iters"], cfg["eval_iters"]) == (5, 1)  # what was given wins


def test_config_file_sets_options_and_the_command_line_wins(corpus, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('d_model = 16\nnum_heads = 2\nnum-blocks = 2\ncontext_length = 16\n'
                      'batch_size = 3\nmax_iters = 3\neval_interval = 2\neval_iters = 1\n'
                      'learning_rate = 1\nlog_interval = 1\ndevice = "cpu"\n')
    out = tmp_path / "model.ckpt"
    result = invoke("--data", corpus, "--config", config, "--num-blocks", "1", "--max-iters",
                    "4", "--learning-rate", "2e-3", "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(book_lines(result)) == [0, 2, 3]
    state = ckpt.load(out)
    assert state["model_config"]["num_blocks"] == 1 and state["model_config"]["d_model"] == 16
    cfg = state["train_config"]
    assert (cfg["max_iters"], cfg["learning_rate"]) == (4, 2e-3)
    assert (cfg["batch_size"], cfg["eval_interval"], cfg["log_interval"]) == (3, 2, 1)
    assert state["step"] == 4


def test_max_time_stops_early_with_a_checkpoint(corpus, tmp_path):
    out = tmp_path / "model.ckpt"
    result = train(corpus, out, "--max-iters", "1000000", "--eval-interval", "100000",
                   "--max-time", "1s")  # a duration
    assert "Stopped at --max-time" in result.stderr
    state = ckpt.load(out)
    assert 0 < state["step"] < 1_000_000
    # the run's length was planned: its last step was evaluated, inside the second
    assert state["evaluated_step"] == state["step"] - 1


def test_divergence_is_an_error_and_keeps_the_last_checkpoint(corpus, tmp_path, monkeypatch):
    real = Trainer._forward
    monkeypatch.setattr(Trainer, "_forward", lambda self, x, y: real(self, x, y) *
                        (float("nan") if self.step >= 3 else 1.0))
    out = tmp_path / "model.ckpt"
    result = invoke("--data", corpus, *TINY, "--max-iters", "50", "--eval-interval", "2",
                    "--out", out)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "diverged" in line and str(out) in line
    assert result.stderr.count("warning: step ") == 5  # one per skipped update
    state = ckpt.load(out)
    assert state["step"] == 6 and ckpt.all_finite(state["model_state_dict"])


# --- bad options: exit code 2 ------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--d-model", "18", "--num-heads", "4"], "--d-model 18 is not divisible by --num-heads 4"),
    (["--d-model", "0"], "--d-model must be greater than 0"),
    (["--num-blocks", "0"], "--num-blocks must be greater than 0"),
    (["--num-heads", "-2"], "--num-heads must be greater than 0"),
    (["--context-length", "0"], "--context-length must be greater than 0"),
    (["--batch-size", "0"], "--batch-size must be greater than 0"),
    (["--max-iters", "0"], "--max-iters must be greater than 0"),
    (["--max-iters", "-5"], "--max-iters must be greater than 0 (got -5)"),
    (["--eval-interval", "0"], "--eval-interval must be greater than 0"),
    (["--eval-iters", "-1"], "--eval-iters must be greater than 0"),
    (["--grad-accum", "0"], "--grad-accum must be greater than 0"),
    (["--learning-rate", "0"], "--learning-rate must be a finite number above 0"),
    (["--learning-rate", "-1e-3"], "--learning-rate must be a finite number above 0"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number above 0"),
    (["--dropout", "1.0"], "--dropout must be in [0, 1)"),
    (["--dropout", "-0.1"], "--dropout must be in [0, 1)"),
    (["--weight-decay", "-0.1"], "--weight-decay must be 0 or more"),
    (["--warmup-iters", "-1"], "--warmup-iters must be 0 or more"),
    (["--max-time", "-1"], "--max-time must be 0 or more"),
    (["--min-lr", "1"], "--min-lr 1.0 is above --learning-rate"),
    (["--lr-schedule", "step"], "--lr-schedule must be one of constant, cosine, linear"),
    (["--preset", "gpt5"], "unknown preset 'gpt5'; choose one of: auto, book, gpt2-small"),
])
def test_bad_options_are_usage_errors(corpus, tmp_path, args, fragment):
    out = tmp_path / "run" / "model.ckpt"
    assert_user_error(invoke("--data", corpus, *TINY, "--max-iters", "2", *args, "--out", out),
                      2, fragment)
    assert not out.exists() and not ckpt.related_path(out, "metrics").exists()


def test_every_problem_of_a_config_is_named_at_once(corpus, tmp_path):
    line = assert_user_error(invoke("--data", corpus, *TINY, "--batch-size", "0", "--max-iters",
                                    "0", "--out", tmp_path / "m.ckpt"), 2)
    assert "--batch-size" in line and "--max-iters" in line


def test_a_context_the_data_cannot_fill_says_what_fits(corpus, tmp_path, token_cache):
    fits = max_context_length(token_cache)
    assert 16 < fits < 1000
    line = assert_user_error(invoke("--data", corpus, *TINY, "--context-length", "1000",
                                    "--max-iters", "2", "--out", tmp_path / "m.ckpt"), 2,
                             "--context-length 1000 needs 1001 tokens",
                             f"use --context-length {fits} or less")
    assert "validation" in line


def test_an_unwritable_output_fails_before_any_work(corpus, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "model.ckpt"
    cache = tmp_path / "cache"
    started = time.perf_counter()
    assert_user_error(invoke("--data", corpus, *TINY, "--cache-dir", cache, "--out", out), 2,
                      f"cannot write the checkpoint {out}")
    assert time.perf_counter() - started < 10
    assert not cache.exists()  # not even tokenized
    assert not ckpt.related_path(out, "metrics").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_usage_error(corpus, tmp_path):
    args = [a for a in TINY if a not in ("--device", "cpu")]
    assert_user_error(invoke("--data", corpus, *args, "--device", "cuda", "--out",
                             tmp_path / "m.ckpt"), 2, "--device cuda: no CUDA device")


@pytest.mark.parametrize("text, fragment", [
    ("d_model = 16\nlearning_rat = 0.1\nbogus = 1\n", "unknown keys bogus, learning_rat"),
    ('d_model = "big"\nmax_iters = 2.5\ncompile = "yes"\n',
     "d_model must be an integer (got 'big'); max_iters must be an integer (got 2.5); "
     "compile must be true or false (got 'yes')"),
    ("d_model = \n", "is not valid TOML"),
])
def test_bad_config_files_are_usage_errors(corpus, tmp_path, text, fragment):
    config = tmp_path / "run.toml"
    config.write_text(text)
    assert_user_error(invoke("--data", corpus, *TINY, "--config", config, "--out",
                             tmp_path / "m.ckpt"), 2, f"--config {config}", fragment)
    assert_user_error(invoke("--data", corpus, "--config", tmp_path / "none.toml", "--out",
                             tmp_path / "m.ckpt"), 2, "no such file")


# --- bad checkpoints for --resume: exit code 1 -------------------------------------------------

@pytest.fixture
def trained(corpus, tmp_path) -> Path:
    out = tmp_path / "trained" / "model.ckpt"
    train(corpus, out, "--max-iters", "2", "--eval-interval", "5")
    return out


def resume(corpus, tmp_path, checkpoint, *args):
    return invoke("--data", corpus, *TINY, "--max-iters", "4", "--out",
                  tmp_path / "new" / "model.ckpt", "--resume", checkpoint, *args)


@pytest.mark.parametrize("kind, fragment", [
    ("missing", "no such checkpoint"),
    ("truncated", "is truncated or not a checkpoint"),
    ("random", "is not a tinygpt checkpoint"),
    ("foreign", "is not a tinygpt checkpoint (it lacks"),
])
def test_a_bad_resume_checkpoint_is_one_error(corpus, tmp_path, trained, kind, fragment):
    bad = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        bad.write_bytes(trained.read_bytes()[:5000])
    elif kind == "random":
        bad.write_bytes(random.Random(0).randbytes(20_000))  # seeded: the same bytes every run
    elif kind == "foreign":
        torch.save({"model": {"w": torch.ones(3)}, "epoch": 1}, bad)
    assert_user_error(resume(corpus, tmp_path, bad), 1, str(bad), fragment)
    assert not (tmp_path / "new" / "model.ckpt").exists()


def test_a_pickle_payload_in_resume_is_refused_and_never_run(corpus, tmp_path, trained):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    evil = tmp_path / "evil.ckpt"
    torch.save({**torch.load(trained, weights_only=True), "optimizer_state_dict": Payload()},
               evil)
    assert_user_error(resume(corpus, tmp_path, evil), 1, "pickle payload")
    assert not marker.exists()


def test_resume_with_other_data_tokenizer_or_shape_says_what_differs(corpus, tmp_path, trained):
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text(encoding="utf-8").replace("blue", "red"), encoding="utf-8")
    line = assert_user_error(resume(other, tmp_path, trained), 1, "cannot resume from")
    assert "data: checkpoint trained on" in line
    assert_user_error(resume(corpus, tmp_path, trained, "--full-vocab"), 1,
                      "tokenizer: checkpoint cl100k_base/compact/", "run cl100k_base/full/")
    assert_user_error(resume(corpus, tmp_path, trained, "--d-model", "32"), 1,
                      "d_model: checkpoint 16, run 32")
    assert not (tmp_path / "new" / "model.ckpt").exists()


# --- signals, in a real process ----------------------------------------------------------------

@pytest.mark.slow
def test_sigint_and_sigterm_save_print_the_resume_command_and_exit_130_143(corpus, tmp_path):
    # both processes start together: most of their time is importing torch
    runs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / sig.name / "model.ckpt"
        args = ["--data", str(corpus), *TINY, "--max-iters", "1000000", "--eval-interval",
                "100000", "--out", str(out)]
        proc = subprocess.Popen([sys.executable, "-m", "tinygpt_cli", "train", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
        runs[sig] = (proc, out, args)
    try:
        for sig, (proc, out, args) in runs.items():
            check_signal(sig, proc, out, args)
    finally:
        for proc, _, _ in runs.values():
            proc.kill()


def check_signal(sig: signal.Signals, proc: subprocess.Popen, out: Path, args: list[str]):
    metrics = ckpt.related_path(out, "metrics")
    deadline = time.monotonic() + 120
    while not (metrics.exists() and '"type": "train"' in metrics.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no training progress"
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], stderr
    assert "Traceback" not in stderr
    assert BOOK_LINE.match(stdout.splitlines()[0])
    stopped = re.search(rf"^Stopped by {sig.name} after step (\d+); saved "
                        rf"{re.escape(str(out))}\.$", stderr, re.M)
    assert stopped, stderr
    steps = int(stopped[1])
    assert steps >= 10 and ckpt.load(out)["step"] == steps
    (line,) = [line for line in stderr.splitlines() if line.startswith("Resume with: ")]
    command = shlex.split(line.removeprefix("Resume with: "))
    assert command[:2] == ["tinygpt", "train"] and command[-2:] == ["--resume", str(out)]
    assert command[2:-2] == args
    if sig == signal.SIGINT:  # and the command does resume (for two more steps)
        result = CliRunner().invoke(app, [*command[1:], "--max-iters", str(steps + 2)])
        assert result.exit_code == 0, result.output
        assert ckpt.load(out)["step"] == steps + 2


# --- settings that travel with a resumed run, and options checked before any work --------------

def test_resume_without_data_continues_on_the_checkpoints_corpus(corpus, tmp_path):
    out = tmp_path / "run" / "model.ckpt"
    train(corpus, out, "--max-iters", "4", "--eval-interval", "2", "--val-fraction", "0.2")
    first = torch.load(out, weights_only=True)
    assert first["data"]["settings"]["val_fraction"] == 0.2
    # no --data, no --val-fraction: both come from the checkpoint, not the bundled corpus
    result = invoke(*TINY, "--out", out, "--max-iters", "6", "--eval-interval", "2",
                    "--resume", out)
    assert result.exit_code == 0, result.output
    state = torch.load(out, weights_only=True)
    assert state["step"] == 6
    assert state["data"]["sha256"] == first["data"]["sha256"]
    assert state["data"]["settings"]["val_fraction"] == 0.2


@pytest.mark.parametrize(("args", "fragment"), [
    (["--device", "gpu"], "--device must be one of"),
    (["--device", "cuda:x"], "is not a device"),
    (["--seed", "-1"], "--seed must be between 0 and 2**63 - 1"),
    (["--compile", "--compile-mode", "fastest"], "--compile-mode must be one of"),
    (["--errors", "ignore"], "--errors must be 'strict' or 'replace'"),
    (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
])
def test_more_bad_options_are_usage_errors(corpus, tmp_path, args, fragment):
    out = tmp_path / "run" / "model.ckpt"
    result = invoke("--data", corpus, *TINY[2:], "--out", out, *args)
    assert_user_error(result, 2, fragment)
    assert not out.exists() and not out.with_name("model.metrics.jsonl").exists()


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_eval_and_generate_refuse_an_unknown_device(tmp_path, command):
    result = CliRunner().invoke(app, [command, "-c", str(tmp_path / "none.ckpt"), "--device",
                                      "gpu"])
    assert_user_error(result, 2, "--device 'gpu' is not a device")


def test_threads_auto_says_what_it_chose_and_the_report_card_ends_the_run(corpus, tmp_path,
                                                                          monkeypatch):
    from tinygpt_cli import runtime

    monkeypatch.setattr(runtime, "cores", lambda: 2)  # whatever this machine has
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    out = tmp_path / "model.ckpt"
    # steps beside a checkpoint being written are not measured: few evaluations, many steps
    result = invoke("--data", corpus, *TINY[:-2], "--out", out, "--max-iters", "40",
                    "--eval-interval", "100", "--json")
    assert result.exit_code == 0, result.output
    import json

    assert re.search(r"^threads: \d \(a step took .* ms with 1, .* ms with 2", result.stderr,
                     re.MULTILINE)

    summary = json.loads(result.stdout)  # stdout holds the JSON alone; the book's lines: stderr
    assert "Step: 0, Training Loss" in result.stderr
    card = summary["report"]
    assert summary["steps"] == card["steps"] == 40
    assert card["tokens_seen"] == 40 * 4 * 16
    assert card["valid_measure"] == "full" and card["threads"] in (1, 2)
    assert "every validation token" in result.stderr
