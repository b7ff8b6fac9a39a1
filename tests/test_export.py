"""`tinygpt export --format safetensors`: a folder with no pickle in it, that generate, eval and
info take in place of the checkpoint (same text, same numbers), and every refusal as one line
with nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import assert_user_error, train_tiny
from typer.testing import CliRunner

from tinygpt_cli import checkpoint as ckpt
from tinygpt_cli.cli import app


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, corpus_text: str) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("tiny-export")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    train_tiny(root / "model.ckpt", corpus, root / "cache", max_iters=12, eval_interval=6,
               eval_iters=2, batch_size=4, seed=0)
    return SimpleNamespace(root=root, checkpoint=root / "model.ckpt", cache=root / "cache")


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [*map(str, args)])


def exported(tiny, tmp_path) -> Path:
    out = tmp_path / "export"
    result = invoke("export", "-c", tiny.checkpoint, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"] == ["config.json", "model.safetensors"]
    return out


def test_the_folder_holds_plain_tensors_and_json(tiny, tmp_path):
    from safetensors.torch import load_file

    out = exported(tiny, tmp_path)
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "tinygpt-safetensors"
    assert config["model_config"]["d_model"] == 16
    tensors = load_file(str(out / "model.safetensors"))
    state = ckpt.load(tiny.checkpoint)
    assert set(tensors) == set(state["model_state_dict"]) | {"tokenizer.ids"}
    for name, weight in state["model_state_dict"].items():
        assert torch.equal(tensors[name], weight), name
    assert torch.equal(tensors["tokenizer.ids"], state["tokenizer"]["ids"].long())


def test_loading_the_folder_never_unpickles(tiny, tmp_path, monkeypatch):
    out = exported(tiny, tmp_path)

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_pickle)
    model, vocab, _ = ckpt.load_model(out)
    assert model.config.vocab_size == vocab.size


def test_generate_gives_the_same_text_from_the_folder(tiny, tmp_path):
    out = exported(tiny, tmp_path)
    texts = []
    for source in (tiny.checkpoint, out):
        result = invoke("generate", "-c", source, "--device", "cpu", "--threads", "1", "-n",
                        "24", "--seed", "3", "--num-samples", "2", "--json")
        assert result.exit_code == 0, result.output
        texts.append([s["text"] for s in json.loads(result.stdout)["samples"]])
    assert texts[0] == texts[1]


@pytest.mark.parametrize("full", [False, True])
def test_eval_gives_the_same_numbers_from_the_folder(tiny, tmp_path, full):
    out = exported(tiny, tmp_path)
    results = []
    for source in (tiny.checkpoint, out):
        result = invoke("eval", "-c", source, "--device", "cpu", "--threads", "1",
                        "--cache-dir", tiny.cache, "--json", *(["--full"] if full else []))
        assert result.exit_code == 0, result.output
        results.append(json.loads(result.stdout))
    assert results[0]["splits"] == results[1]["splits"]
    if not full:  # the folder keeps what eval needs to repeat the training's own estimate
        assert results[1]["training_estimate"] == results[0]["training_estimate"]


def test_info_describes_the_folder(tiny, tmp_path):
    out = exported(tiny, tmp_path)
    result = invoke("info", out, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["file_bytes"] == sum(p.stat().st_size for p in out.iterdir())


def test_only_an_earlier_export_is_replaced_and_only_with_force(tiny, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for force in ([], ["--force"]):  # a folder of anything else: never
        assert_user_error(invoke("export", "-c", tiny.checkpoint, "--out", out, *force), 2,
                          "exists and is not empty")
        assert [p.name for p in out.iterdir()] == ["notes.txt"]
    again = exported(tiny, tmp_path)  # an earlier export: with --force
    before = (again / "config.json").read_text()
    assert_user_error(invoke("export", "-c", tiny.checkpoint, "--out", again), 2,
                      "exists and is not empty")
    result = invoke("export", "-c", tiny.checkpoint, "--out", again, "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in again.iterdir()) == ["config.json", "model.safetensors"]
    assert (again / "config.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "notes"]  # none aside


def test_the_checkpoints_own_folder_is_never_the_output(tiny, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.ckpt").write_bytes(tiny.checkpoint.read_bytes())
    for out in (run, tmp_path):
        assert_user_error(invoke("export", "-c", run / "model.ckpt", "--out", out, "--force"),
                          2, "holds the checkpoint being exported")
    assert [p.name for p in run.iterdir()] == ["model.ckpt"]


def test_an_export_cannot_be_resumed(tiny, tmp_path, corpus):
    out = exported(tiny, tmp_path)
    result = invoke("train", "--data", corpus, "--resume", out, "--out", tmp_path / "m.ckpt")
    assert_user_error(result, 1, "holds the model but not the optimizer")


@pytest.mark.parametrize("edit", [
    {"model_config": "d_model 16"}, {"model_config": [16]}, {"tokenizer": {"encoding": ["x"]}},
    {"format_version": "1"}, {"tokenizer": None}])
def test_a_config_of_the_wrong_shape_is_one_error(tiny, tmp_path, edit):
    out = exported(tiny, tmp_path)
    config = {**json.loads((out / "config.json").read_text()), **edit}
    (out / "config.json").write_text(json.dumps(config))
    for command in (["generate", "-c", out, "-n", "4"], ["info", out],
                    ["eval", "-c", out, "--cache-dir", tiny.cache]):
        assert_user_error(invoke(*command), 1, "not a tinygpt export")


@pytest.mark.parametrize("edit", [
    {"train_config": ["x"]}, {"data": "corpus.txt"}, {"last_losses": 3}, {"step": "ten"},
    {"world_size": "2"}, {"evaluated_step": "5"}, {"h_params": [1]}])
def test_a_damaged_record_is_left_out_and_the_model_still_loads(tiny, tmp_path, edit):
    out = exported(tiny, tmp_path)
    config = {**json.loads((out / "config.json").read_text()), **edit}
    (out / "config.json").write_text(json.dumps(config))
    for command in (["info", out], ["generate", "-c", out, "-n", "4", "--threads", "1"],
                    ["eval", "-c", out, "--cache-dir", tiny.cache, "--threads", "1"]):
        result = invoke(*command)
        assert "Traceback" not in result.output and result.exit_code in (0, 1), result.output


def test_refusals_are_one_line_and_write_nothing(tiny, tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    state = ckpt.load(tiny.checkpoint)
    name = next(iter(state["model_state_dict"]))
    state["model_state_dict"][name] = torch.full_like(state["model_state_dict"][name],
                                                   float("nan"))
    diverged = tmp_path / "diverged.ckpt"
    torch.save(state, diverged)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for source, out, code, fragment in (
            (foreign, tmp_path / "e1", 1, "not a tinygpt checkpoint"),
            (diverged, tmp_path / "e2", 1, "non-finite weights"),
            (tiny.checkpoint, a_file, 2, "is a file")):
        assert_user_error(invoke("export", "-c", source, "--out", out), code, fragment)
        assert not (out.exists() and out.is_dir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "diverged.ckpt",
                                                           "foreign.ckpt"]


def test_a_missing_extra_is_named(tiny, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "safetensors" else find_spec(name, *a))
    assert_user_error(invoke("export", "-c", tiny.checkpoint, "--out", tmp_path / "e"), 2,
                      "pip install 'tinygpt[safetensors]'")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("damage", ["config", "weights"])
def test_a_damaged_folder_is_one_error(tiny, tmp_path, damage):
    out = exported(tiny, tmp_path)
    if damage == "config":
        (out / "config.json").write_text(json.dumps({"format": "something else"}))
        fragment = "is not a tinygpt export"
    else:
        data = (out / "model.safetensors").read_bytes()
        (out / "model.safetensors").write_bytes(data[:len(data) // 2])
        fragment = "not a safetensors file"
    assert_user_error(invoke("generate", "-c", out, "-n", "4"), 1, fragment)


def test_a_failed_replace_keeps_the_earlier_export(tiny, tmp_path, monkeypatch):
    out = exported(tiny, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = Path.rename

    def rename(self, target):  # the new folder cannot take its place (a full disk, say)
        if Path(target) == out and ".old." not in self.name:
            raise OSError(28, "No space left on device")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    assert_user_error(invoke("export", "-c", tiny.checkpoint, "--out", out, "--force"), 2,
                      "cannot write", "No space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # nothing half-made left
