"""`tinygpt generate`: seeded and greedy generation, streaming that equals the final decode
(Chinese and emoji split across byte tokens), --stop, --json, prompts of every kind, and one clear
line for every bad checkpoint or option (both commands)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import assert_user_error, train_tiny
from typer.testing import CliRunner

from tinygpt_cli.checkpoint import load_model
from tinygpt_cli.cli import app
from tinygpt_cli.config import SampleConfig
from tinygpt_cli.errors import UsageError
from tinygpt_cli.generation import (
    START_TEXT,
    Sample,
    StopFilter,
    TextChunk,
    encode_prompt,
    generate,
    read_prompt,
    stream_samples,
)
from tinygpt_cli.tokenizer import COMPACT, Vocabulary, get_encoding

T = 16  # the tiny model's context length
REPLACEMENT = "\ufffd"



@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, corpus_text: str) -> SimpleNamespace:
    """A tiny checkpoint (d_model 16, 1 block, context 16) trained 20 steps on the tiny corpus,
    loaded once."""
    root = tmp_path_factory.mktemp("tiny-generate")
    corpus = root / "corpus.txt"
    corpus.write_bytes(corpus_text.encode("utf-8"))
    train_tiny(root / "model.ckpt", corpus, root / "cache", max_iters=20, eval_interval=10,
               eval_iters=2, batch_size=4, seed=0)
    model, vocab, state = load_model(root / "model.ckpt")
    return SimpleNamespace(root=root, checkpoint=root / "model.ckpt", model=model, vocab=vocab,
                           state=state)


def invoke(*args: str | Path, input: str | None = None):
    return CliRunner().invoke(app, [*map(str, args)], input=input)


def gen(tiny: SimpleNamespace, *args: str | Path, input: str | None = None):
    return invoke("generate", "-c", tiny.checkpoint, "--device", "cpu", *args, input=input)


def gen_json(tiny: SimpleNamespace, *args: str | Path, input: str | None = None) -> dict:
    result = gen(tiny, "--json", *args, input=input)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run(tiny: SimpleNamespace, prompt: str = "Cotton", **settings: object) -> list[Sample]:
    config = SampleConfig(**{"max_new_tokens": 24, "temperature": 1.0, **settings})
    return generate(tiny.model, tiny.vocab, encode_prompt(tiny.vocab, prompt, T), config)


# -- reproducibility and greedy decoding ----------------------------------------------------------

def test_the_same_seed_gives_the_same_text(tiny):
    first, again = run(tiny, seed=3, num_samples=2), run(tiny, seed=3, num_samples=2)
    assert [s.ids for s in first] == [s.ids for s in again]
    assert first[0].ids != first[1].ids  # each sample draws from its own seed
    assert run(tiny, seed=3)[0].ids == first[0].ids  # sample 1 ignores how many follow
    assert run(tiny, seed=4)[0].ids != first[0].ids
    cli = [gen(tiny, "-p", "Cotton", "-n", "20", "--seed", "5").stdout for _ in range(2)]
    assert cli[0] == cli[1] and cli[0].startswith("Cotton")


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("valid_utf8", [True, False])
def test_greedy_is_the_argmax_of_the_logits(tiny, use_cache, valid_utf8):
    """Of all the logits with --allow-invalid-utf8; by default, of the tokens that keep the text
    valid UTF-8 after what came before (the vocabulary's Utf8Table)."""
    from tinygpt_cli.tokenizer import COMPLETE

    table = tiny.vocab.utf8
    prompt = encode_prompt(tiny.vocab, "力士LUX", T)
    config = SampleConfig(max_new_tokens=2 * T, temperature=0.0)  # slides past the window
    (sample,) = generate(tiny.model, tiny.vocab, prompt, config, use_cache=use_cache,
                         valid_utf8=valid_utf8)
    assert len(sample.ids) == 2 * T + sample.finishing_tokens
    ids, state = list(prompt.ids), COMPLETE
    with torch.no_grad():
        for i, token in enumerate(sample.ids):
            logits, _ = tiny.model(torch.tensor([ids[-T:]]))  # (1, t, V)
            if valid_utf8:
                rows = table.allowed if i < 2 * T else table.finishes
                allowed = torch.from_numpy(rows[state])
                logits = logits.masked_fill(~allowed, float("-inf"))
                state = int(table.next_state[state, token])
            assert token == int(logits[0, -1].argmax())
            ids.append(token)
    assert "\ufffd" not in sample.text or not valid_utf8


def test_no_cache_gives_the_same_text(tiny):
    cached = gen_json(tiny, "-t", "0", "-n", "30")
    uncached = gen_json(tiny, "-t", "0", "-n", "30", "--no-cache")
    assert cached["samples"][0]["text"] == uncached["samples"][0]["text"]
    assert uncached["settings"]["kv_cache"] is False


# -- streaming ------------------------------------------------------------------------------------

def test_stream_decoder_releases_only_whole_characters():
    """Chinese and emoji whose tokens are missing from a compact vocabulary fall back to single
    bytes: pushing them one id at a time must never show a replacement character."""
    encoding = get_encoding("cl100k_base")
    counts = np.zeros(encoding.n_vocab, dtype=np.int64)
    counts[encoding.encode_ordinary("plain ascii words only")] = 1
    vocab = Vocabulary.from_counts("cl100k_base", COMPACT, counts)
    text = "农夫山泉 🚀☕ 👍🏽 家 naïve ok"
    ids = vocab.encode(text)
    assert len(ids) > len(text.encode("utf-8")) // 2  # mostly single bytes: characters split
    decoder = vocab.stream_decoder()
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert all(REPLACEMENT not in p for p in pieces)
    assert "".join(pieces) == vocab.decode(ids) == text
    assert "" in pieces  # some ids completed no character yet


def test_streamed_chunks_add_up_to_the_final_text(tiny):
    config = SampleConfig(max_new_tokens=40, temperature=1.5, num_samples=4, seed=11)
    prompt = encode_prompt(tiny.vocab, "咖啡豆 🚀", T)
    chunks: dict[int, list[str]] = {}
    for event in stream_samples(tiny.model, tiny.vocab, prompt, config):
        if isinstance(event, TextChunk):
            chunks.setdefault(event.sample, []).append(event.text)
        else:
            assert "".join(chunks.get(event.index, [])) == event.text
            assert event.text == tiny.vocab.decode(event.ids)
            assert event.tokens == 40 and event.finish_reason == "length"


def test_cli_streams_the_prompt_and_the_final_text(tiny):
    doc = gen_json(tiny, "-p", "咖啡豆", "-n", "30", "--num-samples", "2", "--seed", "9")
    streamed = gen(tiny, "-p", "咖啡豆", "-n", "30", "--num-samples", "2", "--seed", "9")
    assert streamed.exit_code == 0, streamed.output
    expected = "\n".join("咖啡豆" + s["text"] + ("" if s["text"].endswith("\n") else "\n")
                         for s in doc["samples"])  # a blank line between samples
    assert streamed.stdout == expected
    assert "60 tokens in 2 samples" in streamed.stderr and "tokens/s" in streamed.stderr


# -- --stop ---------------------------------------------------------------------------------------

def test_stop_cuts_the_text(tiny):
    (free,) = run(tiny, max_new_tokens=40, seed=2)
    stop = free.text[6:8]
    assert len(stop) == 2
    (cut,) = run(tiny, max_new_tokens=40, seed=2, stop=(stop, "never appears"))
    assert cut.text == free.text[:free.text.find(stop)]
    assert cut.finish_reason == "stop" and cut.stop == stop
    assert cut.ids == free.ids[:len(cut.ids)] and len(cut.ids) < len(free.ids)

    doc = gen_json(tiny, "-p", "Cotton", "-n", "40", "-t", "1.0", "--seed", "2", "--stop", stop)
    assert doc["samples"][0]["text"] == cut.text and doc["samples"][0]["finish_reason"] == "stop"
    streamed = gen(tiny, "-p", "Cotton", "-n", "40", "-t", "1.0", "--seed", "2", "--stop", stop)
    assert streamed.stdout.rstrip("\n") == "Cotton" + cut.text.rstrip("\n")


def test_stop_filter_holds_back_a_possible_stop_string():
    f = StopFilter(["END", "\n\n"])
    assert f.feed("abcE") == "abc"  # "E" may start END
    assert f.feed("x") == "Ex"  # it did not
    assert f.feed("yE") == "y"
    assert f.feed("N") == ""
    assert f.feed("D and more") == "" and f.hit == "END"
    assert f.text == "abcExy" and f.feed("late") == ""
    g = StopFilter(["\n\n"])
    assert g.feed("one\n") == "one" and g.feed("two") == "\ntwo"
    assert g.feed("\n") == "" and g.finish() == "\n" and g.hit is None
    assert g.text == "one\ntwo\n"


# -- --json ---------------------------------------------------------------------------------------

def test_json_has_prompt_samples_and_settings(tiny):
    doc = gen_json(tiny, "-n", "12", "--num-samples", "3", "--top-k", "5", "--top-p", "0.9")
    assert {"prompt", "samples", "settings", "tokens", "seconds", "tokens_per_sec"} <= set(doc)
    assert doc["prompt"] == START_TEXT  # the start of a line of its corpus (one text file)
    assert len(doc["samples"]) == 3
    # each sample: 12 tokens, and up to 3 more where the 12th left a character open
    assert all(s["tokens"] == 12 + s["finishing_tokens"] and s["finishing_tokens"] <= 3
               for s in doc["samples"])
    assert doc["tokens"] == sum(s["tokens"] for s in doc["samples"])
    assert all({"text", "tokens", "finish_reason"} <= set(s) for s in doc["samples"])
    assert doc["settings"]["valid_utf8"] is True
    settings = doc["settings"]
    assert (settings["top_k"], settings["top_p"], settings["temperature"]) == (5, 0.9, 0.8)
    assert settings["max_new_tokens"] == 12 and settings["seed"] == 1337


# -- prompts --------------------------------------------------------------------------------------

def test_empty_prompt_starts_from_a_newline(tiny):
    doc = gen_json(tiny, "-p", "", "-n", "10")
    assert doc["start_token"] is True and doc["prompt"] == "" and doc["prompt_tokens"] == 1
    assert doc["samples"][0]["tokens"] == 10 + doc["samples"][0]["finishing_tokens"]
    streamed = gen(tiny, "-p", "", "-n", "10")
    assert streamed.exit_code == 0 and "newline" in streamed.stderr
    assert encode_prompt(tiny.vocab, "", T).ids == tiny.vocab.encode("\n")


def test_long_prompts_are_cropped_and_generation_slides(tiny):
    long = "Cotton t-shirt, size 3, blue\n" * 6
    doc = gen_json(tiny, "-p", long, "-n", str(3 * T))
    assert doc["prompt_tokens"] == T and doc["prompt_cropped"] > 0
    assert doc["samples"][0]["tokens"] == 3 * T
    assert "context length" in gen(tiny, "-p", long, "-n", "2").stderr  # the warning


def test_prompt_outside_the_vocabulary_uses_bytes(tiny):
    prompt = "Ωmega 🦄 ünïcödé"
    ids = encode_prompt(tiny.vocab, prompt, 1000).ids
    assert tiny.vocab.decode(ids) == prompt
    streamed = gen(tiny, "-p", prompt, "-n", "5")
    assert streamed.exit_code == 0 and streamed.stdout.startswith(prompt)


def test_prompt_from_stdin_and_file(tiny, tmp_path: Path):
    piped = gen_json(tiny, "-p", "-", "-n", "3", input="农夫山泉 矿泉水\n")
    assert piped["prompt"] == "农夫山泉 矿泉水"  # one trailing newline dropped
    path = tmp_path / "prompt.txt"
    path.write_text("力士LUX\n", encoding="utf-8")
    assert gen_json(tiny, "--prompt-file", path, "-n", "3")["prompt"] == "力士LUX"
    assert read_prompt(None, None) is None  # the checkpoint's own start (default_prompt)
    with pytest.raises(UsageError):
        read_prompt("x", path)
    assert_user_error(gen(tiny, "-p", "x", "--prompt-file", path), 2, "not both")
    assert_user_error(gen(tiny, "--prompt-file", tmp_path / "nope.txt"), 2, "no such file")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    assert_user_error(gen(tiny, "--prompt-file", bad), 1, "not UTF-8")


# -- bad options and bad checkpoints --------------------------------------------------------------

@pytest.mark.parametrize(("args", "fragment"), [
    (["--temperature", "-0.5"], "--temperature"),
    (["--top-p", "0"], "--top-p"),
    (["--top-p", "1.5"], "--top-p"),
    (["--top-k", "0"], "--top-k"),
    (["--max-new-tokens", "-1"], "--max-new-tokens"),
    (["--num-samples", "0"], "--num-samples"),
    (["--stop", ""], "--stop"),
])
def test_bad_sampling_options_are_usage_errors(tiny, args, fragment):
    assert_user_error(gen(tiny, *args), 2, fragment)


def _bad_checkpoint(kind: str, tiny: SimpleNamespace, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    good = tiny.checkpoint.read_bytes()
    if kind == "missing":
        return path
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "random":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "random-pickle-opcodes":  # starts with bytes the legacy unpickler runs
        path.write_bytes(random.Random(2).randbytes(4096))
    elif kind == "foreign":
        torch.save({"weight": torch.zeros(3)}, path)  # a torch file, not a tinygpt checkpoint
    elif kind == "not-a-dict":
        torch.save([torch.zeros(3)], path)
    elif kind == "non-finite":
        state = torch.load(tiny.checkpoint, weights_only=True)
        weights = dict(state["model_state_dict"])
        weights["lm_head.weight"] = weights["lm_head.weight"].clone().fill_(float("nan"))
        torch.save({**state, "model_state_dict": weights}, path)
    elif kind == "vocab-mismatch":
        state = torch.load(tiny.checkpoint, weights_only=True)
        tok = state["tokenizer"]
        torch.save({**state, "tokenizer": {**tok, "ids": tok["ids"][:-1],
                                           "size": tok["size"] - 1}}, path)
    return path


BAD = {"missing": "no such checkpoint", "truncated": "truncated or not a checkpoint",
       "random": "not a", "foreign": "not a tinygpt checkpoint",
       "not-a-dict": "not a tinygpt checkpoint", "non-finite": "non-finite weights",
       "vocab-mismatch": "does not hold together"}


@pytest.mark.parametrize("command", ["generate", "eval"])
@pytest.mark.parametrize("kind", list(BAD))
def test_bad_checkpoints_are_one_clear_line(tiny, tmp_path, command, kind):
    path = _bad_checkpoint(kind, tiny, tmp_path)
    assert_user_error(invoke(command, "-c", path, "--device", "cpu"), 1, BAD[kind])


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_random_bytes_the_unpickler_chokes_on(tiny, tmp_path, command):
    path = _bad_checkpoint("random-pickle-opcodes", tiny, tmp_path)
    assert_user_error(invoke(command, "-c", path, "--device", "cpu"), 1, "not a")


class _Payload:
    """Pickled, this becomes a call to open(marker, "w"): loading it would create the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_a_pickle_payload_is_refused_and_never_run(tiny, tmp_path, command):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({**tiny.state, "model_state_dict": _Payload(marker)}, path)
    assert_user_error(invoke(command, "-c", path), 1, "refused", "pickle")
    assert not marker.exists()
    # the payload is live: the file's pickle calls `open` when loaded (read without loading)
    import pickletools
    import zipfile

    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("data.pkl")]
        ops = list(pickletools.genops(archive.read(name)))
    globals_ = [arg for op, arg, _ in ops if op.name == "GLOBAL"]
    assert "io open" in globals_  # the function the payload calls, imported by the unpickler


def test_sample_config_is_validated_once(tiny):
    with pytest.raises(UsageError) as info:
        replace(SampleConfig(), temperature=-1.0, top_p=2.0)
    assert "--temperature" in str(info.value) and "--top-p" in str(info.value)


def test_threads_auto_is_fed_every_token(tiny):
    ticks = []
    samples = generate(tiny.model, tiny.vocab, encode_prompt(tiny.vocab, "Cotton", T),
                       SampleConfig(max_new_tokens=12, num_samples=2, temperature=1.0),
                       tick=lambda: ticks.append(1))
    assert len(ticks) == sum(s.tokens for s in samples) >= 24
    settings = gen_json(tiny, "-n", "12", "--threads", "1")["settings"]
    assert settings["threads"] == 1
