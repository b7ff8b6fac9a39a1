"""A checkpoint's contents are checked before anything is built from it: every command that
reads one (info, generate, eval, train --resume) answers a damaged or hostile configuration with
one error line and a non-zero exit, fast, without allocating what it describes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import train_tiny
from typer.testing import CliRunner

from tinygpt_cli import checkpoint as ckpt
from tinygpt_cli.cli import app


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, corpus_text: str):
    root = tmp_path_factory.mktemp("hostile")
    corpus = root / "corpus.txt"
    corpus.write_bytes(corpus_text.encode("utf-8"))
    train_tiny(root / "run" / "model.ckpt", corpus, root / "cache", max_iters=2, eval_interval=1,
               eval_iters=1)
    return root, corpus


def tampered(run, name: str, change) -> Path:
    root, _ = run
    state = torch.load(root / "run" / "model.ckpt", weights_only=True)
    change(state)
    path = root / f"{name}.ckpt"
    torch.save(state, path)
    return path


def config(**values):
    def change(state):
        state["model_config"].update(values)
    return change


def grow_vocab_id(state):
    state["tokenizer"]["ids"][-1] = 2**40


def wrong_shape(state):
    state["model_state_dict"]["lm_head.bias"] = torch.zeros(3)


def extra_key(state):
    state["model_state_dict"]["blocks.9.attn.qkv.weight"] = torch.zeros(2, 2)


HOSTILE = {
    "a million blocks": (config(num_blocks=10**6), "num_blocks must be a whole number"),
    "d_model 10^7": (config(d_model=10**7), "d_model must be a whole number"),
    "a string for a number": (config(d_model="16"), "d_model must be a whole number"),
    "a bool for a number": (config(num_heads=True), "num_heads must be a whole number"),
    "heads that do not divide": (config(num_heads=3), "unusable configuration"),
    "dropout 1.5": (config(dropout=1.5), "dropout must be a number in [0, 1)"),
    "terabytes of weights": (config(vocab_size=4_000_000, d_model=65_536, num_heads=1),
                             "GiB of float32 weights; this machine has"),
    "a token id of 2**40": (grow_vocab_id, "vocabulary id outside [0, 2**31)"),
    "a weight of another shape": (wrong_shape, "lm_head.bias is (3,)"),
    "a weight too many": (extra_key, "unexpected blocks.9.attn.qkv.weight"),
}


def invoke(command: str, path: Path, run) -> object:
    root, corpus = run
    args = {"info": ["info", str(path)],
            "generate": ["generate", "-c", str(path), "-n", "3"],
            "eval": ["eval", "-c", str(path), "--cache-dir", str(root / "cache")],
            "resume": ["train", "--resume", str(path), "--data", str(corpus), "--cache-dir",
                       str(root / "cache"), "--max-iters", "4", "--device", "cpu",
                       "--out", str(root / "resumed" / f"{path.stem}.ckpt")]}[command]
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("command", ["info", "generate", "eval", "resume"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_configuration_is_one_error_line(run, command, case):
    change, fragment = HOSTILE[case]
    path = tampered(run, case.replace(" ", "-").replace("*", ""), change)
    before = path.read_bytes()
    result = invoke(command, path, run)
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    if command != "resume" or case not in ("a string for a number", "a bool for a number",
                                           "dropout 1.5", "heads that do not divide"):
        assert fragment in errors[0], errors[0]
    assert path.read_bytes() == before  # the checkpoint itself is left as it was


def test_keys_saved_from_a_compiled_model_are_accepted(run):
    """torch.compile's wrapper prefixes every key with `_orig_mod.`: the same weights."""
    def compiled(state):
        state["model_state_dict"] = {f"_orig_mod.{k}": v
                                     for k, v in state["model_state_dict"].items()}
    path = tampered(run, "compiled", compiled)
    for command in ("info", "generate", "resume"):
        result = invoke(command, path, run)
        assert result.exit_code == 0, (command, result.output)
    model, _, _ = ckpt.load_model(path)
    plain, _, _ = ckpt.load_model(run[0] / "run" / "model.ckpt")
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
