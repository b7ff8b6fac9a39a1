"""Where a corpus comes from: files, folders, JSONL and Parquet, read as documents.

`discover` turns what the user named (files and folders, `--include`/`--exclude` globs) into a
sorted list of files, each of a kind:

- text: a file is one document (a plain text file, or a CSV without --column, as the book reads);
- csv: with --column, one column's rows joined by newlines, one document per file;
- jsonl: one document per record, its --field (default `text`); `.jsonl.gz` too;
- parquet: one document per row of its --field column (the parquet extra: pyarrow).

`manifest` hashes every file (the cache's identity: path, size, sha256). `documents` reads the files
in order as a stream of tasks whose results are documents' text; `data.build_cache` runs them in
parallel and joins the documents with a separator (`Separator`).
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import functools
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import shlex
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError, UsageError

TEXT = "text"
CSV = "csv"
JSONL = "jsonl"
PARQUET = "parquet"

# What `--include` defaults to in a folder: files that look like text or data tinygpt reads
TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst", ".org", ".adoc", ".tex", ".html",
                 ".htm", ".xml", ".csv", ".tsv", ".srt", ".vtt")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)
DEFAULT_INCLUDE = tuple(f"*{s}" for s in TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES)
SMALL_FILE = 1 << 20  # files up to this size are read whole by a worker, many to a task


@dataclass  # (not frozen: thousands are made for each cache hit, and a frozen one is slower)
class SourceFile:
    name: str  # its absolute path
    relative: str  # "N/path": the Nth source given, the path inside it (the corpus's identity)
    kind: str
    size: int
    listed: bool = False  # found in a folder (not named on the command line)
    stamp: tuple[int, int, int] = (0, 0, 0)  # mtime_ns, ctime_ns, inode: unchanged, unread

    @functools.cached_property
    def path(self) -> Path:  # made when the file is read (a cache hit reads none)
        return Path(self.name)


@dataclass
class Found:
    """What `discover` found: the files to read and what it passed over, for the report."""

    files: list[SourceFile]
    not_matched: int = 0  # files in folders that --include/--exclude left out
    hidden: int = 0  # hidden files and folders (their files not counted)
    special: list[Path] = field(default_factory=list)  # FIFOs, devices, sockets in folders


def kind_of(path: Path | str, column: str | None) -> str:
    name = os.path.basename(path).lower()
    if name.endswith(JSONL_SUFFIXES):
        return JSONL
    if name.endswith(PARQUET_SUFFIXES):
        return PARQUET
    if column is not None and name.endswith(".csv"):
        return CSV
    return TEXT


def discover(paths: Sequence[Path], include: Sequence[str] = (), exclude: Sequence[str] = (),
             column: str | None = None) -> Found:
    """The files `paths` name, in order: a file as given, a folder's files (recursively, sorted,
    hidden ones skipped) that match an --include glob (default: `DEFAULT_INCLUDE`, any case)
    and no --exclude glob. A glob matches a file's name or its path inside the folder. A path
    that is missing or not a regular file, or a search that finds nothing, is one DataError."""
    found = Found([])
    seen: set[str] = set()
    patterns = tuple(include) or DEFAULT_INCLUDE
    wanted = _globs(patterns, any_case=not include)
    unwanted = _globs(exclude) if exclude else None
    looked: dict[str, int] = {}  # what the folders held that did not match, by suffix
    for number, given in enumerate(paths):
        given = Path(given)
        if given.is_dir():
            root = str(given.resolve())  # once: a link in the path is the same folder
            for path, relative, info in _walk(root, "", found):
                if not _matches(relative, wanted) or (unwanted and _matches(relative, unwanted)):
                    found.not_matched += 1
                    suffix = os.path.splitext(relative)[1].lower() or "(no suffix)"
                    looked[suffix] = looked.get(suffix, 0) + 1
                    continue
                _add(found, seen, path, f"{number}/{relative}", column, info, listed=True)
        else:  # named on the command line: always read (--exclude is for folders)
            check_source(given)
            resolved = given.resolve()
            _add(found, seen, str(resolved), f"{number}/{resolved.name}", column,
                 resolved.stat())
    if not found.files:
        names = ", ".join(str(p) for p in paths)
        if looked:
            held = ", ".join(f"{n} {s}" for s, n in sorted(looked.items(), key=lambda x: -x[1])[:6])
            raise DataError(f"no file in {names} matches --include {' '.join(patterns)}"
                            f"{' --exclude ' + ' '.join(exclude) if exclude else ''} (it holds "
                            f"{held})", hint="pass --include GLOB for the files to read")
        raise DataError(f"{names} holds no files to read" + (
            f" ({found.hidden} hidden ones skipped)" if found.hidden else ""),
            hint="pass a folder or files that hold text")
    return found


def _walk(folder: str, relative: str,
          found: Found) -> Iterator[tuple[str, str, os.stat_result]]:
    """(absolute path, path inside the walked folder, stat) of every regular file under
    `folder`, sorted by name, depth first; hidden entries and links to folders are skipped,
    FIFOs, devices, sockets and broken links listed in `found.special`."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot read the folder {folder}: {exc.strerror or exc}") from None
    for entry in entries:
        if entry.name.startswith("."):
            found.hidden += 1
            continue
        inside = f"{relative}/{entry.name}" if relative else entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(entry.path, inside, found)
                continue
            info = entry.stat()
        except OSError:  # a broken link
            found.special.append(Path(entry.path))
            continue
        if stat.S_ISDIR(info.st_mode):
            continue  # a link to a folder: not followed (it could lead round in a circle)
        if not stat.S_ISREG(info.st_mode):
            found.special.append(Path(entry.path))
            continue
        yield entry.path, inside, info


def _globs(patterns: Sequence[str], any_case: bool = False) -> re.Pattern:
    """Shell globs as one regular expression (fnmatch's translation)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns),
                      re.IGNORECASE if any_case else 0)


def _matches(relative: str, globs: re.Pattern) -> bool:
    """A glob matches a file's name, or its path inside the folder given."""
    return bool(globs.match(relative.rsplit("/", 1)[-1]) or globs.match(relative))


def _add(found: Found, seen: set[str], name: str, relative: str, column: str | None,
         info: os.stat_result, listed: bool = False) -> None:
    """`name` is absolute (a folder's files are its path joined to theirs: no symlink is
    resolved for each of thousands of files)."""
    if name in seen:
        return
    seen.add(name)
    kind = kind_of(name, column)
    if kind == PARQUET and importlib.util.find_spec("pyarrow") is None:
        raise UsageError(f"{name} is a Parquet file, which needs pyarrow: "
                         "pip install 'tinygpt[parquet]'")
    found.files.append(SourceFile(name, relative, kind, info.st_size, listed,
                                  (info.st_mtime_ns, info.st_ctime_ns, info.st_ino)))


CHUNK_BYTES = 1 << 20  # text per tokenizer task; peak memory and the wait after Ctrl-C scale
# with this, not with the corpus (4 MiB tokenized no faster, and took 1.2 s to stop; figures:
# benchmarks/README.md)
_BOM = b"\xef\xbb\xbf"
# Cut chunks only after a newline that starts a non-space character: tiktoken's pre-tokenizer
# never joins across such a point, so chunked tokenization equals tokenizing the whole text.
_CUT = re.compile(rb"\n(?=[^\s])")


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


# --- the manifest ------------------------------------------------------------------------------

RACY_NS = 2_000_000_000  # a file changed this close to its recording is read again


def manifest(files: Sequence[SourceFile], known: dict[str, dict] | None = None,
             recorded_ns: int = 0, threads: int = 8) -> list[dict]:
    """Each file's path, name inside its source, size, stat and sha256, hashed in parallel
    (hashlib releases the GIL). A file whose size, modification and change times (in
    nanoseconds) and inode are those `known` recorded, at `recorded_ns`, keeps its recorded
    sha256 without being read, as git's index trusts them. The change time is the kernel's own
    (a copy that keeps the modification time, `cp -p` or `rsync -a`, still changes it), and a
    file changed within RACY_NS of its recording is read anyway (a rewrite of the same size in
    the same clock tick): what makes a second `tokenize` of 200 MB take well under a second."""
    known = known or {}

    def recorded(file: SourceFile) -> str | None:
        seen = known.get(file.name)
        if seen and seen.get("size") == file.size and seen.get("stamp") == list(file.stamp) \
                and file.stamp[1] < recorded_ns - RACY_NS and isinstance(seen.get("sha256"), str):
            return seen["sha256"]
        return None

    shas = [recorded(file) for file in files]
    unknown = [i for i, h in enumerate(shas) if h is None]
    if unknown:
        with ThreadPoolExecutor(threads) as pool:
            for i, h in zip(unknown, pool.map(lambda i: file_sha256(files[i].path), unknown),
                            strict=True):
                shas[i] = h
    return [{"path": f.name, "name": f.relative, "size": f.size, "stamp": list(f.stamp),
             "sha256": h} for f, h in zip(files, shas, strict=True)]


def manifest_sha256(entries: Sequence[dict]) -> str:
    """One file's own sha256 (so a single corpus keeps its familiar hash), else the sha256 of
    every file's path, size and sha256."""
    if len(entries) == 1:
        return entries[0]["sha256"]
    # names inside their sources: the same files found through a link, or a moved folder,
    # are the same corpus
    lines = "".join(f"{e['name']}\0{e['size']}\0{e['sha256']}\n" for e in entries)
    return hashlib.sha256(lines.encode("utf-8", "surrogateescape")).hexdigest()


# --- reading documents -------------------------------------------------------------------------

# --- reading documents, as tasks for a pool of threads -----------------------------------------

Encode = Callable[[str], Sequence[int]]


@dataclass
class Piece:
    """Token ids of text read from a source; `continues` when it carries on the document
    before it (the next chunk of a long file), else it starts a document."""

    ids: Sequence[int]
    continues: bool = False
    characters: int = 0
    printable: bool = False  # holds something other than white space


def encoded(text: str, encode: Encode, continues: bool = False) -> Piece:
    return Piece(encode(text), continues, len(text), bool(text) and not text.isspace())


@dataclass
class Skipped:
    path: Path
    reason: str


@dataclass
class Task:
    """Work for a thread: `run()` reads (or is handed) text and encodes it, returning pieces in
    order and the files it skipped; `nbytes`: the source bytes it stands for (progress)."""

    run: Callable[[], tuple[list[Piece], list[Skipped]]]
    nbytes: int


@dataclass(frozen=True)
class ReadSettings:
    errors: str = "strict"  # bytes that are not UTF-8: stop, or substitute U+FFFD
    column: str | None = None  # a CSV's column
    field: str = "text"  # a JSONL record's field, a Parquet column
    strict: bool = False  # a bad file found in a folder stops the build instead of being skipped


def tasks(found: Found, entries: Sequence[dict], settings: ReadSettings, encode: Encode,
          chunk_bytes: int = CHUNK_BYTES) -> Iterator[Task]:
    """Every file's documents, in order, as tasks of about `chunk_bytes` of text each. Files
    up to SMALL_FILE are read by the tasks themselves (many files to one), so a folder of small
    files is read in parallel; longer ones, JSONL and Parquet are read here and handed over in
    chunks. A file named on the command line that cannot be read as text is an error; one
    found in a folder is skipped (`Skipped`), or an error under `strict`. A file that changes
    while it is read (its sha256 no longer the manifest's) is an error: nothing is cached."""
    batch: list[tuple[SourceFile, dict]] = []
    size = 0
    for file, entry in zip(found.files, entries, strict=True):
        if file.kind == TEXT and file.size <= SMALL_FILE:
            batch.append((file, entry))
            size += file.size
            if size >= chunk_bytes:
                yield _small_files_task(batch, settings, encode)
                batch, size = [], 0
            continue
        if batch:
            yield _small_files_task(batch, settings, encode)
            batch, size = [], 0
        reader = {TEXT: _text_chunks, CSV: _csv_chunks, JSONL: _jsonl_documents,
                  PARQUET: _parquet_documents}[file.kind]
        try:
            yield from reader(file, settings, encode, chunk_bytes)
        except _SkipFile as skip:
            yield Task(lambda skip=skip: ([], [skip.skipped]), file.size)
            continue
        if file_sha256(file.path) != entry["sha256"]:
            raise changed(file.path)
    if batch:
        yield _small_files_task(batch, settings, encode)


def changed(path: Path) -> DataError:
    return DataError(f"{path} changed while it was being read; nothing was cached",
                     hint="run again once the file is no longer being written")


class _SkipFile(Exception):
    def __init__(self, skipped: Skipped) -> None:
        super().__init__(skipped.reason)
        self.skipped = skipped


def _bad_file(file: SourceFile, error: DataError, settings: ReadSettings) -> Skipped:
    """A file that cannot be read as text: skipped when a folder brought it, else the error."""
    if file.listed and not settings.strict:
        return Skipped(file.path, error.message)
    raise error


def _small_files_task(batch: list[tuple[SourceFile, dict]], settings: ReadSettings,
                      encode: Encode) -> Task:
    def run() -> tuple[list[Piece], list[Skipped]]:
        pieces, skipped = [], []
        for file, entry in batch:
            try:
                raw = file.path.read_bytes()
            except OSError as exc:
                raise DataError(f"cannot read {file.path}: {exc.strerror or exc}") from None
            if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
                raise changed(file.path)
            offset = len(_BOM) if raw.startswith(_BOM) else 0
            try:
                _check_not_binary(raw[offset:], offset, file.path, settings.errors)
                text = _decode(raw[offset:], offset, file.path, settings.errors)
            except DataError as exc:
                skipped.append(_bad_file(file, exc, settings))
                continue
            if text:
                pieces.append(encoded(text, encode))
        return pieces, skipped

    return Task(run, sum(file.size for file, _ in batch))


def _encode_task(texts: list[tuple[str, bool]], encode: Encode, nbytes: int) -> Task:
    return Task(lambda: ([encoded(text, encode, continues) for text, continues in texts], []),
                nbytes)


def _text_chunks(file: SourceFile, settings: ReadSettings, encode: Encode,
                 chunk_bytes: int) -> Iterator[Task]:
    if file.listed and not settings.strict:  # read it through once: skip it whole, or not at all
        try:
            for _ in iter_text_chunks(file.path, settings.errors, chunk_bytes):
                pass
        except DataError as exc:
            raise _SkipFile(Skipped(file.path, exc.message)) from None
    for i, (text, nbytes) in enumerate(iter_text_chunks(file.path, settings.errors,
                                                        chunk_bytes)):
        yield _encode_task([(text, i > 0)], encode, nbytes)


def _csv_chunks(file: SourceFile, settings: ReadSettings, encode: Encode,
                chunk_bytes: int) -> Iterator[Task]:
    for i, (text, nbytes) in enumerate(iter_csv_column(file.path, settings.column,
                                                       settings.errors, chunk_bytes)):
        yield _encode_task([(text, i > 0)], encode, nbytes)


def _jsonl_documents(file: SourceFile, settings: ReadSettings, encode: Encode,
                     chunk_bytes: int) -> Iterator[Task]:
    """One document per line: a JSON object whose `field` is text. A line that is not JSON,
    not an object, or lacks the field is an error naming the file and line; blank lines and a
    null field are passed over."""
    name = settings.field
    texts: list[tuple[str, bool]] = []
    size = done = reported = 0
    compressed = file.path.name.lower().endswith(".gz")
    with open(file.path, "rb") as raw, \
            (gzip.GzipFile(fileobj=raw) if compressed else contextlib.nullcontext(raw)) as lines:
        try:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except UnicodeDecodeError:
                    raise DataError(f"{file.path}:{number}: not UTF-8 text") from None
                except (ValueError, RecursionError) as exc:
                    raise DataError(f"{file.path}:{number}: not JSON ({exc})",
                                    hint="a JSONL file holds one JSON object per line") from None
                if not isinstance(record, dict):
                    raise DataError(f"{file.path}:{number}: a JSON {_json_type(record)}, "
                                    "not an object", hint="a JSONL file holds one JSON object "
                                    "per line")
                if name not in record:
                    shown = ", ".join(list(record)[:10]) or "none"
                    raise DataError(f"{file.path}:{number}: no field {name!r} (its fields: "
                                    f"{shown})", hint="pass --field NAME for the text's field")
                text = record[name]
                if text is None or text == "":
                    continue  # no document
                if not isinstance(text, str):
                    raise DataError(f"{file.path}:{number}: field {name!r} is a "
                                    f"{_json_type(text)}, not text",
                                    hint="pass --field NAME for the text's field")
                texts.append((text, False))
                size += len(text)
                if size >= chunk_bytes:
                    done = raw.tell()
                    yield _encode_task(texts, encode, done - reported)
                    texts, size, reported = [], 0, done
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(f"cannot read {file.path}: {getattr(exc, 'strerror', None) or exc}"
                            ) from None
    yield _encode_task(texts, encode, file.size - reported)


def _json_type(value: object) -> str:
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object",
            str: "string"}.get(type(value), type(value).__name__)


def _parquet_documents(file: SourceFile, settings: ReadSettings, encode: Encode,
                       chunk_bytes: int) -> Iterator[Task]:
    """One document per row of the `field` column, which must hold text; null rows are
    passed over."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file.path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{file.path} is not a readable Parquet file ({exc})") from None
    schema = parquet.schema_arrow
    where = schema.get_all_field_indices(settings.field)
    if len(where) != 1:
        shown = ", ".join(schema.names[:20])
        raise DataError(f"{file.path} has {'no column' if not where else 'several columns'} "
                        f"{settings.field!r}; its columns are: {shown}",
                        hint="pass --field NAME for the text's column")
    kind = schema.field(where[0]).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
        raise DataError(f"{file.path}: column {settings.field!r} holds {kind}, not text",
                        hint="pass --field NAME for the text's column")
    rows = max(1, parquet.metadata.num_rows)
    texts: list[tuple[str, bool]] = []
    size = seen = reported = 0
    try:
        for batch in parquet.iter_batches(columns=[settings.field], batch_size=4096):
            for text in batch.column(0).to_pylist():
                seen += 1
                if not text:
                    continue  # null or empty: no document
                texts.append((text, False))
                size += len(text)
            if size >= chunk_bytes:
                done = file.size * seen // rows
                yield _encode_task(texts, encode, done - reported)
                texts, size, reported = [], 0, done
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read {file.path}: {exc}") from None
    yield _encode_task(texts, encode, file.size - reported)
