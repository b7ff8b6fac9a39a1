"""A training run's state, saved and restored: everything a resumed run needs to go on exactly as
if it had never stopped (weights, optimizer moments, step, best loss so far, every random state).

`checkpoint.py` writes and reads the files safely; this module decides what goes in them and
puts it back. The book's two keys (`model_state_dict`, `h_params`) stay first-class.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .config import ModelConfig, TrainConfig
from .data import TokenCache
from .errors import CheckpointError, UsageError
from .generation import sample_start
from .runtime import Dist


@dataclass
class Progress:
    """Where a run stands, besides its weights and optimizer."""

    step: int = 0
    best_valid: float | None = None
    best_step: int | None = None
    evaluated_step: int | None = None  # so a resume does not repeat that evaluation
    last_losses: tuple[float, float] | None = None  # (train, valid) of the last evaluation
    planned: int | None = None  # a --max-time run's planned last step (`Trainer._plan`)
    # whether `last_losses` scored the fixed validation windows (evaluate.evaluation_seed); a
    # checkpoint of an older tinygpt drew them afresh at each evaluation
    fixed_windows: bool = True


def snapshot(*, model: torch.nn.Module, model_config: ModelConfig, train_config: TrainConfig,
             device: torch.device, cache: TokenCache, optimizer, scaler: torch.amp.GradScaler,
             progress: Progress, batch_gen: torch.Generator, dist: Dist) -> dict:
    """The state to save. Under DDP every process joins (the batch generators are gathered)."""
    rng = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "batch_generators": dist.gather(batch_gen.get_state().cpu()),
    }
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    meta = cache.meta
    state = {
        "model_state_dict": model.state_dict(),
        # the book's h_params name the device the run used ("cuda"), never "auto"
        "h_params": {**asdict(model_config), **asdict(train_config), "device": device.type,
                     "max_token_value": cache.vocab.size},
        "model_config": asdict(model_config),
        "train_config": asdict(train_config),
        "tokenizer": ckpt.tokenizer_state(cache.vocab),
        "data": {"path": meta["source"]["path"], "sha256": meta["source"]["sha256"],
                 "files": meta.get("files", 1), "documents": meta.get("documents", 1),
                 "settings": meta["settings"],
                 "train_tokens": len(cache.train), "valid_tokens": len(cache.valid),
                 "train_bytes": meta["splits"]["train"]["bytes"],
                 "valid_bytes": meta["splits"]["valid"]["bytes"]},
        # where `tinygpt generate` starts a sample without a prompt: this corpus's beginnings
        "sample_start": sample_start(meta, cache.vocab),
        "optimizer_state_dict": optimizer.state_dict(),
        "step": progress.step,
        "best_valid_loss": progress.best_valid,
        "best_step": progress.best_step,
        "evaluated_step": progress.evaluated_step,
        "last_losses": list(progress.last_losses) if progress.last_losses else None,
        "planned_steps": progress.planned,
        # the same at every evaluation (evaluate.evaluation_seed)
        "valid_windows": "fixed" if progress.fixed_windows else "drawn",
        "rng": rng,
        "world_size": dist.world_size,
    }
    if len(meta["source"].get("paths", [])) > 1:  # several sources; one is `path` alone
        state["data"]["paths"] = meta["source"]["paths"]
    if scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    return state


def check_resumable(state: dict, source: Path, train_config: TrainConfig) -> None:
    """What makes a checkpoint (already `checkpoint.check`ed) unfit to continue, found before
    any tokenizing or building: an export (no optimizer or random state), non-finite weights or
    evaluation, no steps left to take."""
    if "optimizer_state_dict" not in state:
        raise CheckpointError(f"cannot resume from {source}: it holds the model but not the "
                              "optimizer and random state a run continues with (an export)",
                              hint="resume from the checkpoint train wrote")
    if not ckpt.all_finite(state["model_state_dict"]):
        raise CheckpointError(f"cannot resume from {source}: its weights are not finite (NaN or "
                              "inf); the run had diverged", hint="resume from the .best.ckpt "
                              "beside it, with a lower --learning-rate")
    losses = state.get("last_losses")
    if losses and not all(math.isfinite(float(v)) for v in losses):
        raise CheckpointError(f"cannot resume from {source}: its last evaluation is not finite "
                              f"({losses[0]}, {losses[1]}); the run had diverged",
                              hint="resume from the .best.ckpt beside it")
    step = int(state["step"])
    if step >= train_config.max_iters:
        raise UsageError(f"{source} has already done {step} steps; --max-iters is the total, "
                         f"so raise it above {step}")


def restore(state: dict, source: Path, *, model: torch.nn.Module, model_config: ModelConfig,
            train_config: TrainConfig, cache: TokenCache, optimizer,
            scaler: torch.amp.GradScaler, batch_gen: torch.Generator, device: torch.device,
            dist: Dist) -> tuple[Progress, list[str]]:
    """Put a checkpoint's run back: weights, optimizer, every random state. Returns where the
    run stands and the notices to show (a random state that could not be restored exactly).
    `check_resumable` has passed."""
    found = ckpt.differences(state, model_config=model_config, vocab=cache.vocab,
                             data_sha256=cache.meta["source"]["sha256"])
    if found:
        raise CheckpointError(f"cannot resume from {source}: " + "; ".join(found),
                              hint="resume with the same data, tokenizer and model options, "
                              "or start a new run with another --out")
    ckpt.check_weights(state, source, model)
    model.load_state_dict(state["model_state_dict"])
    try:
        optimizer.load_state_dict(state["optimizer_state_dict"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot resume from {source}: its optimizer state does not fit "
                              f"({exc})") from None
    for group in optimizer.param_groups:  # load_state_dict brought the old run's back
        group["weight_decay"] = train_config.weight_decay
    progress = Progress(
        step=int(state["step"]), best_valid=state.get("best_valid_loss"),
        best_step=state.get("best_step"), evaluated_step=state.get("evaluated_step"),
        # a resume that starts at its last evaluation still reports those losses at the end
        last_losses=tuple(state["last_losses"]) if state.get("last_losses") else None,
        planned=state.get("planned_steps"),
        fixed_windows=state.get("valid_windows") == "fixed" or not state.get("last_losses"))

    notices = []
    rng = state.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng.get("cuda"):
        try:
            torch.cuda.set_rng_state_all(rng["cuda"])
        except (IndexError, RuntimeError):
            notices.append("the checkpoint's CUDA random state is from another GPU setup: "
                           "dropout is reseeded")
    if "python" in rng:
        random.setstate(_as_tuple(rng["python"]))
    gens = rng.get("batch_generators", [])
    restored = False
    if len(gens) == dist.world_size:
        try:  # a CPU generator's state does not fit a CUDA one (another device type)
            batch_gen.set_state(gens[dist.rank])
            restored = True
        except RuntimeError:
            pass
    if not restored:
        notices.append(f"the checkpoint's batch order is from {len(gens)} process(es) on another "
                       f"setup; this run ({dist.world_size} on {device.type}) reseeds it, so it "
                       "will not repeat an uninterrupted run exactly")
        batch_gen.manual_seed(train_config.seed + dist.rank + progress.step)
    if "scaler" in state and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    return progress, notices


def _as_tuple(value):
    """random.setstate wants nested tuples; a checkpoint round trip may hand back lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value
