"""What every command shares: the error funnel and the common option types."""

from __future__ import annotations

import functools
import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from ..errors import TinyGPTError, terminate_like_interrupt

F = TypeVar("F", bound=Callable)


def funnel(fn: F) -> F:
    """Turn a user mistake (`TinyGPTError`) into one line on stderr and its exit code.

    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .. import ui

        try:
            with terminate_like_interrupt():
                return fn(*args, **kwargs)
        except TinyGPTError as exc:
            ui.error(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (runtime.terminate_like_interrupt)
            signum = getattr(exc, "signum", signal.SIGINT)
            ui.error("interrupted" if signum == signal.SIGINT
                     else f"stopped by {signal.Signals(signum).name}")
            raise typer.Exit(128 + signum) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def importing_torch() -> Iterator[None]:
    """Import torch and the core with the cyclic garbage collector paused, then freeze.

    Importing torch creates about a million objects and no garbage, yet the collector walks them
    all several times on the way, a visible share of a short command's start-up (figures:
    benchmarks/README.md). `gc.freeze()` then takes what was imported out of every later
    collection. Where torch is already imported (a test, a notebook) it changes nothing.
    """
    if "torch" in sys.modules:
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.freeze()


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def cache_dir_option(panel: str | None = None):
    """--cache-dir, in `panel` of the help where a command groups its options."""
    return Annotated[Path | None, typer.Option(
        "--cache-dir", envvar="TINYGPT_CACHE_DIR", file_okay=False,
        help="Where token caches live. Default: $XDG_CACHE_HOME/tinygpt, else ~/.cache/tinygpt.",
        show_default=False, rich_help_panel=panel)]


def column_option(panel: str | None = None):
    """--column, in `panel` of the help where a command groups its options."""
    return Annotated[str | None, typer.Option(
        "--column", help="Read one column of a CSV file (rows joined by newlines) instead of the "
        "whole file as text.", show_default=False, rich_help_panel=panel)]


def source_options(panel: str | None = None) -> tuple:
    """The options that say which files of the sources are read and how documents are joined
    and split, shared by tokenize and train: --include, --exclude, --field, --separator,
    --split, --strict."""
    return (
        Annotated[list[str] | None, typer.Option(
            "--include", metavar="GLOB", help="In folders, read the files matching this glob "
            "(on the name or the path inside the folder; repeat for more). Default: files that "
            "look like text or data (.txt .md .rst .html .csv .jsonl .jsonl.gz .parquet, ...). "
            "Hidden files and folders are always skipped.", show_default=False,
            rich_help_panel=panel)],
        Annotated[list[str] | None, typer.Option(
            "--exclude", metavar="GLOB", help="Leave out files matching this glob (repeat for "
            "more).", show_default=False, rich_help_panel=panel)],
        Annotated[str | None, typer.Option(
            "--field", help="The text of a JSONL record (one document per line) or the column "
            "of a Parquet file (one document per row; the parquet extra).",
            show_default="text", rich_help_panel=panel)],
        Annotated[str | None, typer.Option(
            "--separator", metavar="eot|newline|none", help="Between documents (the files of "
            "a folder, JSONL records, Parquet rows): the encoding's end-of-text token (its own "
            "id; the text <|endoftext|> inside a document stays ordinary text), a newline, or "
            "nothing. One text file is one document, as in the book.", show_default="eot",
            rich_help_panel=panel)],
        Annotated[str | None, typer.Option(
            "--split", metavar="tokens|documents", help="Validation: tokens holds out the last "
            "--val-fraction of the tokens (the book); documents holds out that share of whole "
            "documents, spread evenly (with 0.1, every 10th: no document is in both splits).",
            show_default="tokens", rich_help_panel=panel)],
        Annotated[bool, typer.Option(
            "--strict", help="Stop at a file in a folder that is not UTF-8 text (binary, "
            "UTF-16, bad bytes) and name its byte offset. Default: skip it with a warning "
            "that counts such files and names the first. A file named on the command line is "
            "always read or refused.", rich_help_panel=panel)],
    )


def threads_option(panel: str | None = None):
    """--threads, one meaning in every command that runs the model."""
    return Annotated[str, typer.Option(
        "--threads", metavar="auto|N", help="CPU threads for torch. auto: try 1, 2, 4, ... up to "
        "the cores (and OMP_NUM_THREADS, if set) on the command's first units of work (training "
        "steps, generated tokens, the passes of eval --full; eval's estimate is too short to "
        "measure and runs on all), keep the fastest, and measure again when the pace changes "
        "or every few seconds (a busy machine makes extra threads wait: fewer are then "
        "faster). Under torchrun, each process's share of the cores. N: exactly N.",
        rich_help_panel=panel)]


CacheDir = cache_dir_option()
Include, Exclude, Field, Separator, Split, Strict = source_options()
Json = Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")]
Checkpoint = Annotated[Path, typer.Option(
    "--checkpoint", "-c", help="The checkpoint to load (written by `tinygpt train`).")]
Encoding = Annotated[str, typer.Option(
    "--encoding", help="tiktoken encoding. cl100k_base works offline (bundled); others need "
    "tiktoken's cache (TIKTOKEN_CACHE_DIR) or the network.")]
Column = column_option()
Threads = threads_option()
Fast = Annotated[bool | None, typer.Option(
    "--fast/--no-fast", help="The speed path (tinygpt_cli/fast/): the same model computed "
    "faster. On by default where it applies (CPU, float32, no --compile); --no-fast runs the "
    "readable model.py code as written.", show_default="auto")]
Errors = Annotated[str, typer.Option(
    "--errors", help="What to do with bytes that are not UTF-8: 'strict' stops with their "
    "offset, 'replace' substitutes U+FFFD.")]
