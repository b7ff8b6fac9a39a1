"""The token cache: read a corpus, tokenize it in parallel chunks, split it, store it memory-mapped.

A cache is a folder with `meta.json`, `vocab.bin` (the encoding id of each model id, uint32) and
`train.bin` / `valid.bin` (model ids, little-endian uint16 when the vocabulary fits, else uint32).
It is built in a temporary folder and renamed into place, so an interrupted build never leaves a
folder that looks valid; a folder whose files disagree with its metadata is rebuilt.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .errors import DataError, UsageError
from .files import write_hint
from .tokenizer import COMPACT, DEFAULT_ENCODING, FULL, Vocabulary, get_encoding

FORMAT_VERSION = 1
CACHE_ENV = "TINYGPT_CACHE_DIR"
CHUNK_BYTES = 1 << 20  # text per tokenizer task; peak memory and the wait after Ctrl-C scale
# with this, not with the corpus (4 MiB tokenized no faster, and took 1.2 s to stop; figures:
# benchmarks/README.md)
_BOM = b"\xef\xbb\xbf"
# Cut chunks only after a newline that starts a non-space character: tiktoken's pre-tokenizer
# never joins across such a point, so chunked tokenization equals tokenizing the whole text.
_CUT = re.compile(rb"\n(?=[^\s])")

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def default_corpus() -> Path:
    """The bundled default corpus: data/ in a source checkout, else the copy inside the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "data" / "order_items.csv",
                      here / "_data" / "order_items.csv"):
        if candidate.is_file():
            return candidate
    raise DataError("the default corpus (data/order_items.csv) is missing from this install",
                    hint="pass a text file: tinygpt tokenize PATH")


def default_cache_dir() -> Path:
    """$TINYGPT_CACHE_DIR, else $XDG_CACHE_HOME/tinygpt, else ~/.cache/tinygpt."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinygpt"


@dataclass(frozen=True)
class TokenizeSettings:
    """Everything that changes the tokens a corpus turns into (and so the cache's identity)."""

    encoding: str = DEFAULT_ENCODING
    vocab_mode: str = COMPACT
    val_fraction: float = 0.1
    column: str | None = None
    errors: str = "strict"

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.val_fraction < 1:
            problems.append(f"--val-fraction must be between 0 and 1 (got {self.val_fraction})")
        if self.errors not in ("strict", "replace"):
            problems.append(f"--errors must be 'strict' or 'replace' (got {self.errors!r})")
        if self.vocab_mode not in (COMPACT, FULL):
            problems.append(f"vocabulary mode must be {COMPACT} or {FULL}")
        if problems:
            raise UsageError("; ".join(problems))


@dataclass
class TokenCache:
    """A loaded cache: metadata, vocabulary and the two splits as read-only memory maps."""

    path: Path
    meta: dict
    vocab: Vocabulary
    train: np.ndarray
    valid: np.ndarray
    hit: bool = False
    warnings: list[str] = field(default_factory=list)

    def split(self, name: str) -> np.ndarray:
        return {"train": self.train, "valid": self.valid}[name]


# --- reading the corpus ------------------------------------------------------------------------

def check_source(path: Path) -> Path:
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path} is a symbolic link to nothing (its target is missing, or the "
                        "links go round in a loop)", hint="point it at a file, or pass the file")
    if not path.exists():
        raise DataError(f"{path}: no such file", hint="check the path, or leave it out to use the "
                        "default corpus")
    if path.is_dir():
        raise DataError(f"{path} is a directory; pass a text or CSV file")
    if not path.is_file():  # reading a FIFO waits for a writer forever; /dev/zero never ends
        raise DataError(f"{path} is not a regular file (a FIFO, a device or a socket)",
                        hint="save the text to a file first and pass that")
    return path


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(block):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _decode(raw: bytes, offset: int, path: Path, errors: str) -> str:
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {offset + exc.start}",
            hint="convert it to UTF-8, or pass --errors replace to substitute bad bytes",
        ) from None


def _check_not_binary(raw: bytes, offset: int, path: Path, errors: str) -> None:
    wide = _wide_encoding(raw, guess=errors == "strict") if offset == 0 else None
    if wide is not None:
        out = shlex.quote(str(path.with_name(f"{path.stem}-utf8{path.suffix}")))
        raise DataError(f"{path} is {wide} text; tinygpt reads UTF-8",
                        hint=f"convert it first: iconv -f {wide} -t UTF-8 "
                        f"{shlex.quote(str(path))} > {out}")
    nul = raw.find(b"\x00")
    if nul >= 0 and errors == "strict":
        raise DataError(f"{path} looks binary: a NUL byte at offset {offset + nul}",
                        hint="pass a text file, or --errors replace to read it anyway")


def _wide_encoding(raw: bytes, guess: bool) -> str | None:
    """The encoding of a file in UTF-32 or UTF-16, by its byte-order mark; with `guess`, also
    text without one: every other byte NUL, the others almost never (plain-ASCII UTF-16)."""
    for mark, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                       (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if raw.startswith(mark):
            return name
    head = raw[:4096]
    if not guess or len(head) < 16:
        return None
    even, odd = head[0::2], head[1::2]
    for zeros, text, name in ((odd, even, "UTF-16LE"), (even, odd, "UTF-16BE")):
        if zeros.count(0) > 0.9 * len(zeros) and text.count(0) < 0.1 * len(text):
            return name
    return None


def iter_text_chunks(path: Path, errors: str = "strict",
                     chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[str, int]]:
    """Yield (text, bytes consumed) pieces of a UTF-8 file, cut where tokenization is unaffected."""
    offset = 0
    pending = b""
    with open(path, "rb") as f:
        # The BOM is read on its own: a first block of exactly the BOM must not end the file.
        if f.read(len(_BOM)) == _BOM:
            offset = len(_BOM)
        else:
            f.seek(0)
        while block := f.read(chunk_bytes):
            pending += block
            cut = _last_cut(pending)
            if cut <= 0 and len(pending) < 4 * chunk_bytes:
                continue
            if cut <= 0:  # no safe point in a long run: cut at a character boundary instead
                cut = _char_boundary(pending, len(pending) - 4)
            piece, pending = pending[:cut], pending[cut:]
            _check_not_binary(piece, offset, path, errors)
            yield _decode(piece, offset, path, errors), len(piece)
            offset += len(piece)
    if pending:
        _check_not_binary(pending, offset, path, errors)
        yield _decode(pending, offset, path, errors), len(pending)


def _last_cut(buf: bytes) -> int:
    search_from = max(0, len(buf) - (1 << 20))
    last = -1
    for match in _CUT.finditer(buf, search_from):
        last = match.end()
    if last < 0 and search_from:
        for match in _CUT.finditer(buf):
            last = match.end()
    return last


def _char_boundary(buf: bytes, pos: int) -> int:
    while pos > 0 and (buf[pos] & 0xC0) == 0x80:
        pos -= 1
    return pos


def iter_csv_column(path: Path, column: str, errors: str = "strict",
                    chunk_chars: int = CHUNK_BYTES) -> Iterator[tuple[str, int]]:
    """Yield newline-joined pieces of one CSV column, with the bytes read so far as progress."""
    if errors == "strict":  # validate first, so a bad byte is reported with its file offset
        for _ in iter_text_chunks(path, errors):
            pass
    size = path.stat().st_size
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors=errors, newline="")
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty")
        if column not in header:
            shown = ", ".join(repr(h) for h in header[:20])
            raise DataError(f"{path} has no column {column!r}; its columns are: {shown}",
                            hint="pass one of those names to --column")
        index = header.index(column)
        # A piece ends just after the "\n" before a row that starts with a non-space character:
        # the cut iter_text_chunks makes, so chunked tokenization equals whole-text tokenization.
        parts: list[str] = []
        chars, reported, first = 0, 0, True
        try:
            for row in reader:
                if index >= len(row):
                    continue
                value = row[index]
                if not first:
                    parts.append("\n")
                    chars += 1
                    if chars >= chunk_chars and value[:1] and not value[0].isspace():
                        done = min(raw.tell(), size)
                        yield "".join(parts), done - reported
                        reported, parts, chars = done, [], 0
                first = False
                parts.append(value)
                chars += len(value)
        except csv.Error as exc:  # e.g. a field above csv.field_size_limit()
            raise DataError(f"{path} is not readable as CSV near line {reader.line_num}: {exc}",
                            hint="check its quoting, or read it as plain text without --column"
                            ) from None
        yield "".join(parts), size - reported


# --- building and loading the cache ------------------------------------------------------------

def cache_dir_for(source: Path, settings: TokenizeSettings, cache_root: Path) -> Path:
    """One folder per (source path, settings); a changed file rebuilds the same folder."""
    key = json.dumps({"source": str(source.resolve()), **asdict(settings)}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = re.sub(r"[^\w.-]+", "_", source.stem)[:40] or "corpus"
    return cache_root / f"{stem}-{digest}"


def prepare(source: Path | None = None, settings: TokenizeSettings | None = None, *,
            cache_root: Path | None = None, force: bool = False, threads: int | None = None,
            progress: Progress | None = None, chunk_bytes: int = CHUNK_BYTES) -> TokenCache:
    """Return the corpus's token cache, building it unless a valid one exists.

    This is what `tinygpt tokenize` does and what `train` calls first.
    """
    source = check_source(Path(source) if source is not None else default_corpus())
    settings = settings or TokenizeSettings()
    cache_root = Path(cache_root) if cache_root is not None else default_cache_dir()
    folder = cache_dir_for(source, settings, cache_root)
    sha = file_sha256(source)
    warnings: list[str] = []
    if not force and folder.exists():
        problem = verify_cache(folder, sha, content=True)
        if problem is None:
            cache = load_cache(folder)
            cache.hit = True
            return cache
        if problem == OLD_CACHE:
            warnings.append(f"the cache in {folder} was made by an older tinygpt, without "
                            "content checksums; rebuilding it")
        elif problem != "source changed":
            warnings.append(f"the cache in {folder} is damaged ({problem}); rebuilding it")
    get_encoding(settings.encoding)  # fail on a bad encoding before any work
    cache = build_cache(source, settings, folder, sha, threads=threads, progress=progress,
                        chunk_bytes=chunk_bytes)
    cache.warnings = warnings + cache.warnings
    return cache


STALE_SECONDS = 3600  # a build folder untouched this long was left by a killed process


def _remove_stale_builds(folder: Path) -> None:
    """Delete the temporary folders that killed builds of `folder` left beside it."""
    now = time.time()
    for stale in folder.parent.glob(f".{folder.name}.*-*"):
        try:
            newest = max([stale.stat().st_mtime] + [p.stat().st_mtime for p in stale.iterdir()])
        except OSError:
            continue
        if now - newest > STALE_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)


def _writable_root(cache_root: Path) -> None:
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_root, prefix=".probe-"):
            pass
    except OSError as exc:
        raise DataError(f"cannot write the token cache in {cache_root}: {exc.strerror or exc}",
                        hint=f"pass --cache-dir to a writable folder or set {CACHE_ENV}") from None


def build_cache(source: Path, settings: TokenizeSettings, folder: Path, sha: str, *,
                threads: int | None = None, progress: Progress | None = None,
                chunk_bytes: int = CHUNK_BYTES) -> TokenCache:
    """Tokenize `source` into a fresh cache at `folder` (replacing what is there atomically)."""
    started = time.perf_counter()
    _writable_root(folder.parent)
    _remove_stale_builds(folder)
    encoding = get_encoding(settings.encoding)
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        raw_path = work / "raw.u32"
        before = source.stat()
        stats = _tokenize_to_file(source, settings, encoding, raw_path, threads, progress,
                                  chunk_bytes)
        after = source.stat()
        # a source rewritten while it was read: what was read is a mix, and must not be cached
        # under either version's hash
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) \
                or file_sha256(source) != sha:
            raise DataError(f"{source} changed while it was being tokenized; nothing was cached",
                            hint="run again once the file is no longer being written")
        vocab = Vocabulary.from_counts(settings.encoding, settings.vocab_mode, stats["counts"])
        meta = _write_splits(raw_path, vocab, settings, work)
        raw_path.unlink()
        meta.update({
            "format_version": FORMAT_VERSION,
            "tinygpt_version": __version__,
            "source": {"path": str(source.resolve()), "size": source.stat().st_size,
                       "sha256": sha},
            "settings": asdict(settings),
            "characters": stats["characters"],
            "distinct_tokens": int(np.count_nonzero(stats["counts"])),
            "seconds": round(time.perf_counter() - started, 3),
        })
        # what the files hold, so a hit can prove it: a damaged file of the right size (random
        # or shuffled ids, zeroed tokens) is caught, not trained on
        meta["checksums"] = {name: file_sha256(work / name) for name in CACHE_FILES}
        (work / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        _swap_into_place(work, folder)
    except OSError as exc:  # a full disk, say: one line naming the path, nothing half-written
        shutil.rmtree(work, ignore_errors=True)
        where = Path(exc.filename) if exc.filename else folder
        reason = exc.strerror or str(exc)
        if where == source:
            raise DataError(f"could not read {source}: {reason}") from None
        raise DataError(f"could not write the token cache at {where}: {reason}",
                        hint=write_hint(exc, "pass --cache-dir to another location")
                        ) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    cache = load_cache(folder)
    return cache


def _tokenize_to_file(source: Path, settings: TokenizeSettings, encoding, raw_path: Path,
                      threads: int | None, progress: Progress | None,
                      chunk_bytes: int) -> dict:
    """Stream the corpus through tiktoken in parallel threads, appending ids to a uint32 file."""
    threads = threads or min(8, os.cpu_count() or 1)
    total = source.stat().st_size
    counts = np.zeros(encoding.n_vocab, dtype=np.int64)
    characters, done, printable = 0, 0, False
    if settings.column is None:
        pieces = iter_text_chunks(source, settings.errors, chunk_bytes)
    else:
        pieces = iter_csv_column(source, settings.column, settings.errors, chunk_bytes)
    pending: list[tuple[Future, int]] = []

    def drain(out, keep: int) -> None:
        nonlocal done
        while len(pending) > keep:
            future, nbytes = pending.pop(0)
            ids = np.asarray(future.result(), dtype=np.uint32)
            out.write(ids.data)  # not tofile: a failed write keeps its errno (ENOSPC)
            counts[:] += np.bincount(ids, minlength=len(counts))[: len(counts)]
            done += nbytes
            if progress:
                progress(done, total)

    pool = ThreadPoolExecutor(threads)
    try:
        with open(raw_path, "wb") as out:
            for text, nbytes in pieces:
                characters += len(text)
                printable = printable or not text.isspace() and bool(text)
                pending.append((pool.submit(encoding.encode_ordinary, text), nbytes))
                drain(out, keep=2 * threads)  # bounded in flight: memory scales with chunk size
            drain(out, keep=0)
    except BaseException:  # Ctrl-C, say: drop the chunks not started instead of encoding them
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    if not printable:
        raise DataError(f"{source} has no text to train on (it is empty or only whitespace)")
    return {"counts": counts, "characters": characters}


def _write_splits(raw_path: Path, vocab: Vocabulary, settings: TokenizeSettings,
                  work: Path, block: int = 1 << 22) -> dict:
    """Map encoding ids to model ids and write train/valid files; return their metadata."""
    raw = np.memmap(raw_path, dtype=np.uint32, mode="r")
    n = len(raw)
    n_train = int(n * (1 - settings.val_fraction))  # the book: first 90% train, rest valid
    dtype = np.uint16 if vocab.size <= 65536 else np.uint32
    byte_len = vocab.token_byte_lengths()
    splits = {}
    for name, lo, hi in (("train", 0, n_train), ("valid", n_train, n)):
        nbytes = 0
        with open(work / f"{name}.bin", "wb") as out:
            for start in range(lo, hi, block):
                ids = vocab.to_model[raw[start:min(hi, start + block)]]
                nbytes += int(byte_len[ids].sum())
                out.write(ids.astype(f"<{np.dtype(dtype).char}").data)
        splits[name] = {"tokens": hi - lo, "bytes": nbytes}
    with open(work / "vocab.bin", "wb") as out:
        out.write(vocab.ids.astype("<u4").data)
    del raw
    return {"tokens": n, "dtype": np.dtype(dtype).name,
            "vocab": {**vocab.identity()}, "splits": splits}


def _swap_into_place(work: Path, folder: Path) -> None:
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
    os.replace(work, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


CACHE_FILES = ("train.bin", "valid.bin", "vocab.bin")
OLD_CACHE = "it has no content checksums"


def verify_cache(folder: Path, sha: str | None = None, content: bool = False) -> str | None:
    """None when `folder` holds a complete cache (of a source with this sha256); else why not.

    With `content`, every file is also hashed and checked against the sha256 recorded when the
    cache was built (about 1 GB/s here, so a hit costs a fraction of the source's own hash,
    which `prepare` computes anyway; figures: benchmarks/README.md)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        return "meta.json is missing"
    except (OSError, ValueError) as exc:
        return f"meta.json is unreadable: {exc}"
    try:
        if meta["format_version"] != FORMAT_VERSION:
            return f"format version {meta['format_version']}, expected {FORMAT_VERSION}"
        # Values load_cache trusts: a bad one must mean "rebuild", not a crash on load.
        if meta["dtype"] not in ("uint16", "uint32"):
            return f"meta.json has an unknown token dtype {meta['dtype']!r}"
        if meta["vocab"]["mode"] not in (COMPACT, FULL):
            return f"meta.json has an unknown vocabulary mode {meta['vocab']['mode']!r}"
        counts = [meta[key] for key in ("tokens", "characters", "distinct_tokens")]
        counts += [meta["splits"][n][key] for n in ("train", "valid") for key in ("tokens",
                                                                                  "bytes")]
        counts.append(meta["vocab"]["size"])
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
            return "meta.json has a count that is not a whole number"
        if meta["tokens"] != meta["splits"]["train"]["tokens"] + meta["splits"]["valid"]["tokens"]:
            return "meta.json's token counts do not add up"
        if not all(isinstance(v, str) for v in (meta["vocab"]["encoding"], meta["source"]["path"],
                                                 meta["source"]["sha256"])) \
                or not isinstance(meta["settings"], dict):
            return "meta.json has a value of the wrong type"
        itemsize = np.dtype(meta["dtype"]).itemsize
        expected = {f"{name}.bin": meta["splits"][name]["tokens"] * itemsize
                    for name in ("train", "valid")}
        expected["vocab.bin"] = meta["vocab"]["size"] * 4
        recorded_sha = meta["source"]["sha256"]
    except KeyError as exc:
        return f"meta.json lacks {exc}"
    except (TypeError, AttributeError, ValueError) as exc:
        return f"meta.json is malformed ({exc})"
    for name, size in expected.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, its metadata says {size}"
    if sha is not None and recorded_sha != sha:
        return "source changed"
    if content:
        checksums = meta.get("checksums")
        if not isinstance(checksums, dict):
            return OLD_CACHE
        for name in CACHE_FILES:
            if checksums.get(name) != file_sha256(folder / name):
                return f"{name} does not match the checksum recorded when it was built"
    return None


def load_cache(folder: Path) -> TokenCache:
    """Open a cache folder: metadata, vocabulary, and memory-mapped splits."""
    problem = verify_cache(folder)
    if problem is not None:
        raise DataError(f"the token cache in {folder} is unusable: {problem}",
                        hint="run tinygpt tokenize --force to rebuild it")
    meta = json.loads((folder / "meta.json").read_text())
    ids = np.fromfile(folder / "vocab.bin", dtype="<u4").astype(np.int64)
    vocab = Vocabulary(meta["vocab"]["encoding"], meta["vocab"]["mode"], ids)
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")

    def open_split(name: str) -> np.ndarray:
        if meta["splits"][name]["tokens"] == 0:
            return np.zeros(0, dtype=dtype)
        # copy-on-write: torch wants a writable array, and nothing is ever written back
        return np.memmap(folder / f"{name}.bin", dtype=dtype, mode="c")

    return TokenCache(folder, meta, vocab, open_split("train"), open_split("valid"))


def max_context_length(cache: TokenCache) -> int:
    """The largest context length both splits can fill (each needs context_length + 1 tokens)."""
    return min(len(cache.train), len(cache.valid)) - 1


def summary(cache: TokenCache, seconds: float) -> dict:
    """The figures `tokenize` reports, as plain data."""
    meta = cache.meta
    tokens = meta["tokens"]
    return {
        "source": meta["source"]["path"],
        "characters": meta["characters"],
        "tokens": tokens,
        "distinct_tokens": meta["distinct_tokens"],
        "encoding": meta["vocab"]["encoding"],
        "vocab_mode": meta["vocab"]["mode"],
        "vocab_size": meta["vocab"]["size"],
        "train_tokens": meta["splits"]["train"]["tokens"],
        "valid_tokens": meta["splits"]["valid"]["tokens"],
        "tokens_per_character": round(tokens / max(1, meta["characters"]), 4),
        "cache": str(cache.path),
        "cache_hit": cache.hit,
        "seconds": round(seconds, 3),
    }


# --- batches -------------------------------------------------------------------------------------

def as_tensor(split: np.ndarray, device: str = "cpu"):  # -> torch.Tensor
    """A split as a 1-D tensor: zero-copy over the memory map on CPU, int32 on an accelerator."""
    import torch

    tensor = torch.from_numpy(split)
    if str(device) != "cpu":
        tensor = tensor.to(device=device, dtype=torch.int32)
    return tensor


def get_batch(data, batch_size: int, context_length: int, generator=None):
    """Sample `batch_size` windows: x = data[i:i+T], y = data[i+1:i+T+1], as the book does.

    One vectorised gather builds the (B, T+1) index grid, instead of stacking Python slices.
    """
    import torch

    ix = torch.randint(len(data) - context_length, (batch_size,), generator=generator,
                       device=data.device)
    window = ix[:, None] + torch.arange(context_length + 1, device=data.device)  # (B, T+1)
    chunk = data[window].long()
    return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
