"""The speed path: code that exists only to make training and sampling faster on a CPU.

`model.py` is the book's GPT as people read it. Everything in this package computes the same
functions faster where tinygpt mostly runs (a CPU, in float32), and tests/test_fast.py holds each
piece to the readable path:

- `training`: the training pass, with every dropout mask of a pass from one packed draw
  (`dropout`) and each block one autograd node with a hand-written backward (`block`);
- `decode`: one new token after a KV-cached prefix, on plain vectors;
- `optim`: torch's fused AdamW update without torch.optim.Optimizer's machinery;
- `allocator`: glibc's malloc told to keep freed memory for the next step;
- `saver`: checkpoints written on a background thread while training goes on.

One switch decides whether a run uses it: `decide`, called once by the trainer and once by
`tinygpt generate` (`--fast/--no-fast`, on by default where it applies). The model never asks.
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from .optim import make_optimizer
from .training import TrainingPass

__all__ = ["TrainingPass", "decide", "make_optimizer", "unavailable"]

FAST_DTYPES = (torch.float32, torch.float64)


def unavailable(device: torch.device, dtype: torch.dtype, compiled: bool = False) -> str | None:
    """Why the speed path does not apply to a run on `device` computing in `dtype` (the
    autocast dtype, float32 for none), or None where it does. It is written for the CPU in full
    precision: CUDA and autocast have fused kernels of their own, and torch.compile traces the
    readable model."""
    if device.type != "cpu":
        return f"it is written for the CPU, and this run is on {device.type}"
    if dtype not in FAST_DTYPES:
        return f"it computes in float32 or float64, and this run in {str(dtype).split('.')[-1]}"
    if compiled:
        return "torch.compile traces the readable model"
    return None


def decide(requested: bool | None, device: torch.device, dtype: torch.dtype,
           compiled: bool = False) -> bool:
    """Whether a run uses the speed path: `requested` (True for --fast, False for --no-fast) or,
    when None, wherever it applies. An explicit --fast where it cannot apply is a usage error."""
    reason = unavailable(device, dtype, compiled)
    if requested is None:
        return reason is None
    if requested and reason is not None:
        raise UsageError(f"--fast does not apply here: {reason}",
                         hint="leave --fast out (it is on wherever it applies) or use --no-fast")
    return requested
