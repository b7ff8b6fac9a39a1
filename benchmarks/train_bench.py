"""Benchmark `tinygpt train` against a faithful copy of the book's train.py (book_baseline.py).

    python benchmarks/train_bench.py                  # the book's run: 500 steps, 3 runs each
    python benchmarks/train_bench.py --max-iters 100 --repeats 1 --json

Both train the book's model (d_model 80, 6 blocks, 4 heads, context 128, batch 2, AdamW 1e-3,
evaluation every 50 steps with 10 batches per split, seed 1337) on the same corpus, each run in a
fresh process, alternating. Reported per side, median of --repeats: whole-process wall time,
ms per training step and tokens/s (training steps only), final validation loss, peak RSS
(/usr/bin/time). The book's vocabulary is max(id)+1 (~100k); tinygpt's is the compact one.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data" / "order_items.csv"


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MB) and stdout of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True,
                          env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    return seconds, int(proc.stderr.strip().splitlines()[-1]) // 1024, proc.stdout


def baseline(args, work: Path, env) -> dict:
    seconds, rss, out = run([sys.executable, str(ROOT / "benchmarks" / "book_baseline.py"),
                             "--data", str(args.data), "--out", str(work / "book.ckpt"),
                             "--max-iters", str(args.max_iters), "--json"], env)
    result = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": seconds, "rss_mb": rss, "valid_loss": result["final_valid_loss"],
            "ms_per_step": result["ms_per_step"], "tokens_per_s": result["tokens_per_second"],
            "vocab": result["vocab_size"]}


def tinygpt(args, work: Path, env) -> dict:
    out = work / "tiny" / "model.ckpt"
    shutil.rmtree(out.parent, ignore_errors=True)  # a run refuses to replace another run's
    seconds, rss, _ = run([sys.executable, "-m", "tinygpt_cli", "train", "--data",
                           str(args.data), "--out", str(out), "--max-iters",
                           str(args.max_iters), *args.extra], env)
    records = [json.loads(line) for line in out.with_name("model.metrics.jsonl").open()]
    last_eval = [r for r in records if r["type"] == "eval"][-1]
    tps = [r for r in records if r["type"] == "train"][-1]["tokens_per_sec"]
    probe = ("import json, sys, torch\n"
             "s = torch.load(sys.argv[1], weights_only=True)\n"
             "print(json.dumps({'vocab': s['tokenizer']['size'], 'tokens': "
             "s['train_config']['batch_size'] * s['model_config']['context_length']}))")
    state = json.loads(subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True,
                                      text=True, env=env, check=True).stdout)
    return {"wall_s": seconds, "rss_mb": rss, "valid_loss": last_eval["valid_loss"],
            "ms_per_step": 1000 * state["tokens"] / tps, "tokens_per_s": tps,
            "vocab": state["vocab"]}


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=CORPUS)
    parser.add_argument("--max-iters", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("extra", nargs="*", help="extra `tinygpt train` options (after --)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tinygpt-trainbench-"))
    env = dict(os.environ, TINYGPT_CACHE_DIR=str(work / "cache"), PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "-m", "tinygpt_cli", "tokenize", str(args.data)], env=env,
                   check=True, capture_output=True)  # the cache is part of setup, as for users
    try:
        book, ours = [], []
        for _ in range(args.repeats):
            book.append(baseline(args, work, env))
            ours.append(tinygpt(args, work, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    keys = ("wall_s", "ms_per_step", "tokens_per_s", "valid_loss", "rss_mb", "vocab")
    result = {
        "max_iters": args.max_iters, "repeats": args.repeats, "cores": os.cpu_count(),
        "book": {k: round(median(book, k), 3) for k in keys},
        "tinygpt": {k: round(median(ours, k), 3) for k in keys},
        "runs": {"book": book, "tinygpt": ours},
    }
    result["speedup_wall"] = round(result["book"]["wall_s"] / result["tinygpt"]["wall_s"], 2)
    result["speedup_step"] = round(result["book"]["ms_per_step"]
                                   / result["tinygpt"]["ms_per_step"], 2)
    result["rss_ratio"] = round(result["tinygpt"]["rss_mb"] / result["book"]["rss_mb"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'':14}{'book':>12}{'tinygpt':>12}")
    for key in keys:
        print(f"{key:14}{result['book'][key]:>12,.3f}{result['tinygpt'][key]:>12,.3f}")
    print(f"\nwhole-process speedup {result['speedup_wall']}x (target >= 15x), per-step "
          f"{result['speedup_step']}x; peak RSS ratio {result['rss_ratio']} (target <= 0.333); "
          f"valid loss {result['tinygpt']['valid_loss']:.3f} vs {result['book']['valid_loss']:.3f}"
          " (target: no worse)")


if __name__ == "__main__":
    main()
