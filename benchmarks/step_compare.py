"""Compare the training step of two (or more) versions of tinygpt, interleaved in one process.

    git worktree add /tmp/tinygpt-base afab290
    python benchmarks/step_compare.py /tmp/tinygpt-base .          # the base first

Each argument is a checkout (a folder holding `tinygpt_cli/`). Every version builds the book's
run (default corpus, model and seed) with its own code, then the versions take turns: one
training step each (batch, forward, backward, AdamW), for --steps rounds. On a shared VM whose
speed drifts by 20-30% within minutes, comparing separate processes needs many runs to see a 2%
change; interleaved steps see the same drift, so the median of the per-round ratios is steady.
Reported: each version's median ms per step, and each version's median ratio to the first.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(checkout: Path, index: int, packages: Path):
    """Import `checkout`'s tinygpt_cli under its own name, so versions live side by side."""
    name = f"tinygpt_version{index}"
    shutil.copytree(checkout / "tinygpt_cli", packages / name)
    return importlib.import_module(f"{name}.train"), importlib.import_module(f"{name}.data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--steps", type=int, default=300, help="rounds (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="rounds not counted (default 20)")
    args = parser.parse_args()
    for checkout in args.checkouts:
        if not (checkout / "tinygpt_cli").is_dir():
            sys.exit(f"{checkout} has no tinygpt_cli/ folder")

    work = Path(tempfile.mkdtemp(prefix="tinygpt-stepcompare-"))
    sys.path.insert(0, str(work))
    try:
        runs = []
        for i, checkout in enumerate(args.checkouts):
            train, data = load(checkout.resolve(), i, work)
            trainer = train.Trainer(train.TrainRequest(
                out=work / f"v{i}" / "model.ckpt", data=ROOT / "data" / "order_items.csv",
                cache_dir=work / "cache"))
            trainer.model.train()
            runs.append((trainer, data.get_batch))
        from tinygpt_cli.fast.allocator import keep_freed_memory  # as `tinygpt train` on a CPU

        keep_freed_memory()
        times: list[list[float]] = [[] for _ in runs]
        for step in range(args.warmup + args.steps):
            for i, (trainer, get_batch) in enumerate(runs):
                start = time.perf_counter()
                x, y = get_batch(trainer.splits["train"], trainer.cfg.batch_size,
                                 trainer.model_config.context_length, trainer.batch_gen)
                _, loss = trainer.forward_model(x, y)  # what the trainer calls
                trainer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                trainer.optimizer.step()
                loss.item()
                if step >= args.warmup:
                    times[i].append(time.perf_counter() - start)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for checkout, version_times in zip(args.checkouts, times, strict=True):
        ratio = statistics.median(b / a for a, b in zip(times[0], version_times, strict=True))
        print(f"{str(checkout):40} {1000 * statistics.median(version_times):7.2f} ms per step"
              f"   {ratio:.3f}x the first")


if __name__ == "__main__":
    main()
