"""The training loop: the book's loop (evaluate, batch, forward, zero_grad, backward, step), made
fast, observable, interruptible and resumable.

`Trainer.run()` yields small event objects; `ui.py` turns them into the live table and a plain
reporter prints the book's lines. Nothing here knows about Rich or Typer.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import MODEL_FIELDS, ModelConfig, TrainConfig
from .data import TokenCache, TokenizeSettings, as_tensor, get_batch, max_context_length, prepare
from .errors import CheckpointError, DivergedError, UsageError
from .evaluate import estimate_loss
from .model import GPT
from .optim import AdamW

MAX_BAD_STEPS = 5  # non-finite losses in a row before the run is declared diverged

# Dense bf16 peak FLOP/s (no sparsity) by device name, for the MFU estimate.
# Only GPUs with bfloat16 (what --dtype auto trains in); the first name found in the device name
# wins, so longer names come first.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L40": 181e12,
              "A10G": 70e12, "L4": 121e12, "4090": 165e12, "3090": 71e12}


# --- events ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStarted:
    device: str
    dtype: str
    world_size: int
    params: dict[str, int]
    tokens_per_step: int
    start_step: int
    max_iters: int
    model_config: ModelConfig
    train_config: TrainConfig
    data: dict
    out: Path
    resumed_from: Path | None


@dataclass(frozen=True)
class StepDone:
    step: int
    loss: float
    lr: float
    tokens_per_sec: float
    elapsed: float


@dataclass(frozen=True)
class EvalDone:
    step: int
    train_loss: float
    valid_loss: float
    best: bool
    lr: float
    tokens_per_sec: float
    mfu: float | None
    elapsed: float


@dataclass(frozen=True)
class CheckpointSaved:
    path: Path
    step: int
    best: bool


@dataclass(frozen=True)
class Notice:
    message: str


@dataclass(frozen=True)
class Sample:
    """A short continuation of the sample prompt, so people watch the model learn."""

    step: int
    prompt: str
    text: str


@dataclass(frozen=True)
class RunDone:
    reason: str  # "finished", "interrupted" (see signum) or "max_time"
    steps: int
    final_train_loss: float | None
    final_valid_loss: float | None
    best_valid_loss: float | None
    best_step: int | None
    seconds: float
    tokens_per_sec: float
    mfu: float | None
    checkpoint: Path
    signum: int | None = None


Event = RunStarted | StepDone | EvalDone | CheckpointSaved | Notice | Sample | RunDone


# --- pure helpers ------------------------------------------------------------------------------

def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at `step`: linear warmup, then constant, cosine or linear decay to min_lr."""
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    progress = min(1.0, (step - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters))
    if cfg.lr_schedule == "cosine":
        scale = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        scale = 1.0 - progress
    return cfg.min_lr + scale * (cfg.learning_rate - cfg.min_lr)


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


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def check_writable(path: Path) -> None:
    """Fail before training, not after 500 steps, if the checkpoint cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=path.parent, prefix=".probe-").close()
    except OSError as exc:
        raise UsageError(f"cannot write the checkpoint {path}: {exc.strerror or exc}",
                         hint="pass --out to a writable location") from None
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory; give a file path such as "
                         f"{path / 'model.ckpt'}")


# --- interrupts --------------------------------------------------------------------------------

class StopSignals:
    """First SIGINT/SIGTERM: ask the loop to stop after the current step. Second: stop now."""

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
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # the second one: leave at once; checkpoints are atomic
        self.signum = signum


# --- distributed -------------------------------------------------------------------------------

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


# --- the trainer -------------------------------------------------------------------------------

@dataclass
class TrainRequest:
    """What the user asked for. Model options left out come from --resume's checkpoint, else the
    book's defaults."""

    train_config: TrainConfig = field(default_factory=TrainConfig)
    model_options: dict = field(default_factory=dict)
    data: Path | None = None
    tokenize: TokenizeSettings = field(default_factory=TokenizeSettings)
    cache_dir: Path | None = None
    out: Path = Path("model/model.ckpt")
    resume: Path | None = None
    compile_mode: str = "default"
    sample_every: int = 0  # steps between samples shown while training; 0 = never
    sample_prompt: str = "\n"
    sample_tokens: int = 48


class Trainer:
    """Sets a run up (data, model, optimizer, resume) and runs the loop as an event stream."""

    def __init__(self, request: TrainRequest, cache: TokenCache | None = None,
                 tokenize_progress=None) -> None:
        from .config import COMPILE_MODES

        if request.compile_mode not in COMPILE_MODES:
            raise UsageError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)} "
                             f"(got {request.compile_mode!r})")
        self.request = request
        self.cfg = request.train_config
        self.dist = Dist.from_env()
        self.device = resolve_device(self.cfg.device, self.dist.local_rank)
        self.dtype = resolve_dtype(self.cfg.dtype, self.device)
        self.out = Path(request.out)
        if self.dist.main:
            check_writable(self.out)
            ckpt.remove_stale_temporaries(self.out)
        self.notices: list[str] = []
        self.saver = ckpt.BackgroundSaver()
        self._saving: list[tuple[Future | None, list[CheckpointSaved]]] = []  # not yet reported
        self.dist.init(self.device)
        try:
            self._setup(request, cache, tokenize_progress)
        except BaseException:
            self.dist.close()  # a bad resume or context length must not leak the process group
            raise

    def _setup(self, request: TrainRequest, cache: TokenCache | None, tokenize_progress) -> None:
        state = ckpt.load(request.resume) if request.resume else None  # fail before tokenizing

        if cache is None:
            # the first process of each machine builds the cache (if needed) while the others
            # wait, then they find it and only load it
            builder = (self.dist.local_rank or 0) == 0
            if not builder:
                self.dist.barrier()
            cache = prepare(request.data, request.tokenize, cache_root=request.cache_dir,
                            progress=tokenize_progress if self.dist.main else None)
            if builder:
                self.dist.barrier()
        self.cache = cache
        self.notices += self.cache.warnings
        self.model_config = self._model_config(state)
        self._check_context()

        torch.manual_seed(self.cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model = GPT(self.model_config).to(self.device)
        if self.dist.enabled:  # same initial weights (DDP broadcasts them), own dropout masks
            torch.manual_seed(self.cfg.seed + self.dist.rank)
        # torch's AdamW update (fused kernel on CUDA and CPU) without torch.optim's machinery
        self.optimizer = AdamW(self.model.parameters(), lr=self.cfg.learning_rate,
                               weight_decay=self.cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.dtype == torch.float16)
        self.batch_gen = torch.Generator(device=self.device)
        self.batch_gen.manual_seed(self.cfg.seed + self.dist.rank)
        self.step = 0
        self.best_valid: float | None = None
        self.best_step: int | None = None
        self.last_losses: tuple[float, float] | None = None
        self.evaluated_step: int | None = None
        if state is not None:
            self._restore(state)

        self.splits = {"train": as_tensor(self.cache.train, self.device),
                       "valid": as_tensor(self.cache.valid, self.device)}
        self.eager_model: torch.nn.Module = self.model  # what runs if compilation fails
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.eager_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.forward_model = self.eager_model
        if self.cfg.compile:
            self.forward_model = torch.compile(self.forward_model, mode=request.compile_mode)
        self._compiled_ok = not self.cfg.compile

    # setup helpers

    def _model_config(self, state: dict | None) -> ModelConfig:
        base = ckpt.model_config_from(state) if state is not None else None
        options = {k: v for k, v in self.request.model_options.items() if v is not None}
        unknown = set(options) - MODEL_FIELDS
        if unknown:
            raise UsageError(f"unknown model options: {', '.join(sorted(unknown))}")
        if base is not None:
            return replace(base, **options)
        return ModelConfig(vocab_size=self.cache.vocab.size, **options)

    def _check_context(self) -> None:
        fits = max_context_length(self.cache)
        T = self.model_config.context_length
        if fits < T:
            short = "validation" if len(self.cache.valid) <= len(self.cache.train) else "training"
            fraction = "raise" if short == "validation" else "lower"
            advice = (f"use --context-length {fits} or less" if fits >= 1
                      else f"{fraction} --val-fraction or use more text")
            raise UsageError(f"--context-length {T} needs {T + 1} tokens in each split, but the "
                             f"{short} split has {fits + 1}: {advice}")

    def _restore(self, state: dict) -> None:
        found = ckpt.differences(state, model_config=self.model_config, vocab=self.cache.vocab,
                                 data_sha256=self.cache.meta["source"]["sha256"])
        if found:
            raise CheckpointError(f"cannot resume from {self.request.resume}: "
                                  + "; ".join(found),
                                  hint="resume with the same data, tokenizer and model options, "
                                  "or start a new run with another --out")
        self.model.load_state_dict(state["model_state_dict"])
        try:
            self.optimizer.load_state_dict(state["optimizer_state_dict"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot resume from {self.request.resume}: its optimizer "
                                  f"state does not fit ({exc})") from None
        for group in self.optimizer.param_groups:  # load_state_dict brought the old run's back
            group["weight_decay"] = self.cfg.weight_decay
        self.step = int(state["step"])
        self.best_valid = state.get("best_valid_loss")
        self.best_step = state.get("best_step")
        self.evaluated_step = state.get("evaluated_step")
        # a resume that starts at its last evaluation still reports those losses at the end
        self.last_losses = tuple(state["last_losses"]) if state.get("last_losses") else None
        if self.step >= self.cfg.max_iters:
            raise UsageError(f"{self.request.resume} has already done {self.step} steps; "
                             f"--max-iters is the total, so raise it above {self.step}")
        rng = state.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and rng.get("cuda"):
            try:
                torch.cuda.set_rng_state_all(rng["cuda"])
            except (IndexError, RuntimeError):
                self.notices.append("the checkpoint's CUDA random state is from another GPU "
                                    "setup: dropout is reseeded")
        if "python" in rng:
            random.setstate(_as_tuple(rng["python"]))
        gens = rng.get("batch_generators", [])
        restored = False
        if len(gens) == self.dist.world_size:
            try:  # a CPU generator's state does not fit a CUDA one (another device type)
                self.batch_gen.set_state(gens[self.dist.rank])
                restored = True
            except RuntimeError:
                pass
        if not restored:
            self.notices.append(f"the checkpoint's batch order is from {len(gens)} process(es) on "
                                f"another setup; this run ({self.dist.world_size} on "
                                f"{self.device.type}) reseeds it, so it will not repeat an "
                                "uninterrupted run exactly")
            self.batch_gen.manual_seed(self.cfg.seed + self.dist.rank + self.step)
        if "scaler" in state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])

    # the loop

    def autocast(self) -> AbstractContextManager:
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward through the compiled model, falling back to eager if compilation fails."""
        with self.autocast():
            if self._compiled_ok:
                return self.forward_model(x, y)[1]
            try:
                loss = self.forward_model(x, y)[1]
                self._compiled_ok = True
                return loss
            except Exception as exc:  # compiler missing or failing: keep training uncompiled
                self.notices.append(f"torch.compile failed ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                                    "continuing without --compile")
                self.forward_model = self.eager_model
                self._compiled_ok = True
                return self.forward_model(x, y)[1]

    def evaluate(self) -> tuple[float, float]:
        # the plain module: evaluation needs no gradient sync, and a compiled graph for no-grad
        # mode would cost a second compilation for 2 x eval_iters batches
        means = estimate_loss(
            self.model, self.splits, batch_size=self.cfg.batch_size,
            context_length=self.model_config.context_length, eval_iters=self.cfg.eval_iters,
            seed=(self.cfg.seed * 1_000_003 + self.step * 101 + self.dist.rank) % 2**63,
            autocast=self.autocast())
        train_loss, valid_loss = self.dist.all_mean(means).tolist()
        return train_loss, valid_loss

    def train_step(self, lr: float) -> torch.Tensor:
        """One optimizer step over grad_accum micro-batches; returns the mean loss (on device)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        T = self.model_config.context_length
        for micro in range(self.cfg.grad_accum):
            x, y = get_batch(self.splits["train"], self.cfg.batch_size, T, self.batch_gen)
            last = micro == self.cfg.grad_accum - 1
            sync = nullcontext() if last or not self.dist.enabled else self.forward_model.no_sync()
            with sync:
                loss = self._forward(x, y) / self.cfg.grad_accum
                self.scaler.scale(loss).backward()
            total += loss.detach().float()
        return total

    def apply_update(self) -> None:
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state(self) -> dict:
        """Everything needed to continue exactly: weights, optimizer, step, and every RNG."""
        rng = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "batch_generators": self.dist.gather(self.batch_gen.get_state().cpu()),
        }
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "model_state_dict": self.model.state_dict(),
            # the book's h_params name the device the run used ("cuda"), never "auto"
            "h_params": {**asdict(self.model_config), **asdict(self.cfg),
                         "device": self.device.type, "max_token_value": self.cache.vocab.size},
            "model_config": asdict(self.model_config),
            "train_config": asdict(self.cfg),
            "tokenizer": ckpt.tokenizer_state(self.cache.vocab),
            "data": {"path": self.cache.meta["source"]["path"],
                     "sha256": self.cache.meta["source"]["sha256"],
                     "settings": self.cache.meta["settings"],
                     "train_tokens": len(self.cache.train), "valid_tokens": len(self.cache.valid),
                     "train_bytes": self.cache.meta["splits"]["train"]["bytes"],
                     "valid_bytes": self.cache.meta["splits"]["valid"]["bytes"]},
            "optimizer_state_dict": self.optimizer.state_dict(),
            "step": self.step,
            "best_valid_loss": self.best_valid,
            "best_step": self.best_step,
            "evaluated_step": self.evaluated_step,  # so a resume does not repeat that evaluation
            "last_losses": list(self.last_losses) if self.last_losses else None,
            "rng": rng,
            "world_size": self.dist.world_size,
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def save(self, *paths: Path) -> None:
        """Save the run to each path (the best model first, if it is one of them) in the
        background (`checkpoint.BackgroundSaver`); their CheckpointSaved events wait in
        `_saving` until the files are in place (`_saved`)."""
        state = self.state()  # every rank joins the gather
        # every rank checks (DDP keeps the weights identical) so that all stop together
        if not ckpt.all_finite(state["model_state_dict"]):
            raise DivergedError(
                f"training diverged at step {self.step}: the weights are no longer finite; the "
                f"last good checkpoint is {paths[-1]}", hint="lower --learning-rate, set "
                "--grad-clip 1.0, or use --dtype float32")
        future = self.saver.save(state, *paths) if self.dist.main else None
        best = ckpt.related_path(self.out, "best")
        self._saving.append((future, [CheckpointSaved(p, self.step, p == best) for p in paths]))

    def _saved(self, wait: bool) -> Iterator[CheckpointSaved]:
        """The CheckpointSaved events of the saves now on disk, in order; with `wait`, of every
        save so far, and a failed write is raised. Each save is reported before the next one
        starts, so the file an event names holds that save. (Processes other than the first
        write nothing: their events come at once.)"""
        while self._saving:
            future, events = self._saving[0]
            if not wait and future is not None and (not future.done() or future.exception()):
                break  # in flight, or failed: `_settle_saves` stops every process for that
            self._saving.pop(0)
            if future is not None:
                future.result()
            yield from events

    def _save_failed(self) -> bool:
        return any(future is not None and future.done() and future.exception() is not None
                   for future, _ in self._saving)

    def _settle_saves(self) -> Iterator[CheckpointSaved]:
        """Wait for every save in flight and report it. If a write failed, every process stops
        (all of them call this): process 0 with the error, the others saying so."""
        error = None
        try:
            events = list(self._saved(wait=True))
        except CheckpointError as exc:
            events, error = [], exc
        failed = error is not None
        if self.dist.enabled:
            failed = self.dist.all_max(torch.tensor(float(failed), device=self.device)).item() > 0
        if failed:
            raise error or CheckpointError("process 0 could not write a checkpoint (its error "
                                           "says why); every process stops")
        yield from events

    def run(self) -> Iterator[Event]:
        """The book's loop, as a stream of events. Saves at each evaluation and at the end."""
        cfg, T = self.cfg, self.model_config.context_length
        tokens_per_step = cfg.batch_size * T * cfg.grad_accum * self.dist.world_size
        flops_per_token = self.model.flops_per_token()
        peak = peak_flops(self.device)
        yield RunStarted(str(self.device), str(self.dtype).replace("torch.", ""),
                         self.dist.world_size, self.model.num_params(), tokens_per_step,
                         self.step, cfg.max_iters, self.model_config, cfg,
                         dict(self.cache.meta["source"]), self.out, self.request.resume)
        yield from self._drain_notices()
        metrics = MetricsWriter(ckpt.related_path(self.out, "metrics"),
                                resume_step=self.step if self.request.resume else None,
                                evaluated_step=self.evaluated_step, enabled=self.dist.main)
        started = time.perf_counter()
        train_time, train_tokens = 0.0, 0
        window_losses: list[float] = []
        bad_steps = 0
        reason, signum = "finished", None
        self.model.train()
        # whatever ends the loop (an error, a second Ctrl-C), the saves already made reach the disk
        with StopSignals() as stop, metrics, closing(self.saver):
            while self.step < cfg.max_iters:
                step, lr = self.step, lr_at(self.step, cfg)
                tps = train_tokens / train_time if train_time else 0.0
                if (step % cfg.eval_interval == 0 or step == cfg.max_iters - 1) \
                        and step != self.evaluated_step:
                    yield from self._evaluate(step, lr, tps, peak, flops_per_token, started,
                                              metrics)
                    yield from self._drain_notices()
                t0 = time.perf_counter()
                loss = self.train_step(lr)
                # one sync per step: the loss decides whether this update may be applied, and
                # under DDP every rank must agree on that and on stopping
                flags = torch.cat([loss.view(1), torch.tensor(
                    [float(stop.signum is not None or self._out_of_time(started)),
                     float(self._save_failed())], device=self.device)])
                loss_value, stop_flag, save_failed = self.dist.all_mean(flags).tolist()
                if save_failed > 0:
                    yield from self._settle_saves()  # raises, in every process
                if math.isfinite(loss_value):
                    self.apply_update()
                    bad_steps = 0
                    window_losses.append(loss_value)
                else:
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.scaler.is_enabled():  # back off as the scaler would on inf grads
                        self.scaler.update(self.scaler.get_scale()
                                           * self.scaler.get_backoff_factor())
                    bad_steps += 1
                    yield Notice(f"step {step}: the loss is {loss_value}; skipped this update "
                                 f"({bad_steps} in a row)")
                    if bad_steps >= MAX_BAD_STEPS:
                        yield from self._settle_saves()  # the last good checkpoint, on disk
                        raise DivergedError(
                            f"training diverged: {bad_steps} non-finite losses in a row at step "
                            f"{step}; the last good checkpoint is {self.out}",
                            hint="lower --learning-rate, set --grad-clip 1.0, or use "
                            "--dtype float32")
                train_time += time.perf_counter() - t0  # .tolist() above waited for the step
                train_tokens += tokens_per_step
                self.step += 1
                if self.step % cfg.log_interval == 0 and window_losses:
                    event = StepDone(step, sum(window_losses) / len(window_losses), lr,
                                     train_tokens / train_time, time.perf_counter() - started)
                    metrics.write({"type": "train", **_record(event)})
                    window_losses.clear()
                    yield event
                yield from self._saved(wait=False)
                every = self.request.sample_every
                if every and self.dist.main and self.step % every == 0:
                    sample = self.sample(self.step)
                    metrics.write({"type": "sample", "step": self.step, "text": sample.text})
                    yield sample
                if stop_flag > 0:
                    signum = stop.signum
                    reason = "interrupted" if signum is not None else "max_time"
                    break
            yield from self._settle_saves()
            self.save(self.out)
            yield from self._settle_saves()  # so no process leaves while process 0 still saves
        tps = train_tokens / train_time if train_time else 0.0
        final = self.last_losses or (None, None)
        mfu = flops_per_token * tps / (peak * self.dist.world_size) if peak else None
        yield RunDone(reason, self.step, final[0], final[1], self.best_valid, self.best_step,
                      time.perf_counter() - started, tps, mfu, self.out, signum)

    def _evaluate(self, step, lr, tps, peak, flops_per_token, started, metrics) -> Iterator[Event]:
        train_loss, valid_loss = self.evaluate()
        self.last_losses, self.evaluated_step = (train_loss, valid_loss), step
        is_best = math.isfinite(valid_loss) and (self.best_valid is None
                                                 or valid_loss < self.best_valid)
        if is_best:
            self.best_valid, self.best_step = valid_loss, step
        mfu = flops_per_token * tps / (peak * self.dist.world_size) if peak and tps else None
        event = EvalDone(step, train_loss, valid_loss, is_best, lr, tps, mfu,
                         time.perf_counter() - started)
        metrics.write({"type": "eval", **_record(event)})
        yield event
        yield from self._settle_saves()  # the last evaluation's save, before this one starts
        if is_best:  # best first: a crash between the two leaves the older checkpoint to resume
            self.save(ckpt.related_path(self.out, "best"), self.out)  # one snapshot, two files
        else:
            self.save(self.out)

    def sample(self, step: int) -> Sample:
        """A short greedy-ish continuation of the sample prompt, drawn from its own generator."""
        from .sampling import generate_ids

        vocab = self.cache.vocab
        prompt = self.request.sample_prompt or "\n"
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        ids = generate_ids(self.model, vocab.encode(prompt), self.request.sample_tokens,
                           temperature=0.8, top_k=None, top_p=0.95, generator=generator)
        return Sample(step, prompt, vocab.decode(ids))

    def _out_of_time(self, started: float) -> bool:
        return self.cfg.max_time > 0 and time.perf_counter() - started > self.cfg.max_time

    def _drain_notices(self) -> Iterator[Notice]:
        while self.notices:
            yield Notice(self.notices.pop(0))

    def close(self) -> None:
        self.saver.close()
        self.dist.close()


def _as_tuple(value):
    """random.setstate wants nested tuples; a checkpoint round trip may hand back lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def _record(event: StepDone | EvalDone) -> dict:
    record = asdict(event)
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()}


class MetricsWriter:
    """JSON lines beside the checkpoint: one record per evaluation and per log interval.

    A resumed run keeps the records up to its checkpoint and drops any written after it (by a run
    that went on and was then killed), so the file never holds a step twice.
    """

    def __init__(self, path: Path, resume_step: int | None = None,
                 evaluated_step: int | None = None, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self.resume_step, self.evaluated_step = resume_step, evaluated_step
        self._file = None

    def _kept_lines(self) -> list[str]:
        if self.resume_step is None or not self.path.exists():
            return []
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                step = int(record["step"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut off by a crash
            kind = record.get("type")
            # an evaluation at the resume step ran before its checkpoint was saved, and a sample
            # at it after the step that led there: neither is repeated by the resumed run
            if step < self.resume_step or (step == self.evaluated_step and kind == "eval") \
                    or (step == self.resume_step and kind == "sample"):
                kept.append(line + "\n")
        return kept

    def __enter__(self) -> MetricsWriter:
        if self.enabled:
            kept = self._kept_lines()
            self._file = open(self.path, "w", encoding="utf-8")
            self._file.writelines(kept)
        return self

    def write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
