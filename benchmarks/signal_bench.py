"""How long each long command takes to stop after Ctrl-C (SIGINT) or SIGTERM.

Each case starts the real command (`python -m tinygpt_cli ...`) on a tiny model, waits until it
is inside its long work (an evaluation of minutes, a tokenization of a ~40 MB corpus, a stream
of 10^8 tokens), sends the signal, and times the exit. Prints the median and the range of
`--repeats` runs per case and signal. Run it on an idle machine:

    python benchmarks/signal_bench.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["--d-model", "16", "--num-blocks", "1", "--num-heads", "2", "--context-length", "16"]
LONG_EVAL = ["--eval-iters", "131072", "--batch-size", "64"]


def tinygpt(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "tinygpt_cli", *args], cwd=cwd, env=env,
                            **kwargs)


def wait_until(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the command ended or never got ready (exit {proc.returncode})")
        time.sleep(0.02)


def stop_time(proc: subprocess.Popen, signum: int) -> float:
    proc.send_signal(signum)
    sent = time.monotonic()
    proc.wait(timeout=120)
    took = time.monotonic() - sent
    if proc.returncode != 128 + signum:
        raise SystemExit(f"exit {proc.returncode}, expected {128 + signum}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="signal-bench-"))
    corpus = Path(__file__).resolve().parent.parent / "data" / "order_items.csv"
    cache = root / "cache"
    ckpt = root / "run" / "model.ckpt"
    made = subprocess.run([sys.executable, "-m", "tinygpt_cli", "train", "--data", str(corpus),
                           "--out", str(ckpt), "--cache-dir", str(cache), "--max-iters", "2",
                           "--eval-iters", "1", *TINY], capture_output=True, cwd=root)
    if made.returncode:
        raise SystemExit(made.stderr.decode())
    big = root / "big.txt"
    with open(big, "w", encoding="utf-8") as f:
        for i in range(600_000):
            f.write(f"The quick brown fox jumps over the lazy dog; 0123456789 times. {i}\n")

    def train(n: int) -> tuple[subprocess.Popen, object]:
        out = root / f"t{n}" / "model.ckpt"
        proc = tinygpt("train", "--data", str(corpus), "--out", str(out), "--cache-dir",
                       str(cache), "--max-iters", "20", *TINY, *LONG_EVAL, cwd=root,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc, lambda: out.with_name("model.metrics.jsonl").exists()

    def evaluate(n: int):
        proc = tinygpt("eval", "-c", str(ckpt), "--cache-dir", str(cache), *LONG_EVAL, cwd=root,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        return proc, lambda: time.monotonic() - started > 4  # past start-up; it runs minutes

    def tokenize(n: int):
        where = root / f"c{n}"
        where.mkdir()
        proc = tinygpt("tokenize", str(big), "--cache-dir", str(where), cwd=root,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc, lambda: any(".tmp-" in p.name for p in where.iterdir())

    def generate(n: int):
        out = root / f"g{n}.txt"
        with open(out, "wb") as handle:  # the child keeps its own copy of the descriptor
            proc = tinygpt("generate", "-c", str(ckpt), "-n", "100000000", cwd=root,
                           stdout=handle, stderr=subprocess.DEVNULL)
        return proc, lambda: out.stat().st_size > 0

    cases = {"train (during an evaluation)": train, "eval": evaluate, "tokenize": tokenize,
             "generate": generate}
    n = 0
    print(f"{'command':32} {'signal':8} {'median':>8} {'range':>16}")
    for name, start in cases.items():
        for signum in (signal.SIGINT, signal.SIGTERM):
            times = []
            for _ in range(args.repeats):
                n += 1
                proc, ready = start(n)
                wait_until(proc, ready)
                time.sleep(0.3)
                times.append(stop_time(proc, signum))
            print(f"{name:32} {signal.Signals(signum).name:8} {statistics.median(times):7.2f}s "
                  f"{min(times):7.2f}-{max(times):.2f}s")


if __name__ == "__main__":
    main()
