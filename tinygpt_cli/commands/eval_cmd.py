"""`tinygpt eval`: loss, perplexity and bits per byte of a checkpoint on its corpus or a file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import CacheDir, Checkpoint, Json, Threads, funnel, importing_torch


@funnel
def eval_command(
    checkpoint: Checkpoint = Path("model/model.ckpt"),
    data: Annotated[Path | None, typer.Option(
        "--data", help="Score this UTF-8 text file (as one split, 'data'), encoded with the "
        "checkpoint's vocabulary, instead of the corpus the checkpoint was trained on.",
        show_default=False)] = None,
    full: Annotated[bool, typer.Option(
        "--full", help="Score every token once in non-overlapping windows (exact, slower) "
        "instead of the book's estimate from random batches.")] = False,
    eval_iters: Annotated[int | None, typer.Option(
        "--eval-iters", help="Estimate: random batches per split.",
        show_default="the training's (the book's 10)")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Windows per batch (the estimate's batch; --full's windows per "
        "forward pass). A batch whose logits would pass 256 MB runs in pieces: same numbers.",
        show_default="the training's for the estimate (the book's 2), 32 for --full")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Estimate: seed of the random batches (same seed, same numbers).",
        show_default="the seed of the training's last evaluation")] = None,
    device: Annotated[str, typer.Option(
        "--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")] = "auto",
    threads: Threads = "auto",
    cache_dir: CacheDir = None,
    json_out: Json = False,
) -> None:
    """Evaluate a checkpoint: loss, perplexity, bits per byte and tokens scored, per split.

    By default it repeats the estimate training reported (the same random batches of its
    corpus): identical for a checkpoint saved at that evaluation (NAME.best.ckpt), one update
    apart for a run's last checkpoint. --full scores every token once: the exact figure.
    Bits per byte (loss x tokens / (ln 2 x bytes)) compares models across vocabularies and
    tokenizers. The checkpoint's corpus cache is found (or rebuilt) under --cache-dir, as train
    made it.
    """
    with importing_torch():
        from .. import ui
        from ..evaluate import evaluate_checkpoint
        from ..runtime import Threads as ThreadCount
        from ..runtime import parse_threads, resolve_device

    count = parse_threads(threads)
    dev = resolve_device(device)
    tuner = ThreadCount.resolve(count, dev)
    tty = sys.stderr.isatty()
    result = evaluate_checkpoint(
        checkpoint, dev, data=data, full=full, eval_iters=eval_iters,
        batch_size=batch_size, seed=seed, cache_dir=cache_dir, tick=tuner.tick,
        tokenize_progress=lambda: ui.byte_progress("Tokenizing", enabled=tty),
        score_progress=lambda name, total: ui.count_progress(f"Scoring {name}", total,
                                                              enabled=tty),
    )
    for warning in result["warnings"]:
        ui.warn(warning)
    if json_out:
        ui.print_json(result)
    else:
        ui.eval_table(result)
