"""Where the book's run spends its time: the parts of `tinygpt train` measured one by one.

    python benchmarks/where_time_goes.py            # medians of --repeats (default 7)

Reported, each the median of its repeats on this machine:
- the fixed costs of a fresh process: `import torch` alone, then with tinygpt's command stack
  (Typer, Rich, numpy, tinygpt's modules), both with the garbage collector off as the CLI does;
- one training step of the book's run (batch, forward, backward, AdamW), one evaluation (the
  book's estimate: 10 batches per split), and a checkpoint save as the training thread sees it
  (`BackgroundSaver.save`: the state serialised into memory) against the same save written in
  the foreground (`checkpoint.save` of the best model, then of the last);
- the random 64-bit words for one step's dropout masks: numpy's SFC64 (`fast.dropout.random_words`)
  against torch's own `random_`;
- autograd nodes behind one training loss, on the speed path (each block one node,
  `fast/block.py`) and through the readable model.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fresh_process(code: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_ms(fn, repeats: int, warmup: int = 3, between=None) -> float:
    """Median milliseconds of fn(); `between` runs untimed after each call."""
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
        if between is not None:
            between()
    return 1000 * statistics.median(times)


def graph_nodes(tensor) -> int:
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack += [child for child, _ in node.next_functions]
    return len(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    n = args.repeats

    gc_off = "import gc; gc.disable(); "
    torch_s = fresh_process(gc_off + "import torch", n)
    stack_s = fresh_process(gc_off + "import torch; import tinygpt_cli.cli, tinygpt_cli.train, "
                            "tinygpt_cli.ui", n)
    print(f"import torch                      {torch_s:8.2f} s")
    print(f"  with tinygpt's command stack    {stack_s:8.2f} s")

    import torch

    from tinygpt_cli import checkpoint as ckpt
    from tinygpt_cli.data import get_batch
    from tinygpt_cli.fast import dropout
    from tinygpt_cli.fast.allocator import keep_freed_memory
    from tinygpt_cli.fast.saver import BackgroundSaver
    from tinygpt_cli.train import Trainer, TrainRequest

    work = Path(tempfile.mkdtemp(prefix="tinygpt-where-"))
    try:
        trainer = Trainer(TrainRequest(out=work / "model.ckpt", data=ROOT / "data" /
                                       "order_items.csv", cache_dir=work / "cache"))
        keep_freed_memory()  # as `tinygpt train` does on a CPU
        gpt, T = trainer.model, trainer.model_config.context_length
        fast_pass = trainer.forward_model  # the speed path's pass, as the trainer calls it
        gpt.train()

        def step() -> None:
            x, y = get_batch(trainer.splits["train"], trainer.cfg.batch_size, T,
                             trainer.batch_gen)
            _, loss = fast_pass(x, y)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
            loss.item()

        print(f"training step                     {median_ms(step, 10 * n, 20):8.1f} ms")
        print(f"evaluation                        {median_ms(trainer.evaluate, n):8.1f} ms")
        best = ckpt.related_path(trainer.out, "best")
        saver = BackgroundSaver()
        # in a run the writes of one save are long done when the next starts (50 steps later)
        in_thread = median_ms(lambda: saver.save(trainer.state(), best, trainer.out), n,
                              between=saver.wait)
        print(f"save, training thread's part      {in_thread:8.1f} ms")
        saver.close()

        def foreground() -> None:
            state = trainer.state()
            ckpt.save(state, best)
            ckpt.save(state, trainer.out)

        print(f"save, all in the foreground       {median_ms(foreground, n):8.1f} ms")

        c, B = trainer.model_config, trainer.cfg.batch_size
        # the words of one step's masks, as dropout.pass_masks draws them: 16 bits a mask entry
        entries = (dropout.causal_packed_shape(c.num_blocks * B * c.num_heads, T).numel()
                   + (2 * c.num_blocks + 1) * B * T * c.d_model)
        words = (entries + 3) // 4
        buffer = torch.empty(words, dtype=torch.int64)
        print(f"random words for a step ({words:,})   "
              f"{median_ms(lambda: dropout.random_words(words), 10 * n):8.2f} ms (SFC64), "
              f"{median_ms(lambda: buffer.random_(-(2**63), None), 10 * n):.2f} ms (torch)")

        x, y = get_batch(trainer.splits["train"], trainer.cfg.batch_size, T, trainer.batch_gen)
        fused_nodes = graph_nodes(fast_pass(x, y)[1])
        module_nodes = graph_nodes(gpt(x, y)[1])
        print(f"autograd nodes behind a loss      {fused_nodes:8d} fast path, {module_nodes} "
              "readable model")
        trainer.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
