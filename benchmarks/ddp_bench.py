"""DistributedDataParallel on the CPU: 2 gloo processes against 1, at the same batch per rank.

    python benchmarks/ddp_bench.py                     # the book's model, 200 steps, 3 runs each
    python benchmarks/ddp_bench.py --max-iters 100 --repeats 1 --json

Each run is `tinygpt train` on the default corpus (one process, or `torchrun --nproc_per_node=2`
with gloo), evaluation pushed past the end so only training steps are timed. Tokens/s is what the
trainer measures over its training steps (all ranks' tokens), the median of --repeats runs. Each
rank gets one torch thread (OMP_NUM_THREADS=1, torchrun's own default), so 2 ranks use the 2
cores; the single process is measured with 1 thread and with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train(work: Path, nproc: int, threads: int, args) -> float:
    out = work / f"run-{nproc}-{threads}" / "model.ckpt"
    shutil.rmtree(out.parent, ignore_errors=True)
    env = dict(os.environ, TINYGPT_CACHE_DIR=str(work / "cache"), OMP_NUM_THREADS=str(threads))
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable])
    cmd = [*launcher, "-m", "tinygpt_cli", "train", "--out", str(out), "--max-iters",
           str(args.max_iters), "--eval-interval", str(10 * args.max_iters), "--eval-iters", "1",
           "--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in out.with_name("model.metrics.jsonl").open()]
    return [r for r in records if r["type"] == "train"][-1]["tokens_per_sec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-iters", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=2, help="per rank")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tinygpt-ddpbench-"))
    try:
        runs: dict[str, list[float]] = {"1 process, 1 thread": [], "1 process, 2 threads": [],
                                        "2 gloo processes, 1 thread each": []}
        for _ in range(args.repeats):
            runs["1 process, 1 thread"].append(train(work, 1, 1, args))
            runs["1 process, 2 threads"].append(train(work, 1, 2, args))
            runs["2 gloo processes, 1 thread each"].append(train(work, 2, 1, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {name: round(statistics.median(v), 1) for name, v in runs.items()}
    base = result["1 process, 1 thread"]
    report = {"tokens_per_s": result, "runs": runs, "batch_size_per_rank": args.batch_size,
              "max_iters": args.max_iters, "cores": os.cpu_count(),
              "ratio_2_ranks_vs_1_process_1_thread":
                  round(result["2 gloo processes, 1 thread each"] / base, 2),
              "ratio_2_ranks_vs_1_process_2_threads":
                  round(result["2 gloo processes, 1 thread each"]
                        / result["1 process, 2 threads"], 2)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, value in result.items():
        print(f"{name:34} {value:>10,.1f} tokens/s")
    print(f"\n2 ranks / 1 rank (1 thread): {report['ratio_2_ranks_vs_1_process_1_thread']}x; "
          f"2 ranks / 1 rank (2 threads): {report['ratio_2_ranks_vs_1_process_2_threads']}x")


if __name__ == "__main__":
    main()
