"""The adversarial suite: tinygpt against hostile input, one case per line of CASES.

Every case runs a real command line on a fresh copy of a small workspace (a corpus, its token
cache, a trained run, another run, a notes file) and asserts the promise of the README: the
expected exit code, exactly one `error:` line and no traceback, and every file that was there
byte-for-byte unchanged, with nothing new left behind. Cases are grouped by kind; the closing
note of issue 13 reports them by kind. The other files of the suite: test_hostile_checkpoints.py
(damaged checkpoint configurations, for each command that reads one), test_outputs.py (what a
run may write over, and locks), test_bounds.py, test_signals.py (Ctrl-C and SIGTERM) and
test_disk_full.py (a write that fails part way).
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_tiny
from typer.testing import CliRunner

from tinygpt_cli.cli import app

TINY = ["--d-model", "16", "--num-blocks", "1", "--num-heads", "2", "--context-length", "16"]
QUICK = [*TINY, "--max-iters", "2", "--eval-iters", "1", "--device", "cpu"]


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    args: list[str]  # the command line; "{x}" is the workspace copy's path
    code: int  # the exit code expected
    says: str  # a fragment of the error line
    setup: Callable[[Path], None] | None = None  # changes the copy before the command runs
    new_cache: bool = False  # the (good) corpus is tokenized before the error: a new cache


def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return setup


def fifo(name: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        os.mkfifo(ws / name)
    return setup


def symlink_loop(ws: Path) -> None:
    (ws / "loop-a.txt").symlink_to(ws / "loop-b.txt")
    (ws / "loop-b.txt").symlink_to(ws / "loop-a.txt")


def save_list(ws: Path) -> None:
    torch.save([1, 2, 3], ws / "list.ckpt")


def changed_checkpoint(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """A copy of the workspace's checkpoint at NAME, changed by `change(state)`."""
    def setup(ws: Path) -> None:
        state = torch.load(ws / "run" / "model.ckpt", weights_only=True)
        change(state)
        torch.save(state, ws / name)
    return setup


class Pwn:
    """A pickle that runs a command when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def hostile_pickle(ws: Path) -> None:
    with open(ws / "evil.ckpt", "wb") as f:
        pickle.dump({"model_state_dict": Pwn()}, f)


def hostile_torch_save(ws: Path) -> None:
    torch.save({"model_state_dict": Pwn()}, ws / "evil.pt")


def truncated(ws: Path) -> None:
    data = (ws / "run" / "model.ckpt").read_bytes()
    (ws / "half.ckpt").write_bytes(data[: len(data) // 2])


def nan_weights(state: dict) -> None:
    for value in state["model_state_dict"].values():
        value.fill_(float("nan"))


def without(key: str) -> Callable[[dict], None]:
    return lambda state: state.pop(key)


BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
NOT_UTF8 = "caf\u00e9 au lait\n".encode("latin-1") * 10
UTF16 = "a UTF-16 text, as Windows Notepad saves it\n".encode("utf-16") * 10
UTF16_NO_BOM = "no byte-order mark\n".encode("utf-16-le") * 10

# --- odd corpora: each given to tokenize and to train -----------------------------------------
CORPORA = [
    ("an empty file", "empty.txt", write("empty.txt", b""), "has no text to train on"),
    ("only whitespace", "blank.txt", write("blank.txt", " \n\t\r\n" * 50),
     "has no text to train on"),
    ("only a byte-order mark", "bom.txt", write("bom.txt", b"\xef\xbb\xbf"),
     "has no text to train on"),
    ("an image", "image.png", write("image.png", BINARY), "looks binary: a NUL byte at offset"),
    ("a file with NUL bytes", "data.bin", write("data.bin", b"text\x00\x00\x01\x02" * 100),
     "looks binary: a NUL byte at offset 4"),
    ("Latin-1, not UTF-8", "latin1.txt", write("latin1.txt", NOT_UTF8),
     "is not UTF-8 text: byte 0xe9 at offset 3"),
    ("UTF-16 with a byte-order mark", "utf16.txt", write("utf16.txt", UTF16), "is UTF-16 text"),
    ("UTF-16 without a byte-order mark", "utf16le.txt", write("utf16le.txt", UTF16_NO_BOM),
     "is UTF-16LE text; tinygpt reads UTF-8"),
    ("UTF-32 with a byte-order mark", "utf32.txt", write("utf32.txt", "wide\n".encode("utf-32")),
     "is UTF-32 text"),
    ("a missing file", "missing.txt", None, "missing.txt: no such file"),
    ("a folder of nothing that looks like text", "folder", write("folder/a.png", "text"),
     "no file in"),
    ("a FIFO (never opened: it would wait forever)", "pipe.txt", fifo("pipe.txt"),
     "is not a regular file"),
    ("a character device (/dev/zero never ends)", "/dev/zero", None,
     "is not a regular file"),
    ("a symlink loop", "loop-a.txt", symlink_loop, "is a symbolic link to nothing"),
    ("a checkpoint given as text", "run/model.ckpt", None, "looks binary"),
    ("a CSV without the column asked for", "table.csv --column text",
     write("table.csv", "title,price\nshoe,3\n"), "no column 'text'"),
    ("a CSV whose column is empty", "table.csv --column title",
     write("table.csv", "title,price\n,3\n ,4\n"), "has no text to train on"),
    ("a CSV with no header", "empty.csv --column title", write("empty.csv", ""), "empty.csv"),
    ("a CSV field past the size limit", "huge.csv --column title",
     write("huge.csv", "title\n\"" + "x" * 200_000 + "\"\n"), "huge.csv"),
]


def corpus_cases() -> list[Case]:
    cases = []
    for name, path, setup, says in CORPORA:
        path, *rest = path.split()
        source = path if path.startswith("/") else "{x}/" + path
        cases.append(Case("corpus", f"tokenize: {name}", ["tokenize", source, *rest], 1, says,
                          setup))
        cases.append(Case("corpus", f"train: {name}",
                          ["train", "--data", source, *rest, "--out", "{x}/new/model.ckpt",
                           *QUICK], 1, says, setup))
    cases.append(Case("corpus", "train: fewer tokens than one context window",
                      ["train", "--data", "{x}/short.txt", "--out", "{x}/new/model.ckpt",
                       *QUICK], 2, "the validation split has", write("short.txt", "hello\n"),
                      new_cache=True))
    cases.append(Case("corpus", "eval --data: an image",
                      ["eval", "-c", "{x}/run/model.ckpt", "--data", "{x}/image.png"], 1,
                      "is not UTF-8 text", write("image.png", BINARY)))
    cases.append(Case("corpus", "generate --prompt-file: a FIFO",
                      ["generate", "-c", "{x}/run/model.ckpt", "--prompt-file", "{x}/pipe.txt"],
                      2, "is not a regular file", fifo("pipe.txt")))
    cases.append(Case("corpus", "eval --data: a FIFO",
                      ["eval", "-c", "{x}/run/model.ckpt", "--data", "{x}/pipe.txt"], 1,
                      "is not a regular file", fifo("pipe.txt")))
    return cases


# --- checkpoints that are not what they claim: each given to info, generate and eval -----------
CHECKPOINTS = [
    ("a text file", "notes.txt", None, "is not a tinygpt checkpoint"),
    ("an empty file", "empty.ckpt", write("empty.ckpt", b""), "(the file is empty)"),
    ("half a checkpoint", "half.ckpt", truncated, "an incomplete zip archive"),
    ("random bytes", "random.ckpt", write("random.ckpt", os.urandom(4096)),
     "is not a tinygpt checkpoint"),
    ("a pickle that runs a command", "evil.ckpt", hostile_pickle, "is not a tinygpt checkpoint"),
    ("a torch.save file that runs a command", "evil.pt", hostile_torch_save,
     "it contains Python objects that could run code"),
    ("a folder", "run", None, "is a directory, not a checkpoint file"),
    ("a missing file", "nothing.ckpt", None, "no such checkpoint"),
    ("no weights", "noweights.ckpt",
     changed_checkpoint("noweights.ckpt", without("model_state_dict")), "lacks model_state_dict"),
    ("no configuration", "noconfig.ckpt",
     changed_checkpoint("noconfig.ckpt", without("model_config")), "lacks model_config"),
    ("no tokenizer", "notok.ckpt", changed_checkpoint("notok.ckpt", without("tokenizer")),
     "lacks tokenizer"),
    ("a list instead of a dict", "list.ckpt", save_list, "holds a list"),
]


def checkpoint_cases() -> list[Case]:
    cases = []
    for name, path, setup, says in CHECKPOINTS:
        for command in ("info", "generate", "eval"):
            args = {"info": ["info", "{x}/" + path],
                    "generate": ["generate", "-c", "{x}/" + path, "-n", "3"],
                    "eval": ["eval", "-c", "{x}/" + path]}[command]
            cases.append(Case("checkpoint", f"{command}: {name}", args, 1, says, setup))
    for command, args in (("generate", ["generate", "-c", "{x}/nan.ckpt", "-n", "3"]),
                          ("eval", ["eval", "-c", "{x}/nan.ckpt"])):
        cases.append(Case("checkpoint", f"{command}: weights that are all NaN", args, 1,
                          "has non-finite weights", changed_checkpoint("nan.ckpt", nan_weights)))
    for name, path, setup, says in CHECKPOINTS[:7]:
        cases.append(Case("checkpoint", f"train --resume: {name}",
                          ["train", "--resume", "{x}/" + path, "--data", "{x}/corpus.txt",
                           "--out", "{x}/new/model.ckpt", "--max-iters", "4"], 1, says, setup))
    cases.append(Case("checkpoint", "train --resume: NaN weights",
                      ["train", "--resume", "{x}/nan.ckpt", "--data", "{x}/corpus.txt",
                       "--out", "{x}/new/model.ckpt", "--max-iters", "4"], 1,
                      "its weights are not finite",
                      changed_checkpoint("nan.ckpt", nan_weights)))
    cases.append(Case("checkpoint", "train --resume: already past --max-iters",
                      ["train", "--resume", "{x}/run/model.ckpt", "--data", "{x}/corpus.txt",
                       "--out", "{x}/run/model.ckpt", "--max-iters", "1"], 2,
                      "has already done 2 steps"))
    return cases


# --- options beyond any machine, or not numbers ------------------------------------------------
def option_cases() -> list[Case]:
    train = ["train", "--data", "{x}/corpus.txt", "--out", "{x}/new/model.ckpt"]
    big = 10**9
    cases = [
        ("--batch-size 10^9", [*train, *QUICK, "--batch-size", str(big)],
         "--batch-size must be at most"),
        ("a batch that cannot fit however small the vocabulary (found before tokenizing)",
         [*train, *QUICK, "--batch-size", "1000000", "--d-model", "256"],
         "needs at least 372.4 GiB (an estimate of the weights, gradients, AdamW's state and "
         "one batch's activations for d_model 256, 1 blocks, context 16, batch 1000000, before "
         "counting the vocabulary); this machine has 16.0 GiB"),
        ("--d-model 10^9", [*train, "--d-model", str(big), "--num-heads", "1"],
         "--d-model must be at most"),
        ("--num-blocks 10^9", [*train, *QUICK, "--num-blocks", str(big)],
         "--num-blocks must be at most"),
        ("--eval-iters 10^9", [*train, *QUICK, "--eval-iters", str(big)], "eval-iters"),
        ("--grad-accum 10^9", [*train, *QUICK, "--grad-accum", str(big)], "grad-accum"),
        ("--context-length 10^9", [*train, "--context-length", str(big)], "context"),
        ("--max-time inf", [*train, *QUICK, "--max-time", "inf"], "must be a finite number"),
        ("--max-time nan", [*train, *QUICK, "--max-time", "nan"], "must be a finite number"),
        ("--max-time -1", [*train, *QUICK, "--max-time", "-1"], "max-time"),
        ("--learning-rate nan", [*train, *QUICK, "--learning-rate", "nan"], "learning"),
        ("--learning-rate inf", [*train, *QUICK, "--learning-rate", "inf"], "learning"),
        ("--learning-rate -1", [*train, *QUICK, "--learning-rate", "-1"], "learning"),
        ("--dropout 1", [*train, *QUICK, "--dropout", "1"], "dropout"),
        ("--dropout nan", [*train, *QUICK, "--dropout", "nan"], "dropout"),
        ("--seed -1", [*train, *QUICK, "--seed", "-1"], "seed"),
        ("--seed 2^64", [*train, *QUICK, "--seed", str(2**64)], "seed"),
        ("--context-length 0", [*train, *QUICK, "--context-length", "0"], "context"),
        ("--num-heads that do not divide --d-model",
         [*train, *QUICK, "--d-model", "80", "--num-heads", "3"], "is not divisible by"),
        ("--eval-interval 0", [*train, *QUICK, "--eval-interval", "0"], "eval-interval"),
        ("--weight-decay nan", [*train, *QUICK, "--weight-decay", "nan"], "weight"),
        ("tokenize --val-fraction 1", ["tokenize", "{x}/corpus.txt", "--val-fraction", "1"],
         "val-fraction"),
        ("tokenize --val-fraction nan", ["tokenize", "{x}/corpus.txt", "--val-fraction", "nan"],
         "val-fraction"),
        ("generate -n -1", ["generate", "-c", "{x}/run/model.ckpt", "-n", "-1"], "-1"),
        ("generate --temperature nan",
         ["generate", "-c", "{x}/run/model.ckpt", "--temperature", "nan"], "temperature"),
        ("generate --temperature -1",
         ["generate", "-c", "{x}/run/model.ckpt", "--temperature", "-1"], "temperature"),
        ("generate --top-p 2", ["generate", "-c", "{x}/run/model.ckpt", "--top-p", "2"],
         "top-p"),
        ("generate --top-k -1", ["generate", "-c", "{x}/run/model.ckpt", "--top-k", "-1"],
         "top-k"),
        ("generate --seed -1", ["generate", "-c", "{x}/run/model.ckpt", "--seed", "-1"], "seed"),
        ("generate --threads 10^9",
         ["generate", "-c", "{x}/run/model.ckpt", "--threads", str(big)], "threads"),
        ("eval --eval-iters 10^9",
         ["eval", "-c", "{x}/run/model.ckpt", "--eval-iters", str(big)], "eval-iters"),
        ("eval --batch-size 10^9",
         ["eval", "-c", "{x}/run/model.ckpt", "--batch-size", str(big)], "batch"),
        ("eval --seed 2^64",
         ["eval", "-c", "{x}/run/model.ckpt", "--seed", str(2**64)], "seed"),
    ]
    cases = [Case("option", name, args, 2, says) for name, args, says in cases]
    # the book's vocabulary (~100k ids) makes the logits of a big batch too large to fit
    cases.append(Case("option", "a batch that fits only a small vocabulary",
                      [*train, *QUICK, "--batch-size", "20000", "--full-vocab"], 2,
                      "vocabulary 97,256); this machine has 16.0 GiB", new_cache=True))
    return cases


# --- paths tinygpt would write over -------------------------------------------------------------
def output_cases() -> list[Case]:
    train = ["train", "--data", "{x}/corpus.txt", *QUICK]
    cases = [
        ("--out is the corpus", [*train, "--out", "{x}/corpus.txt"], 2, "corpus.txt"),
        ("--out is a notes file", [*train, "--out", "{x}/notes.txt"], 2,
         "not a tinygpt checkpoint"),
        ("--out is another run's checkpoint", [*train, "--out", "{x}/other/model.ckpt"], 2,
         "holds another run (1 step on"),
        ("--out is a file of the token cache", [*train, "--out", "{x}/cache.bin"], 2,
         "cache.bin"),
        ("--out is a folder", [*train, "--out", "{x}/run"], 2, "run"),
        ("--out is the metrics file of a run",
         [*train, "--out", "{x}/run/model.metrics.jsonl"], 2, "model.metrics.jsonl"),
        ("--out inside a file", [*train, "--out", "{x}/notes.txt/model.ckpt"], 2,
         "notes.txt is a file, not a folder"),
        ("--out is the checkpoint --resume reads, with other data",
         ["train", "--resume", "{x}/run/model.ckpt", "--data", "{x}/notes.txt",
          "--out", "{x}/corpus.txt", "--max-iters", "4"], 2, "corpus.txt"),
        ("plot -o onto a text file named .png",
         ["plot", "{x}/run/model.ckpt", "-o", "{x}/notes.png"], 2, "is not a .png image"),
        ("plot -o onto a checkpoint", ["plot", "{x}/run/model.ckpt", "-o", "{x}/run/model.ckpt"],
         2, "cannot write .ckpt"),
        ("plot -o onto a folder", ["plot", "{x}/run/model.ckpt", "-o", "{x}/pictures.png"], 2,
         "is a folder"),
        ("plot -o onto a PDF that is not one",
         ["plot", "{x}/run/model.ckpt", "-o", "{x}/notes.pdf"], 2, "is not a .pdf image"),
    ]
    setups = {"--out is a file of the token cache": write("cache.bin", b"\x01\x02" * 100),
              "plot -o onto a text file named .png": write("notes.png", "my notes\n"),
              "plot -o onto a folder": write("pictures.png/a.png", b"\x89PNG\r\n\x1a\n"),
              "plot -o onto a PDF that is not one": write("notes.pdf", "my notes\n")}
    return [Case("output", name, args, code, says, setups.get(name))
            for name, args, code, says in cases]


# --- damaged runs for plot and info -------------------------------------------------------------
def run_file_cases() -> list[Case]:
    metrics = "{x}/run/model.metrics.jsonl"
    cases = [
        ("plot: an empty metrics file", write("run/model.metrics.jsonl", ""), "holds no loss"),
        ("plot: metrics that are not JSON", write("run/model.metrics.jsonl", "not json\n" * 5),
         "holds no loss"),
        ("plot: metrics that are binary", write("run/model.metrics.jsonl", BINARY),
         "model.metrics.jsonl"),
        ("plot: metrics with absurd numbers only",
         write("run/model.metrics.jsonl",
               '{"type": "eval", "step": 1e400, "train_loss": "x", "valid_loss": null}\n'),
         "holds no loss"),
    ]
    return [Case("run files", name, ["plot", metrics, "--terminal"], 1, says, setup)
            for name, setup, says in cases]


CASES = corpus_cases() + checkpoint_cases() + option_cases() + output_cases() + run_file_cases()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, corpus_text) -> Path:
    """What a user has before each case: a corpus and its cache, a run, another run, notes."""
    ws = tmp_path_factory.mktemp("workspace")
    (ws / "corpus.txt").write_text(corpus_text, encoding="utf-8")
    (ws / "notes.txt").write_text("my notes, not a checkpoint\n", encoding="utf-8")
    train_tiny(ws / "run" / "model.ckpt", ws / "corpus.txt", ws / "cache", max_iters=2,
               eval_interval=1, eval_iters=1)
    train_tiny(ws / "other" / "model.ckpt", ws / "corpus.txt", ws / "cache", max_iters=1,
               eval_interval=1, eval_iters=1, seed=7)
    return ws


@pytest.fixture(autouse=True)
def _sixteen_gib(monkeypatch):
    """The memory checks compare with the machine's memory: make it 16 GiB on every host, so
    the cases that cannot fit are refused everywhere (and never tried on a big one)."""
    from tinygpt_cli import train

    monkeypatch.setattr(train, "memory_bytes", lambda device: 16 << 30)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every regular file's bytes (FIFOs and devices are never opened)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}: {c.name}" for c in CASES])
def test_hostile_input_is_one_line_and_changes_nothing(case, workspace, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws, symlinks=True)
    if case.setup:
        case.setup(ws)
    before = snapshot(ws)
    monkeypatch.chdir(ws)
    args = [a.replace("{x}", str(ws)) for a in case.args]
    result = CliRunner().invoke(app, args, env={"TINYGPT_CACHE_DIR": str(ws / "cache")})
    assert result.exit_code == case.code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no crash
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert case.says in errors[0], errors[0]
    after = snapshot(ws)
    if case.new_cache:
        after = {k: v for k, v in after.items() if k in before or not k.startswith("cache/")}
    assert after == before  # nothing changed, nothing new (PWNED included)



# --- damaged token caches: found by their checksums, rebuilt with one warning -------------------
def _cache_file(ws: Path, name: str) -> Path:
    (folder,) = (ws / "cache").iterdir()
    return folder / name


def _damage(name: str, change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        path = _cache_file(ws, name)
        path.write_bytes(change(path.read_bytes()))
    return setup


def _meta(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        import json

        path = _cache_file(ws, "meta.json")
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))
    return setup


def _remove(name: str) -> Callable[[Path], None]:
    return lambda ws: _cache_file(ws, name).unlink()


def _shuffled(data: bytes) -> bytes:
    ids = np.frombuffer(data, dtype="<u4")
    return np.random.default_rng(0).permutation(ids).tobytes()


def _random_ids(data: bytes) -> bytes:
    return np.random.default_rng(1).integers(0, 100_000, len(data) // 4, dtype="<u4").tobytes()


DAMAGED_CACHES = {
    "a shuffled vocabulary": _damage("vocab.bin", _shuffled),
    "a vocabulary of random ids": _damage("vocab.bin", _random_ids),
    "a vocabulary four bytes longer": _damage("vocab.bin", lambda b: b + b"\0\0\0\0"),
    "zeroed training tokens": _damage("train.bin", lambda b: bytes(len(b))),
    "training tokens with one id changed": _damage("train.bin", lambda b: b"\x01\x00" + b[2:]),
    "validation tokens cut in half": _damage("valid.bin", lambda b: b[: len(b) // 2]),
    "no training file": _remove("train.bin"),
    "no metadata": _remove("meta.json"),
    "metadata that is not JSON": _damage("meta.json", lambda b: b"{not json"),
    "metadata without checksums (an older tinygpt)": _meta(lambda m: m.pop("checksums")),
    "a checksum that does not match": _meta(lambda m: m["checksums"].update(
        {"train.bin": "0" * 64})),
    "metadata whose token count is a string": _meta(lambda m: m.update(tokens="many")),
}


@pytest.mark.parametrize("command", ["tokenize", "train"])
@pytest.mark.parametrize("damage", sorted(DAMAGED_CACHES))
def test_a_damaged_cache_is_rebuilt_with_one_warning(damage, command, workspace, tmp_path,
                                                     monkeypatch):
    """Not an error: the cache is rebuilt from the corpus, which is left as it was, and the
    rebuilt files are the ones a fresh tokenization makes (the damage never reaches a model)."""
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws, symlinks=True)
    shutil.rmtree(ws / "cache")  # caches are keyed by the corpus's path: make this copy's
    env = {"TINYGPT_CACHE_DIR": str(ws / "cache")}
    assert CliRunner().invoke(app, ["tokenize", str(ws / "corpus.txt")], env=env).exit_code == 0
    (folder,) = (ws / "cache").iterdir()
    good = {name: (folder / name).read_bytes() for name in ("train.bin", "valid.bin",
                                                            "vocab.bin")}
    corpus = (ws / "corpus.txt").read_bytes()
    DAMAGED_CACHES[damage](ws)
    monkeypatch.chdir(ws)
    args = {"tokenize": ["tokenize", str(ws / "corpus.txt")],
            "train": ["train", "--data", str(ws / "corpus.txt"), "--out",
                      str(ws / "new" / "model.ckpt"), *QUICK]}[command]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "rebuilding it" in warnings[0], result.stderr
    assert {name: (folder / name).read_bytes() for name in good} == good
    assert (ws / "corpus.txt").read_bytes() == corpus
    assert [p.name for p in (ws / "cache").iterdir()] == [folder.name]  # no leftovers
