"""Compare whole `tinygpt train` runs of two (or more) checkouts, alternating, in fresh processes.

    git worktree add /tmp/tinygpt-base d027007
    python benchmarks/run_compare.py /tmp/tinygpt-base .          # the base first
    python benchmarks/run_compare.py /tmp/tinygpt-base . --repeats 5 -- --max-iters 200
    python benchmarks/run_compare.py /tmp/tinygpt-base . ".::--no-fast"   # a checkout twice

Each argument is a checkout (a folder holding `tinygpt_cli/`), optionally followed by `::` and
`tinygpt train` options for that checkout alone (quoted as one argument); options after `--` go
to every run. Every round runs each checkout's
`python -m tinygpt_cli train` once (by default the book's run on the default corpus), one after
the other, so that all see the same drift of a shared machine; the token cache is built first and
shared, as a user's would be. Reported: each checkout's wall times, their median, the median of
the per-round ratios to the first checkout, and each run's final validation loss.
`step_compare.py` measures the training step alone; this measures what a user waits for.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "order_items.csv"


def train(checkout: Path, out: Path, extra: list[str], env: dict[str, str]
          ) -> tuple[float, float]:
    """Wall seconds of one run in `checkout`, and its last evaluation's validation loss."""
    cmd = [sys.executable, "-m", "tinygpt_cli", "train", "--data", str(CORPUS), "--out",
           str(out), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{checkout}: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in out.with_name(out.stem + ".metrics.jsonl").open()]
    return seconds, [r for r in records if r["type"] == "eval"][-1]["valid_loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", help="PATH or 'PATH::OPTIONS'")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # `tinygpt train` options
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    checkouts = [Path(c.partition("::")[0]).resolve() for c in args.checkouts]
    own = [shlex.split(c.partition("::")[2]) for c in args.checkouts]
    for checkout in checkouts:
        if not (checkout / "tinygpt_cli").is_dir():
            sys.exit(f"{checkout} has no tinygpt_cli/ folder")

    work = Path(tempfile.mkdtemp(prefix="tinygpt-runcompare-"))
    # `python -m` puts the working directory first on the path: each run imports its checkout
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TINYGPT_CACHE_DIR=str(work / "cache"), PYTHONUNBUFFERED="1")
    try:
        subprocess.run([sys.executable, "-m", "tinygpt_cli", "tokenize", str(CORPUS)],
                       cwd=checkouts[0], env=env, check=True, capture_output=True)
        runs: list[list[tuple[float, float]]] = [[] for _ in checkouts]
        for _ in range(args.repeats):
            for i, checkout in enumerate(checkouts):
                # a fresh folder each round: a run refuses to replace another run's checkpoint
                shutil.rmtree(work / f"v{i}", ignore_errors=True)
                runs[i].append(train(checkout, work / f"v{i}" / "model.ckpt", own[i] + extra,
                                     env))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for checkout, version in zip(args.checkouts, runs, strict=True):
        walls = [seconds for seconds, _ in version]
        ratio = statistics.median(b[0] / a[0] for a, b in zip(runs[0], version, strict=True))
        each = ", ".join(f"{w:.2f}" for w in walls)
        print(f"{checkout:32} {statistics.median(walls):7.2f} s ({each})   "
              f"{ratio:.3f}x the first   valid loss {version[-1][1]:.4f}")


if __name__ == "__main__":
    main()
