"""`tinygpt train` never writes over what is not its own: a file that is not a checkpoint, an
input of the run, another run's checkpoint (unless --overwrite), or an --out another run holds.
Every refusal is one error line, exit 2, and leaves the protected file byte for byte."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import assert_user_error
from typer.testing import CliRunner

from tinygpt_cli import checkpoint as ckpt
from tinygpt_cli.cli import app
from tinygpt_cli.outputs import Lock

TINY = ["--device", "cpu", "--d-model", "16", "--num-blocks", "1", "--num-heads", "2",
        "--context-length", "16", "--batch-size", "2", "--eval-iters", "1", "--dropout", "0"]


def train(corpus: Path, out: Path, *args: str | Path):
    return CliRunner().invoke(app, ["train", "--data", str(corpus), *TINY, "--max-iters", "2",
                                    "--out", str(out), *map(str, args)])


@pytest.fixture
def earlier(corpus: Path, tmp_path: Path) -> Path:
    """A finished run's checkpoint, with its best copy and metrics beside it."""
    out = tmp_path / "run" / "model.ckpt"
    result = train(corpus, out)
    assert result.exit_code == 0, result.output
    return out


def test_out_is_never_the_corpus(corpus: Path, tmp_path: Path):
    before = corpus.read_bytes()
    assert_user_error(train(corpus, corpus), 2, "would overwrite", str(corpus), "input")
    assert corpus.read_bytes() == before


def test_out_is_never_a_file_kept_beside_it_that_is_an_input(corpus_text: str, tmp_path: Path):
    """--out model.ckpt writes model.metrics.jsonl: a corpus of that name is an input."""
    data = tmp_path / "model.metrics.jsonl"
    data.write_bytes(corpus_text.encode("utf-8"))
    assert_user_error(train(data, tmp_path / "model.ckpt"), 2, "would overwrite", "input")
    assert data.read_bytes() == corpus_text.encode("utf-8")


def test_out_is_never_the_config_file(corpus: Path, tmp_path: Path):
    config = tmp_path / "run.toml"
    config.write_text("max_iters = 2\n", encoding="utf-8")
    result = train(corpus, config, "--config", config)
    assert_user_error(result, 2, "would overwrite", "run.toml")
    assert config.read_text(encoding="utf-8") == "max_iters = 2\n"


@pytest.mark.parametrize("content", [b"my notes\n", b"", b"PK\x03\x04 not torch", b"\x80\x02}q."])
def test_a_file_that_is_not_a_checkpoint_is_never_replaced(corpus: Path, tmp_path: Path,
                                                           content: bytes):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    assert_user_error(train(corpus, notes), 2, "is not a tinygpt checkpoint")
    assert notes.read_bytes() == content


def test_another_runs_checkpoint_needs_overwrite(corpus: Path, earlier: Path):
    before = earlier.read_bytes()
    line = assert_user_error(train(corpus, earlier), 2, "holds another run", "2 steps on")
    assert str(corpus) in line and "valid loss" in line
    assert earlier.read_bytes() == before
    # its best copy counts as that run's too, even with the main checkpoint gone
    best = ckpt.related_path(earlier, "best")
    moved = earlier.with_name("kept.ckpt")
    earlier.rename(moved)
    assert_user_error(train(corpus, earlier), 2, "holds another run", "model.best.ckpt")
    moved.rename(earlier)
    assert best.exists()


def test_overwrite_replaces_the_run_and_its_stale_files(corpus: Path, earlier: Path):
    plot = ckpt.related_path(earlier, "plot")
    plot.write_bytes(b"an earlier run's plot")
    old = earlier.read_bytes()
    result = train(corpus, earlier, "--overwrite", "--max-iters", "3")
    assert result.exit_code == 0, result.output
    assert earlier.read_bytes() != old and ckpt.load(earlier)["step"] == 3
    assert not plot.exists()  # an earlier run's picture is not shown as this run's
    metrics = ckpt.related_path(earlier, "metrics").read_text(encoding="utf-8")
    assert '"step": 0' in metrics and metrics.count('"type": "eval"') == 2  # steps 0 and 2


def test_resume_continues_in_place(corpus: Path, earlier: Path):
    result = train(corpus, earlier, "--resume", earlier, "--max-iters", "4")
    assert result.exit_code == 0, result.output
    assert ckpt.load(earlier)["step"] == 4
    best = ckpt.related_path(earlier, "best")
    result = train(corpus, earlier, "--resume", best, "--max-iters", "6")
    assert result.exit_code == 0, result.output  # from the best copy, into the same run


def test_a_second_run_on_the_same_out_refuses_at_once(corpus: Path, tmp_path: Path):
    out = tmp_path / "run" / "model.ckpt"
    out.parent.mkdir()
    held = Lock(out)  # another run holds it
    try:
        assert_user_error(train(corpus, out), 2, "in use by another tinygpt run")
        assert not out.exists()
    finally:
        held.release()
    result = train(corpus, out)
    assert result.exit_code == 0, result.output
    assert not out.with_name(".model.ckpt.lock").exists()  # released and tidied at the end


def test_a_killed_run_leaves_no_lock_behind(tmp_path: Path):
    out = tmp_path / "model.ckpt"
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from tinygpt_cli.outputs import Lock
        Lock(Path({str(out)!r}))
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(Exception, match="in use by another tinygpt run"):
            Lock(out)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    Lock(out).release()  # the kernel released the dead process's lock


# --- non-finite is never "good" -----------------------------------------------------------------

def test_a_non_finite_evaluation_is_never_saved_and_the_error_names_a_finite_checkpoint(
        corpus: Path, tmp_path: Path):
    import torch

    out = tmp_path / "run" / "model.ckpt"
    result = CliRunner().invoke(app, ["train", "--data", str(corpus), *TINY, "--max-iters", "30",
                                      "--eval-interval", "1", "--learning-rate", "1e6",
                                      "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "training diverged" in line and "not finite" in line
    named = Path(line.split("the last good checkpoint is ")[1])
    state = ckpt.load(named)
    assert ckpt.all_finite(state["model_state_dict"])
    assert all(torch.isfinite(torch.tensor(state["last_losses"])))


def broken(checkpoint: Path, tmp_path: Path, how: str) -> Path:
    """A copy of a checkpoint whose weights are NaN, or finite but so large the logits are not."""
    import torch

    state = torch.load(checkpoint, weights_only=True)
    weights = state["model_state_dict"]
    if how == "nan":
        weights["lm_head.bias"][0] = float("nan")
    else:
        weights["lm_head.weight"].fill_(3e38)
        state["last_losses"] = [float("nan"), float("nan")]
    path = tmp_path / f"{how}.ckpt"
    torch.save(state, path)
    return path


def test_resume_of_a_diverged_checkpoint_is_refused_up_front(corpus: Path, earlier: Path,
                                                           tmp_path: Path):
    for how, fragment in (("nan", "weights are not finite"),
                          ("overflow", "last evaluation is not finite")):
        bad = broken(earlier, tmp_path, how)
        result = train(corpus, tmp_path / how / "model.ckpt", "--resume", bad, "--max-iters", "4")
        assert_user_error(result, 1, "cannot resume", fragment)


def test_eval_and_generate_stop_on_logits_that_are_not_finite(earlier: Path, tmp_path: Path):
    bad = broken(earlier, tmp_path, "overflow")  # finite weights, infinite logits
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "-c", str(bad), "--full"])
    assert_user_error(result, 1, "non-finite logits")
    result = runner.invoke(app, ["generate", "-c", str(bad), "-n", "5"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "logits are not finite" in line
