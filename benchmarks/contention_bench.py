"""The book's model on a busy machine: `--threads auto` against fixed thread counts.

Runs `tinygpt train --max-iters 200` (the book's model and corpus, whole process, a fresh --out
each time) with each `--threads` value, on the idle machine and beside one competing process
that spins on one core (started and stopped by this script, as a browser tab or a build would
be), alternating the settings within each round. Prints the median and range of each, and the
ratios the issue asks for: busy over idle with auto, and idle auto against torch's default
(`--threads N` with N = the cores, what torch uses unless told). Run it on an otherwise idle
machine:

    python benchmarks/contention_bench.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPIN = "while True: pass"


def train(threads: str, root: Path, cache: Path, steps: int) -> float:
    out = Path(tempfile.mkdtemp(dir=root)) / "model.ckpt"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tinygpt_cli", "train", "--max-iters",
                           str(steps), "--threads", threads, "--out", str(out), "--cache-dir",
                           str(cache)], env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"--threads {threads} failed:\n{done.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", nargs="+", default=None,
                        help="the --threads values to compare (default: auto, 1 and the cores)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = args.threads or ["auto", "1", str(cores)]
    root = Path(tempfile.mkdtemp(prefix="contention-bench-"))
    cache = root / "cache"
    train("1", root, cache, 1)  # build the token cache once, outside the timings
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.repeats):
        for load in ("idle", "busy"):
            spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if load == "busy" else None
            try:
                order = settings if round_ % 2 == 0 else settings[::-1]
                for threads in order:
                    took = train(threads, root, cache, args.steps)
                    times.setdefault((load, threads), []).append(took)
                    print(f"round {round_ + 1} {load:4} --threads {threads:4} {took:6.2f} s",
                          flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    print(f"\n{args.steps} steps of the book's run, whole process, median (range) of "
          f"{args.repeats}; {cores} cores")
    print("| --threads | idle | busy (1 core spinning) | busy / idle |\n|---|---:|---:|---:|")
    median = {key: statistics.median(values) for key, values in times.items()}
    for threads in settings:
        idle, busy = times[("idle", threads)], times[("busy", threads)]
        print(f"| {threads} | {median[('idle', threads)]:.2f} s ({min(idle):.2f}-{max(idle):.2f})"
              f" | {median[('busy', threads)]:.2f} s ({min(busy):.2f}-{max(busy):.2f}) | "
              f"{median[('busy', threads)] / median[('idle', threads)]:.2f}x |")
    if "auto" in settings and str(cores) in settings:
        print(f"\nauto busy / auto idle: {median[('busy', 'auto')] / median[('idle', 'auto')]:.2f}x"
              f" (target <= 1.5x); idle speed of auto against --threads {cores}: "
              f"{median[('idle', str(cores))] / median[('idle', 'auto')]:.3f}x (target >= 0.97x)")


if __name__ == "__main__":
    main()
