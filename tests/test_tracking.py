"""Experiment trackers fed a real run's events: W&B offline and TensorBoard record the losses at
every evaluation, and a missing package is a usage error that says what to install."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from tinygpt_cli.errors import UsageError
from tinygpt_cli.tracking import (
    TensorBoardTracker,
    TrackerUnavailable,
    WandbTracker,
    run_config,
)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory, corpus_text: str) -> list:
    """The events of a tiny 6-step run: evaluations at steps 0, 2, 4 and 5."""
    from test_plot import train_tiny

    root = tmp_path_factory.mktemp("tracking-run")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    return train_tiny(root / "run" / "model.ckpt", corpus, root / "cache")


def of_type(events: list, name: str) -> list:
    return [e for e in events if type(e).__name__ == name]


def feed(tracker, events: list) -> None:
    try:
        for event in events:
            tracker.handle(event)
    finally:
        tracker.close()


# --- Weights & Biases --------------------------------------------------------------------------

def wandb_records(run_file: Path) -> list:
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log: 32 KiB blocks
    of chunks with a 7-byte header, after the file's own 7-byte W&B header)."""
    from wandb.proto import wandb_internal_pb2

    data, records, pos, pending = run_file.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def test_wandb_offline_logs_the_losses_at_each_evaluation(events, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for var, sub in (("WANDB_DIR", ""), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        (tmp_path / sub).mkdir(exist_ok=True)
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    started = of_type(events, "RunStarted")[0]
    config = run_config(started.model_config, started.train_config)
    feed(WandbTracker("tinygpt-test", config, run_name="tiny"), events)
    wandb.teardown()  # finish() may return before wandb-core flushes the offline run's file

    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    evals = of_type(events, "EvalDone")
    assert [h["_step"] for h in history] == [e.step for e in evals] == [0, 2, 4, 5]
    for logged, e in zip(history, evals, strict=True):
        assert {k: logged[k] for k in ("train_loss", "valid_loss", "tokens_per_sec", "lr")} == \
            pytest.approx({"train_loss": e.train_loss, "valid_loss": e.valid_loss,
                           "tokens_per_sec": e.tokens_per_sec, "lr": e.lr})
    summary, config_logged = {}, {}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "summary":
            summary.update(_items(r.summary.update))
        elif kind == "run":  # wandb.init's config
            config_logged.update(_items(r.run.config.update))
        elif kind == "config":  # later config.update calls
            config_logged.update(_items(r.config.update))
    done = of_type(events, "RunDone")[0]
    assert summary["checkpoint"] == str(done.checkpoint)
    assert summary["best_valid_loss"] == pytest.approx(done.best_valid_loss)
    assert {k: config_logged[k] for k in config} == config  # model + train config, flat
    assert config_logged["d_model"] == 16 and config_logged["batch_size"] == 2
    assert config_logged["tokens_per_step"] == 32  # added from RunStarted
    (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0


def test_a_wandb_run_that_ends_without_run_done_is_marked_failed(events, monkeypatch):
    wandb = pytest.importorskip("wandb")
    calls = []

    class FakeRun:
        config, summary = None, None

        def log(self, data, step):
            calls.append(("log", step, sorted(data)))

        def finish(self, exit_code=None):
            calls.append(("finish", exit_code))

    monkeypatch.setattr(wandb, "init", lambda **kwargs: FakeRun())
    tracker = WandbTracker("p", {}, "name")
    for event in of_type(events, "EvalDone")[:2]:  # then, say, the run diverged
        tracker.handle(event)
    tracker.close()
    tracker.close()
    keys = ["lr", "tokens_per_sec", "train_loss", "valid_loss"]
    assert calls == [("log", 0, keys), ("log", 2, keys), ("finish", 1)]


def test_wandb_missing_is_a_usage_error_that_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(TrackerUnavailable) as info:
        WandbTracker("p", {}, None)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2
    assert info.value.message == "--wandb needs the wandb package: pip install 'tinygpt[wandb]'"


def test_wandb_that_cannot_start_is_a_usage_error(monkeypatch):
    wandb = pytest.importorskip("wandb")

    def refuse(**kwargs):
        raise wandb.errors.UsageError("No API key configured. Use `wandb login` to log in.")

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.raises(TrackerUnavailable, match="could not start a W&B run") as info:
        WandbTracker("p", {}, None)
    assert "WANDB_MODE=offline" in info.value.hint


# --- TensorBoard -------------------------------------------------------------------------------

def test_tensorboard_writes_the_scalars(events, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    feed(TensorBoardTracker(tmp_path / "tb"), events)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    evals, steps = of_type(events, "EvalDone"), of_type(events, "StepDone")
    scalars = {tag: [(s.step, s.value) for s in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert set(scalars) == {"loss/train", "loss/valid", "tokens_per_sec", "lr",
                            "loss/train_running"}
    assert scalars["loss/valid"] == [(e.step, pytest.approx(e.valid_loss)) for e in evals]
    assert scalars["loss/train"] == [(e.step, pytest.approx(e.train_loss)) for e in evals]
    assert scalars["lr"] == [(e.step, pytest.approx(e.lr)) for e in evals]
    assert scalars["loss/train_running"] == [(e.step, pytest.approx(e.loss)) for e in steps]
    assert len(scalars["loss/train_running"]) == 6


def test_tensorboard_missing_is_a_usage_error_that_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(TrackerUnavailable) as info:
        TensorBoardTracker(tmp_path / "tb")
    assert info.value.exit_code == 2
    assert "pip install 'tinygpt[tensorboard]'" in info.value.message
    assert not (tmp_path / "tb").exists()


def test_trackers_ignore_events_they_do_not_know_and_close_once(tmp_path):
    pytest.importorskip("tensorboard")
    tracker = TensorBoardTracker(tmp_path / "tb")
    tracker.handle(object())
    tracker.close()
    tracker.close()
