"""Dropout masks for a CPU training pass, drawn all at once from packed random words.

PyTorch's CPU dropout draws one Bernoulli sample per element, and on the book's small model that
is a large share of a training step (figures: benchmarks/README.md). Here one draw of 64-bit words
serves every mask of a pass, each word giving four 16-bit uniforms, and the masks come back as
floats with the dropout scale folded in, so applying one is a single multiplication forward and
backward. `model.py` keeps `nn.Dropout`; tests hold the two to the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..config import ModelConfig


def dropout_masks(shapes: Sequence[torch.Size], p: float, dtype: torch.dtype = torch.float32
                  ) -> list[torch.Tensor]:
    """Dropout's multipliers for tensors of these shapes: 0 with probability p (to 1/65536), else
    1 / P(keep).

    One draw serves every mask: each separate draw would pay the per-operation overhead again.
    `dtype` is float32 or float64: bfloat16 would round the scale itself (1/0.9 to 1.109).
    """
    sizes = [math.prod(shape) for shape in shapes]
    n = sum(sizes)
    bits = random_words((n + 3) // 4)
    # one tensor per mask, so that each is freed on its own (a view would keep the whole draw)
    return [_threshold(u, p, dtype).view(shape)
            for u, shape in zip(bits.view(torch.int16)[:n].split(sizes), shapes, strict=True)]


def random_words(n: int) -> torch.Tensor:
    """n random 64-bit words (int64), determined by torch's default generator.

    One draw from torch's generator (so `torch.manual_seed` and a checkpoint's saved RNG state
    decide the masks, as they decide the weights) seeds numpy's SFC64, which makes the words
    faster than torch's own `random_` (a Mersenne Twister).
    """
    seed = int(torch.empty((), dtype=torch.int64).random_())  # in [0, 2**63)
    return torch.from_numpy(np.random.SFC64(seed).random_raw(n).view(np.int64))


def _threshold(u: torch.Tensor, p: float, dtype: torch.dtype) -> torch.Tensor:
    """int16 uniforms u -> dropout multipliers: 0 where u + 32768 < dropped = round(p * 65536)
    (at most 65535), else the scale 1 / P(keep) = 65536 / (65536 - dropped).

    Shifted by one less than the threshold and clamped to [0, 1], u is exactly 1 where kept and 0
    where dropped: three float operations, where a comparison and a boolean-to-float conversion
    are each several times slower on a CPU.
    """
    dropped = min(round(p * 65536), 65535)  # p just below 1 keeps 1 in 65536, not none
    return u.to(dtype).sub_(dropped - 32769).clamp_(0, 1).mul_(65536 / (65536 - dropped))


def causal_packed_shape(n: int, T: int) -> torch.Size:
    """The shape of `unfold_causal`'s input for n (T, T) attention-dropout masks: a little over
    half their size."""
    return torch.Size((n, (T + 1) // 2, T + 1))


def unfold_causal(packed: torch.Tensor, T: int) -> torch.Tensor:
    """(n, ceil(T/2), T+1) dropout multipliers -> (n, T, T) masks for causal attention weights.

    A query attends only to keys at or before it, so of a (T, T) mask only the T(T+1)/2 entries
    on and below the diagonal matter: drawing those alone halves the random bits the attention
    masks need. Row i (i < ceil(T/2)) takes packed row i's first i+1 entries, and for
    i < floor(T/2) row T-1-i takes the rest of packed row i (T-i entries), reversed. So every
    entry on or below the diagonal is its own draw. The entries above repeat others, and never
    count: they multiply weights the causal mask has made exactly 0, whose softmax gradient is 0.
    """
    h = (T + 1) // 2
    top = packed[:, :, :T]  # rows 0 .. h-1
    bottom = packed[:, :T - h].flip(1, 2)[:, :, :T]  # rows h .. T-1
    return torch.cat([top, bottom], dim=1)


def mask_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def pass_masks(config: ModelConfig, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Every dropout mask of one training pass over x (B, T, C), drawn now in one draw, in the
    order the model uses them: the embeddings', then per block the attention weights'
    (B*H, T, T), the attention output's and the feed-forward output's (B, T, C)."""
    L, H, (B, T, C) = config.num_blocks, config.num_heads, x.shape
    packed, streams = dropout_masks(
        [causal_packed_shape(L * B * H, T), torch.Size((2 * L + 1, B, T, C))],
        config.dropout, mask_dtype(x))
    attention = unfold_causal(packed, T).view(L, B * H, T, T)
    order = [streams[0]]
    for i in range(L):
        order += [attention[i], streams[2 * i + 1], streams[2 * i + 2]]
    return iter(order)
