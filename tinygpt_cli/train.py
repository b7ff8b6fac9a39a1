"""The training loop: the book's loop (evaluate, batch, forward, zero_grad, backward, step),
made observable, interruptible and resumable.

`Trainer.run()` yields small event objects (`events.py`); `ui.py` turns them into the live table
and a plain reporter prints the book's lines. Nothing here knows about Rich or Typer. Where the
run executes is `runtime.py`'s, what a checkpoint holds `runstate.py`'s, the metrics file
`metrics.py`'s, and the speed path `fast/`'s, switched on or off once, here.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import fast, outputs, runstate
from .config import COMPILE_MODES, MODEL_FIELDS, ModelConfig, TrainConfig
from .data import TokenCache, TokenizeSettings, as_tensor, get_batch, max_context_length, prepare
from .errors import CheckpointError, DivergedError, UsageError
from .evaluate import (
    Stopped,
    bits_per_byte,
    estimate_loss,
    evaluation_seed,
    full_split,
    window_batch_size,
)
from .events import (
    CheckpointSaved,
    EvalDone,
    Event,
    Notice,
    RunDone,
    RunStarted,
    Sample,
    StepDone,
)
from .metrics import MetricsWriter, record, rounded
from .model import GPT
from .runtime import (
    Dist,
    StopSignals,
    Threads,
    memory_bytes,
    peak_flops,
    peak_memory,
    reset_peak_memory,
    resolve_device,
    resolve_dtype,
    training_memory,
)

MAX_BAD_STEPS = 5  # non-finite losses in a row before the run is declared diverged
# A --max-time run's plan: from the wall time of its steps since its first WARMUP_STEPS (the
# first steps of a run are slow: allocation, compilation), so evaluations, saves and everything
# else a step costs are in the measure in their share; made after PLAN_EVERY steps, then every
# PLAN_EVERY steps and at the planned last step.
WARMUP_STEPS = 3
PLAN_EVERY = 10
# The report card scores every validation token when that takes at most FULL_PASS_SECONDS or
# FULL_PASS_SHARE of the run, whichever is more (of a --max-time budget: FULL_PASS_SHARE);
# else it reports the last estimate.
FULL_PASS_SECONDS = 5.0
FULL_PASS_SHARE = 0.05


def plan_steps(*, step: int, max_iters: int, seconds_left: float, step_seconds: float,
               finish_seconds: float) -> int:
    """The step a --max-time run can reach in `seconds_left`, each step costing `step_seconds`
    (wall time, evaluations and saves included), keeping `finish_seconds` for the end (the last
    evaluation and save). Never beyond --max-iters, never before the next step."""
    affordable = step + int(max(0.0, seconds_left - finish_seconds) / step_seconds) \
        if step_seconds > 0 else max_iters
    return max(step + 1, min(max_iters, affordable))


def lr_at(step: int, cfg: TrainConfig, total: int | None = None) -> float:
    """Learning rate at `step`: linear warmup, then constant, cosine or linear decay to min_lr
    at `total` steps (default --max-iters; a --max-time budget plans its own, `plan_steps`)."""
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    total = cfg.max_iters if total is None else total
    progress = min(1.0, (step - cfg.warmup_iters) / max(1, total - cfg.warmup_iters))
    if cfg.lr_schedule == "cosine":
        scale = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        scale = 1.0 - progress
    return cfg.min_lr + scale * (cfg.learning_rate - cfg.min_lr)


def check_writable(path: Path) -> None:
    """Fail before training, not after 500 steps, if the checkpoint cannot be written."""
    # os.path's tests answer False where a parent cannot be searched, instead of raising
    blocking = next((p for p in reversed(path.parents)
                     if os.path.lexists(p) and not os.path.isdir(p)), None)
    if blocking is not None:
        raise UsageError(f"cannot write the checkpoint {path}: {blocking} is a file, not a "
                         "folder", hint="pass --out to a path in a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=path.parent, prefix=".probe-").close()
    except OSError as exc:
        raise UsageError(f"cannot write the checkpoint {path}: {exc.strerror or exc}",
                         hint="pass --out to a writable location") from None
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory; give a file path such as "
                         f"{path / 'model.ckpt'}")


# --- the trainer -------------------------------------------------------------------------------

@dataclass
class TrainRequest:
    """What to run, its settings already merged (`config.merge_settings`): model options left
    out are the book's defaults."""

    train_config: TrainConfig = field(default_factory=TrainConfig)
    model_options: dict = field(default_factory=dict)
    data: Path | tuple[Path, ...] | None = None  # files and folders; None: the bundled corpus
    tokenize: TokenizeSettings = field(default_factory=TokenizeSettings)
    init_from: Path | None = None  # a new run from this checkpoint's weights (--init-from)
    cache_dir: Path | None = None
    out: Path = Path("model/model.ckpt")
    resume: Path | None = None
    compile_mode: str = "default"
    sample_every: int = 0  # steps between samples shown while training; 0 = never
    sample_prompt: str = "\n"
    sample_tokens: int = 48
    overwrite: bool = False  # replace another run's checkpoint at `out`
    inputs: tuple[Path, ...] = ()  # files the run reads besides data and resume (--config)
    # intra-op threads: "auto" measures (`runtime.Threads`), N pins, None leaves torch's as is
    threads: int | str | None = None


class Trainer:
    """Sets a run up (data, model, optimizer, resume) and runs the loop as an event stream."""

    def __init__(self, request: TrainRequest, cache: TokenCache | None = None,
                 tokenize_progress=None) -> None:
        if request.compile_mode not in COMPILE_MODES:
            raise UsageError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)} "
                             f"(got {request.compile_mode!r})")
        self.request = request
        self.cfg = request.train_config
        self.dist = Dist.from_env()
        self.device = resolve_device(self.cfg.device, self.dist.local_rank)
        self.dtype = resolve_dtype(self.cfg.dtype, self.device)
        self.threads = Threads(None) if request.threads is None else Threads.resolve(
            None if request.threads == "auto" else int(request.threads), self.device,
            int(os.environ.get("LOCAL_WORLD_SIZE", self.dist.world_size)))
        # the one switch of the speed path (fast/); the checkpoint records what it decided
        self.fast = fast.decide(self.cfg.fast, self.device, self.dtype, self.cfg.compile)
        self.cfg = replace(self.cfg, fast=self.fast)
        self.out = Path(request.out)
        self.lock = None
        if self.dist.main:
            check_writable(self.out)
            # the corpus and a --config are inputs; --resume may be this run's own checkpoint
            data = (request.data,) if isinstance(request.data, str | Path) \
                else tuple(request.data or ())
            inputs = [Path(p) for p in (*data, request.init_from, *request.inputs) if p]
            self.lock = outputs.claim(self.out, inputs=inputs, resume=request.resume,
                                      overwrite=request.overwrite)
            ckpt.remove_stale_temporaries(self.out)
        self.notices: list[str] = []
        self.clock = time.perf_counter  # what a run's times are read from (a test fakes it)
        self.eval_seconds = self.save_seconds = 0.0  # the last evaluation's and save's
        self.saver = _saver(self.fast)
        self._saving: list[tuple[Future | None, list[CheckpointSaved]]] = []  # not yet reported
        self.dist.init(self.device)
        reset_peak_memory(self.device)  # the run's own peak, not a --preset auto probe's
        try:
            self._setup(request, cache, tokenize_progress)
        except BaseException:
            self.dist.close()  # a bad resume or context length must not leak the process group
            if self.lock is not None:
                self.lock.release()
            raise

    def _setup(self, request: TrainRequest, cache: TokenCache | None, tokenize_progress) -> None:
        state = ckpt.load(request.resume) if request.resume else None  # fail before tokenizing
        if state is not None:
            ckpt.check(state, request.resume)  # before anything is built from it
            runstate.check_resumable(state, request.resume, self.cfg)
        self.init = None  # --init-from: (model, vocabulary, state) of the checkpoint
        self.resumed_init = state.get("init_from") if state is not None else None
        tokenize, vocab = request.tokenize, None
        if request.init_from is not None:
            if request.resume is not None:
                raise UsageError("--init-from starts a new run from a checkpoint's weights and "
                                 "--resume continues a run: give one of them")
            self.init = ckpt.load_model(request.init_from)
            self._check_init_shape(self.init[0].config)
            vocab = self.init[1]  # the new text in the model's own vocabulary
            tokenize = replace(tokenize, encoding=vocab.encoding_name, vocab_mode=vocab.mode)
        elif self.resumed_init is not None:  # a run begun with --init-from: its vocabulary
            vocab = ckpt.vocabulary_from(state)
            tokenize = replace(tokenize, encoding=vocab.encoding_name, vocab_mode=vocab.mode)
        if request.model_options:  # the model's own settings, checked before any tokenizing,
            # and its memory with the smallest vocabulary: what cannot fit even so is refused now
            self._check_memory(self._model_config(None, vocab_size=1), counted=False)

        if cache is None:
            # the first process of each machine builds the cache (if needed) while the others
            # wait, then they find it and only load it
            builder = (self.dist.local_rank or 0) == 0
            if not builder:
                self.dist.barrier()
            cache = prepare(request.data, tokenize, cache_root=request.cache_dir,
                            progress=tokenize_progress if self.dist.main else None,
                            vocab=vocab)
            if builder:
                self.dist.barrier()
        self.cache = cache
        self.notices += self.cache.warnings
        if self.init is not None:
            meta = cache.meta
            share = meta.get("fallback_tokens", 0) / max(1, meta.get("encoded_tokens", 0))
            self.notices.append(
                f"--init-from {request.init_from}: {share:.2%} of this text's tokens are not in "
                "the checkpoint's vocabulary and are spelled in byte tokens"
                + (" (a vocabulary that fits this text badly: the model learns it slower)"
                   if share > 0.05 else ""))
        self.model_config = self._model_config(state)
        self._check_context()
        self._check_memory()

        torch.manual_seed(self.cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model = GPT(self.model_config).to(self.device)
        if self.init is not None:
            self.model.load_state_dict(self.init[0].state_dict())
        if self.dist.enabled:  # same initial weights (DDP broadcasts them), own dropout masks
            torch.manual_seed(self.cfg.seed + self.dist.rank)
        self.optimizer = self._optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.dtype == torch.float16)
        self.batch_gen = torch.Generator(device=self.device)
        self.batch_gen.manual_seed(self.cfg.seed + self.dist.rank)
        self.progress = runstate.Progress()
        # the newest checkpoint known to hold finite weights and a finite evaluation: what a
        # diverged run's error points at
        self.last_good: Path | None = Path(request.resume) if request.resume else None
        if state is not None:
            self.progress, notices = runstate.restore(
                state, request.resume, model=self.model, model_config=self.model_config,
                train_config=self.cfg, cache=self.cache, optimizer=self.optimizer,
                scaler=self.scaler, batch_gen=self.batch_gen, device=self.device, dist=self.dist)
            self.notices += notices

        self.splits = {"train": as_tensor(self.cache.train, self.device),
                       "valid": as_tensor(self.cache.valid, self.device)}
        # what the training step calls: the model, or the speed path's pass over it
        self.eager_model: torch.nn.Module = fast.TrainingPass(self.model) if self.fast \
            else self.model  # (and what runs if compilation fails)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.eager_model = DistributedDataParallel(self.eager_model, device_ids=device_ids)
        self.forward_model = self.eager_model
        if self.cfg.compile:
            self.forward_model = torch.compile(self.forward_model, mode=request.compile_mode)
        self._compiled_ok = not self.cfg.compile

    # setup helpers

    def _model_config(self, state: dict | None, vocab_size: int | None = None) -> ModelConfig:
        options = self.request.model_options
        if self.init is not None:  # the checkpoint's shape; only the dropout is the run's
            base = self.init[0].config
            return replace(base, dropout=options.get("dropout", base.dropout))
        if state is not None and not options:  # an API caller resuming without options
            return ckpt.model_config_from(state)
        unknown = set(options) - MODEL_FIELDS
        if unknown:
            raise UsageError(f"unknown model options: {', '.join(sorted(unknown))}")
        return ModelConfig(vocab_size=vocab_size or self.cache.vocab.size, **options)

    def _check_init_shape(self, config: ModelConfig) -> None:
        """--init-from: an option that would give the model another shape is refused."""
        for key in ("d_model", "num_blocks", "num_heads", "context_length"):
            given = self.request.model_options.get(key)
            if given is not None and given != getattr(config, key):
                option = "--" + key.replace("_", "-")
                raise UsageError(f"{option} {given}: --init-from {self.request.init_from} "
                                 f"starts from weights of {key} {getattr(config, key)}, and "
                                 "the shape comes with them", hint=f"leave {option} out")

    def _optimizer(self):
        """The book's AdamW: torch.optim.AdamW, or on the speed path the same update without
        torch.optim's machinery (`fast.optim`)."""
        params, lr, wd = self.model.parameters(), self.cfg.learning_rate, self.cfg.weight_decay
        if self.fast:
            optimizer, notice = fast.make_optimizer(params, lr, wd)
            if notice:
                self.notices.append(notice)
            return optimizer
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd,
                                 fused=True if self.device.type == "cuda" else None)

    def _check_memory(self, config: ModelConfig | None = None, counted: bool = True) -> None:
        """Sizes that cannot fit are refused before anything is allocated, with the estimate
        (before tokenizing, `counted=False`: with a vocabulary of one token, a lower bound)."""
        c = config or self.model_config
        need = training_memory(ckpt.parameter_count(c), c, self.cfg.batch_size,
                               self.cfg.eval_iters, attention_weights=self.device.type == "cpu")
        have = memory_bytes(self.device)
        if have and need > have:
            raise UsageError(
                f"this run needs {'about' if counted else 'at least'} {need / 2**30:,.1f} GiB "
                "(an estimate of the weights, "
                f"gradients, AdamW's state and one batch's activations for d_model {c.d_model}, "
                f"{c.num_blocks} blocks, context {c.context_length}, batch "
                f"{self.cfg.batch_size}, "
                + (f"vocabulary {c.vocab_size:,}" if counted else "before counting the "
                   "vocabulary")
                + "); this machine has "
                f"{have / 2**30:,.1f} GiB", hint="lower --batch-size, --context-length, "
                "--d-model or --num-blocks")

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

    def evaluate(self, stop: Callable[[], bool] | None = None) -> tuple[float, float] | None:
        """The book's estimate of both splits at this step, averaged over processes; None when
        `stop()` turned true on any process before it finished (a signal: the run saves and
        ends within a forward pass, instead of after every batch of a long evaluation)."""
        # the plain module: evaluation needs no gradient sync, and a compiled graph for no-grad
        # mode would cost a second compilation for 2 x eval_iters batches
        try:
            means = estimate_loss(
                self.model, self.splits, batch_size=self.cfg.batch_size,
                context_length=self.model_config.context_length, eval_iters=self.cfg.eval_iters,
                seed={name: evaluation_seed(self.cfg.seed, self.step, self.dist.rank, name)
                      for name in self.splits},
                autocast=self.autocast(), stop=stop)
            stopped = 0.0
        except Stopped:
            means, stopped = torch.zeros(2, device=self.device), 1.0
        flags = torch.cat([means.float(), torch.tensor([stopped], device=self.device)])
        train_loss, valid_loss, stopped = self.dist.all_mean(flags).tolist()
        return None if stopped > 0 else (train_loss, valid_loss)

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
        state = runstate.snapshot(
            model=self.model, model_config=self.model_config, train_config=self.cfg,
            device=self.device, cache=self.cache, optimizer=self.optimizer, scaler=self.scaler,
            progress=self.progress, batch_gen=self.batch_gen, dist=self.dist)
        if self.init is not None:  # where the weights began (a resume keeps the record)
            start = self.init[2]
            state["init_from"] = {"path": str(self.request.init_from),
                                  "step": start.get("step"),
                                  "data": start.get("data", {}).get("path")}
        elif self.resumed_init is not None:
            state["init_from"] = self.resumed_init
        return state

    @property
    def step(self) -> int:
        return self.progress.step

    def save(self, *paths: Path) -> None:
        """Save the run to each path (the best model first, if it is one of them) with the run's
        saver (`fast.saver.BackgroundSaver` on the speed path); their CheckpointSaved events wait in
        `_saving` until the files are in place (`_saved`)."""
        state = self.state()  # every rank joins the gather
        # every rank checks (DDP keeps the weights identical) so that all stop together
        if not ckpt.all_finite(state["model_state_dict"]):
            raise self._diverged(f"the weights are no longer finite at step {self.step}")
        t0 = self.clock()
        future = self.saver.save(state, *paths) if self.dist.main else None
        if future is not None:  # how long a save takes, written (for a --max-time run's end)
            future.add_done_callback(lambda _, t0=t0: setattr(self, "save_seconds",
                                                              self.clock() - t0))
        self.last_good = Path(paths[-1])
        best = ckpt.related_path(self.out, "best")
        self._saving.append((future, [CheckpointSaved(p, self.step, p == best) for p in paths]))

    def _diverged(self, what: str) -> DivergedError:
        """The error every process raises together (each decided it from values all of them
        share); they meet at a barrier first, so none tears down its process group early."""
        self.dist.barrier()
        where = (f"the last good checkpoint is {self.last_good}" if self.last_good is not None
                 else "no checkpoint was saved before it")
        return DivergedError(f"training diverged: {what}; {where}",
                             hint="lower --learning-rate, set --grad-clip 1.0, or use "
                             "--dtype float32")

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
            self.dist.barrier()  # every process stops here together (see _diverged)
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
                                evaluated_step=self.progress.evaluated_step, enabled=self.dist.main,
                                notify=self.notices.append)
        started = self.clock()
        first_step = self.step
        # the steps the run and its schedule span: --max-iters, or what a --max-time budget
        # allows (planned from measured step times: WARMUP_STEPS, PLAN_EVERY)
        self.total = cfg.max_iters
        train_time, train_tokens = 0.0, 0  # the whole run's, for the summary
        # the recent rate the live table shows: since the last log record, since the last
        # evaluation (an average since the start lags the real rate for much of a run)
        log_time = eval_time = 0.0
        log_tokens = eval_tokens = 0
        window_losses: list[float] = []
        bad_steps = 0
        reason, signum = "finished", None
        self.model.train()
        # whatever ends the loop (an error, a second Ctrl-C), the saves already made reach the disk
        with StopSignals() as stop, metrics, closing(self.saver):
            mark = None  # (step, time) where the measure of a planned run's steps starts
            while self.step < self.total:
                step = self.step
                if cfg.max_time > 0:
                    if step == first_step + WARMUP_STEPS:
                        mark = (step, self.clock())
                    elif mark is not None and ((step - mark[0]) % PLAN_EVERY == 0
                                               or step == self.total - 1):
                        self._plan(started, (self.clock() - mark[1]) / (step - mark[0]))
                lr = lr_at(step, cfg, self.total)
                tps = eval_tokens / eval_time if eval_time else 0.0
                if (step % cfg.eval_interval == 0 or step == self.total - 1) \
                        and step != self.progress.evaluated_step:
                    eval_time, eval_tokens = 0.0, 0
                    finished = yield from self._evaluate(step, lr, tps, peak, flops_per_token,
                                                         started, metrics, stop)
                    yield from self._drain_notices()
                    if not finished:  # a signal during the evaluation: save this step, leave
                        reason, signum = "interrupted", stop.signum
                        break
                self.threads.start()
                t0 = self.clock()
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
                        raise self._diverged(f"{bad_steps} non-finite losses in a row at step "
                                             f"{step}")
                seconds = self.clock() - t0  # .tolist() above waited for the step
                # a step beside a background save shares the cores with it: not a measure
                self.threads.stop(discard=any(future is not None and not future.done()
                                              for future, _ in self._saving))
                yield from self._thread_changes()
                train_time, log_time, eval_time = (train_time + seconds, log_time + seconds,
                                                   eval_time + seconds)
                train_tokens += tokens_per_step
                log_tokens += tokens_per_step
                eval_tokens += tokens_per_step
                self.progress.step += 1
                if self.step % cfg.log_interval == 0 and window_losses:
                    event = StepDone(step, sum(window_losses) / len(window_losses), lr,
                                     log_tokens / log_time, self.clock() - started)
                    log_time, log_tokens = 0.0, 0
                    metrics.write({"type": "train", **record(event)})
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
            # a stop asked for: no more work; one during the report's pass: it ends there
            report = self.report_card(tokens_per_step, train_tokens / train_time
                                      if train_time else 0.0, started,
                                      full=reason != "interrupted", stop=stop)
            if stop.signum is not None and reason != "interrupted":
                reason, signum = "interrupted", stop.signum
            metrics.write({"type": "report", **rounded(report)})
            self.dist.barrier()  # nor before every other has left the last collective
        yield from self._drain_notices()
        if reason == "finished" and self.step < cfg.max_iters:  # the budget's planned end
            reason = "max_time"
        tps = train_tokens / train_time if train_time else 0.0
        progress = self.progress
        final = progress.last_losses or (None, None)
        mfu = flops_per_token * tps / (peak * self.dist.world_size) if peak else None
        yield RunDone(reason, self.step, final[0], final[1], progress.best_valid,
                      progress.best_step, self.clock() - started, tps, mfu, self.out,
                      signum, final_step=progress.evaluated_step if progress.last_losses
                      else None, report=report)

    def _evaluate(self, step, lr, tps, peak, flops_per_token, started, metrics,
                  stop) -> Iterator[Event]:
        """Evaluate, record and save; returns False when a signal stopped the evaluation."""
        t0 = self.clock()
        losses = self.evaluate(stop)
        if losses is None:
            return False
        self.eval_seconds = self.clock() - t0
        train_loss, valid_loss = losses
        progress = self.progress
        progress.last_losses, progress.evaluated_step = (train_loss, valid_loss), step
        progress.fixed_windows = True
        is_best = math.isfinite(valid_loss) and (progress.best_valid is None
                                                 or valid_loss < progress.best_valid)
        if is_best:
            progress.best_valid, progress.best_step = valid_loss, step
        mfu = flops_per_token * tps / (peak * self.dist.world_size) if peak and tps else None
        event = EvalDone(step, train_loss, valid_loss, is_best, lr, tps, mfu,
                         self.clock() - started)
        metrics.write({"type": "eval", **record(event)})
        yield event
        yield from self._settle_saves()  # the last evaluation's save, before this one starts
        if not (math.isfinite(train_loss) and math.isfinite(valid_loss)):
            # never saved: a model whose evaluation is not finite is not a good checkpoint
            raise self._diverged(f"the evaluation at step {step} is not finite (train "
                                 f"{train_loss}, valid {valid_loss})")
        if is_best:  # best first: a crash between the two leaves the older checkpoint to resume
            self.save(ckpt.related_path(self.out, "best"), self.out)  # one snapshot, two files
        else:
            self.save(self.out)
        return True

    def sample(self, step: int) -> Sample:
        """A short greedy-ish continuation of the sample prompt, drawn from its own generator."""
        from .sampling import generate_ids

        vocab = self.cache.vocab
        prompt = self.request.sample_prompt or "\n"
        start = vocab.encode(prompt)
        if prompt == "\n" and vocab.eot is not None:  # a corpus of documents: a new one
            prompt, start = "", [vocab.eot]
        generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        ids = generate_ids(self.model, start, self.request.sample_tokens,
                           temperature=0.8, top_k=None, top_p=0.95, generator=generator,
                           fast=self.fast, utf8=vocab.utf8)
        if vocab.eot in ids:  # the document ended
            ids = ids[:ids.index(vocab.eot)]
        return Sample(step, prompt, vocab.decode(ids))

    def report_card(self, tokens_per_step: int, tokens_per_sec: float, started: float,
                    full: bool = True, stop: Callable[[], bool] | None = None) -> dict:
        """What the run bought: its size, the tokens it saw (per parameter, and in epochs of the
        training split), its pace and peak memory, and the final model's validation loss and
        bits per byte, from a pass over every validation token when that is cheap
        (`_full_pass_seconds`) and `full`, else (or when `stop()` turns true during the pass)
        from the last evaluation's estimate (and it says so)."""
        params = self.model.num_params()["total"]
        seen = self.step * tokens_per_step
        memory, measured = peak_memory(self.device)
        valid = self.splits["valid"]
        nbytes = self.cache.meta["splits"]["valid"]["bytes"]
        card = {"steps": self.step, "parameters": params, "tokens_seen": seen,
                "tokens_per_parameter": seen / params, "epochs": seen / len(self.splits["train"]),
                "tokens_per_sec": tokens_per_sec, "peak_memory_bytes": memory,
                "peak_memory_measure": measured,
                "threads": self.threads.choice or self.threads.count}
        if full and self._full_pass_seconds(started) is not None:
            t0 = self.clock()
            try:
                loss, scored, bpb = full_split(
                    self.model, valid, nbytes, self.cache.vocab,
                    context_length=self.model_config.context_length,
                    batch_size=window_batch_size(32, self.model_config.context_length,
                                                 self.model_config.vocab_size),
                    autocast=self.autocast(), stop=stop)
                return {**card, "valid_loss": loss, "valid_bits_per_byte": bpb,
                        "valid_measure": "full", "valid_tokens_scored": scored,
                        "valid_step": self.step, "valid_seconds": self.clock() - t0}
            except Stopped:
                pass
        last = self.progress.last_losses
        loss = last[1] if last else None
        return {**card, "valid_loss": loss,
                # the split's own bytes per token turn the estimate's nats into bits per byte
                "valid_bits_per_byte": bits_per_byte(loss, len(valid), nbytes) if last else None,
                "valid_measure": "estimate", "valid_tokens_scored":
                self.cfg.eval_iters * self.cfg.batch_size * self.model_config.context_length,
                "valid_step": self.progress.evaluated_step if last else None}

    def _full_pass_seconds(self, started: float) -> float | None:
        """What the report card's pass over every validation token will take, from the last
        evaluation's time (it scored eval_iters x batch windows of each split); None when it
        will not be made: before any evaluation, or when it would take more than
        FULL_PASS_SECONDS or FULL_PASS_SHARE of the run, whichever is more (with --max-time,
        more than FULL_PASS_SHARE of the budget: a short budget is not spent on the report)."""
        if not self.eval_seconds:
            return None
        scored = 2 * self.cfg.eval_iters * self.cfg.batch_size * self.model_config.context_length
        seconds = self.eval_seconds * len(self.splits["valid"]) / scored
        allowed = FULL_PASS_SHARE * self.cfg.max_time if self.cfg.max_time > 0 \
            else max(FULL_PASS_SECONDS, FULL_PASS_SHARE * (self.clock() - started))
        return seconds if seconds <= allowed else None

    def _end_seconds(self, started: float) -> float:
        """What the end of a run takes: its last evaluation, its last two saves (the
        evaluation's and the final one) and the report card's full pass, as measured."""
        return self.eval_seconds + 2 * self.save_seconds + (self._full_pass_seconds(started) or 0.0)

    def _out_of_time(self, started: float) -> bool:
        """Past the point where the end of the run would overrun --max-time: the backstop for a
        plan that was wrong (the plan itself keeps more, `_finish_seconds`)."""
        return self.cfg.max_time > 0 \
            and self.clock() - started + self._end_seconds(started) > self.cfg.max_time

    def _finish_seconds(self, started: float) -> float:
        """What the plan keeps for the end of a run: `_end_seconds` with half as much again for
        their noise and the summary (a measured run overran a 143 s budget by 0.1 s without
        it)."""
        return 1.5 * self._end_seconds(started)

    def _plan(self, started: float, step_seconds: float) -> None:
        """Plan the schedule's length from the times measured so far; every process takes
        the first process's plan (their learning rates must agree)."""
        total = plan_steps(step=self.step, max_iters=self.cfg.max_iters,
                           seconds_left=self.cfg.max_time - (self.clock() - started),
                           step_seconds=step_seconds,
                           # a step more than the backstop keeps, so the plan ends before it
                           finish_seconds=self._finish_seconds(started) + step_seconds)
        if self.dist.enabled:  # float64: exact for any step count
            mine = torch.tensor(float(total if self.dist.main else 0), dtype=torch.float64,
                                device=self.device)
            total = int(self.dist.all_max(mine).item())
        self.total = self.progress.planned = total

    def _thread_changes(self) -> Iterator[Notice]:
        """--threads auto's choices, as they are made."""
        while self.threads.changes:
            old, new, medians = self.threads.changes.pop(0)
            times = ", ".join(f"{medians[n] * 1000:,.0f} ms with {n}" for n in sorted(medians))
            what = f"threads: {new}" if old is None else f"threads: {old} -> {new}"
            yield Notice(f"{what} (a step took {times})", warning=False)

    def _drain_notices(self) -> Iterator[Notice]:
        while self.notices:
            yield Notice(self.notices.pop(0))

    def close(self) -> None:
        self.saver.close()
        self.dist.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None




def _saver(use_fast: bool) -> ckpt.Saver:
    if use_fast:
        from .fast.saver import BackgroundSaver

        return BackgroundSaver()
    return ckpt.Saver()
