"""Replacement characters in generated text, and what the UTF-8 guard costs in speed.

    python benchmarks/utf8_bench.py --checkpoint model/model.ckpt     # the README's 500-step model

For three models of the bundled corpus (the checkpoint given, trained by the README's
`tinygpt train` when it is missing; a 20-step model trained here; an untrained model of the same
shape and vocabulary), at temperatures 0.8 and 1.5: 100 samples of 200 tokens from the book's
prompt, with the guard (`tinygpt generate`'s default) and without it (`--allow-invalid-utf8`),
and the U+FFFD characters in each. Then tokens/s with and without the guard on the given
checkpoint (KV cache on, speed path on, one thread, the same seeds), alternating, median of
--repeats. Prints a table, or JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def train(out: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "tinygpt_cli", "train", "--out", str(out), *args],
                   cwd=ROOT, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "model" / "model.ckpt")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5, help="speed rounds (default 5)")
    parser.add_argument("--part", choices=("all", "counts", "speed"), default="all",
                        help="counts (no timing: may share the machine), speed, or both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    from tinygpt_cli.checkpoint import load_model
    from tinygpt_cli.generation import DEFAULT_PROMPT, encode_prompt

    torch.set_num_threads(1)
    if not args.checkpoint.exists():
        train(args.checkpoint)
    trained, vocab, _ = load_model(args.checkpoint)
    prompt = encode_prompt(vocab, DEFAULT_PROMPT, trained.config.context_length)
    result: dict = {"samples": args.samples, "tokens": args.tokens}
    if args.part in ("all", "counts"):
        result["rows"] = counts(args, trained, vocab, prompt)
    if args.part in ("all", "speed"):
        result["speed"] = speed(args, trained, vocab, prompt)
    if args.json:
        print(json.dumps(result, indent=2))


def counts(args, trained, vocab, prompt) -> list[dict]:
    import torch

    from tinygpt_cli.checkpoint import load_model
    from tinygpt_cli.config import SampleConfig
    from tinygpt_cli.generation import generate
    from tinygpt_cli.model import GPT

    work = Path(tempfile.mkdtemp(prefix="tinygpt-utf8-"))
    train(work / "twenty.ckpt", "--max-iters", "20")
    twenty, _, _ = load_model(work / "twenty.ckpt")
    torch.manual_seed(1337)
    untrained = GPT(trained.config).eval()
    if not args.json:
        print(f"U+FFFD in {args.samples} samples of {args.tokens} tokens (book's prompt):")
        print(f"{'model':10} {'temp':>5} {'guarded':>18} {'raw (--allow-invalid-utf8)':>30}",
              flush=True)
    rows = []
    for name, model in (("500 steps", trained), ("20 steps", twenty), ("untrained", untrained)):
        for temperature in (0.8, 1.5):
            config = SampleConfig(max_new_tokens=args.tokens, temperature=temperature,
                                  num_samples=args.samples, seed=1337)
            row = {"model": name, "temperature": temperature}
            for label, valid in (("guarded", True), ("raw", False)):
                samples = generate(model, vocab, prompt, config, fast=True, valid_utf8=valid)
                text = "".join(s.text for s in samples)
                row[label] = {"chars": len(text), "replacement": text.count("\ufffd"),
                              "finishing_tokens": sum(s.finishing_tokens for s in samples)}
            rows.append(row)
            if not args.json:
                g, r = row["guarded"], row["raw"]
                print(f"{name:10} {temperature:5} {g['replacement']:>6} of {g['chars']:>7} "
                      f"{r['replacement']:>13} of {r['chars']:>7} "
                      f"({r['replacement'] / r['chars']:.1%})", flush=True)
    return rows


def speed(args, trained, vocab, prompt) -> dict:
    from tinygpt_cli.config import SampleConfig
    from tinygpt_cli.generation import generate

    config = SampleConfig(max_new_tokens=args.tokens, temperature=0.8, num_samples=20, seed=7)
    rates: dict[bool, list[float]] = {True: [], False: []}
    generate(trained, vocab, prompt, config, fast=True)  # warm-up
    for _ in range(args.repeats):
        for valid in (True, False):
            started = time.perf_counter()
            samples = generate(trained, vocab, prompt, config, fast=True, valid_utf8=valid)
            rates[valid].append(sum(s.tokens for s in samples) /
                                (time.perf_counter() - started))
    speed = {"guarded": statistics.median(rates[True]), "raw": statistics.median(rates[False]),
             "guarded_runs": rates[True], "raw_runs": rates[False]}
    speed["ratio"] = speed["guarded"] / speed["raw"]
    if not args.json:
        print(f"tokens/s, KV cache on: guarded {speed['guarded']:.0f}, raw {speed['raw']:.0f}: "
              f"{speed['ratio']:.3f}x (median of {args.repeats})")
    return speed


if __name__ == "__main__":
    main()
