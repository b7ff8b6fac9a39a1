"""`tinygpt tokenize`: build (or reuse) a corpus's token cache."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from .common import (
    CacheDir,
    Column,
    Encoding,
    Errors,
    Exclude,
    Field,
    Include,
    Json,
    Separator,
    Split,
    Strict,
    funnel,
)


@funnel
def tokenize(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Text, CSV, JSONL (.jsonl, .jsonl.gz) or Parquet files, and folders (read "
        "recursively), as many as you like. Default: the bundled corpus of shop product "
        "titles.", show_default=False)] = None,
    include: Include = None,
    exclude: Exclude = None,
    field: Field = None,
    separator: Separator = None,
    split: Split = None,
    strict: Strict = False,
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help="Tokenize with this checkpoint's vocabulary, as `train --init-from` "
        "will (the same cache), and report the share of tokens it lacks (spelled in byte "
        "tokens): how well the vocabulary fits this text.", show_default=False)] = None,
    column: Column = None,
    encoding: Encoding = "cl100k_base",
    full_vocab: Annotated[bool, typer.Option(
        "--full-vocab", help="Size the vocabulary as the book does, max(id) + 1 (about 100k), "
        "instead of only the ids that occur (compact, the default).")] = False,
    val_fraction: Annotated[float, typer.Option(
        "--val-fraction", help="Share of tokens (the end of the corpus) kept for validation.")
    ] = 0.1,
    context_length: Annotated[int, typer.Option(
        "--context-length", min=1,
        help="Warn if the validation split cannot fill this context.")] = 128,
    cache_dir: CacheDir = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a valid cache exists.")
    ] = False,
    errors: Errors = "strict",
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="Tokenizer threads. Default: the number of cores, up to 8.",
        show_default=False)] = None,
    json_out: Json = False,
) -> None:
    """Tokenize a corpus with tiktoken and cache its token ids for train, eval and generate.

    The same files with the same settings are a cache hit; a changed, added or removed file
    is tokenized again. Several documents (the files of a folder, JSONL records, Parquet rows)
    are joined by the end-of-text token.
    """
    from .. import ui
    from ..data import TokenizeSettings, max_context_length, prepare, summary
    from ..tokenizer import COMPACT, FULL

    started = time.perf_counter()
    given = {"include": tuple(include or ()), "exclude": tuple(exclude or ()), "field": field,
             "separator": separator, "split": split}
    settings = TokenizeSettings(encoding=encoding, vocab_mode=FULL if full_vocab else COMPACT,
                                val_fraction=val_fraction, column=column, errors=errors,
                                strict=strict,
                                **{k: v for k, v in given.items() if v is not None})
    vocab = None
    if init_from is not None:  # the checkpoint's tokenizer, as train --init-from uses it
        from ..checkpoint import check, load, vocabulary_from
        from ..errors import CheckpointError, UsageError

        if encoding != "cl100k_base" or full_vocab:
            raise UsageError("--encoding/--full-vocab: the tokenizer comes from --init-from's "
                             "checkpoint; leave them out")
        state = load(init_from)
        check(state, init_from)
        try:
            vocab = vocabulary_from(state)
        except Exception as exc:
            raise CheckpointError(f"{init_from} has an unusable tokenizer: {exc}") from None
        settings = replace(settings, encoding=vocab.encoding_name, vocab_mode=vocab.mode)
    with ui.byte_progress("Tokenizing", enabled=sys.stderr.isatty()) as progress:
        cache = prepare(paths or None, settings, vocab=vocab, cache_root=cache_dir,
                        force=force, threads=threads, progress=progress)
    for warning in cache.warnings:
        ui.warn(warning)
    fits = max_context_length(cache)
    if fits < context_length:
        advice = (f"train with --context-length {fits} or less" if fits >= 1
                  else "raise --val-fraction or use more text")
        ui.warn(f"the validation split has {len(cache.valid)} tokens, too few for context length "
                f"{context_length} (it needs {context_length + 1}); the largest context length "
                f"that fits is {max(fits, 0)}: {advice}")
    result = summary(cache, time.perf_counter() - started)
    if json_out:
        ui.print_json(result)
    else:
        ui.tokenize_summary(result)
