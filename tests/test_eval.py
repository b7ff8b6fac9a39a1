"""`tinygpt eval` and evaluate.py: --full equals a hand computation, the estimate repeats itself,
--data scores any text, and a checkpoint whose data does not belong to it is one clear error."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import assert_user_error, train_tiny
from torch.nn import functional as F
from typer.testing import CliRunner

from tinygpt_cli.checkpoint import load_model
from tinygpt_cli.cli import app
from tinygpt_cli.data import as_tensor, prepare
from tinygpt_cli.errors import DataError
from tinygpt_cli.evaluate import (
    estimate_loss,
    estimate_split_loss,
    evaluate_checkpoint,
    full_loss,
    num_windows,
    window_batch_size,
)

T = 16  # the tiny model's context length
SPLIT_KEYS = {"loss", "perplexity", "bits_per_byte", "tokens", "split_tokens", "split_bytes"}



@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, corpus_text: str) -> SimpleNamespace:
    """A tiny checkpoint (d_model 16, 1 block, context 16) trained 20 steps on the tiny corpus."""
    root = tmp_path_factory.mktemp("tiny-eval")
    corpus = root / "corpus.txt"
    corpus.write_bytes(corpus_text.encode("utf-8"))
    train_tiny(root / "model.ckpt", corpus, root / "cache", max_iters=20, eval_interval=10,
               eval_iters=2, batch_size=4, seed=0)
    return SimpleNamespace(root=root, corpus=corpus, cache=root / "cache",
                           checkpoint=root / "model.ckpt")


def invoke(*args: str | Path, input: str | None = None):
    return CliRunner().invoke(app, [*map(str, args)], input=input)


def eval_json(tiny: SimpleNamespace, *args: str | Path) -> dict:
    result = invoke("eval", "-c", tiny.checkpoint, "--cache-dir", tiny.cache, "--device", "cpu",
                    "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def tampered(tiny: SimpleNamespace, name: str, **data: object) -> Path:
    """The tiny checkpoint with some of its state["data"] entries replaced."""
    state = torch.load(tiny.checkpoint, weights_only=True)
    state["data"] = {**state["data"], **data}
    path = tiny.root / f"{name}.ckpt"
    torch.save(state, path)
    return path


def hand_loss(model: torch.nn.Module, ids: np.ndarray) -> tuple[float, int]:
    """Every window's loss computed directly: non-overlapping windows of T, then the tail."""
    data = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data) - 1, T):
            x = data[start:start + T]
            y = data[start + 1:start + T + 1]
            x = x[:len(y)]
            logits, _ = model(x[None])  # (1, t, V)
            total += F.cross_entropy(logits[0], y, reduction="sum").item()
            count += len(y)
    return total / count, count


# -- full-split evaluation ------------------------------------------------------------------------

def test_full_equals_hand_computation(tiny):
    model, vocab, _ = load_model(tiny.checkpoint)
    cache = prepare(tiny.corpus, cache_root=tiny.cache)
    result = evaluate_checkpoint(tiny.checkpoint, full=True, batch_size=3, cache_dir=tiny.cache)
    assert result["mode"] == "full" and set(result["splits"]) == {"train", "valid"}
    tails = 0
    for name in ("train", "valid"):
        ids = np.asarray(cache.split(name))
        expected, count = hand_loss(model, ids)
        got = result["splits"][name]
        assert got["tokens"] == count == len(ids) - 1  # every token but the first, once
        assert got["loss"] == pytest.approx(expected, rel=1e-5)
        assert got["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
        scored_bytes = len(vocab.decode_bytes(ids[1:]))
        assert got["bits_per_byte"] == pytest.approx(
            expected * count / (math.log(2) * scored_bytes), rel=1e-5)
        tails += (len(ids) - 1) % T != 0
    assert tails, "the corpus should leave a tail shorter than a window in some split"


def test_full_loss_is_independent_of_batch_size_and_counts_windows(tiny):
    model, _, _ = load_model(tiny.checkpoint)
    data = as_tensor(np.asarray(prepare(tiny.corpus, cache_root=tiny.cache).valid))
    seen = []
    one = full_loss(model, data, context_length=T, batch_size=1, advance=seen.append)
    many = full_loss(model, data, context_length=T, batch_size=64)
    assert one[1] == many[1] == len(data) - 1
    assert one[0] == pytest.approx(many[0], rel=1e-6)
    assert sum(seen) == num_windows(len(data), T)
    assert full_loss(model, data[:1], context_length=T, batch_size=4)[1] == 0  # nothing to score
    short = data[:5]  # shorter than a window: scored as one short sequence
    assert full_loss(model, short, context_length=T, batch_size=4) == pytest.approx(
        hand_loss(model, short.numpy()))


def test_window_batch_size_bounds_the_logits():
    assert window_batch_size(32, 128, 2000) == 32
    assert window_batch_size(32, 128, 100_277) == 5  # the book's full vocabulary
    assert window_batch_size(32, 4096, 10**6) == 1


# -- the estimate ---------------------------------------------------------------------------------

def test_estimate_is_repeatable_and_is_the_books_estimate(tiny):
    first = eval_json(tiny, "--eval-iters", "3", "--batch-size", "4", "--seed", "7")
    again = eval_json(tiny, "--eval-iters", "3", "--batch-size", "4", "--seed", "7")
    assert first["splits"] == again["splits"]
    assert first["mode"] == "estimate" and first["splits"]["train"]["tokens"] == 3 * 4 * T
    other = eval_json(tiny, "--eval-iters", "3", "--batch-size", "4", "--seed", "8")
    assert other["splits"]["train"]["loss"] != first["splits"]["train"]["loss"]

    model, _, _ = load_model(tiny.checkpoint)
    cache = prepare(tiny.corpus, cache_root=tiny.cache)
    splits = {name: as_tensor(np.asarray(cache.split(name))) for name in ("train", "valid")}
    book = estimate_loss(model, splits, batch_size=4, context_length=T, eval_iters=3, seed=7)
    for value, name in zip(book.tolist(), splits, strict=True):
        assert first["splits"][name]["loss"] == pytest.approx(value, rel=1e-5)
        # memory-bounded rows give the same mean
        assert estimate_split_loss(model, splits[name], context_length=T, batch_size=4,
                                   eval_iters=3, seed=7, rows=3)[0] == pytest.approx(value,
                                                                                     rel=1e-5)


def test_table_on_stderr_json_on_stdout(tiny):
    result = invoke("eval", "-c", tiny.checkpoint, "--cache-dir", tiny.cache, "--eval-iters", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    for word in ("train", "valid", "perplexity", "bits/byte", "tokens scored"):
        assert word in result.stderr
    doc = eval_json(tiny, "--full")
    assert {"checkpoint", "mode", "source", "cache", "context_length", "splits",
            "seconds"} <= set(doc)
    assert all(set(s) == SPLIT_KEYS for s in doc["splits"].values())
    assert doc["splits"]["valid"]["split_bytes"] > 0


def test_a_missing_cache_is_rebuilt(tiny, tmp_path: Path):
    doc = eval_json(tiny, "--full")
    fresh = invoke("eval", "-c", tiny.checkpoint, "--cache-dir", tmp_path / "fresh", "--json",
                   "--full")
    assert fresh.exit_code == 0, fresh.output
    rebuilt = json.loads(fresh.stdout)
    assert Path(rebuilt["cache"]).parent == tmp_path / "fresh"
    assert rebuilt["splits"] == doc["splits"]


# -- --data ---------------------------------------------------------------------------------------

def test_data_scores_any_text_with_the_checkpoints_vocabulary(tiny, tmp_path: Path):
    _, vocab, _ = load_model(tiny.checkpoint)
    text = "Ωmega 🦄 ünïcödé 文字 and plain words\n" * 6  # mostly outside the corpus
    path = tmp_path / "other.txt"
    path.write_text(text, encoding="utf-8")
    doc = eval_json(tiny, "--data", path, "--full")
    assert set(doc["splits"]) == {"data"} and doc["cache"] is None
    (split,) = doc["splits"].values()
    assert split["split_tokens"] == len(vocab.encode(text))  # byte fallback encodes everything
    assert split["tokens"] == split["split_tokens"] - 1
    assert split["split_bytes"] == len(text.encode("utf-8"))
    # the corpus itself, through --data, scores as its cache does
    whole = eval_json(tiny, "--data", tiny.corpus, "--full")["splits"]["data"]
    cache = prepare(tiny.corpus, cache_root=tiny.cache)
    assert whole["split_tokens"] == len(cache.train) + len(cache.valid)


def test_short_data_needs_full(tiny, tmp_path: Path):
    path = tmp_path / "short.txt"
    path.write_text("water", encoding="utf-8")  # 1-2 tokens, fewer than T + 1
    result = invoke("eval", "-c", tiny.checkpoint, "--data", path)
    assert_user_error(result, 1, "too few", "context length")
    assert "--full" in result.stderr  # the hint
    assert eval_json(tiny, "--data", path, "--full")["splits"]["data"]["tokens"] >= 1
    with pytest.raises(DataError):
        evaluate_checkpoint(tiny.checkpoint, data=tmp_path / "missing.txt")
    assert_user_error(invoke("eval", "-c", tiny.checkpoint, "--data", tmp_path / "missing.txt"),
                      1, "no such file")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café au lait, crème brûlée".encode("latin-1"))
    result = invoke("eval", "-c", tiny.checkpoint, "--data", latin1)
    assert_user_error(result, 1, "not UTF-8", "offset 3")
    assert "--errors" not in result.stderr  # no hint at an option eval does not have


# -- data that does not belong to the checkpoint --------------------------------------------------

def test_another_encoding_is_refused(tiny):
    settings = torch.load(tiny.checkpoint, weights_only=True)["data"]["settings"]
    path = tampered(tiny, "encoding", settings={**settings, "encoding": "o200k_base"})
    assert_user_error(invoke("eval", "-c", path, "--cache-dir", tiny.cache), 1,
                      "does not hold together", "o200k_base")


def test_a_cache_with_another_vocabulary_is_refused(tiny, tmp_path: Path):
    from tinygpt_cli.data import file_sha256

    other = tmp_path / "other.txt"
    other.write_text("完全不同的语料 other words entirely\n" * 50, encoding="utf-8")
    path = tampered(tiny, "vocab", path=str(other), sha256=file_sha256(other))
    assert_user_error(invoke("eval", "-c", path, "--cache-dir", tiny.cache), 1,
                      "does not belong to", "vocabulary")


def test_a_changed_or_missing_corpus_is_a_clear_error(tiny):
    changed = tampered(tiny, "changed", sha256="0" * 64)
    line = assert_user_error(invoke("eval", "-c", changed, "--cache-dir", tiny.cache), 1,
                             "has changed since")
    assert str(tiny.corpus) in line
    gone = tampered(tiny, "gone", path="/nonexistent/corpus.txt")
    assert_user_error(invoke("eval", "-c", gone, "--cache-dir", tiny.cache), 1, "is not there")


def test_bad_eval_options_are_usage_errors(tiny):
    assert_user_error(invoke("eval", "-c", tiny.checkpoint, "--eval-iters", "0"), 2,
                      "--eval-iters")
    assert_user_error(invoke("eval", "-c", tiny.checkpoint, "--batch-size", "0"), 2,
                      "--batch-size")


def test_by_default_eval_repeats_the_estimate_training_reported(tiny):
    """One meaning for "validation loss": on the checkpoint saved at an evaluation (the best),
    eval's default estimate is the training's, number for number; on the run's last checkpoint
    it uses the same batches and says the weights moved on since."""
    best = tiny.root / "model.best.ckpt"
    state = torch.load(best, weights_only=True)
    assert state["step"] == state["evaluated_step"]  # saved at that evaluation
    result = invoke("eval", "-c", best, "--cache-dir", tiny.cache, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["batch_size"] == 4 and doc["eval_iters"] == 2  # the training's settings
    train_loss, valid_loss = state["last_losses"]
    assert doc["splits"]["train"]["loss"] == pytest.approx(train_loss, rel=1e-6)
    assert doc["splits"]["valid"]["loss"] == pytest.approx(valid_loss, rel=1e-6)
    assert doc["training_estimate"]["relation"] == "same"
    table = invoke("eval", "-c", best, "--cache-dir", tiny.cache, "--device", "cpu")
    assert f"training reported at step {state['step']}" in table.stderr
    assert "the same estimate, on the same weights" in table.stderr

    last = eval_json(tiny)  # model.ckpt: saved after the last step's update
    assert last["training_estimate"]["relation"] == "updated"
    assert last["training_estimate"]["updates_since"] == 1
    assert last["seed"] == doc["seed"]  # the same batches as the last evaluation
    mine = eval_json(tiny, "--batch-size", "8")
    assert mine["training_estimate"]["relation"] == "other settings"
    assert mine["seed"] == 1337 and mine["eval_iters"] == 2


def test_a_checkpoint_trained_elsewhere_is_not_said_to_repeat_its_estimate(tiny):
    """Batches drawn on another kind of device (or under autocast, or by several processes)
    differ from eval's: the default then uses the training's sizes but says it is not a repeat."""
    state = torch.load(tiny.root / "model.best.ckpt", weights_only=True)
    state["h_params"] = {**state["h_params"], "device": "cuda"}
    path = tiny.root / "from-a-gpu.ckpt"
    torch.save(state, path)
    result = invoke("eval", "-c", path, "--cache-dir", tiny.cache, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["training_estimate"]["relation"] == "other settings"
    assert doc["batch_size"] == 4 and doc["seed"] == 1337


def test_threads_auto_is_fed_every_pass_of_full(tiny):
    ticks = []
    result = evaluate_checkpoint(tiny.checkpoint, "cpu", full=True, batch_size=2,
                                 cache_dir=tiny.cache, tick=lambda: ticks.append(1))
    passes = 0
    for split in result["splits"].values():
        full, tail = divmod(split["split_tokens"] - 1, T)
        passes += -(-full // 2) + (1 if tail else 0)  # two windows a pass, the tail alone
    assert len(ticks) == passes > 2
