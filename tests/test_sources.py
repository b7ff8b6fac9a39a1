"""Bring your own data: folders, several paths, JSONL (.gz), Parquet and CSV read as documents
joined by end-of-text; one cache per source set; every bad input one line; --init-from; and
generation that starts and ends where the corpus's documents do."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_user_error
from typer.testing import CliRunner

from tinygpt_cli import checkpoint as ckpt
from tinygpt_cli.cli import app
from tinygpt_cli.data import TokenizeSettings, is_validation_document, load_cache, prepare
from tinygpt_cli.tokenizer import get_encoding

ENC = get_encoding("cl100k_base")
EOT = ENC.eot_token


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [*map(str, args)])


def tokenize(*args: str | Path, cache: Path) -> dict:
    result = invoke("tokenize", *args, "--cache-dir", cache, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stream(summary: dict) -> list[int]:
    """The cache's tokens, train then valid, as encoding ids."""
    cache = load_cache(Path(summary["cache"]))
    ids = np.concatenate([cache.train, cache.valid]).astype(np.int64)
    return cache.vocab.ids[ids].tolist()


def joined(texts: list[str], separator: list[int]) -> list[int]:
    out: list[int] = []
    for i, text in enumerate(texts):
        if i:
            out += separator
        out += ENC.encode_ordinary(text)
    return out


DOCS = [f"Document {i}: the quick brown fox, number {i}.\nA second line {i}." for i in range(12)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    (root / "b").mkdir(parents=True)
    for i, text in enumerate(DOCS[:6]):
        (root / f"a{i:02d}.txt").write_text(text, encoding="utf-8")
    for i, text in enumerate(DOCS[6:], start=6):
        (root / "b" / f"c{i:02d}.md").write_text(text, encoding="utf-8")
    return root


# --- each source kind and separator --------------------------------------------------------------

@pytest.mark.parametrize(("separator", "ids"), [
    ("eot", [EOT]), ("newline", ENC.encode_ordinary("\n")), ("none", [])])
def test_a_folders_files_are_documents_joined_by_the_separator(folder, tmp_path, separator, ids):
    summary = tokenize(folder, "--separator", separator, cache=tmp_path / "cache")
    assert (summary["files"], summary["documents"]) == (12, 12)
    assert stream(summary) == joined(DOCS, ids)  # files in path order: a00..a05, b/c06..c11


def test_the_compact_vocabulary_keeps_end_of_text_and_literal_text_stays_text(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "1.txt").write_text("before <|endoftext|> after")
    (tmp_path / "d" / "2.txt").write_text("next")
    summary = tokenize(tmp_path / "d", cache=tmp_path / "cache")
    assert stream(summary) == ENC.encode_ordinary("before <|endoftext|> after") + [EOT] + \
        ENC.encode_ordinary("next")
    vocab = load_cache(Path(summary["cache"])).vocab
    assert vocab.eot is not None and vocab.token_byte_lengths()[vocab.eot] == 0


def test_one_text_file_is_one_document_as_in_the_book(tmp_path):
    corpus = tmp_path / "book.txt"
    corpus.write_text("\n".join(DOCS))
    summary = tokenize(corpus, cache=tmp_path / "cache")
    assert summary["documents"] == 1 and stream(summary) == ENC.encode_ordinary("\n".join(DOCS))


@pytest.mark.parametrize("compressed", [False, True])
def test_jsonl_records_are_documents(tmp_path, compressed):
    lines = "".join(json.dumps({"id": i, "body": text}) + "\n" for i, text in enumerate(DOCS))
    lines += "\n" + json.dumps({"id": 99, "body": None}) + "\n"  # blank line, null: passed over
    path = tmp_path / ("docs.jsonl.gz" if compressed else "docs.jsonl")
    path.write_bytes(gzip.compress(lines.encode()) if compressed else lines.encode())
    summary = tokenize(path, "--field", "body", cache=tmp_path / "cache")
    assert summary["documents"] == len(DOCS)
    assert stream(summary) == joined(DOCS, [EOT])


def test_parquet_rows_are_documents(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "shard.parquet"
    pq.write_table(pa.table({"n": list(range(len(DOCS))), "content": DOCS}), path,
                   row_group_size=5)
    summary = tokenize(path, "--field", "content", cache=tmp_path / "cache")
    assert summary["documents"] == len(DOCS) and stream(summary) == joined(DOCS, [EOT])


def test_several_paths_and_csv_columns(tmp_path, folder):
    table = tmp_path / "t.csv"
    table.write_text("title,price\nfirst title,1\nsecond title,2\n")
    summary = tokenize(folder / "a00.txt", table, "--column", "title", cache=tmp_path / "cache")
    assert (summary["files"], summary["documents"]) == (2, 2)
    assert stream(summary) == joined([DOCS[0], "first title\nsecond title"], [EOT])


def test_include_exclude_and_hidden_files(tmp_path, folder):
    (folder / ".git").mkdir()
    (folder / ".git" / "config.txt").write_text("hidden")
    (folder / ".hidden.txt").write_text("hidden too")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    summary = tokenize(folder, cache=tmp_path / "cache")
    assert (summary["files"], summary["not_matched_files"]) == (12, 1)  # not the .png
    only_md = tokenize(folder, "--include", "*.md", cache=tmp_path / "cache")
    assert stream(only_md) == joined(DOCS[6:], [EOT])
    no_b = tokenize(folder, "--exclude", "b/*", cache=tmp_path / "cache")
    assert stream(no_b) == joined(DOCS[:6], [EOT])


def test_split_documents_holds_out_whole_documents(tmp_path):
    docs = [f"doc {i} " + "word " * (i % 7) for i in range(40)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    summary = tokenize(path, "--split", "documents", cache=tmp_path / "cache")
    cache = load_cache(Path(summary["cache"]))
    held = [d for i, d in enumerate(docs) if is_validation_document(i, 0.1)]
    kept = [d for i, d in enumerate(docs) if not is_validation_document(i, 0.1)]
    assert len(held) == 4 and held == [docs[9], docs[19], docs[29], docs[39]]
    assert cache.vocab.ids[cache.train.astype(np.int64)].tolist() == joined(kept, [EOT])
    assert cache.vocab.ids[cache.valid.astype(np.int64)].tolist() == joined(held, [EOT])


def test_split_documents_needs_enough_documents(tmp_path, folder):
    assert_user_error(invoke("tokenize", folder / "a00.txt", "--split", "documents",
                             "--cache-dir", tmp_path / "cache"), 1, "too few to hold out")


# --- one cache per source set --------------------------------------------------------------------

def test_a_changed_added_or_removed_file_rebuilds_the_folders_cache(tmp_path, folder):
    cache = tmp_path / "cache"
    first = tokenize(folder, cache=cache)
    assert tokenize(folder, cache=cache)["cache_hit"]
    (folder / "b" / "c06.md").write_text("edited text")  # one file of twelve
    edited = tokenize(folder, cache=cache)
    assert not edited["cache_hit"] and edited["cache"] == first["cache"]
    assert stream(edited) == joined(DOCS[:6] + ["edited text"] + DOCS[7:], [EOT])
    (folder / "new.txt").write_text("a new file")
    assert tokenize(folder, cache=cache)["files"] == 13
    (folder / "new.txt").unlink()
    after = tokenize(folder, cache=cache)
    assert not after["cache_hit"] and after["files"] == 12


def test_memory_is_bounded_by_the_chunk_size(tmp_path, monkeypatch):
    """Tasks in flight hold at most about 2 x threads x chunk of text: the build never holds a
    source whole, whatever the number or size of files."""
    from tinygpt_cli import sources

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(300):
        (folder / f"{i:03d}.txt").write_text(f"file {i} " * 50)
    biggest = []
    real = sources._small_files_task

    def spy(batch, settings, encode):
        biggest.append(sum(f.size for f, _ in batch))
        return real(batch, settings, encode)

    monkeypatch.setattr(sources, "_small_files_task", spy)
    prepare(folder, TokenizeSettings(), cache_root=tmp_path / "cache", chunk_bytes=4096)
    assert len(biggest) > 10 and max(biggest) < 4096 + 1024


# --- bad input: one line each, nothing half-written ---------------------------------------------

def test_an_empty_folder_or_nothing_matching_says_what_was_looked_at(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    assert_user_error(invoke("tokenize", tmp_path / "empty", "--cache-dir", tmp_path / "c"),
                      1, "holds no files to read")
    result = invoke("tokenize", folder, "--include", "*.rst", "--cache-dir", tmp_path / "c")
    line = assert_user_error(result, 1, "no file in", "matches --include *.rst")
    assert "6 .txt" in line and "6 .md" in line
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_a_bad_file_in_a_folder_is_skipped_with_a_warning_or_stops_under_strict(tmp_path,
                                                                                  folder):
    (folder / "blob.txt").write_bytes(b"abc\x00\x01\x02")
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (folder / "wide.txt").write_bytes("hello".encode("utf-16"))
    result = invoke("tokenize", folder, "--cache-dir", tmp_path / "c", "--json")
    assert result.exit_code == 0, result.output
    assert "skipped 3 files that are not text; the first:" in result.stderr
    assert "blob.txt looks binary: a NUL byte at offset 3" in result.stderr
    assert stream(json.loads(result.stdout)) == joined(DOCS, [EOT])
    strict = invoke("tokenize", folder, "--strict", "--cache-dir", tmp_path / "c2")
    assert_user_error(strict, 1, "blob.txt looks binary: a NUL byte at offset 3")
    wide = invoke("tokenize", folder / "wide.txt", "--cache-dir", tmp_path / "c3")
    assert_user_error(wide, 1, "is UTF-16 text")
    latin = invoke("tokenize", folder / "latin1.txt", "--cache-dir", tmp_path / "c3")
    assert_user_error(latin, 1, "is not UTF-8 text: byte 0xe9 at offset 3")


@pytest.mark.parametrize(("line", "fragment"), [
    ("{not json", "bad.jsonl:2: not JSON"),
    (json.dumps({"title": "x"}), "bad.jsonl:2: no field 'text' (its fields: title)"),
    (json.dumps({"text": 3}), "bad.jsonl:2: field 'text' is a number, not text"),
    (json.dumps(["a"]), "bad.jsonl:2: a JSON array, not an object")])
def test_a_bad_jsonl_line_names_file_and_line(tmp_path, line, fragment):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    assert_user_error(invoke("tokenize", path, "--cache-dir", tmp_path / "c"), 1, fragment)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_a_parquet_column_that_is_missing_or_not_text(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"n": [1, 2], "text": ["a", "b"]}), path)
    assert_user_error(invoke("tokenize", path, "--field", "body", "--cache-dir", tmp_path / "c"),
                      1, "has no column 'body'; its columns are: n, text")
    assert_user_error(invoke("tokenize", path, "--field", "n", "--cache-dir", tmp_path / "c"),
                      1, "column 'n' holds int64, not text")


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else find_spec(name, *a))
    assert_user_error(invoke("tokenize", tmp_path / "t.parquet", "--cache-dir", tmp_path / "c"),
                      2, "pip install 'tinygpt[parquet]'")


def test_a_fifo_is_refused_by_name_and_skipped_in_a_folder(tmp_path, folder):
    os.mkfifo(folder / "pipe.txt")  # reading it would wait for a writer forever
    result = invoke("tokenize", folder, "--cache-dir", tmp_path / "c", "--json")
    assert result.exit_code == 0, result.output
    assert "not regular files" in result.stderr and "pipe.txt" in result.stderr
    assert_user_error(invoke("tokenize", folder / "pipe.txt", "--cache-dir", tmp_path / "c"),
                      1, "is not a regular file")


def test_a_file_that_changes_while_it_is_read_is_not_cached(tmp_path, monkeypatch):
    from tinygpt_cli import sources

    big = tmp_path / "big.txt"
    big.write_text("line of text\n" * 200_000)  # above SMALL_FILE: read in chunks
    real = sources.iter_text_chunks

    def writer_meanwhile(path, *args, **kwargs):
        for i, piece in enumerate(real(path, *args, **kwargs)):
            if i == 1:
                with open(path, "a") as f:
                    f.write("appended while reading\n")
            yield piece

    monkeypatch.setattr(sources, "iter_text_chunks", writer_meanwhile)
    result = invoke("tokenize", big, "--cache-dir", tmp_path / "c")
    assert_user_error(result, 1, "changed while it was being read; nothing was cached")
    assert not any(p.name.endswith("meta.json") for p in (tmp_path / "c").rglob("*"))


# --- --init-from ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    root = tmp_path_factory.mktemp("parent")
    corpus = root / "parent.txt"
    corpus.write_text("The cat sat on the mat.\n" * 300)
    result = invoke("train", "--data", corpus, "--d-model", "16", "--num-heads", "2",
                    "--num-blocks", "1", "--context-length", "16", "--max-iters", "30",
                    "--eval-interval", "15", "--eval-iters", "2", "--threads", "1",
                    "--cache-dir", root / "cache", "--out", root / "parent.ckpt")
    assert result.exit_code == 0, result.output
    return root / "parent.ckpt"


def test_init_from_starts_a_new_run_from_the_weights_on_new_data(parent, tmp_path):
    new = tmp_path / "new.txt"
    new.write_text("A dog ran in the park. Zebras zigzag.\n" * 200)
    result = invoke("train", "--init-from", parent, "--data", new, "--max-iters", "1",
                    "--learning-rate", "1e-12", "--eval-interval", "1", "--eval-iters", "1",
                    "--threads", "1", "--cache-dir", tmp_path / "cache", "--out",
                    tmp_path / "child.ckpt")
    assert result.exit_code == 0, result.output
    assert "of this text's tokens are not in the checkpoint's vocabulary" in result.stderr
    child, source = ckpt.load(tmp_path / "child.ckpt"), ckpt.load(parent)
    assert child["step"] == 1 and child["init_from"]["path"] == str(parent)
    assert child["model_config"] == source["model_config"]
    assert torch.equal(child["tokenizer"]["ids"], source["tokenizer"]["ids"])
    for name, weight in source["model_state_dict"].items():  # an update of lr 1e-12 away
        assert torch.allclose(child["model_state_dict"][name], weight, atol=1e-6), name
    assert len(child["optimizer_state_dict"]["state"]) > 0  # its own, fresh optimizer
    cache = load_cache(next(p for p in (tmp_path / "cache").iterdir() if p.is_dir()))
    assert 0 < cache.meta["fallback_tokens"] < cache.meta["encoded_tokens"]  # "Zebras" is new
    vocab = cache.vocab
    assert vocab.decode(np.concatenate([cache.train, cache.valid]).tolist()) == \
        new.read_text()  # byte fallback: every character of the new text is there


@pytest.mark.parametrize(("option", "fragment"), [
    (["--d-model", "32"], "--d-model 32: --init-from"),
    (["--context-length", "8"], "--context-length 8: --init-from"),
    (["--full-vocab"], "--full-vocab: the tokenizer comes from --init-from"),
    (["--resume", "x.ckpt"], "give one of them")])
def test_init_from_refuses_what_would_change_the_model(parent, tmp_path, option, fragment):
    result = invoke("train", "--init-from", parent, *option, "--out", tmp_path / "c.ckpt",
                    "--cache-dir", tmp_path / "cache")
    assert_user_error(result, 2, fragment)
    assert not (tmp_path / "c.ckpt").exists()


# --- generation follows the data -----------------------------------------------------------------

@pytest.fixture(scope="module")
def documents_model(tmp_path_factory):
    """A model of many tiny documents: it learns where one ends."""
    root = tmp_path_factory.mktemp("docs-model")
    data = root / "short.jsonl"
    data.write_text("".join(json.dumps({"text": "hello there"}) + "\n" for _ in range(400)))
    result = invoke("train", "--data", data, "--d-model", "32", "--num-heads", "2",
                    "--num-blocks", "1", "--context-length", "16", "--max-iters", "150",
                    "--learning-rate", "1e-2", "--eval-interval", "75", "--eval-iters", "2",
                    "--threads", "1", "--cache-dir", root / "cache", "--out", root / "m.ckpt")
    assert result.exit_code == 0, result.output
    return root / "m.ckpt"


def test_a_sample_starts_and_ends_at_end_of_text(documents_model):
    state = ckpt.load(documents_model)
    assert state["sample_start"] == {"token": "eot"}
    result = invoke("generate", "-c", documents_model, "-t", "0", "-n", "20", "--json",
                    "--threads", "1")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["start_token"] and out["prompt"] == ""
    (sample,) = out["samples"]
    assert (sample["finish_reason"], sample["text"]) == ("eot", "hello there")
    going_on = invoke("generate", "-c", documents_model, "-t", "0", "-n", "12", "--json",
                      "--ignore-eot", "--threads", "1")
    text = json.loads(going_on.stdout)["samples"][0]["text"]
    assert text.startswith("hello there<|endoftext|>hello")


def test_the_bundled_corpus_starts_from_the_books_prompt_and_a_text_file_from_a_newline(
        tmp_path, parent):
    from tinygpt_cli.generation import DEFAULT_PROMPT, START_TEXT

    assert ckpt.load(parent)["sample_start"] == {"text": START_TEXT}
    result = invoke("train", "--max-iters", "1", "--d-model", "16", "--num-heads", "2",
                    "--num-blocks", "1", "--context-length", "16", "--eval-iters", "1",
                    "--threads", "1", "--cache-dir", tmp_path / "cache", "--out",
                    tmp_path / "book.ckpt")
    assert result.exit_code == 0, result.output
    assert ckpt.load(tmp_path / "book.ckpt")["sample_start"] == {"text": DEFAULT_PROMPT}


def test_a_cache_build_never_waits_on_a_fifo_named_alongside(tmp_path):
    """Refused before anything is opened: the command returns even with no writer."""
    fifo = tmp_path / "p.txt"
    os.mkfifo(fifo)
    done = threading.Event()

    def run():
        invoke("tokenize", fifo, "--cache-dir", tmp_path / "c")
        done.set()

    threading.Thread(target=run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not done.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert done.is_set()


# --- after review ---------------------------------------------------------------------------------

def test_a_folder_through_a_link_or_moved_is_the_same_corpus(tmp_path, folder):
    link = tmp_path / "link"
    link.symlink_to(folder)
    cache = tmp_path / "cache"
    real = load_cache(Path(tokenize(folder, cache=cache)["cache"]))
    linked = load_cache(Path(tokenize(link, cache=cache)["cache"]))
    moved_to = tmp_path / "elsewhere"
    folder.rename(moved_to)
    moved = load_cache(Path(tokenize(moved_to, cache=cache)["cache"]))
    assert real.meta["source"]["sha256"] == linked.meta["source"]["sha256"] \
        == moved.meta["source"]["sha256"]


def test_an_unchanged_file_is_not_read_again_and_a_changed_one_always_is(tmp_path, folder,
                                                                          monkeypatch):
    from tinygpt_cli import sources

    monkeypatch.setattr(sources, "RACY_NS", 0)  # files made a moment ago may be trusted
    cache = tmp_path / "cache"
    tokenize(folder, cache=cache)
    read = []
    real = sources.file_sha256
    monkeypatch.setattr(sources, "file_sha256", lambda path: read.append(path) or real(path))
    assert tokenize(folder, cache=cache)["cache_hit"] and read == []
    target = folder / "a03.txt"  # same size, its modification time put back (as cp -p does)
    before = target.stat()
    target.write_text(DOCS[3].replace("fox", "cat"))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size
    again = tokenize(folder, cache=cache)
    assert not again["cache_hit"] and [str(p) for p in read] == [str(target.resolve())]
    assert stream(again) == joined(DOCS[:3] + [DOCS[3].replace("fox", "cat")] + DOCS[4:], [EOT])


def test_a_damaged_gzip_and_empty_records(tmp_path):
    good = gzip.compress(b"".join(json.dumps({"text": t}).encode() + b"\n" for t in DOCS))
    damaged = tmp_path / "d.jsonl.gz"
    damaged.write_bytes(good[:40] + bytes(range(200)) + good[240:])
    assert_user_error(invoke("tokenize", damaged, "--cache-dir", tmp_path / "c"), 1,
                      "cannot read")
    empty = tmp_path / "e.jsonl"
    empty.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a", "", "b", ""]))
    summary = tokenize(empty, cache=tmp_path / "c")
    assert summary["documents"] == 2 and stream(summary) == joined(["a", "b"], [EOT])


def test_an_init_from_run_resumes_on_its_own_vocabulary(parent, tmp_path):
    new = tmp_path / "new.txt"
    new.write_text("A dog ran in the park.\n" * 200)
    common = ["--data", new, "--eval-interval", "2", "--eval-iters", "1", "--threads", "1",
              "--cache-dir", tmp_path / "cache"]
    first = invoke("train", "--init-from", parent, "--max-iters", "2", *common, "--out",
                   tmp_path / "child.ckpt")
    assert first.exit_code == 0, first.output
    resumed = invoke("train", "--resume", tmp_path / "child.ckpt", "--max-iters", "4", *common,
                     "--out", tmp_path / "child.ckpt")
    assert resumed.exit_code == 0, resumed.output
    state = ckpt.load(tmp_path / "child.ckpt")
    assert state["step"] == 4 and state["init_from"]["path"] == str(parent)
    assert torch.equal(state["tokenizer"]["ids"], ckpt.load(parent)["tokenizer"]["ids"])


def test_tokenize_init_from_builds_the_cache_train_uses_and_reports_the_fallback(parent,
                                                                                  tmp_path):
    new = tmp_path / "new.txt"
    new.write_text("Zebras zigzag in Zanzibar.\n" * 100)
    summary = tokenize(new, "--init-from", parent, cache=tmp_path / "cache")
    assert 0 < summary["fallback_share"] < 1
    result = invoke("train", "--init-from", parent, "--data", new, "--max-iters", "1",
                    "--eval-iters", "1", "--threads", "1", "--cache-dir", tmp_path / "cache",
                    "--out", tmp_path / "child.ckpt")
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == \
        [Path(summary["cache"]).name]  # train found tokenize's cache: one, not two
    assert_user_error(invoke("tokenize", new, "--init-from", parent, "--full-vocab",
                             "--cache-dir", tmp_path / "cache"), 2, "comes from --init-from")
