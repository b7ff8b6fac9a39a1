"""The book's training pass on a CPU: `model.GPT.forward`'s function, computed faster.

The same embedding, blocks, final LayerNorm, output layer and loss as the readable model, with
two changes that only affect speed: every dropout mask of the pass comes from one packed draw
(`dropout.pass_masks`), and each block is one autograd node with a hand-written backward
(`block.BlockFunction`). Tests hold its loss and every gradient to the readable model's, with the
same masks fed to both.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
from torch.nn import functional as F

from ..model import GPT
from .block import BlockFunction
from .dropout import pass_masks


@functools.lru_cache(maxsize=8)
def causal_bias(T: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(T, T): 0 where a query may attend (keys up to its own position), -inf above. Built once
    per length, device and dtype: every block of every step adds it."""
    return torch.full((T, T), float("-inf"), device=device, dtype=dtype).triu(1)


def forward(model: GPT, idx: torch.Tensor, targets: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, loss) of a training pass over idx (B, T), as `model(idx, targets)` computes them
    in training mode, dropout included."""
    B, T = idx.size()
    x = model.token_embedding(idx) + model.pos_encoding[:T]  # (B, T, C)
    p = model.config.dropout
    masks = pass_masks(model.config, x) if model.training and p > 0.0 else None
    if masks is not None:
        x = x * next(masks)  # the embeddings' dropout
    bias = causal_bias(T, x.device, x.dtype)
    for block in model.blocks:
        attn, ffwd = block.attn, block.ffwd
        drop = (next(masks), next(masks), next(masks)) if masks is not None else (None,) * 3
        x = BlockFunction.apply(
            x.contiguous(), *drop, bias, block.ln1.weight, block.ln1.bias, attn.qkv.weight,
            attn.proj.weight, attn.proj.bias, block.ln2.weight, block.ln2.bias, ffwd.fc.weight,
            ffwd.fc.bias, ffwd.proj.weight, ffwd.proj.bias, attn.num_heads, block.ln1.eps,
            block.ln2.eps)  # (B, T, C)
    logits = model.lm_head(model.ln_f(x))  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
    return logits, loss


class TrainingPass(nn.Module):
    """The model behind `forward` above, as a module: what the trainer calls (and what DDP wraps)
    in place of the model. Outside training mode it is the model itself."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.model.training or targets is None:
            return self.model(idx, targets)
        return forward(self.model, idx, targets)
