"""Where and how a run executes: the device, the compute dtype, torchrun's processes, and the
signals that stop a run. Resolved once per command and passed down; nothing here trains.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
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


def cores() -> int:
    """The cores this process may run on (a container's or taskset's share, where the platform
    says), else the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_threads(value: str | int | None) -> int | None:
    """--threads: None for auto, or a count from 1 to the cores (more only wait on each other;
    a huge count would make OpenMP allocate for it)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--threads must be auto or a whole number (got {value!r})") from None
    if not 1 <= count <= cores():
        raise UsageError(f"--threads must be auto or from 1 to {cores()}, the cores this "
                         f"process may use (got {count:,})")
    return count


def auto_thread_limit(local_world_size: int = 1) -> int:
    """The most threads --threads auto tries: this process's share of the cores (under torchrun,
    the cores over the processes of this machine), and never more than OMP_NUM_THREADS where it
    is set (torchrun sets it to 1 for each process unless it is set already)."""
    limit = max(1, cores() // max(1, local_world_size))
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        limit = min(limit, int(omp))
    return limit


# --threads auto: each candidate count runs PROBE_UNITS units of the command's own work (training
# steps, tokens, evaluation passes) and the fastest median wins (within TIE of it, the fewest
# threads, which stay fast when the load grows). The choice is measured again when its pace
# falls to 1/SLOWER of what it was, and every RECHECK_SECONDS (doubling, up to 16x, while the
# choice holds), so a machine that gets busy, or idle again, is followed.
PROBE_UNITS = 3
TIE = 1.02
SLOWER = 1.3
RECHECK_SECONDS = 10.0


class Threads:
    """The intra-op threads a command's work runs on: a fixed count (--threads N), or auto,
    which measures. The work calls `start()` before each unit and `stop()` after it (or
    `tick()` between units); between units the count may change. Nothing changes threads on a
    GPU, where they are not what the work waits for."""

    def __init__(self, candidates: list[int] | None, *,
                 apply: Callable[[int], None] = torch.set_num_threads,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.candidates = candidates or []
        self.auto = len(self.candidates) > 1
        self._apply, self.clock = apply, clock
        self.count = self.candidates[-1] if self.candidates else None  # what runs now
        self.choice: int | None = None if self.auto else self.count
        self.changes: list[tuple[int | None, int, dict[int, float]]] = []  # (from, to, medians)
        self._queue = list(reversed(self.candidates)) if self.auto else []  # counts to measure
        self._times: dict[int, list[float]] = {}
        self._recent: list[float] = []
        self._pace = 0.0  # the choice's median unit time when it was chosen
        self._interval, self._next_check = RECHECK_SECONDS, math.inf
        self._started: float | None = None
        self._first = True  # the process's first unit (allocation, warm caches) is not measured
        if self.count is not None:
            self._apply(self.count)

    @classmethod
    def resolve(cls, value: int | None, device: torch.device, local_world_size: int = 1,
                **kwargs) -> Threads:
        """`value` from parse_threads (None: auto). Under torchrun, auto is each process's
        share, fixed: a process's step time there includes waiting for the others."""
        if device.type != "cpu":
            return cls([value] if value else None, **kwargs)
        if value is not None:
            return cls([value], **kwargs)
        limit = auto_thread_limit(local_world_size)
        if local_world_size > 1:
            return cls([limit], **kwargs)
        counts = sorted({1, limit} | {2**k for k in range(limit.bit_length()) if 2**k < limit})
        return cls(counts, **kwargs)

    def start(self) -> None:
        if self.auto:
            count = self._queue[0] if self._queue else self.choice
            if count != self.count:
                self.count = count
                self._apply(count)
            self._started = self.clock()

    def stop(self, discard: bool = False) -> None:
        """The unit of work ended; `discard`: something else of this process ran beside it (a
        checkpoint written in the background), so its time says nothing of the thread count."""
        if not self.auto or self._started is None:
            return
        seconds, self._started = self.clock() - self._started, None
        if self._first or discard:
            self._first = False
        elif self._queue:
            times = self._times.setdefault(self.count, [])
            times.append(seconds)
            if len(times) >= PROBE_UNITS:
                self._queue.pop(0)
                if not self._queue:
                    self._choose()
        else:
            self._recent = (self._recent + [seconds])[-PROBE_UNITS:]
            slower = len(self._recent) == PROBE_UNITS \
                and _median(self._recent) > SLOWER * self._pace
            if slower or self.clock() >= self._next_check:
                self._measure_again(reset=slower)

    def tick(self) -> None:
        self.stop()
        self.start()

    def _choose(self) -> None:
        medians = {count: _median(times) for count, times in self._times.items()}
        fastest = min(medians.values())
        choice = min(count for count, m in medians.items() if m <= TIE * fastest)
        if choice == self.choice:
            self._interval = min(16 * RECHECK_SECONDS, 2 * self._interval)
        else:
            self.changes.append((self.choice, choice, medians))
            self._interval = RECHECK_SECONDS
        self.choice, self._pace, self._times, self._recent = choice, medians[choice], {}, []
        self._next_check = self.clock() + self._interval

    def _measure_again(self, reset: bool) -> None:
        """Measure the choice and its neighbours again (the choice last: it runs now, and the
        others' first unit would otherwise pay for the switch)."""
        i = self.candidates.index(self.choice)
        self._queue = [c for c in self.candidates[max(0, i - 1):i + 2] if c != self.choice]
        self._queue.append(self.choice)
        if reset:
            self._interval = RECHECK_SECONDS


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


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


def reset_peak_memory(device: torch.device) -> None:
    """Start `peak_memory`'s count here (a run after `--preset auto`'s probe of larger models):
    on a GPU torch's own counter; on Linux the process's high-water mark (clear_refs 5)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:  # not Linux, or not allowed: the peak is then the process's
        pass


def peak_memory(device: torch.device) -> tuple[int | None, str]:
    """The most memory the run has held, in bytes, and what was measured: on a GPU the tensors
    torch allocated there; elsewhere the process's peak resident memory (Python and torch
    included), where the platform says."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "GPU tensors"
    try:
        with open("/proc/self/status") as file:  # Linux: VmHWM honours reset_peak_memory
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "process resident"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None, "unknown"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024), "process resident"


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
