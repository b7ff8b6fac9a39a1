"""Every command's --help, as people read it: a stored snapshot at 100 columns (update it on
purpose with TINYGPT_UPDATE_SNAPSHOTS=1), flags shown as flags, value hints as words, defaults
one way, lines that fit 80 and 120 columns, and typo suggestions that point at the option meant."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tinygpt_cli.cli import app
from tinygpt_cli.commands.help import suggest

SNAPSHOTS = Path(__file__).parent / "snapshots"
COMMANDS = ["", "tokenize", "train", "eval", "generate", "plot", "info"]


def help_text(command: str, columns: int) -> str:
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": str(columns), "NO_COLOR": "1",
                                                "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_matches_its_snapshot(command):
    import typer

    text = help_text(command, 100)
    path = SNAPSHOTS / f"help_{command or 'tinygpt'}.txt"
    recorded = SNAPSHOTS / "TYPER_VERSION"
    if os.environ.get("TINYGPT_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
        recorded.write_text(typer.__version__ + "\n", encoding="utf-8")
    if recorded.read_text(encoding="utf-8").strip() != typer.__version__:
        pytest.skip(f"the snapshots were rendered by Typer {recorded.read_text().strip()}, this "
                    f"is {typer.__version__}: its layout may differ (update them on purpose)")
    assert path.exists(), f"no snapshot {path.name}: run with TINYGPT_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"{command or 'tinygpt'} --help changed; if on purpose, rerun with "
        "TINYGPT_UPDATE_SNAPSHOTS=1 and commit tests/snapshots/")


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_its_width_and_reads_like_a_cli(command, columns):
    text = help_text(command, columns)
    assert all(len(line) <= columns for line in text.splitlines())
    assert "…" not in text  # nothing cut off
    assert not re.search(r"<(bool|str|int|float|path|dir|list\[)", text)  # no Python types
    assert "[default: (" not in text  # defaults shown one way everywhere


def test_flags_are_flags_and_values_are_words():
    text = help_text("train", 120)
    for flag in ("--plot", "--wandb", "--full-vocab"):
        (line,) = [line for line in text.splitlines() if f" {flag} " in line]
        assert not re.search(rf"{flag}\s+(TEXT|N|NUMBER|PATH)\b", line), line
    assert re.search(r"--d-model\s+N\s", text) and re.search(r"--out\s+PATH\s", text)
    assert re.search(r"--learning-rate\s+NUMBER\s", text)
    data_panel = text[text.index("Data, output and resume"):text.index("Watching the run")]
    assert "--column" in data_panel and "--cache-dir" in data_panel


def test_typos_suggest_the_option_meant():
    options = ["--learning-rate", "--min-lr", "--plot", "--max-iters", "--max-time",
               "--batch-size", "--lr-schedule"]
    assert suggest("--lr", options)[0] == "--learning-rate"
    assert suggest("--max-iter", options)[0] == "--max-iters"
    assert suggest("--bs", options) == ["--batch-size"]
    assert suggest("--zzz", options) == []


def test_the_command_line_says_the_suggestion_in_one_error_line():
    proc = subprocess.run([sys.executable, "-m", "tinygpt_cli", "train", "--lr", "3e-4"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "No such option: --lr (did you mean --learning-rate" in line
