"""The token cache: read a corpus, tokenize it in parallel chunks, split it, store it memory-mapped.

A cache is a folder with `meta.json`, `vocab.bin` (the encoding id of each model id, uint32) and
`train.bin` / `valid.bin` (model ids, little-endian uint16 when the vocabulary fits, else uint32).
It is built in a temporary folder and renamed into place, so an interrupted build never leaves a
folder that looks valid; a folder whose files disagree with its metadata is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .errors import DataError, UsageError
from .files import write_hint
from .sources import (  # noqa: F401  (the readers, where callers have always found them)
    CHUNK_BYTES,
    Found,
    ReadSettings,
    Skipped,
    check_source,
    discover,
    file_sha256,
    iter_csv_column,
    iter_text_chunks,
    manifest,
    manifest_sha256,
    tasks,
)
from .tokenizer import COMPACT, DEFAULT_ENCODING, FULL, Vocabulary, get_encoding

FORMAT_VERSION = 1
CACHE_ENV = "TINYGPT_CACHE_DIR"
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


SEPARATORS = ("eot", "newline", "none")
SPLITS = ("tokens", "documents")


@dataclass(frozen=True)
class TokenizeSettings:
    """Everything that changes the tokens a corpus turns into (and so the cache's identity)."""

    encoding: str = DEFAULT_ENCODING
    vocab_mode: str = COMPACT
    val_fraction: float = 0.1
    column: str | None = None
    errors: str = "strict"
    include: tuple[str, ...] = ()  # globs for a folder's files; () is sources.DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    field: str = "text"  # a JSONL record's field, a Parquet column
    separator: str = "eot"  # between documents: the encoding's end-of-text token, "\n", nothing
    split: str = "tokens"  # validation: the last val_fraction of tokens, or of documents
    strict: bool = False  # a bad file found in a folder stops the build (else it is skipped)

    def __post_init__(self) -> None:
        for name in ("include", "exclude"):  # a list from JSON or a checkpoint: a tuple
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if not 0 < self.val_fraction < 1:
            problems.append(f"--val-fraction must be between 0 and 1 (got {self.val_fraction})")
        if self.errors not in ("strict", "replace"):
            problems.append(f"--errors must be 'strict' or 'replace' (got {self.errors!r})")
        if self.vocab_mode not in (COMPACT, FULL):
            problems.append(f"vocabulary mode must be {COMPACT} or {FULL}")
        if self.separator not in SEPARATORS:
            problems.append(f"--separator must be one of {', '.join(SEPARATORS)} "
                            f"(got {self.separator!r})")
        if self.split not in SPLITS:
            problems.append(f"--split must be one of {', '.join(SPLITS)} (got {self.split!r})")
        if not self.field:
            problems.append("--field must name a field")
        if problems:
            raise UsageError("; ".join(problems))

    def read_settings(self) -> ReadSettings:
        return ReadSettings(errors=self.errors, column=self.column, field=self.field,
                            strict=self.strict)


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


# --- building and loading the cache ------------------------------------------------------------

Sources = Path | str | Sequence[Path | str] | None


def as_sources(sources: Sources) -> tuple[Path, ...]:
    """What the user named (one path or several) as a tuple; nothing is the bundled corpus."""
    if sources is None or (not isinstance(sources, Path | str) and len(sources) == 0):
        return (default_corpus(),)
    if isinstance(sources, Path | str):
        return (Path(sources),)
    return tuple(Path(p) for p in sources)


def cache_dir_for(sources: Sources, settings: TokenizeSettings, cache_root: Path,
                  vocab: Vocabulary | None = None) -> Path:
    """One folder per (sources, settings, and a vocabulary given in advance): a changed, added
    or removed file rebuilds the same folder."""
    paths = as_sources(sources)
    key = {"source": _resolved(paths[0]), **asdict(settings)}
    if len(paths) > 1:
        key["sources"] = [_resolved(p) for p in paths]
    if vocab is not None:
        key["vocabulary"] = hashlib.sha256(vocab.ids.tobytes()).hexdigest()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    stem = re.sub(r"[^\w.-]+", "_", paths[0].stem)[:40] or "corpus"
    return cache_root / f"{stem}-{digest}"


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a link loop: `discover` says so, in one line
        return os.path.abspath(path)


@dataclass
class SourceSet:
    """The files a run's sources hold and their manifest (path, size, sha256 of each)."""

    paths: tuple[Path, ...]
    found: Found
    entries: list[dict]
    sha256: str
    recorded_ns: int = field(default_factory=time.time_ns)  # when the files were looked at


def source_set(sources: Sources, settings: TokenizeSettings,
               known: tuple[dict[str, dict], int] | None = None) -> SourceSet:
    """Find and hash the files of `sources` (one DataError for anything unreadable); `known`:
    a cache's record of them and when it was made (`sources.manifest`)."""
    paths = as_sources(sources)
    found = discover(paths, settings.include, settings.exclude, settings.column)
    entries = manifest(found.files, *(known or ({}, 0)))
    return SourceSet(paths, found, entries, manifest_sha256(entries))


MANIFEST = "sources.json"  # a cache's record of its files, and when it was made
MANIFEST_FIELDS = ("path", "name", "size", "stamp", "sha256")  # a row of it


def _known_files(folder: Path) -> tuple[dict[str, dict], int]:
    """What a cache recorded of its files (`sources.manifest`), and when."""
    try:
        record = json.loads((folder / MANIFEST).read_text(encoding="utf-8",
                                                          errors="surrogateescape"))
        return ({row[0]: dict(zip(MANIFEST_FIELDS, row, strict=True))
                 for row in record["files"]}, int(record["recorded_ns"]))
    except (OSError, ValueError, TypeError, IndexError, KeyError):
        return {}, 0  # none yet, or damaged: every file is hashed


def _cache_hashes(folder: Path) -> dict[str, str]:
    """The sha256 of each of a cache's files there is ({} where one cannot be read)."""
    hashes = {}
    for name in CACHE_FILES:
        with contextlib.suppress(DataError):
            hashes[name] = file_sha256(folder / name)
    return hashes


def prepare(source: Sources = None, settings: TokenizeSettings | None = None, *,
            cache_root: Path | None = None, force: bool = False, threads: int | None = None,
            progress: Progress | None = None, chunk_bytes: int = CHUNK_BYTES,
            vocab: Vocabulary | None = None) -> TokenCache:
    """Return the corpus's token cache, building it unless a valid one exists.

    `source`: a file or folder, or several; None is the bundled corpus. `vocab`: tokenize with
    this vocabulary (a checkpoint's, for --init-from: ids it lacks fall back to byte tokens)
    instead of one made from the corpus. This is what `tinygpt tokenize` does and what `train`
    calls first.
    """
    settings = settings or TokenizeSettings()
    cache_root = Path(cache_root) if cache_root is not None else default_cache_dir()
    folder = cache_dir_for(as_sources(source), settings, cache_root, vocab)
    reuse = not force and folder.exists()
    with ThreadPoolExecutor(1) as pool:  # the cache's files are hashed while the sources are
        hashing = pool.submit(_cache_hashes, folder) if reuse else None  # found (a hit's time)
        sources = source_set(source, settings, known=_known_files(folder) if reuse else None)
        hashes = hashing.result() if hashing is not None else None
    warnings: list[str] = []
    if reuse:
        problem = verify_cache(folder, sources.sha256, content=True, hashes=hashes)
        if problem is None:
            cache = load_cache(folder)
            cache.hit = True
            cache.warnings += skipped_warnings(cache.meta)
            return cache
        if problem == OLD_CACHE:
            warnings.append(f"the cache in {folder} was made by an older tinygpt, without "
                            "content checksums; rebuilding it")
        elif problem != "source changed":
            warnings.append(f"the cache in {folder} is damaged ({problem}); rebuilding it")
    get_encoding(settings.encoding)  # fail on a bad encoding before any work
    cache = build_cache(sources, settings, folder, threads=threads, progress=progress,
                        chunk_bytes=chunk_bytes, vocab=vocab)
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


def build_cache(sources: SourceSet, settings: TokenizeSettings, folder: Path, *,
                threads: int | None = None, progress: Progress | None = None,
                chunk_bytes: int = CHUNK_BYTES, vocab: Vocabulary | None = None) -> TokenCache:
    """Tokenize `sources` into a fresh cache at `folder` (replacing what is there atomically)."""
    started = time.perf_counter()
    _writable_root(folder.parent)
    _remove_stale_builds(folder)
    encoding = get_encoding(settings.encoding)
    separator, notes = settings.separator, []
    if vocab is not None and vocab.encoding_name != settings.encoding:
        raise UsageError(f"the vocabulary given is of {vocab.encoding_name}, the settings say "
                         f"--encoding {settings.encoding}", hint="leave --encoding out")
    if vocab is not None and separator == "eot" and vocab.eot is None:
        separator = "newline"  # the model never learned end-of-text: a newline is its break
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        stats = _tokenize_to_files(sources, settings, separator, encoding, work, threads,
                                   progress, chunk_bytes)
        if vocab is None:
            vocab = Vocabulary.from_counts(settings.encoding, settings.vocab_mode,
                                           stats["counts"])
        meta = _write_splits(stats["raw"], vocab, settings, work)
        for raw in stats["raw"].values():
            raw.unlink()
        skipped = stats["skipped"]
        if separator != settings.separator and stats["documents"] > 1:
            notes.append("documents are separated by a newline: the model's vocabulary has no "
                         "end-of-text token")
        meta.update({
            "format_version": FORMAT_VERSION,
            "tinygpt_version": __version__,
            "source": {"path": str(sources.paths[0].resolve()),
                       "paths": [str(p.resolve()) for p in sources.paths],
                       "size": sum(e["size"] for e in sources.entries),
                       "sha256": sources.sha256},
            "settings": asdict(settings),
            "files": len(sources.entries) - len(skipped),
            "documents": stats["documents"],
            "skipped": {"count": len(skipped), "first": [
                {"path": str(s.path), "reason": s.reason} for s in skipped[:5]]},
            "passed_over": {"not_matched": sources.found.not_matched,
                            "hidden": sources.found.hidden,
                            "special": [str(p) for p in sources.found.special[:5]],
                            "special_count": len(sources.found.special)},
            "separator": separator,
            "notes": notes,
            "characters": stats["characters"],
            "distinct_tokens": int(np.count_nonzero(stats["counts"])),
            "seconds": round(time.perf_counter() - started, 3),
        })
        # what the files hold, so a hit can prove it: a damaged file of the right size (random
        # or shuffled ids, zeroed tokens) is caught, not trained on
        meta["checksums"] = {name: file_sha256(work / name) for name in CACHE_FILES}
        (work / MANIFEST).write_text(json.dumps({
            "recorded_ns": sources.recorded_ns,
            "files": [[e[k] for k in MANIFEST_FIELDS] for e in sources.entries]}),
            encoding="utf-8", errors="surrogateescape")
        (work / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        _swap_into_place(work, folder)
    except OSError as exc:  # a full disk, say: one line naming the path, nothing half-written
        shutil.rmtree(work, ignore_errors=True)
        where = Path(exc.filename) if exc.filename else folder
        reason = exc.strerror or str(exc)
        if any(where == Path(e["path"]) for e in sources.entries):
            raise DataError(f"could not read {where}: {reason}") from None
        raise DataError(f"could not write the token cache at {where}: {reason}",
                        hint=write_hint(exc, "pass --cache-dir to another location")
                        ) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    cache = load_cache(folder)
    cache.warnings += skipped_warnings(cache.meta)
    return cache


def skipped_warnings(meta: dict) -> list[str]:
    """What a build passed over, as warnings: files it could not read as text, and files in
    folders that are not regular files."""
    warnings = list(meta.get("notes", []))
    skipped = meta.get("skipped", {})
    if skipped.get("count"):
        first = skipped["first"][0]
        files = "file that is" if skipped["count"] == 1 else "files that are"
        warnings.append(f"skipped {skipped['count']} {files} not text; the first: "
                        f"{first['reason']} (--strict stops at such a file instead)")
    passed = meta.get("passed_over", {})
    if passed.get("special_count"):
        warnings.append(f"skipped {passed['special_count']} "
                        f"{'entry' if passed['special_count'] == 1 else 'entries'} that "
                        "are not regular files "
                        f"(FIFOs, devices, sockets, broken links); the first: "
                        f"{passed['special'][0]}")
    return warnings


def separator_ids(encoding, separator: str) -> list[int]:
    """The ids between two documents: the encoding's end-of-text token (an id, never text: a
    document's literal "<|endoftext|>" stays ordinary text), a newline, or nothing."""
    return {"eot": [encoding.eot_token], "newline": encoding.encode_ordinary("\n"),
            "none": []}[separator]


def is_validation_document(number: int, fraction: float) -> bool:
    """--split documents: document `number` (0, 1, 2, ...) is held out when it carries the
    running share of documents past the next whole one: every 10th for 0.1 (9, 19, ...)."""
    return math.floor((number + 1) * fraction) > math.floor(number * fraction)


def _tokenize_to_files(sources: SourceSet, settings: TokenizeSettings, separator: str,
                       encoding, work: Path, threads: int | None, progress: Progress | None,
                       chunk_bytes: int) -> dict:
    """Read every document in parallel threads and append its encoding ids to raw uint32
    files, in order, a separator between documents: one file (split later by position) or,
    with --split documents, one per split."""
    threads = threads or min(8, os.cpu_count() or 1)
    total = sum(e["size"] for e in sources.entries)
    counts = np.zeros(encoding.n_vocab, dtype=np.int64)
    by_document = settings.split == "documents"
    raw = {name: work / f"raw-{name}.u32" for name in ("train", "valid")} if by_document \
        else {"all": work / "raw.u32"}
    between = np.asarray(separator_ids(encoding, separator), dtype=np.uint32)
    stats = {"characters": 0, "documents": 0, "printable": False, "skipped": []}
    started = dict.fromkeys(raw, False)  # a split holds a document already: separate the next
    done = 0
    current, opening = "all", False
    pending: list[tuple[Future, int]] = []

    def drain(outs: dict, keep: int) -> None:
        nonlocal done, current, opening
        while len(pending) > keep:
            future, nbytes = pending.pop(0)
            pieces, skipped = future.result()
            stats["skipped"] += skipped
            parts: dict[str, list] = {name: [] for name in raw}  # this task's ids, per split
            for piece in pieces:
                if not len(piece.ids) and not piece.continues:
                    opening = True  # an empty start (a header-only CSV): no document yet
                    continue
                if not piece.continues or opening:
                    opening = False
                    if by_document:
                        current = "valid" if is_validation_document(
                            stats["documents"], settings.val_fraction) else "train"
                    if started[current] and len(between):
                        parts[current].append(between)
                    started[current] = True
                    stats["documents"] += 1
                parts[current].append(np.asarray(piece.ids, dtype=np.uint32))
                stats["characters"] += piece.characters
                stats["printable"] = stats["printable"] or piece.printable
            for name, arrays in parts.items():  # one write and one count per task and split
                if arrays:
                    ids = np.concatenate(arrays)
                    outs[name].write(ids.data)  # not tofile: a failed write keeps its errno
                    counts[:] += np.bincount(ids, minlength=len(counts))[: len(counts)]
            done += nbytes
            if progress:
                progress(done, total)

    pool = ThreadPoolExecutor(threads)
    try:
        with contextlib.ExitStack() as stack:
            outs = {name: stack.enter_context(open(path, "wb")) for name, path in raw.items()}
            for task in tasks(sources.found, sources.entries, settings.read_settings(),
                              encoding.encode_ordinary, chunk_bytes):
                pending.append((pool.submit(task.run), task.nbytes))
                drain(outs, keep=2 * threads)  # bounded in flight: memory scales with chunks
            drain(outs, keep=0)
    except BaseException:  # Ctrl-C, say: drop the chunks not started instead of encoding them
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    names = ", ".join(str(p) for p in sources.paths)
    if not stats["printable"]:
        raise DataError(f"{names} has no text to train on (it is empty or only whitespace"
                        + (f"; files skipped: {len(stats['skipped'])}, the first: "
                           f"{stats['skipped'][0].reason}" if stats["skipped"] else "") + ")")
    if by_document and not started["valid"]:
        raise DataError(f"--split documents: {names} holds {stats['documents']} document(s), "
                        f"too few to hold out a share of {settings.val_fraction}",
                        hint="raise --val-fraction, or split by tokens (--split tokens)")
    return {"counts": counts, "raw": raw, **stats}


def _write_splits(raw: dict[str, Path], vocab: Vocabulary, settings: TokenizeSettings,
                  work: Path, block: int = 1 << 22) -> dict:
    """Map encoding ids to model ids and write train/valid files; return their metadata.
    Ids the vocabulary lacks (a vocabulary given in advance) become their byte tokens: the
    count of encoding tokens that did is `fallback_tokens`."""
    if "all" in raw:
        n = raw["all"].stat().st_size // 4
        n_train = int(n * (1 - settings.val_fraction))  # the book: first 90% train, rest valid
        parts = {"train": (raw["all"], 0, n_train), "valid": (raw["all"], n_train, n)}
    else:
        parts = {name: (raw[name], 0, raw[name].stat().st_size // 4)
                 for name in ("train", "valid")}
    dtype = np.uint16 if vocab.size <= 65536 else np.uint32
    byte_len = vocab.token_byte_lengths()
    splits, fallback, encoded = {}, 0, 0
    for name, (source, lo, hi) in parts.items():
        nbytes = tokens = 0
        # read in blocks, not memory-mapped: the pages of a map count in the process's resident
        # memory, and the raw ids of a 200 MB corpus are as large again
        with open(work / f"{name}.bin", "wb") as out, open(source, "rb") as raw_ids:
            for start in range(lo, hi, block):
                raw_ids.seek(4 * start)
                chunk = np.fromfile(raw_ids, dtype="<u4",
                                    count=min(hi, start + block) - start).astype(np.int64)
                ids = vocab.to_model[chunk]
                if (ids < 0).any():
                    fallback += int((ids < 0).sum())
                    ids = vocab.map_ids(chunk)
                encoded += len(chunk)
                nbytes += int(byte_len[ids].sum())
                tokens += len(ids)
                out.write(ids.astype(f"<{np.dtype(dtype).char}").data)
        splits[name] = {"tokens": tokens, "bytes": nbytes}
    with open(work / "vocab.bin", "wb") as out:
        out.write(vocab.ids.astype("<u4").data)
    return {"tokens": splits["train"]["tokens"] + splits["valid"]["tokens"],
            "dtype": np.dtype(dtype).name, "vocab": {**vocab.identity()}, "splits": splits,
            "encoded_tokens": encoded, "fallback_tokens": fallback}


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


def verify_cache(folder: Path, sha: str | None = None, content: bool = False,
                 hashes: dict[str, str] | None = None) -> str | None:
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
            found = (hashes or {}).get(name) or file_sha256(folder / name)
            if checksums.get(name) != found:
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
    skipped, passed = meta.get("skipped", {}), meta.get("passed_over", {})
    encoded = meta.get("encoded_tokens") or 0
    return {
        "source": meta["source"]["path"],
        "sources": meta["source"].get("paths", [meta["source"]["path"]]),
        "files": meta.get("files", 1),
        "documents": meta.get("documents", 1),
        "skipped_files": skipped.get("count", 0),
        "not_matched_files": passed.get("not_matched", 0),
        "separator": meta.get("separator", "eot"),
        "split": meta["settings"].get("split", "tokens"),
        "val_fraction": meta["settings"].get("val_fraction", 0.1),
        "fallback_share": round(meta.get("fallback_tokens", 0) / encoded, 6) if encoded else 0.0,
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
