"""`tinygpt export --format hf|onnx`: transformers and onnxruntime compute the checkpoint's
function (logits within 1e-4, greedy text identical), the exported tokenizer gives tinygpt's ids
on the training corpus and round-trips any text, and a bad export is never left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import assert_user_error
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tinygpt_cli import checkpoint as ckpt
from tinygpt_cli.cli import app
from tinygpt_cli.data import default_corpus, load_cache
from tinygpt_cli.sampling import generate_tokens

transformers = pytest.importorskip("transformers")
onnxruntime = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [*map(str, args)])


def train_on_the_bundled_corpus(root: Path, full_vocab: bool = False,
                                steps: int = 150) -> SimpleNamespace:
    """A small real run on the bundled corpus, with the book's context of 128 tokens."""
    from tinygpt_cli.config import TrainConfig
    from tinygpt_cli.data import TokenizeSettings
    from tinygpt_cli.train import Trainer, TrainRequest

    corpus = root / "order_items.csv"
    shutil.copyfile(default_corpus(), corpus)
    config = TrainConfig(device="cpu", dtype="float32", max_iters=steps,
                         eval_interval=max(1, steps // 2), eval_iters=2, batch_size=8,
                         learning_rate=1e-2, seed=0)
    trainer = Trainer(TrainRequest(
        train_config=config, data=corpus, cache_dir=root / "cache", out=root / "model.ckpt",
        model_options={"d_model": 32, "num_blocks": 2, "num_heads": 2, "context_length": 128,
                       "dropout": 0.0},
        tokenize=TokenizeSettings(vocab_mode="full" if full_vocab else "compact")))
    try:
        list(trainer.run())
    finally:
        trainer.close()
    (cache,) = [p for p in (root / "cache").iterdir() if p.is_dir()]
    return SimpleNamespace(root=root, checkpoint=root / "model.ckpt", corpus=corpus,
                           cache=load_cache(cache))


def export(source: Path, out: Path, fmt: str) -> dict:
    result = invoke("export", "-c", source, "--format", fmt, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    run = train_on_the_bundled_corpus(tmp_path_factory.mktemp("export-formats"))
    run.model, run.vocab, run.state = ckpt.load_model(run.checkpoint)
    run.hf_result = export(run.checkpoint, run.root / "hf", "hf")
    run.onnx_result = export(run.checkpoint, run.root / "onnx", "onnx")
    run.hf, run.onnx = run.root / "hf", run.root / "onnx"
    return run


def corpus_ids(run: SimpleNamespace) -> list[int]:
    return np.concatenate([run.cache.split("train"), run.cache.split("valid")]).tolist()


def hf_tokenizer(folder: Path):
    return transformers.AutoTokenizer.from_pretrained(folder)


# --- hf ------------------------------------------------------------------------------------------

def test_transformers_loads_the_folder_with_no_custom_code(book):
    model = transformers.AutoModelForCausalLM.from_pretrained(book.hf)
    assert type(model).__name__ == "CTRLLMHeadModel"
    config = json.loads((book.hf / "config.json").read_text())
    assert "auto_map" not in config and config["tie_word_embeddings"] is False
    assert sorted(book.hf_result["files"]) == [
        "README.md", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json"]
    generation = json.loads((book.hf / "generation_config.json").read_text())
    assert (generation["temperature"], generation["top_k"], generation["max_length"]) == (
        0.8, 0, 128)
    card = (book.hf / "README.md").read_text()
    assert "order_items.csv" in card and "| steps | 150 |" in card
    assert f"{sum(p.numel() for p in book.model.parameters()):,}" in card
    assert f"{book.state['last_losses'][1]:.4f}" in card
    assert "tinygpt train --data order_items.csv --d-model 32 --num-blocks 2" in card


@pytest.mark.parametrize("length", [1, 17, 128])
def test_transformers_logits_match_tinygpts(book, length):
    hf = transformers.AutoModelForCausalLM.from_pretrained(book.hf).eval()
    ids = torch.tensor([corpus_ids(book)[:length], corpus_ids(book)[1000:1000 + length]])
    with torch.no_grad():
        ours, theirs = book.model(ids)[0], hf(ids).logits
    V = book.vocab.size
    assert theirs.shape[-1] == V + book.hf_result["extra_tokens"]
    assert (ours - theirs[..., :V]).abs().max() < TOLERANCE
    assert (theirs[..., V:] < ours.min() - 1000).all()  # tokens it never learned: never drawn


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_text_is_identical(book, use_cache):
    hf = transformers.AutoModelForCausalLM.from_pretrained(book.hf).eval()
    prompt = corpus_ids(book)[:12]
    ours = list(generate_tokens(book.model, prompt, 100, temperature=0.0, use_cache=use_cache))
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=100,
                             use_cache=use_cache)[0, len(prompt):].tolist()
    assert len(set(ours)) > 3  # a run that learned something: not one token over and over
    assert theirs == ours


def test_the_tokenizer_gives_tinygpts_ids_on_the_corpus(book, tokenizer):
    text = book.corpus.read_text(encoding="utf-8")
    assert tokenizer(text, add_special_tokens=False).input_ids == corpus_ids(book)
    assert tokenizer.decode(corpus_ids(book)) == text


@pytest.fixture(scope="module")
def tokenizer(book):
    return hf_tokenizer(book.hf)


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_the_tokenizer_round_trips_any_text(book, tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < book.vocab.size + book.hf_result["extra_tokens"] for i in ids)


def test_a_full_vocabulary_exports_exactly(tmp_path):
    run = train_on_the_bundled_corpus(tmp_path, full_vocab=True, steps=1)
    result = export(run.checkpoint, tmp_path / "hf", "hf")
    assert result["extra_tokens"] == 0
    tokenizer = hf_tokenizer(tmp_path / "hf")
    text = run.corpus.read_text(encoding="utf-8")
    assert tokenizer(text, add_special_tokens=False).input_ids == corpus_ids(run)
    assert result["max_logit_difference"] < TOLERANCE


# --- onnx ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("batch", "length"), [(1, 1), (3, 5), (2, 64), (1, 128)])
def test_onnxruntime_logits_match_tinygpts(book, batch, length):
    session = onnxruntime.InferenceSession(str(book.onnx / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids"]
    ids = torch.randint(0, book.vocab.size, (batch, length),
                        generator=torch.Generator().manual_seed(length))
    (theirs,) = session.run(["logits"], {"input_ids": ids.numpy()})
    with torch.no_grad():
        ours = book.model(ids)[0].numpy()
    assert theirs.shape == (batch, length, book.vocab.size + book.onnx_result["extra_tokens"])
    assert np.abs(ours - theirs[..., :book.vocab.size]).max() < TOLERANCE


def test_the_onnx_folder_states_its_opset_and_brings_its_tokenizer(book):
    import onnx
    from tokenizers import Tokenizer

    graph = onnx.load(str(book.onnx / "model.onnx"))
    opset = {o.domain: o.version for o in graph.opset_import}[""]
    config = json.loads((book.onnx / "config.json").read_text())
    assert config["opset"] == opset == book.onnx_result["opset"]
    tokenizer = Tokenizer.from_file(str(book.onnx / "tokenizer.json"))
    text = book.corpus.read_text(encoding="utf-8")[:5000]
    assert tokenizer.encode(text).ids == book.vocab.encode(text)


# --- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["hf", "onnx"])
def test_refusals_are_one_line_and_write_nothing(book, tmp_path, fmt):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    state = ckpt.load(book.checkpoint)
    for weights in state["model_state_dict"].values():
        weights[0] = float("inf")
    diverged = tmp_path / "diverged.ckpt"
    torch.save(state, diverged)
    held = tmp_path / "held"
    held.mkdir()
    (held / "notes.txt").write_text("mine")
    for source, out, code, fragment in (
            (foreign, tmp_path / "e1", 1, "not a tinygpt checkpoint"),
            (diverged, tmp_path / "e2", 1, "non-finite weights"),
            (book.checkpoint, held, 2, "exists and is not empty")):
        assert_user_error(invoke("export", "-c", source, "-f", fmt, "--out", out, "--force"),
                          code, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diverged.ckpt", "foreign.ckpt",
                                                           "held"]
    assert [p.name for p in held.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("fmt", "module", "extra"), [
    ("hf", "transformers", "hf"), ("hf", "tokenizers", "hf"), ("onnx", "onnxruntime", "onnx"),
    ("onnx", "onnxscript", "onnx")])
def test_a_missing_extra_is_named(book, tmp_path, monkeypatch, fmt, module, extra):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == module else find_spec(name, *a))
    assert_user_error(invoke("export", "-c", book.checkpoint, "-f", fmt, "--out",
                             tmp_path / "e"), 2, f"pip install 'tinygpt[{extra}]'")
    assert not (tmp_path / "e").exists()


def test_an_export_whose_logits_differ_is_not_kept(book, tmp_path, monkeypatch):
    from tinygpt_cli import export_hf

    real = export_hf.ctrl_weights

    def broken(model):  # a mapping bug: one weight in the wrong layout
        weights = real(model)
        weights["transformer.layernorm.weight"] = weights["transformer.layernorm.weight"].flip(0)
        return weights

    monkeypatch.setattr(export_hf, "ctrl_weights", broken)
    assert_user_error(invoke("export", "-c", book.checkpoint, "-f", "hf", "--out",
                             tmp_path / "e"), 1, "logits differ from the checkpoint's")
    assert list(tmp_path.iterdir()) == []


def test_an_earlier_hf_export_is_replaced_only_with_force(book, tmp_path):
    out = tmp_path / "hf"
    export(book.checkpoint, out, "hf")
    refused = invoke("export", "-c", book.checkpoint, "-f", "onnx", "--out", out)
    assert_user_error(refused, 2, "exists and is not empty")
    assert "--force to replace the earlier export" in refused.stderr
    result = invoke("export", "-c", book.checkpoint, "-f", "onnx", "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.onnx",
                                                     "tokenizer.json"]


@pytest.mark.parametrize("fmt", ["hf", "onnx"])
def test_tinygpt_says_what_an_export_for_other_tools_is(book, fmt):
    folder = book.hf if fmt == "hf" else book.onnx
    for command in (["generate", "-c", folder, "-n", "4"], ["info", folder]):
        assert_user_error(invoke(*command), 1, f"a --format {fmt} export")


@pytest.mark.parametrize(("d_model", "heads"), [(15, 5), (9, 3), (8, 1), (12, 4)])
def test_the_ctrl_mapping_holds_for_odd_and_small_shapes(d_model, heads):
    from tinygpt_cli.config import ModelConfig
    from tinygpt_cli.export_hf import ctrl_config, ctrl_weights
    from tinygpt_cli.model import GPT

    torch.manual_seed(d_model)
    model = GPT(ModelConfig(vocab_size=50, d_model=d_model, num_blocks=2, num_heads=heads,
                            context_length=12, dropout=0.0)).eval()
    for p in model.parameters():  # weights well away from the init's small values
        p.data.normal_(0, 0.5)
    hf = transformers.CTRLLMHeadModel(transformers.CTRLConfig(**ctrl_config(model))).eval()
    hf.load_state_dict(ctrl_weights(model), strict=True)
    ids = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(ids)[0] - hf(ids).logits).abs().max() < TOLERANCE


def test_end_of_text_keeps_the_models_id_in_every_format(tmp_path):
    """A corpus of documents: its vocabulary holds end-of-text, which the exported tokenizer
    must give the model's id (not a new one), as a special token."""
    from tinygpt_cli.config import TrainConfig
    from tinygpt_cli.train import Trainer, TrainRequest

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(30):
        (docs / f"{i:02d}.txt").write_text(f"note {i}: bring milk and bread, pay {i} yuan")
    trainer = Trainer(TrainRequest(
        train_config=TrainConfig(device="cpu", dtype="float32", max_iters=2, eval_iters=1,
                                 batch_size=2, seed=0),
        data=docs, cache_dir=tmp_path / "cache", out=tmp_path / "m.ckpt",
        model_options={"d_model": 16, "num_blocks": 1, "num_heads": 2, "context_length": 1,
                       "dropout": 0.0}))
    try:
        list(trainer.run())
    finally:
        trainer.close()
    model, vocab, _ = ckpt.load_model(tmp_path / "m.ckpt")
    assert vocab.eot is not None
    export(tmp_path / "m.ckpt", tmp_path / "hf", "hf")
    onnx_result = export(tmp_path / "m.ckpt", tmp_path / "onnx", "onnx")  # a context of one
    assert onnx_result["max_logit_difference"] < TOLERANCE
    tokenizer = hf_tokenizer(tmp_path / "hf")
    assert tokenizer("<|endoftext|>", add_special_tokens=False).input_ids == [vocab.eot]
    assert tokenizer.decode([vocab.eot]) == "<|endoftext|>"
    text = (docs / "07.txt").read_text()
    assert tokenizer(text, add_special_tokens=False).input_ids == vocab.encode(text)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "tokenizer('<|endoftext|>'" in card and str(tmp_path) not in card
