"""tokenizer.py: offline cl100k_base, compact/full vocabularies, byte fallback, stream decoding."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt_cli.errors import DataError, UsageError
from tinygpt_cli.tokenizer import COMPACT, FULL, Vocabulary, get_encoding

SMALL_CORPUS = "hello world\nthe cat sat on the mat.\n"
# " Conveyor" is cl100k_base's highest ordinary id (100255): a full vocabulary built from text
# holding it has ~100k entries, like the book's max_token_value.
HIGH_ID_WORD = " Conveyor"
SPECIAL = "<|endoftext|>"


def _counts(text: str) -> np.ndarray:
    enc = get_encoding("cl100k_base")
    return np.bincount(enc.encode_ordinary(text), minlength=enc.n_vocab)


@functools.cache
def compact_vocab() -> Vocabulary:
    return Vocabulary.from_counts("cl100k_base", COMPACT, _counts(SMALL_CORPUS))


@functools.cache
def full_vocab() -> Vocabulary:
    return Vocabulary.from_counts("cl100k_base", FULL, _counts(SMALL_CORPUS + HIGH_ID_WORD))


def _byte_ids(vocab: Vocabulary, data: bytes) -> list[int]:
    enc = vocab.encoding
    return [int(vocab.to_model[enc.encode_single_token(bytes([b]))]) for b in data]


# --- encodings ---------------------------------------------------------------------------------

def test_cl100k_resolves_offline_with_its_real_ranks():
    enc = get_encoding("cl100k_base")
    assert enc.n_vocab == 100277
    assert enc.encode_ordinary("hello world") == [15339, 1917]
    assert enc.encode_ordinary(HIGH_ID_WORD) == [100255]
    assert get_encoding("cl100k_base") is enc  # loaded once per process


def test_unknown_encoding_is_a_usage_error_listing_the_known_ones():
    with pytest.raises(UsageError) as info:
        get_encoding("no_such_encoding")
    assert info.value.exit_code == 2
    assert "'no_such_encoding'" in info.value.message
    assert "cl100k_base" in info.value.message
    assert "_offline" not in info.value.message  # the alias is an implementation detail


def test_a_known_encoding_that_fails_to_load_is_a_data_error(monkeypatch):
    import tiktoken

    def broken(name):
        raise ValueError("Hash mismatch for data downloaded from ...")  # what tiktoken raises

    monkeypatch.setattr(tiktoken, "get_encoding", broken)
    with pytest.raises(DataError) as info:
        get_encoding("r50k_base")
    assert "'r50k_base'" in info.value.message and "unknown" not in info.value.message
    assert "TIKTOKEN_CACHE_DIR" in info.value.hint


# --- vocabularies ------------------------------------------------------------------------------

def test_compact_vocabulary_is_the_corpus_ids_plus_the_256_bytes():
    vocab = compact_vocab()
    enc = vocab.encoding
    corpus_ids = set(enc.encode_ordinary(SMALL_CORPUS))
    byte_ids = {enc.encode_single_token(bytes([b])) for b in range(256)}
    assert set(vocab.ids.tolist()) == corpus_ids | byte_ids
    assert len(vocab) == vocab.size == len(corpus_ids | byte_ids)
    assert np.all(np.diff(vocab.ids) > 0)  # sorted, so model ids follow encoding ids
    assert vocab.identity() == {"encoding": "cl100k_base", "mode": COMPACT, "size": vocab.size}


def test_full_vocabulary_is_max_id_plus_one():
    vocab = full_vocab()
    assert vocab.size == 100256
    assert np.array_equal(vocab.ids, np.arange(100256))
    assert vocab.encode(HIGH_ID_WORD) == [100255]


def test_a_vocabulary_without_the_byte_tokens_is_refused():
    # refused when built or, at the latest, when the byte fallback is first needed
    with pytest.raises(ValueError, match="256 single-byte"):
        Vocabulary("cl100k_base", COMPACT, np.array([15339, 1917])).encode("hello unbelievable")


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_compact_round_trips_any_text(text):
    vocab = compact_vocab()
    ids = vocab.encode(text)
    assert all(0 <= i < vocab.size for i in ids)
    assert vocab.decode(ids) == text


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_full_round_trips_any_text(text):
    vocab = full_vocab()
    ids = vocab.encode(text)
    assert all(0 <= i < vocab.size for i in ids)
    assert vocab.decode(ids) == text


def test_out_of_vocabulary_text_falls_back_to_bytes():
    vocab = compact_vocab()
    text = "Supercalifragilistic 量子力学 🚀 naïve"
    encoded = vocab.encoding.encode_ordinary(text)
    assert any(vocab.to_model[i] < 0 for i in encoded)  # the test needs missing ids
    ids = vocab.encode(text)
    assert ids and max(ids) < vocab.size and min(ids) >= 0
    assert vocab.decode(ids) == text
    assert len(ids) > len(encoded)  # each missing token became several byte tokens


def test_fallback_expands_only_the_missing_ids():
    vocab = compact_vocab()
    enc = vocab.encoding
    hello, world = enc.encode_ordinary("hello world")
    (missing,) = enc.encode_ordinary(" unbelievable")
    assert vocab.to_model[missing] < 0 <= min(vocab.to_model[hello], vocab.to_model[world])
    mapped = vocab.map_ids(np.array([hello, missing, world]))
    expected = [vocab.to_model[hello], *_byte_ids(vocab, b" unbelievable"), vocab.to_model[world]]
    assert mapped.tolist() == expected


def test_in_vocabulary_text_keeps_its_direct_ids():
    vocab = compact_vocab()
    encoded = vocab.encoding.encode_ordinary(SMALL_CORPUS)
    assert vocab.encode(SMALL_CORPUS) == vocab.to_model[encoded].tolist()
    assert len(vocab.encode(SMALL_CORPUS)) == len(encoded)  # no expansion


@pytest.mark.parametrize("mode", [COMPACT, FULL])
def test_endoftext_literal_is_ordinary_text(mode):
    text = f"first document{SPECIAL}second document {SPECIAL}\n"
    vocab = Vocabulary.from_counts("cl100k_base", mode, _counts(text))
    enc = vocab.encoding
    ids = vocab.encode(text)  # tiktoken's encode() would raise on this text
    assert vocab.decode(ids) == text
    # the literal's ordinary pieces ("<|", "endo", ...) are in the vocabulary and used directly;
    # neither the special id nor a byte-fallback spelling of it appears
    assert ids == vocab.to_model[enc.encode_ordinary(text)].tolist()
    assert min(ids) >= 0 and enc.eot_token not in vocab.ids[ids].tolist()
    assert enc.eot_token not in vocab.ids.tolist()


def test_token_byte_lengths_match_the_decoded_bytes():
    vocab = compact_vocab()
    lengths = vocab.token_byte_lengths()
    assert lengths.shape == (vocab.size,)
    ids = vocab.encode("héllo 世界 🚀 hello world")
    assert int(lengths[ids].sum()) == len(vocab.decode_bytes(ids))


# --- streaming ---------------------------------------------------------------------------------

def _stream(vocab: Vocabulary, ids: list[int]) -> list[str]:
    decoder = vocab.stream_decoder()
    return [decoder.push(i) for i in ids] + [decoder.flush()]


@pytest.mark.parametrize("make_vocab", [compact_vocab, full_vocab], ids=["compact", "full"])
def test_stream_decoder_never_splits_chinese_or_emoji(make_vocab):
    vocab = make_vocab()
    text = "你好，世界！龘靐齉 😀🚀👩‍👩‍👧 mixed text 中文"
    ids = vocab.encode(text)
    pieces = _stream(vocab, ids)
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == vocab.decode(ids) == text
    # the test is only meaningful if some token ends mid-character and was held back
    assert "" in pieces[:-1]


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_stream_decoder_equals_decode_for_any_text(text):
    vocab = compact_vocab()
    ids = vocab.encode(text)
    pieces = _stream(vocab, ids)
    assert "".join(pieces) == vocab.decode(ids) == text
    if "\ufffd" not in text:
        assert all("\ufffd" not in piece for piece in pieces)


def test_stream_decoder_matches_decode_on_invalid_utf8():
    vocab = compact_vocab()
    # a lone lead byte followed by ASCII, then a dangling lead byte at the end
    ids = _byte_ids(vocab, b"\xe4a") + vocab.encode("ok") + _byte_ids(vocab, b"\xf0\x9f")
    assert "".join(_stream(vocab, ids)) == vocab.decode(ids) == "\ufffdaok\ufffd"


def test_stream_decoder_accepts_numpy_ints_and_sequences():
    vocab = compact_vocab()
    ids = vocab.encode("hello 世界")
    decoder = vocab.stream_decoder()
    out = decoder.push(np.int64(ids[0])) + decoder.push(ids[1:]) + decoder.flush()
    assert out == "hello 世界"
