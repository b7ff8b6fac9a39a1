"""Where and how a run executes: the device, the compute dtype, torchrun's processes, and the
signals that stop a run. Resolved once per command and passed down; nothing here trains.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from dataclasses import dataclass

import torch

from .errors import Interrupted, UsageError

# Dense bf16 peak FLOP/s (no sparsity) by device name, for the MFU estimate.
# Only GPUs with bfloat16 (what --dtype auto trains in); the first name found in the device name
# wins, so longer names come first.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L40": 181e12,
              "A10G": 70e12, "L4": 121e12, "4090": 165e12, "3090": 71e12}


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is not there is a usage error."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name not in ("cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d+", name):
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            built = "with" if torch.version.cuda else "without"
            raise UsageError(f"--device {name}: no CUDA device is available (this torch "
                             f"{torch.__version__} is built {built} CUDA)",
                             hint="use --device cpu, or --device auto to pick what is there")
        if name == "cuda" and local_rank is not None:
            name = f"cuda:{local_rank}"
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s), numbered from 0")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: Apple's Metal backend is not available here",
                         hint="use --device cpu, or --device auto")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 autocast on a CUDA device that supports it, else float32."""
    if name == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--dtype bfloat16: {torch.cuda.get_device_name(device)} does not "
                         "support bfloat16", hint="use --dtype float16 (with a gradient scaler) "
                         "or float32")
    if dtype != torch.float32 and device.type == "mps":
        raise UsageError(f"--dtype {name} is not supported on mps by tinygpt",
                         hint="use --dtype float32")
    return dtype


def check_threads(threads: int | None) -> None:
    """--threads: at least 1 and at most the machine's cores (more only wait on each other)."""
    cores = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cores:
        raise UsageError(f"--threads must be from 1 to {cores}, the cores this machine has "
                         f"(got {threads:,})")


def memory_bytes(device: torch.device | None = None) -> int | None:
    """The memory a run on `device` has: a GPU's own, else the machine's physical memory, where
    the platform says (Linux, macOS)."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device is not None and device.type not in ("cpu", "cuda"):
        return None  # mps shares the machine's memory in ways it does not say
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def training_memory(params: int, config, batch_size: int, eval_iters: int,
                    attention_weights: bool = True) -> int:
    """A rough upper estimate, in bytes, of what training a model of `params` parameters and
    shape `config` (a ModelConfig) takes in float32: the weights, their gradients and AdamW's two
    moments, one micro-batch's activations (each block's and the logits, kept for backward; with
    `attention_weights`, the (T, T) weights per head that a CPU's attention keeps, which a GPU's
    fused kernels do not), and the evaluation's windows. Good for refusing sizes that cannot fit,
    not for planning."""
    B, T, C = batch_size, config.context_length, config.d_model
    attention = 3 * config.num_heads * T if attention_weights else 0
    per_token = config.num_blocks * (24 * C + attention) + 3 * config.vocab_size
    return 16 * params + 4 * B * T * per_token + 16 * eval_iters * B * (T + 1)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


class StopSignals:
    """First SIGINT/SIGTERM: ask the run to stop at the next point where it can save (after the
    current step, or within one forward pass of an evaluation). Second: stop now."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:  # None: set from C, and Python cannot put it back
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise Interrupted(signum)  # the second one: leave at once; checkpoints are atomic
        self.signum = signum

    def __call__(self) -> bool:
        """Whether a stop was asked for: the check long work makes between its pieces."""
        return self.signum is not None


@dataclass
class Dist:
    """torchrun's environment: rank, world size, and whether this process is the one that talks."""

    rank: int = 0
    local_rank: int | None = None
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)

    def init(self, device: torch.device) -> None:
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            torch.distributed.init_process_group(backend=backend)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def all_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            tensor = tensor.clone()
            torch.distributed.all_reduce(tensor)
            tensor /= self.world_size
        return tensor

    def all_max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            tensor = tensor.clone()
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tensor

    def gather(self, obj: object) -> list:
        if not self.enabled:
            return [obj]
        gathered: list = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
