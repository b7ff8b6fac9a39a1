"""Generation speed with and without the KV cache, and `eval --full` speed, on this machine.

The book's model shape (d_model 80, 6 blocks, 4 heads, context 128) with the default corpus's
compact vocabulary and random weights (speed does not depend on training), or a trained
checkpoint with --checkpoint. 100 new tokens after the default prompt stay inside the window,
where the cache turns each step into one single-token forward pass; 500 slide past it, and from
then on sampling.py re-prefills the whole window every step (exact, as costly as no cache).
A third row continues a long prompt (the window minus 32 tokens, from the validation split) by
32 tokens: no slide, and every uncached step runs a nearly full window.

Usage: python benchmarks/generate_bench.py [--checkpoint PATH] [--repeats 5] [--threads 1]
                                           [--tokens 100 500] [--skip-eval] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tinygpt_cli.checkpoint import load_model
from tinygpt_cli.config import ModelConfig
from tinygpt_cli.data import as_tensor, prepare
from tinygpt_cli.evaluate import full_loss
from tinygpt_cli.model import GPT
from tinygpt_cli.sampling import generate_ids

PROMPT = "农夫山泉"
BOOK = {"d_model": 80, "num_blocks": 6, "num_heads": 4, "context_length": 128, "dropout": 0.0}


def build(checkpoint: Path | None, cache_dir: Path):
    """(model, vocabulary, token cache of the default corpus)."""
    cache = prepare(cache_root=cache_dir)
    if checkpoint is not None:
        model, vocab, _ = load_model(checkpoint)
        return model, vocab, cache
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=cache.vocab.size, **BOOK)).eval()
    return model, cache.vocab, cache


def time_generation(model: GPT, prompt_ids: list[int], new_tokens: int, use_cache: bool,
                    repeats: int) -> list[float]:
    """Tokens per second of `repeats` runs (sampling at temperature 0.8 from a fixed seed)."""
    rates = []
    for _ in range(repeats):
        generator = torch.Generator().manual_seed(1337)
        started = time.perf_counter()
        ids = generate_ids(model, prompt_ids, new_tokens, temperature=0.8, generator=generator,
                           use_cache=use_cache, fast=True)  # as `tinygpt generate` on a CPU
        rates.append(len(ids) / (time.perf_counter() - started))
    return rates


def time_full_eval(model: GPT, cache) -> dict:
    """The plain function behind `eval --full`, over both splits of the default corpus."""
    started, tokens = time.perf_counter(), 0
    for name in ("train", "valid"):
        _, scored = full_loss(model, as_tensor(cache.split(name)),
                              context_length=model.config.context_length, batch_size=32)
        tokens += scored
    seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_sec": round(tokens / seconds)}


def time_cli_eval(checkpoint: Path, cache_dir: Path, threads: int) -> dict:
    """The real `tinygpt eval --full` in a subprocess (wall time includes importing torch)."""
    command = [sys.executable, "-m", "tinygpt_cli", "eval", "--full", "--json", "--checkpoint",
               str(checkpoint), "--cache-dir", str(cache_dir), "--device", "cpu",
               "--threads", str(threads)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    result = json.loads(done.stdout)
    tokens = sum(s["tokens"] for s in result["splits"].values())
    return {"command": " ".join(command[1:]), "wall_seconds": round(wall, 3),
            "reported_seconds": result["seconds"], "tokens": tokens,
            "tokens_per_sec": round(tokens / result["seconds"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint (default: the "
                        "book's shape with random weights)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per setting (median)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (as "
                        "`tinygpt generate` uses by default)")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get(
        "TINYGPT_CACHE_DIR", Path(tempfile.gettempdir()) / "tinygpt-bench-cache")))
    parser.add_argument("--skip-eval", action="store_true", help="only time generation")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model, vocab, cache = build(args.checkpoint, args.cache_dir)
    prompt_ids = vocab.encode(PROMPT)
    context = model.config.context_length
    time_generation(model, prompt_ids, 20, True, 1)  # warm-up: allocator, kernels
    time_generation(model, prompt_ids, 20, False, 1)

    long_text = cache.vocab.decode(cache.valid[:2 * context].tolist())
    long_prompt = vocab.encode(long_text)[:context - 32]
    cases = [(prompt_ids, new) for new in args.tokens] + [(long_prompt, 32)]
    rows = []
    for ids, new in cases:
        cached = time_generation(model, ids, new, True, args.repeats)
        plain = time_generation(model, ids, new, False, args.repeats)
        with_cache, without = statistics.median(cached), statistics.median(plain)
        rows.append({"prompt_tokens": len(ids), "new_tokens": new,
                     "slides": len(ids) + new > context,
                     "cache_tokens_per_sec": round(with_cache, 1),
                     "no_cache_tokens_per_sec": round(without, 1),
                     "speedup": round(with_cache / without, 2)})
    results = {
        "torch": torch.__version__, "threads": args.threads, "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "model": {**BOOK, "vocab_size": model.config.vocab_size,
                  "params": model.num_params()["total"],
                  "weights": str(args.checkpoint) if args.checkpoint else "random"},
        "repeats": args.repeats, "generation": rows,
    }
    if not args.skip_eval:
        results["eval_full"] = time_full_eval(model, cache)
        if args.checkpoint is not None:
            results["eval_full_cli"] = time_cli_eval(args.checkpoint, args.cache_dir,
                                                     args.threads)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    m = results["model"]
    print(f"model: d_model {m['d_model']}, {m['num_blocks']} blocks, {m['num_heads']} heads, "
          f"context {m['context_length']}, vocab {m['vocab_size']} ({m['params']:,} params, "
          f"{m['weights']} weights); torch {results['torch']}, {args.threads} thread(s), "
          f"load average {results['load_average']}")
    print(f"{'prompt':>6}  {'new tokens':>10}  {'slides':>6}  {'cache tok/s':>11}  "
          f"{'no cache tok/s':>14}  {'speedup':>7}")
    for r in rows:
        slides = "yes" if r["slides"] else "no"
        print(f"{r['prompt_tokens']:>6}  {r['new_tokens']:>10}  {slides:>6}  "
              f"{r['cache_tokens_per_sec']:>11,.1f}  {r['no_cache_tokens_per_sec']:>14,.1f}  "
              f"{r['speedup']:>6.2f}x")
    if "eval_full" in results:
        e = results["eval_full"]
        print(f"eval --full (plain function, default corpus): {e['tokens']:,} tokens in "
              f"{e['seconds']:.2f} s, {e['tokens_per_sec']:,} tokens/s")
    if "eval_full_cli" in results:
        e = results["eval_full_cli"]
        print(f"tinygpt eval --full (subprocess): {e['wall_seconds']:.2f} s wall, "
              f"{e['reported_seconds']:.2f} s in the command, {e['tokens_per_sec']:,} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
