"""Every size and number an option takes has bounds, checked before anything is allocated: one
error line that names the bound (or, for sizes, the memory estimate and the machine's memory),
exit 2, and no checkpoint written."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_user_error
from typer.testing import CliRunner

from tinygpt_cli.cli import app

TRAIN = {
    "--batch-size 1000000000": "--batch-size must be at most",
    "--batch-size 100000": "GiB (an estimate of the weights",
    "--d-model 60000 --num-heads 4": "this machine has",
    "--num-blocks 1000000000": "--num-blocks must be at most",
    "--d-model 1000000000": "--d-model must be at most",
    "--eval-iters 1000000000": "--eval-iters must be at most",
    "--grad-accum 1000000000": "--grad-accum must be at most",
    "--max-time inf": "--max-time must be a finite number (got inf)",
    "--dropout nan": "--dropout must be a finite number",
    "--grad-clip inf": "--grad-clip must be a finite number",
    "--learning-rate nan": "--learning-rate must be a finite number",
    "--seed 9223372036854775808": "--seed must be between 0 and 2**63 - 1",
    "--threads 1000000000": "--threads must be auto or from 1 to",
    "--threads 0": "--threads must be auto or from 1 to",
    "--threads many": "--threads must be auto or a whole number (got 'many')",
}


@pytest.mark.parametrize("args", sorted(TRAIN))
def test_train_sizes_and_numbers_have_bounds(corpus: Path, cache_root: Path, tmp_path: Path,
                                             args: str):
    out = tmp_path / "model.ckpt"
    result = CliRunner().invoke(app, ["train", "--data", str(corpus), "--cache-dir",
                                      str(cache_root), "--device", "cpu", "--context-length",
                                      "16", "--out", str(out), *args.split()])
    assert_user_error(result, 2, TRAIN[args])
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["generate", "--threads", "1000000000"], "--threads must be auto or from 1 to"),
    (["eval", "--threads", "1000000000"], "--threads must be auto or from 1 to"),
    (["eval", "--eval-iters", "1000000000"], "--eval-iters must be from 1 to"),
    (["eval", "--batch-size", "1000000000"], "--batch-size must be from 1 to"),
    (["eval", "--seed", "9223372036854775808"], "--seed must be between 0 and 2**63 - 1"),
    (["generate", "--seed", "9223372036854775808"], "--seed must be between 0 and 2**63 - 1"),
])
def test_eval_and_generate_options_have_bounds(tmp_path: Path, args, fragment):
    result = CliRunner().invoke(app, [*args, "-c", str(tmp_path / "none.ckpt")])
    assert_user_error(result, 2, fragment)
