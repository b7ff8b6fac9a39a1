"""--init-from against a fresh start: continue a trained checkpoint on a different text for N
steps, and train the same model shape from scratch for the same N steps on that text; report both
validation losses (per token, and in bits per byte: the two runs tokenize differently, since the
continued one keeps its checkpoint's vocabulary, so bits per byte is the figure to compare).

    tinygpt train --out /tmp/book/model.ckpt        # the README's main job (bundled corpus)
    python benchmarks/init_from_bench.py /tmp/book/model.ckpt \\
        --data ../shared/corpora/tinyshakespeare.txt --steps 300

Both runs: the checkpoint's shape, the book's batch and learning rate, seed 1337, `--threads 2`,
evaluation every 50 steps; the figure is the report card's final validation pass (every
validation token of each run's own split: the last 10% of the text in both).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def train(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tinygpt_cli", "train", *args, "--json",
                           "--threads", "2"], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    import torch

    shape = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["model_config"]
    work = Path(tempfile.mkdtemp(prefix="tinygpt-init-from-"))
    common = ["--data", str(args.data), "--max-iters", str(args.steps), "--eval-interval", "50",
              "--cache-dir", str(work / "cache")]
    runs = {
        "--init-from": train(*common, "--init-from", str(args.checkpoint),
                             "--out", str(work / "continued.ckpt")),
        "from scratch": train(*common, "--out", str(work / "scratch.ckpt"),
                              *[f"--{k.replace('_', '-')}={shape[k]}" for k in
                                ("d_model", "num_blocks", "num_heads", "context_length")]),
    }
    print(f"{args.steps} steps on {args.data.name}, d_model {shape['d_model']}, "
          f"{shape['num_blocks']} blocks, context {shape['context_length']}")
    for name, run in runs.items():
        card = run["report"]
        print(f"  {name:13s} validation loss {card['valid_loss']:.4f} per token, "
              f"{card['valid_bits_per_byte']:.4f} bits per byte ({card['valid_measure']}, "
              f"{card['valid_tokens_scored']:,} tokens; {run['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
