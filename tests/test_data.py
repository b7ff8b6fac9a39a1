"""data.py: the token cache (build, hit, rebuild, atomicity), corpus reading, splits, batches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tinygpt_cli import __version__, data
from tinygpt_cli.data import (
    FORMAT_VERSION,
    TokenizeSettings,
    as_tensor,
    get_batch,
    iter_csv_column,
    iter_text_chunks,
    load_cache,
    max_context_length,
    prepare,
    verify_cache,
)
from tinygpt_cli.errors import DataError, UsageError


def tokens(cache) -> np.ndarray:
    return np.concatenate([cache.train, cache.valid])


def stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def leftovers(cache_root: Path) -> list[str]:
    """Temporary or displaced folders a build may leave next to the caches."""
    return [p.name for p in cache_root.iterdir() if p.name.startswith(".")]


# --- building, the format, the metadata --------------------------------------------------------

def test_cache_holds_the_whole_text_split_90_10(token_cache, corpus, corpus_text):
    ids = tokens(token_cache)
    vocab = token_cache.vocab
    assert vocab.decode(ids) == corpus_text
    assert ids.tolist() == vocab.encode(corpus_text)  # chunked/threaded == one encode call
    n = len(ids)
    assert len(token_cache.train) == int(n * 0.9) and len(token_cache.valid) == n - int(n * 0.9)
    assert isinstance(token_cache.train, np.memmap) and isinstance(token_cache.valid, np.memmap)
    assert token_cache.hit is False and token_cache.warnings == []


def test_val_fraction_is_honoured(corpus, cache_root):
    cache = prepare(corpus, TokenizeSettings(val_fraction=0.25), cache_root=cache_root)
    n = cache.meta["tokens"]
    assert len(cache.train) == int(n * 0.75)
    assert len(cache.valid) == n - int(n * 0.75)
    assert cache.meta["settings"]["val_fraction"] == 0.25


def test_meta_records_source_settings_counts_and_versions(token_cache, corpus, corpus_text):
    meta = json.loads((token_cache.path / "meta.json").read_text())
    raw = corpus.read_bytes()
    assert meta["source"] == {"path": str(corpus.resolve()), "paths": [str(corpus.resolve())],
                              "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    assert meta["settings"]["encoding"] == "cl100k_base"
    assert meta["vocab"] == {"encoding": "cl100k_base", "mode": "compact",
                             "size": token_cache.vocab.size}
    assert meta["tokens"] == len(token_cache.train) + len(token_cache.valid)
    assert meta["splits"]["train"]["tokens"] == len(token_cache.train)
    assert meta["splits"]["valid"]["tokens"] == len(token_cache.valid)
    assert meta["settings"]["val_fraction"] == 0.1
    assert meta["characters"] == len(corpus_text)
    assert meta["tinygpt_version"] == __version__
    assert meta["format_version"] == FORMAT_VERSION
    # bytes per split (for bits per byte) add up to the file's bytes
    assert meta["splits"]["train"]["bytes"] + meta["splits"]["valid"]["bytes"] == len(raw)


def test_small_vocab_is_stored_as_little_endian_uint16(token_cache):
    folder = token_cache.path
    assert token_cache.meta["dtype"] == "uint16"
    on_disk = np.fromfile(folder / "train.bin", dtype="<u2")
    assert np.array_equal(on_disk, token_cache.train)
    assert (folder / "train.bin").stat().st_size == 2 * len(token_cache.train)
    assert int(tokens(token_cache).max()) < token_cache.vocab.size
    assert np.array_equal(np.fromfile(folder / "vocab.bin", dtype="<u4"), token_cache.vocab.ids)


def test_full_vocab_above_65535_is_stored_as_uint32(tmp_path, cache_root):
    text = "A Conveyor belt moves boxes.\n" * 30
    path = tmp_path / "conveyor.txt"
    path.write_text(text, encoding="utf-8")
    cache = prepare(path, TokenizeSettings(vocab_mode="full"), cache_root=cache_root)
    assert cache.vocab.size == 100256 and cache.meta["vocab"]["mode"] == "full"
    assert cache.meta["dtype"] == "uint32"
    ids = tokens(cache)
    assert int(ids.max()) == 100255 > 65535  # " Conveyor": would wrap in uint16
    assert np.array_equal(np.fromfile(cache.path / "train.bin", dtype="<u4"), cache.train)
    assert (cache.path / "train.bin").stat().st_size == 4 * len(cache.train)
    assert cache.vocab.decode(ids) == text


def test_endoftext_in_the_corpus_is_ordinary_text(tmp_path, cache_root):
    text = "doc one<|endoftext|>doc two\n<|endoftext|>\n" * 10
    path = tmp_path / "eot.txt"
    path.write_text(text, encoding="utf-8")
    cache = prepare(path, cache_root=cache_root)
    ids = tokens(cache)
    assert cache.vocab.decode(ids) == text
    enc = cache.vocab.encoding
    assert ids.tolist() == cache.vocab.to_model[enc.encode_ordinary(text)].tolist()
    assert enc.eot_token not in cache.vocab.ids[ids].tolist()


def test_splits_share_one_vocabulary_and_meta_counts_distinct_tokens(token_cache, corpus_text):
    enc = token_cache.vocab.encoding
    assert token_cache.meta["distinct_tokens"] == len(set(enc.encode_ordinary(corpus_text)))
    assert max_context_length(token_cache) == min(len(token_cache.train),
                                                  len(token_cache.valid)) - 1


# --- chunking ----------------------------------------------------------------------------------

def test_tiny_chunks_tokenize_exactly_like_the_whole_text(tmp_path):
    lines = ["first line {i}", "", "", "trailing spaces {i}   ", "  leading spaces {i}",
             "crlf line {i}\r", "\tTabbed {i}", "中文 行 {i}", "emoji 🚀🚀 {i}", "", "end {i}."]
    text = "".join(line.format(i=i) + "\n" for i in range(12) for line in lines)
    path = tmp_path / "lines.txt"
    path.write_bytes(text.encode("utf-8"))
    pieces = list(iter_text_chunks(path, chunk_bytes=16))
    assert len(pieces) > 20  # really chunked
    assert all(piece.endswith("\n") for piece, _ in pieces[:-1])  # only safe cuts, no forced one
    assert "".join(p for p, _ in pieces) == text
    assert sum(n for _, n in pieces) == len(text.encode("utf-8"))

    small = prepare(path, cache_root=tmp_path / "a", chunk_bytes=16, threads=2)
    whole = prepare(path, cache_root=tmp_path / "b")
    assert np.array_equal(small.train, whole.train)
    assert np.array_equal(small.valid, whole.valid)
    assert small.vocab.decode(tokens(small)) == text


def test_a_long_line_is_cut_on_character_boundaries(tmp_path):
    text = "汉字🚀é" * 200  # no newline anywhere: the chunker must force cuts
    path = tmp_path / "long.txt"
    path.write_bytes(text.encode("utf-8"))
    pieces = list(iter_text_chunks(path, chunk_bytes=8))
    assert len(pieces) > 10
    assert "".join(p for p, _ in pieces) == text
    assert sum(n for _, n in pieces) == len(text.encode("utf-8"))


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 1 << 20])
def test_a_bom_is_dropped_whatever_the_chunk_size(tmp_path, chunk_bytes):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello\nworld\n")
    assert "".join(p for p, _ in iter_text_chunks(path, chunk_bytes=chunk_bytes)) == \
        "hello\nworld\n"


def test_a_bom_never_reaches_the_tokens(tmp_path, cache_root):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "héllo\nworld\n".encode() * 5)
    cache = prepare(path, cache_root=cache_root)
    assert cache.vocab.decode(tokens(cache)) == "héllo\nworld\n" * 5
    assert cache.meta["characters"] == len("héllo\nworld\n" * 5)


def test_non_utf8_names_the_offset_and_replace_reads_it(tmp_path, cache_root):
    path = tmp_path / "latin1.txt"
    path.write_bytes("line one\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"byte 0xe9 at offset 12"):
        prepare(path, cache_root=cache_root)
    cache = prepare(path, TokenizeSettings(errors="replace"), cache_root=cache_root)
    assert cache.vocab.decode(tokens(cache)) == "line one\ncaf\ufffd\n"


def test_text_after_nul_padding_is_binary_not_utf16_and_replace_reads_it(tmp_path, cache_root):
    """NUL bytes on both halves are not UTF-16 (whose text half is never NUL): strict calls it
    binary, and --errors replace reads the text after it, as before UTF-16 was recognised."""
    path = tmp_path / "padded.txt"
    path.write_bytes(b"\x00" * 8192 + b"text after padding\n" * 20)
    with pytest.raises(DataError, match=r"looks binary: a NUL byte at offset 0"):
        prepare(path, cache_root=cache_root)
    cache = prepare(path, TokenizeSettings(errors="replace"), cache_root=cache_root)
    assert cache.vocab.decode(tokens(cache)).endswith("text after padding\n" * 20)


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError) as info:
        TokenizeSettings(val_fraction=1.0, errors="ignore")
    assert "--val-fraction" in info.value.message and "--errors" in info.value.message


# --- CSV ---------------------------------------------------------------------------------------

CSV = (
    'title,price,notes\r\n'
    '"Socks, wool",3,plain\r\n'
    '"Two-line\ntitle",5,"a, b"\r\n'
    'Plain title,7,\r\n'
    '"He said ""hi""",9,x\r\n'
)
TITLES = ["Socks, wool", "Two-line\ntitle", "Plain title", 'He said "hi"']


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "bom"])
def test_csv_column_is_its_rows_joined_by_newlines(tmp_path, cache_root, bom):
    path = tmp_path / "items.csv"
    path.write_bytes(bom + CSV.encode())
    assert "".join(text for text, _ in iter_csv_column(path, "title")) == "\n".join(TITLES)
    cache = prepare(path, TokenizeSettings(column="title"), cache_root=cache_root)
    assert cache.vocab.decode(tokens(cache)) == "\n".join(TITLES)
    assert "price" not in cache.vocab.decode(tokens(cache))


def test_csv_progress_counts_every_byte(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(CSV.encode())
    assert sum(n for _, n in iter_csv_column(path, "title", chunk_chars=5)) == len(CSV.encode())


def test_csv_chunks_tokenize_exactly_like_the_whole_column(tmp_path):
    # rows ending in punctuation or spaces, empty rows and rows starting with spaces are where a
    # cut in the wrong place changes the tokens (".\n" is one cl100k token)
    values = []
    for i in range(40):
        values += [f"Item {i}.", f"  spaced {i}  ", "", f"Ünïcode {i}!"]
    path = tmp_path / "items.csv"
    path.write_text("title\n" + "".join(f'"{v}"\n' for v in values), encoding="utf-8")
    pieces = list(iter_csv_column(path, "title", chunk_chars=16))
    assert len(pieces) > 10
    assert "".join(p for p, _ in pieces) == "\n".join(values)
    settings = TokenizeSettings(column="title")
    small = prepare(path, settings, cache_root=tmp_path / "a", chunk_bytes=16)
    whole = prepare(path, settings, cache_root=tmp_path / "b")
    assert np.array_equal(tokens(small), tokens(whole))
    assert np.array_equal(small.train, whole.train)


def test_missing_csv_column_names_the_available_ones(tmp_path, cache_root):
    path = tmp_path / "items.csv"
    path.write_bytes(CSV.encode())
    with pytest.raises(DataError) as info:
        prepare(path, TokenizeSettings(column="name"), cache_root=cache_root)
    assert "'name'" in info.value.message
    assert all(f"'{c}'" in info.value.message for c in ("title", "price", "notes"))


def test_unreadable_csv_is_a_data_error(tmp_path, cache_root):
    path = tmp_path / "huge.csv"
    path.write_text('title\n"' + "x" * 200_000 + '"\n', encoding="utf-8")  # > csv field limit
    with pytest.raises(DataError, match="CSV"):
        prepare(path, TokenizeSettings(column="title"), cache_root=cache_root)
    assert leftovers(cache_root) == []


# --- the cache: hits, rebuilds, damage, interruption -------------------------------------------

def test_second_prepare_is_a_hit_and_rewrites_nothing(corpus, cache_root, token_cache):
    before = stamps(token_cache.path)
    again = prepare(corpus, cache_root=cache_root)
    assert again.hit is True and again.warnings == []
    assert again.path == token_cache.path
    assert stamps(again.path) == before
    assert np.array_equal(tokens(again), tokens(token_cache))


def test_changed_content_rebuilds_the_same_folder(corpus, cache_root, token_cache):
    corpus.write_text("entirely different words now\n" * 40, encoding="utf-8")
    cache = prepare(corpus, cache_root=cache_root)
    assert cache.hit is False and cache.warnings == []  # a changed source is not damage
    assert cache.path == token_cache.path
    assert cache.vocab.decode(tokens(cache)) == "entirely different words now\n" * 40
    assert leftovers(cache_root) == []


def test_force_rebuilds(corpus, cache_root, token_cache):
    before = stamps(token_cache.path)
    cache = prepare(corpus, cache_root=cache_root, force=True)
    assert cache.hit is False
    assert stamps(cache.path) != before
    assert np.array_equal(tokens(cache), tokens(token_cache))
    assert leftovers(cache_root) == []


def test_other_settings_get_their_own_cache(corpus, cache_root, token_cache):
    other = prepare(corpus, TokenizeSettings(val_fraction=0.2), cache_root=cache_root)
    assert other.path != token_cache.path and other.hit is False
    assert verify_cache(token_cache.path) is None


def _truncate_train(folder: Path) -> None:
    with open(folder / "train.bin", "r+b") as f:
        f.truncate((folder / "train.bin").stat().st_size - 2)


def _edit_token_count(folder: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta["splits"]["train"]["tokens"] += 1
    (folder / "meta.json").write_text(json.dumps(meta))


def _garble_meta(folder: Path) -> None:
    (folder / "meta.json").write_text('{"format_version": 1, "dty')


def _bogus_mode(folder: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta["vocab"]["mode"] = "bogus"
    (folder / "meta.json").write_text(json.dumps(meta))


def _source_not_a_dict(folder: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta["source"] = "somewhere"
    (folder / "meta.json").write_text(json.dumps(meta))


def _drop_valid(folder: Path) -> None:
    (folder / "valid.bin").unlink()


@pytest.mark.parametrize("damage", [_truncate_train, _edit_token_count, _garble_meta,
                                    _bogus_mode, _source_not_a_dict, _drop_valid])
def test_damage_is_detected_and_rebuilt_with_a_warning(corpus, cache_root, token_cache, damage):
    expected = tokens(token_cache).copy()
    folder = token_cache.path
    damage(folder)
    problem = verify_cache(folder)
    assert problem is not None
    with pytest.raises(DataError) as info:
        load_cache(folder)
    assert problem in info.value.message and "--force" in info.value.hint
    cache = prepare(corpus, cache_root=cache_root)
    assert cache.hit is False
    assert len(cache.warnings) == 1 and "damaged" in cache.warnings[0]
    assert problem in cache.warnings[0]
    assert verify_cache(folder) is None
    assert np.array_equal(tokens(cache), expected)


def _shuffle_vocab(folder: Path) -> None:
    ids = np.fromfile(folder / "vocab.bin", dtype="<u4")
    np.random.default_rng(0).permutation(ids).astype("<u4").tofile(folder / "vocab.bin")


def _random_vocab(folder: Path) -> None:
    n = (folder / "vocab.bin").stat().st_size // 4
    np.random.default_rng(1).integers(0, 2**32, n, dtype=np.uint64).astype("<u4").tofile(
        folder / "vocab.bin")


def _zero_train(folder: Path) -> None:
    size = (folder / "train.bin").stat().st_size
    (folder / "train.bin").write_bytes(bytes(size))


def _flip_one_valid_byte(folder: Path) -> None:
    raw = bytearray((folder / "valid.bin").read_bytes())
    raw[len(raw) // 2] ^= 1
    (folder / "valid.bin").write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [_shuffle_vocab, _random_vocab, _zero_train,
                                    _flip_one_valid_byte])
def test_damage_that_keeps_every_size_is_caught_by_the_checksums(corpus, cache_root,
                                                                  token_cache, damage):
    """Sizes and metadata still match: only the content hashes recorded at build time tell."""
    expected = tokens(token_cache).copy()
    folder = token_cache.path
    damage(folder)
    assert verify_cache(folder) is None  # the structure is fine
    problem = verify_cache(folder, content=True)
    assert problem is not None and "does not match the checksum" in problem
    cache = prepare(corpus, cache_root=cache_root)
    assert cache.hit is False and len(cache.warnings) == 1 and problem in cache.warnings[0]
    assert np.array_equal(tokens(cache), expected)
    assert prepare(corpus, cache_root=cache_root).hit is True


def test_a_cache_from_before_checksums_is_rebuilt_once(corpus, cache_root, token_cache):
    meta_path = token_cache.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["checksums"]
    meta_path.write_text(json.dumps(meta))
    cache = prepare(corpus, cache_root=cache_root)
    assert cache.hit is False and "older tinygpt" in cache.warnings[0]
    assert prepare(corpus, cache_root=cache_root).hit is True


def test_a_source_rewritten_while_it_is_read_is_not_cached(corpus, cache_root, monkeypatch):
    from tinygpt_cli import sources

    real = sources.manifest

    def rewritten_after_hashing(files, *args, **kwargs):  # between the hash and the read
        entries = real(files, *args, **kwargs)
        corpus.write_bytes(corpus.read_bytes().replace(b"Cotton", b"Linen!"))
        return entries

    monkeypatch.setattr(data, "manifest", rewritten_after_hashing)
    with pytest.raises(DataError, match="changed while it was being read"):
        prepare(corpus, cache_root=cache_root)
    assert list(cache_root.iterdir()) == []  # nothing cached, no temporary folder


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_an_interrupted_build_leaves_nothing(corpus, cache_root, monkeypatch):
    monkeypatch.setattr(data, "_write_splits", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare(corpus, cache_root=cache_root)
    assert list(cache_root.iterdir()) == []  # no cache folder, no temporary folder
    monkeypatch.undo()
    assert prepare(corpus, cache_root=cache_root).hit is False  # nothing half-built was reused


def test_an_interrupted_rebuild_keeps_the_old_cache(corpus, cache_root, token_cache, monkeypatch):
    expected = tokens(token_cache).copy()
    before = stamps(token_cache.path)
    monkeypatch.setattr(data, "_write_splits", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare(corpus, cache_root=cache_root, force=True)
    assert leftovers(cache_root) == []
    assert stamps(token_cache.path) == before
    assert verify_cache(token_cache.path) is None
    assert np.array_equal(tokens(load_cache(token_cache.path)), expected)
    monkeypatch.undo()
    assert prepare(corpus, cache_root=cache_root).hit is True


def test_a_full_disk_while_tokenizing_is_one_error_and_keeps_the_old_cache(
        corpus, cache_root, token_cache, monkeypatch):
    expected = tokens(token_cache).copy()
    before = stamps(token_cache.path)

    def disk_full(raw_path, vocab, settings, work):
        raise OSError(28, "No space left on device", str(work / "train.bin"))

    monkeypatch.setattr(data, "_write_splits", disk_full)
    with pytest.raises(DataError, match=r"could not write the token cache at .*train\.bin: "
                                        r"No space left on device"):
        prepare(corpus, cache_root=cache_root, force=True)
    assert leftovers(cache_root) == []  # nothing half-written
    assert stamps(token_cache.path) == before
    assert np.array_equal(tokens(load_cache(token_cache.path)), expected)


@pytest.mark.parametrize("content", [b"", b"  \n\t\r\n \n"], ids=["empty", "whitespace"])
def test_no_text_is_an_error_and_leaves_nothing(tmp_path, cache_root, content):
    path = tmp_path / "blank.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="no text"):
        prepare(path, cache_root=cache_root)
    assert list(cache_root.iterdir()) == []


def test_missing_and_directory_sources_are_data_errors(tmp_path, cache_root):
    with pytest.raises(DataError, match="no such file"):
        prepare(tmp_path / "nope.txt", cache_root=cache_root)
    with pytest.raises(DataError, match="holds no files to read"):
        prepare(tmp_path, cache_root=cache_root)


def test_unwritable_cache_root_is_a_data_error(corpus, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot write the token cache"):
        prepare(corpus, cache_root=blocker / "cache")


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(tmp_path / "mine"))
    assert data.default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("TINYGPT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_cache_dir() == tmp_path / "xdg" / "tinygpt"


def test_prepare_without_cache_root_uses_the_environment(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(tmp_path / "env-cache"))
    cache = prepare(corpus)
    assert cache.path.parent == tmp_path / "env-cache"


# --- batches -----------------------------------------------------------------------------------

def test_as_tensor_is_zero_copy_on_cpu(token_cache):
    tensor = as_tensor(token_cache.train)
    assert tensor.shape == (len(token_cache.train),)
    assert tensor.data_ptr() == token_cache.train.ctypes.data
    assert tensor[:50].long().tolist() == token_cache.train[:50].tolist()


def test_get_batch_shapes_shift_and_contiguity():
    data_ = torch.arange(1000, 1300)
    x, y = get_batch(data_, 8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    starts = x[:, 0] - 1000
    for row, start in zip(x, starts.tolist(), strict=True):  # each row is one window of data
        assert torch.equal(row, data_[start:start + 16])
    assert torch.equal(y[:, -1], x[:, -1] + 1)
    assert int(starts.min()) >= 0 and int(starts.max()) + 16 < len(data_)


def test_get_batch_on_a_memory_mapped_split(token_cache):
    split = token_cache.train
    x, y = get_batch(as_tensor(split), 4, 16, torch.Generator().manual_seed(1))
    assert x.dtype == torch.long and x.shape == (4, 16)
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(split, dtype=np.int64), 17)
    for xs, ys in zip(x.numpy(), y.numpy(), strict=True):
        row = np.concatenate([xs, ys[-1:]])
        assert (windows == row).all(axis=1).any()


def test_get_batch_is_reproducible_from_the_generator_seed():
    data_ = as_tensor(np.random.default_rng(0).integers(0, 500, 400).astype(np.uint16))
    a = get_batch(data_, 6, 8, torch.Generator().manual_seed(7))
    b = get_batch(data_, 6, 8, torch.Generator().manual_seed(7))
    c = get_batch(data_, 6, 8, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_get_batch_with_exactly_context_plus_one_tokens():
    data_ = torch.arange(17)
    x, y = get_batch(data_, 3, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, data_[:16].expand(3, 16))
    assert torch.equal(y, data_[1:].expand(3, 16))


def test_cache_files_are_not_written_through_the_maps(token_cache):
    before = (token_cache.path / "train.bin").read_bytes()
    token_cache.train[:4] = 0  # copy-on-write: torch may write, the file must not change
    assert (token_cache.path / "train.bin").read_bytes() == before
    assert verify_cache(token_cache.path) is None


def test_a_rebuild_sweeps_folders_killed_builds_left_behind(corpus, cache_root):
    import os
    import time

    from tinygpt_cli.data import STALE_SECONDS, cache_dir_for, prepare

    folder = cache_dir_for(corpus, TokenizeSettings(), cache_root)
    cache_root.mkdir(parents=True)
    old = cache_root / f".{folder.name}.tmp-killed"
    recent = cache_root / f".{folder.name}.tmp-running"  # perhaps another process at work
    for path in (old, recent):
        path.mkdir()
        (path / "raw.u32").write_bytes(b"\0" * 8)
    past = time.time() - STALE_SECONDS - 60
    for path in (old / "raw.u32", old):
        os.utime(path, (past, past))
    prepare(corpus, cache_root=cache_root)
    assert not old.exists()
    assert recent.exists()
