"""What a token-cache hit costs, old code against new: `tinygpt tokenize` run again on a corpus
whose cache exists, whole process, alternating between checkouts, median of --repeats.

    git worktree add /tmp/tinygpt-base b2ffe39
    python benchmarks/cache_hit_bench.py /tmp/tinygpt-base .              # the bundled corpus
    python benchmarks/cache_hit_bench.py /tmp/tinygpt-base . --mb 1000    # a 1 GB corpus
    python benchmarks/cache_hit_bench.py /tmp/tinygpt-base . --mb 40 --miss  # a full build

Each checkout gets its own cache folder, built once first (untimed). A hit hashes the source
(sha256, both versions); the new code also hashes every cache file against the checksums
recorded when it was built.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def tokenize(checkout: Path, corpus: Path, cache: Path, *extra: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tinygpt_cli", "tokenize", str(corpus), "--cache-dir",
                    str(cache), *extra], cwd=checkout, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--mb", type=float, default=0, help="corpus size; 0: the bundled one")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--miss", action="store_true",
                        help="time a full build (--force) instead of a hit")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tinygpt-cachehit-"))
    try:
        corpus = ROOT / "data" / "order_items.csv"
        if args.mb:
            from tokenize_bench import make_file

            corpus = work / "corpus.txt"
            make_file(corpus, args.mb)
        caches = [work / f"cache{i}" for i in range(len(args.checkouts))]
        for checkout, cache in zip(args.checkouts, caches, strict=True):
            tokenize(checkout.resolve(), corpus, cache)  # the build, untimed
        times: list[list[float]] = [[] for _ in args.checkouts]
        for _ in range(args.repeats):
            for i, (checkout, cache) in enumerate(zip(args.checkouts, caches, strict=True)):
                extra = ("--force",) if args.miss else ()
                times[i].append(tokenize(checkout.resolve(), corpus, cache, *extra))
        size = corpus.stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    what = "full build (--force)" if args.miss else "cache hit"
    print(f"{what} of a {size / 1e6:,.1f} MB corpus, whole `tinygpt tokenize`, "
          f"median of {args.repeats}:")
    for checkout, runs in zip(args.checkouts, times, strict=True):
        print(f"{str(checkout):32} {statistics.median(runs):7.3f} s  "
              f"({', '.join(f'{t:.3f}' for t in runs)})")


if __name__ == "__main__":
    main()
