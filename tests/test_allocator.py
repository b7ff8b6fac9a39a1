from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tinygpt_cli.allocator import is_glibc

# Minor page faults of the median training step of the book's model (random tokens, CPU), after
# warm-up, in a fresh process with or without the tuning.
PROBE = """
import resource, sys
import torch
from tinygpt_cli.allocator import keep_freed_memory
from tinygpt_cli.config import ModelConfig
from tinygpt_cli.model import GPT
from tinygpt_cli.optim import AdamW

applied = keep_freed_memory() if sys.argv[1] == "tuned" else None
torch.manual_seed(0)
model = GPT(ModelConfig(vocab_size=1728, d_model=80, num_blocks=6, num_heads=4,
                        context_length=128, dropout=0.1))
opt = AdamW(model.parameters())
x, y = torch.randint(1728, (2, 2, 128))

def step():
    opt.zero_grad(set_to_none=True)
    model(x, y)[1].backward()
    opt.step()

for _ in range(10):
    step()
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sorted(faults)[len(faults) // 2])  # the median step
"""


def faults_per_step(mode: str) -> tuple[str, int]:
    applied, faults = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True,
                                     text=True, check=True).stdout.split()
    return applied, int(faults)


TUNED_ALREADY = bool(os.environ.get("LD_PRELOAD") or os.environ.get("GLIBC_TUNABLES")
                     or any(k.startswith("MALLOC_") for k in os.environ))


@pytest.mark.skipif(not is_glibc(), reason="tunes glibc's malloc only")
@pytest.mark.skipif(TUNED_ALREADY, reason="another allocator or malloc settings from the "
                    "environment")
def test_training_steps_reuse_freed_memory_without_page_faults():
    _, untuned = faults_per_step("default")
    applied, tuned = faults_per_step("tuned")
    assert applied == "True"
    assert untuned > 50  # fresh pages, zeroed by the kernel, every step (220-1500 seen)
    assert tuned < 10  # the same pages again


def test_elsewhere_it_does_nothing(monkeypatch):
    from tinygpt_cli import allocator

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator.sys, "platform", "linux")

    def musl(name):  # Alpine: no such configuration name
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(allocator.os, "confstr", musl)
    assert allocator.is_glibc() is False and allocator.keep_freed_memory() is False
