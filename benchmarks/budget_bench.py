"""The best model a time budget buys: validation bits per byte after `--max-time`, per setting.

Each setting is a list of `tinygpt train` options; every run trains on CORPUS for the budget
into a fresh --out and reports its report card (`--json`): the final model's validation loss and
bits per byte over every validation token (the report card says when it had to estimate
instead; this script then stops). Settings alternate within each round. Prints each run and the
median and range per setting. Run it on an idle machine:

    python benchmarks/budget_bench.py --data ../shared/corpora/tinyshakespeare.txt \\
        --seconds 143 --repeats 3 "--preset auto" "--preset book"
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(options: list[str], data: str | None, seconds: float, root: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=root)) / "model.ckpt"
    command = [sys.executable, "-m", "tinygpt_cli", "train", "--max-time", f"{seconds}s",
               "--out", str(out), "--json", *options] + (["--data", data] if data else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{done.stderr}")
    summary = json.loads(done.stdout)
    card = summary["report"]
    if card["valid_measure"] != "full":
        raise SystemExit(f"{shlex.join(options)}: the report card estimated its validation loss")
    chosen = [line for line in done.stderr.splitlines() if line.startswith("--preset auto:")]
    return {**card, "seconds": summary["seconds"], "chosen": chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="train options per setting, quoted")
    parser.add_argument("--data", help="the corpus (default: the bundled one)")
    parser.add_argument("--seconds", type=float, default=143.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="budget-bench-"))
    results: dict[str, list[dict]] = {s: [] for s in args.settings}
    for round_ in range(args.repeats):
        order = args.settings if round_ % 2 == 0 else args.settings[::-1]
        for setting in order:
            card = run(shlex.split(setting), args.data, args.seconds, root)
            results[setting].append(card)
            for line in card["chosen"] if round_ == 0 else []:
                print(f"  {line}")
            print(f"round {round_ + 1} [{setting}]: {card['valid_bits_per_byte']:.4f} bits/byte, "
                  f"loss {card['valid_loss']:.4f}, {card['steps']:,} steps, "
                  f"{card['tokens_seen']:,} tokens ({card['epochs']:.2f} epochs), "
                  f"{card['parameters']:,} parameters, {card['seconds']:.1f} s", flush=True)
    print(f"\nvalidation bits per byte after {args.seconds:g} s, every validation token, median "
          f"(range) of {args.repeats}")
    for setting, cards in results.items():
        bpb = [c["valid_bits_per_byte"] for c in cards]
        print(f"| {setting} | {statistics.median(bpb):.4f} ({min(bpb):.4f}-{max(bpb):.4f}) |")


if __name__ == "__main__":
    main()
