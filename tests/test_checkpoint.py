"""Checkpoints: atomic save (even under SIGKILL), a safe load that turns every bad file into one
clear error and never runs a pickle payload, and the checks that a checkpoint fits a run."""

from __future__ import annotations

import builtins
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tinygpt_cli import __version__
from tinygpt_cli import checkpoint as ckpt
from tinygpt_cli.config import ModelConfig
from tinygpt_cli.data import TokenizeSettings, prepare
from tinygpt_cli.errors import CheckpointError
from tinygpt_cli.fast import saver as saver_mod
from tinygpt_cli.fast.saver import BackgroundSaver
from tinygpt_cli.model import GPT

TINY = {"d_model": 16, "num_blocks": 1, "num_heads": 2, "context_length": 16, "dropout": 0.0}


def make_state(vocab, **model) -> dict:
    """A checkpoint as `Trainer.state()` lays it out, minus the optimizer and RNG parts."""
    config = ModelConfig(vocab_size=vocab.size, **{**TINY, **model})
    torch.manual_seed(0)
    gpt = GPT(config)
    return {"model_state_dict": gpt.state_dict(),
            "h_params": {"d_model": config.d_model, "max_token_value": vocab.size},
            "model_config": {"vocab_size": vocab.size, **TINY, **model},
            "tokenizer": ckpt.tokenizer_state(vocab),
            "data": {"path": "corpus.txt", "sha256": "a" * 64},
            "step": 7}


def leftovers(folder: Path, keep: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p != keep)


# --- save --------------------------------------------------------------------------------------

def test_save_then_load_round_trips(token_cache, tmp_path):
    path = tmp_path / "deep" / "er" / "model.ckpt"
    state = make_state(token_cache.vocab)
    ckpt.save(state, path)
    assert leftovers(path.parent, path) == []  # no temporary file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == ckpt.FORMAT_VERSION and raw["tinygpt_version"] == __version__
    loaded = ckpt.load(path)
    assert loaded["step"] == 7
    for name, tensor in state["model_state_dict"].items():
        assert torch.equal(loaded["model_state_dict"][name], tensor)
    assert ckpt.model_config_from(loaded) == ModelConfig(vocab_size=token_cache.vocab.size, **TINY)
    vocab = ckpt.vocabulary_from(loaded)
    assert (vocab.encoding_name, vocab.mode) == (token_cache.vocab.encoding_name, "compact")
    assert np.array_equal(vocab.ids, token_cache.vocab.ids)
    model, vocab, _ = ckpt.load_model(path)
    assert not model.training
    assert torch.equal(model.lm_head.weight, state["model_state_dict"]["lm_head.weight"])


def test_saved_file_permissions_follow_the_umask(token_cache, tmp_path):
    # a checkpoint is a shared artefact (a team folder, a model store), not a secret
    old = os.umask(0o022)
    try:
        ckpt.save(make_state(token_cache.vocab), tmp_path / "model.ckpt")
    finally:
        os.umask(old)
    assert (tmp_path / "model.ckpt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_save_refuses_non_finite_weights_and_keeps_the_old_file(token_cache, tmp_path, bad):
    tmp_path = tmp_path / "run"
    path = tmp_path / "model.ckpt"
    state = make_state(token_cache.vocab)
    ckpt.save(state, path)
    before = path.read_bytes()
    weight = state["model_state_dict"]["lm_head.weight"].clone()
    weight[3, 5] = bad  # one bad number among thousands is enough
    broken = {**state, "model_state_dict": {**state["model_state_dict"], "lm_head.weight": weight}}
    with pytest.raises(CheckpointError, match="non-finite"):
        ckpt.save(broken, path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path, path) == []
    with pytest.raises(CheckpointError, match="non-finite"):
        ckpt.save(broken, tmp_path / "new.ckpt")
    assert not (tmp_path / "new.ckpt").exists()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(token_cache, tmp_path, monkeypatch):
    tmp_path = tmp_path / "run"
    path = tmp_path / "model.ckpt"
    ckpt.save(make_state(token_cache.vocab), path)
    before = path.read_bytes()

    def disk_full(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save(make_state(token_cache.vocab), path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path, path) == []


def test_background_save_snapshots_the_state_into_independent_files(token_cache, tmp_path):
    """One snapshot taken when `save` returns (training goes on changing the weights), written to
    the best and the last checkpoint as two files, not one file under two names: replacing one,
    or rewriting it in place as `cp other.ckpt model.ckpt` does, leaves the other."""
    tmp_path = tmp_path / "run"
    path, best = tmp_path / "model.ckpt", tmp_path / "model.best.ckpt"
    saver = BackgroundSaver()
    state = make_state(token_cache.vocab)
    weights = state["model_state_dict"]
    before = {name: tensor.clone() for name, tensor in weights.items()}
    future = saver.save(state, best, path)
    for tensor in weights.values():  # the next training step, while the files are written
        tensor.add_(1.0)
    assert future.result() is None
    for name, tensor in ckpt.load(path)["model_state_dict"].items():
        assert torch.equal(tensor, before[name])
    assert best.read_bytes() == path.read_bytes()
    assert best.stat().st_ino != path.stat().st_ino
    assert best.stat().st_mode == path.stat().st_mode  # the mode a new file gets

    for step in (8, 9, 10):  # saved faster than they are written: they land in order
        saver.save({**state, "step": step}, path)
    saver.wait()
    assert ckpt.load(best)["step"] == 7 and ckpt.load(path)["step"] == 10
    with open(path, "r+b") as f:  # an in-place rewrite of the last
        f.write(b"garbage")
    assert ckpt.load(best)["step"] == 7
    assert leftovers(tmp_path, path) == ["model.best.ckpt"]
    saver.close()


def test_a_big_state_is_saved_on_the_calling_thread_the_same_way(token_cache, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(saver_mod, "IN_MEMORY_LIMIT", 0)
    tmp_path = tmp_path / "run"
    path, best = tmp_path / "model.ckpt", tmp_path / "model.best.ckpt"
    saver = BackgroundSaver()
    state = make_state(token_cache.vocab)
    serialised = []
    real_save = ckpt.torch.save
    monkeypatch.setattr(ckpt.torch, "save", lambda obj, f: serialised.append(f) or
                        real_save(obj, f))
    future = saver.save(state, best, path)
    assert future.done() and future.result() is None
    assert saver._pool is None  # no worker: written here, never held in memory twice
    assert len(serialised) == 1  # serialised once, into the best; the last is a copy of its bytes
    assert best.read_bytes() == path.read_bytes() and ckpt.load(path)["step"] == 7
    assert best.stat().st_ino != path.stat().st_ino
    assert leftovers(tmp_path, path) == ["model.best.ckpt"]


def test_torch_saves_own_write_error_is_a_checkpoint_error_too(token_cache, tmp_path,
                                                              monkeypatch):
    """torch.save into a file reports a full disk as a RuntimeError of its stream writer."""
    monkeypatch.setattr(saver_mod, "IN_MEMORY_LIMIT", 0)
    tmp_path = tmp_path / "run"
    path = tmp_path / "model.ckpt"
    saver = BackgroundSaver()
    saver.save(make_state(token_cache.vocab), path).result()
    old = path.read_bytes()

    def stream_error(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1 vs 0\n"
                           "more detail")

    monkeypatch.setattr(ckpt.torch, "save", stream_error)
    future = saver.save(make_state(token_cache.vocab), path)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*model.ckpt: "
                                              r"\[enforce fail.*unexpected pos 1 vs 0$"):
        future.result()
    with pytest.raises(CheckpointError):
        saver.wait()
    assert path.read_bytes() == old and leftovers(tmp_path, path) == []


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_failed_background_save_is_one_clear_error_and_keeps_the_old_files(
        token_cache, tmp_path, monkeypatch, in_memory):
    if not in_memory:
        monkeypatch.setattr(saver_mod, "IN_MEMORY_LIMIT", 0)
    tmp_path = tmp_path / "run"
    path, best = tmp_path / "model.ckpt", tmp_path / "model.best.ckpt"
    saver = BackgroundSaver()
    saver.save(make_state(token_cache.vocab), best, path).result()
    old = path.read_bytes(), best.read_bytes()
    real_fsync = os.fsync

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", disk_full)
    future = saver.save({**make_state(token_cache.vocab), "step": 9}, best, path)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*model.best.ckpt"
                                              r": No space left on device"):
        future.result()
    with pytest.raises(CheckpointError, match="No space left"):
        saver.wait()
    monkeypatch.setattr(ckpt.os, "fsync", real_fsync)
    assert (path.read_bytes(), best.read_bytes()) == old
    assert leftovers(tmp_path, path) == ["model.best.ckpt"]  # no temporary left behind
    saver.close()


SAVER = textwrap.dedent("""
    # Imports torch once, then forks one saver per round: each round's saver rewrites the same
    # checkpoint in a loop until the test SIGKILLs it.
    import os, sys, time
    import torch
    from tinygpt_cli import checkpoint as ckpt

    path = sys.argv[1]
    for command in sys.stdin:
        step, mode = command.split()
        step = int(step)
        pid = os.fork()
        if pid == 0:
            if mode == "stall":  # written and synced, not yet renamed into place
                def stalled(src, dst):
                    print("renaming", flush=True)
                    time.sleep(120)
                os.replace = stalled
            while True:
                weights = torch.full((4_000_000,), float(step))  # 16 MB: a save takes a while
                ckpt.save({"model_state_dict": {"w": weights}, "h_params": {},
                           "model_config": {}, "tokenizer": {}, "step": step}, path)
                print("saved", step, flush=True)
                step += 1
        print("worker", pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print("reaped", os.WIFSIGNALED(status) and os.WTERMSIG(status), flush=True)
""")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_during_save_leaves_the_previous_checkpoint(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "model.ckpt"
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    watchdog = threading.Timer(120, proc.kill)  # never hang the suite
    watchdog.start()
    rng = random.Random(1337)

    def round_(step: int, mode: str, wait_for: str, delay: float) -> list[int]:
        """Start a saver, wait for `wait_for`, SIGKILL it `delay` seconds later; return the
        steps it reported saved (each one renamed into place before it was reported)."""
        proc.stdin.write(f"{step} {mode}\n")
        proc.stdin.flush()
        pid, saved, seen = None, [], False
        while pid is None or not seen:
            line = proc.stdout.readline()
            assert line, "the saver process died"
            word, *value = line.split()
            if word == "worker":
                pid = int(value[0])
            elif word == "saved":
                saved.append(int(value[0]))
            seen = seen or word == wait_for
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        while (line := proc.stdout.readline()).split()[0] != "reaped":
            saved.append(int(line.split()[1]))
        assert line.split()[1] == str(int(signal.SIGKILL))
        return saved

    def check(at_least: int) -> int:
        state = ckpt.load(path)  # the path always holds one whole checkpoint
        step = state["step"]
        assert torch.all(state["model_state_dict"]["w"] == step)  # not a mix of two saves
        assert at_least <= step <= at_least + 1  # the last reported save, or the one after
        assert torch.load(path, weights_only=True)["step"] == step
        return step

    try:
        step = -1
        for _ in range(5):  # killed at random moments of a save loop
            saved = round_(step + 1, "loop", "saved", rng.uniform(0.0, 0.25))
            step = check(max(saved))
        # and deterministically between "written and synced" and "renamed into place"
        round_(step + 1, "stall", "renaming", 0.0)
        assert check(step) == step
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        watchdog.cancel()
        proc.kill()
    strays = [p for p in folder.iterdir() if p != path]
    assert strays, "the killed save left its temporary file"
    # a temporary file is hidden and never named like a checkpoint, so nothing mistakes it for one
    assert all(p.name.startswith(".model.ckpt.") and p.name.endswith(".tmp") for p in strays)
    assert sorted(folder.glob("*.ckpt")) == [path]


# --- load --------------------------------------------------------------------------------------

def _write_foreign(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, path)


def _write_list(path: Path) -> None:
    torch.save([torch.zeros(2)], path)


def _write_truncated(path: Path, state: dict) -> None:
    ckpt.save(state, path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("kind, fragment", [
    ("missing", "no such checkpoint"),
    ("directory", "is a directory"),
    ("empty", "truncated or not a checkpoint"),
    ("truncated", "truncated or not a checkpoint"),
    ("random", "not a tinygpt checkpoint"),
    ("text", "not a tinygpt checkpoint"),
    ("foreign", "lacks model_state_dict, h_params, model_config, tokenizer, format_version"),
    ("list", "holds a list, not a dict"),
    ("newer", "newer tinygpt"),
])
def test_every_bad_file_is_one_clear_error(token_cache, tmp_path, kind, fragment):
    path = tmp_path / "model.ckpt"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        _write_truncated(path, make_state(token_cache.vocab))
    elif kind == "random":
        path.write_bytes(random.Random(0).randbytes(50_000))
    elif kind == "text":
        path.write_text("model_state_dict = 42\n")
    elif kind == "foreign":
        _write_foreign(path)
    elif kind == "list":
        _write_list(path)
    elif kind == "newer":
        ckpt.save(make_state(token_cache.vocab), path)
        state = torch.load(path, weights_only=True)
        torch.save({**state, "format_version": ckpt.FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError) as info:
        ckpt.load(path)
    assert fragment in info.value.message
    assert str(path) in info.value.message


class Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_a_pickle_payload_is_refused_and_never_run(token_cache, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.ckpt"
    torch.save({**make_state(token_cache.vocab), "format_version": 1, "extra": Payload(marker)},
               path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="pickle payload"):
        ckpt.load(path)
    with pytest.raises(CheckpointError, match="pickle payload"):
        ckpt.load_model(path)
    assert not marker.exists()


def test_load_model_refuses_non_finite_or_mismatched_weights(token_cache, tmp_path):
    state = make_state(token_cache.vocab)
    path = tmp_path / "nan.ckpt"
    weights = dict(state["model_state_dict"])
    weights["lm_head.bias"] = torch.full_like(weights["lm_head.bias"], float("nan"))
    torch.save({**state, "model_state_dict": weights, "format_version": 1}, path)  # not via save
    with pytest.raises(CheckpointError, match="non-finite weights"):
        ckpt.load_model(path)
    path = tmp_path / "shape.ckpt"
    torch.save({**state, "model_config": {**state["model_config"], "d_model": 32},
                "format_version": 1}, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        ckpt.load_model(path)


# --- fitting a run -----------------------------------------------------------------------------

def test_differences_name_what_differs(token_cache, corpus, cache_root, tmp_path):
    vocab = token_cache.vocab
    state = make_state(vocab)
    config = ModelConfig(vocab_size=vocab.size, **TINY)
    same = ckpt.differences(state, model_config=config, vocab=vocab, data_sha256="a" * 64)
    assert same == []
    # dropout may change on resume; everything that shapes the weights may not
    found = ckpt.differences(state, model_config=ModelConfig(vocab.size, **{**TINY,
                             "dropout": 0.3, "d_model": 32, "num_blocks": 2}),
                             vocab=vocab, data_sha256="b" * 64)
    assert "d_model: checkpoint 16, run 32" in found
    assert "num_blocks: checkpoint 1, run 2" in found
    assert any(f.startswith("data: checkpoint trained on corpus.txt") for f in found)
    assert not any("dropout" in f for f in found)
    assert len(found) == 3

    full = prepare(corpus, TokenizeSettings(vocab_mode="full"), cache_root=cache_root).vocab
    found = ckpt.differences(state, model_config=config, vocab=full, data_sha256=None)
    assert len(found) == 1 and found[0].startswith("tokenizer: checkpoint cl100k_base/compact/")
    assert "/full/" in found[0]

    shuffled = type(vocab)(vocab.encoding_name, vocab.mode, vocab.ids.copy())
    other = {**state, "tokenizer": {**state["tokenizer"],
                                    "ids": state["tokenizer"]["ids"].flip(0)}}
    found = ckpt.differences(other, model_config=config, vocab=shuffled, data_sha256=None)
    assert found == ["vocabulary: same size but different token ids"]


def test_related_paths_sit_beside_the_checkpoint():
    path = Path("runs/a/model.ckpt")
    assert ckpt.related_path(path, "best") == Path("runs/a/model.best.ckpt")
    assert ckpt.related_path(path, "metrics") == Path("runs/a/model.metrics.jsonl")
    assert ckpt.related_path(path, "plot") == Path("runs/a/model.png")
