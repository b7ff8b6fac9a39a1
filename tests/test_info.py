"""`tinygpt info`: what a checkpoint holds, as a table on stderr or JSON on stdout that
round-trips, and one error line for each way the file can be wrong."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tinygpt_cli import checkpoint as ckpt
from tinygpt_cli.cli import app
from tinygpt_cli.commands.info_cmd import checkpoint_info
from tinygpt_cli.model import GPT


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, corpus_text: str):
    """(checkpoint, events) of a tiny 6-step run."""
    from test_plot import train_tiny

    root = tmp_path_factory.mktemp("info-run")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    events = train_tiny(root / "run" / "model.ckpt", corpus, root / "cache")
    return root / "run" / "model.ckpt", events


def invoke(*args: str | Path):
    return CliRunner().invoke(app, ["info", *map(str, args)])


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and result.stdout == ""
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    for fragment in fragments:
        assert fragment in line


def test_info_describes_the_run(trained):
    from tinygpt_cli.events import RunDone, RunStarted

    path, events = trained
    started = next(e for e in events if isinstance(e, RunStarted))
    done = next(e for e in events if isinstance(e, RunDone))
    info = checkpoint_info(path)
    model, vocab, _ = ckpt.load_model(path)
    assert info["parameters"] == {**model.num_params(), "stored": model.num_params()["total"]}
    assert info["parameters"]["embedding"] == vocab.size * 16  # the token embedding (V, C)
    assert {k: info["parameters"][k] for k in ("embedding", "other", "total")} == started.params
    assert info["model_config"]["d_model"] == 16 and info["model_config"]["num_blocks"] == 1
    assert info["tokenizer"] == {"encoding": "cl100k_base", "mode": "compact",
                                 "vocab_size": vocab.size}
    assert info["steps"] == done.steps == 6
    assert info["tokens_per_step"] == started.tokens_per_step == 2 * 16
    assert info["tokens_seen"] == 6 * 32
    assert info["best_valid_loss"] == done.best_valid_loss
    assert info["best_step"] == done.best_step
    assert (info["last_train_loss"], info["last_valid_loss"]) == (done.final_train_loss,
                                                                  done.final_valid_loss)
    assert info["data"]["path"] == started.data["path"]
    assert info["data"]["sha256"] == started.data["sha256"]
    assert info["file_bytes"] == path.stat().st_size
    assert info["tinygpt_version"] == "0.1.0"
    assert info["has_optimizer_state"] and info["has_rng_state"] and info["finite_weights"]
    assert info["related_files"]["metrics"] == str(path.with_name("model.metrics.jsonl"))
    assert info["related_files"]["best"] == str(path.with_name("model.best.ckpt"))


def test_info_json_round_trips(trained):
    path, _ = trained
    result = invoke(path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == checkpoint_info(path)
    assert result.stderr == ""


def test_info_table_goes_to_stderr(trained):
    path, _ = trained
    result = invoke(path)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    for label in ("parameters", "tokenizer", "best valid loss", "data sha256", "can resume"):
        assert label in result.stderr
    assert "cl100k_base, compact vocabulary" in result.stderr


def test_a_checkpoint_without_resume_state_says_so(trained, tmp_path: Path):
    path, _ = trained
    state = ckpt.load(path)
    for key in ("optimizer_state_dict", "rng", "train_config", "data", "last_losses"):
        state.pop(key)
    slim = tmp_path / "slim.ckpt"
    ckpt.save(state, slim)
    info = checkpoint_info(slim)
    assert not info["has_optimizer_state"] and not info["has_rng_state"]
    assert info["data"] is None and info["tokens_per_step"] is None
    assert info["last_valid_loss"] is None
    result = invoke(slim)
    assert result.exit_code == 0, result.output
    assert "optimizer state missing" in result.stderr


def test_info_bad_inputs_are_one_error_line(trained, tmp_path: Path, monkeypatch):
    path, _ = trained
    assert_user_error(invoke(tmp_path / "missing.ckpt"), "no such checkpoint")
    monkeypatch.chdir(tmp_path)
    assert_user_error(invoke(), "model/model.ckpt", "no such checkpoint")  # the default

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_user_error(invoke(truncated), "truncated")

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    assert_user_error(invoke(foreign), "not a tinygpt checkpoint")

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.ckpt"  # a bare pickle, not even torch's zip format
    evil.write_bytes(pickle.dumps(Payload()))
    result = invoke(evil)
    assert "this must never run" not in result.output
    assert_user_error(result, "evil.ckpt")

    evil_torch = tmp_path / "evil_torch.ckpt"
    torch.save({"model_state_dict": Payload()}, evil_torch)
    result = invoke(evil_torch, "--json")
    assert "this must never run" not in result.output
    assert_user_error(result, "pickle payload")


def test_meta_device_count_matches_a_real_model():
    from tinygpt_cli.config import ModelConfig

    config = ModelConfig(vocab_size=50, d_model=16, num_blocks=2, num_heads=2, context_length=16)
    with torch.device("meta"):
        meta = GPT(config).num_params()
    assert meta == GPT(config).num_params()


def test_off_a_terminal_info_reads_like_a_log(trained):
    """No wrapping at 80 columns (a 64-character hash and a long path stay whole on their line)
    and no trailing spaces, when stderr is not a terminal and COLUMNS is not set."""
    checkpoint, _ = trained
    result = CliRunner().invoke(app, ["info", str(checkpoint)], env={"COLUMNS": None})
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    (sha,) = [line for line in lines if "data sha256" in line]
    assert re.search(r"\b[0-9a-f]{64}$", sha), sha
    (path,) = [line for line in lines if line.lstrip().startswith("checkpoint ")]
    assert path.endswith(str(checkpoint))
    assert all(line == line.rstrip() for line in lines)
