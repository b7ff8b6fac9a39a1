"""Losses: the book's `estimate_loss` (random batches) and helpers shared by train and eval."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext

import torch

from .data import get_batch


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, splits: dict[str, torch.Tensor], *, batch_size: int,
                  context_length: int, eval_iters: int, seed: int,
                  autocast: AbstractContextManager | None = None) -> torch.Tensor:
    """The book's estimate: mean loss of `eval_iters` random batches per split, dropout off.

    Batches come from a generator seeded with `seed`, never from the training generator, so how
    often one evaluates cannot change training. Returns a tensor of one mean per split (in the
    order of `splits`), left on the device so the caller decides when to synchronise.
    """
    was_training = model.training
    model.eval()
    means = []
    for data in splits.values():
        generator = torch.Generator(device=data.device).manual_seed(seed)
        losses = torch.zeros(eval_iters, device=data.device)
        for k in range(eval_iters):
            x, y = get_batch(data, batch_size, context_length, generator)
            with autocast or nullcontext():
                _, loss = model(x, y)
            losses[k] = loss.float()
        means.append(losses.mean())
    model.train(was_training)
    return torch.stack(means)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def bits_per_byte(loss: float, tokens: int, nbytes: int) -> float:
    """Nats per token -> bits per byte of text: comparable across vocabularies and tokenizers."""
    return loss * tokens / (math.log(2) * nbytes) if nbytes else math.nan
