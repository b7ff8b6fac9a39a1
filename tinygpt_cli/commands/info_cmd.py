"""`tinygpt info`: what a checkpoint holds, without running the model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Json, funnel


def checkpoint_info(path: Path) -> dict:
    """Describe a checkpoint as plain JSON-ready data: model, parameter counts, tokenizer, steps,
    losses, the data it was trained on, and what it carries for resuming.

    Every way the file can be wrong is the CheckpointError of `checkpoint.load`.
    """
    import torch

    from .. import checkpoint as ckpt
    from ..errors import CheckpointError
    from ..model import GPT

    path = Path(path)
    state = ckpt.load(path)
    ckpt.check(state, path)  # its configuration, before a model is built from it
    try:
        config = ckpt.model_config_from(state)
    except Exception as exc:  # a config this version cannot build: a bad file, not a bug
        raise CheckpointError(f"{path} has an unusable model configuration: {exc}") from None
    with torch.device("meta"):  # the shapes without the memory: the same counts train prints
        meta = GPT(config)
    ckpt.check_weights(state, path, meta)
    params = meta.num_params()
    weights = state["model_state_dict"]
    stored = sum(t.numel() for t in weights.values() if torch.is_tensor(t))
    tok = state["tokenizer"]
    train = state.get("train_config")
    data = state.get("data")
    step = state.get("step")
    per_step = None
    if train:
        from ..plotting import tokens_per_step

        per_step = tokens_per_step(state)
    last = state.get("last_losses") or [None, None]
    related = {kind: ckpt.related_path(path, kind) for kind in ("best", "metrics", "plot")}
    return {
        "path": str(path),
        # an exported folder (tinygpt export): its files together
        "file_bytes": sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        if path.is_dir() else path.stat().st_size,
        "tinygpt_version": state.get("tinygpt_version"),
        "format_version": state["format_version"],
        "model_config": dict(state["model_config"]),
        "parameters": {**params, "stored": stored},
        "tokenizer": {"encoding": tok.get("encoding"), "mode": tok.get("mode"),
                      "vocab_size": tok.get("size", config.vocab_size)},
        "train_config": dict(train) if train else None,
        "steps": step,
        "tokens_per_step": per_step,
        "tokens_seen": step * per_step if per_step and isinstance(step, int) else None,
        "best_valid_loss": state.get("best_valid_loss"),
        "best_step": state.get("best_step"),
        "last_train_loss": last[0],
        "last_valid_loss": last[1],
        "data": {k: data.get(k) for k in ("path", "paths", "files", "documents", "sha256",
                                          "train_tokens", "valid_tokens")}
        if data else None,
        "init_from": state.get("init_from") if isinstance(state.get("init_from"), dict)
        else None,
        "world_size": state.get("world_size", 1),
        "has_optimizer_state": "optimizer_state_dict" in state,
        "has_rng_state": bool(state.get("rng")),
        "finite_weights": ckpt.all_finite(weights),
        "related_files": {kind: str(p) if p.exists() and p != path else None
                          for kind, p in related.items()},
    }


@funnel
def info(
    checkpoint: Annotated[Path, typer.Argument(
        help="A checkpoint written by `tinygpt train`.", metavar="CHECKPOINT")
    ] = Path("model/model.ckpt"),
    json_out: Json = False,
) -> None:
    """Show what a checkpoint holds: model, parameters, tokenizer, steps, losses and data."""
    from .. import ui

    result = checkpoint_info(checkpoint)
    if json_out:
        ui.print_json(result)
    else:
        ui.checkpoint_summary(result)
