"""The book's GPT decoder, in nanoGPT's voice, and a KV cache for fast sampling.

Token embedding + sinusoidal positional encoding -> dropout -> `num_blocks` pre-LayerNorm blocks
(masked multi-head self-attention, 4x ReLU feed-forward) -> LayerNorm -> linear to the vocabulary.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from . import fused
from .config import ModelConfig


def sinusoidal_table(context_length: int, d_model: int) -> torch.Tensor:
    """The book's encoding: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same)."""
    pos = torch.arange(context_length, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (ceil(d/2),)
    angle = pos / torch.pow(10000.0, two_i / d_model)  # (T, ceil(d/2))
    pe = torch.zeros(context_length, d_model)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)[:, : d_model // 2]  # an odd d_model has one cosine column less
    return pe


@functools.lru_cache(maxsize=8)
def _causal_bias(T: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.full((T, T), float("-inf"), device=device, dtype=dtype).triu(1)


def causal_bias(T: int, device: torch.device, dtype: torch.dtype = torch.float32
                ) -> torch.Tensor:
    """(T, T): 0 where a query may attend (keys up to its own position), -inf above. Built once
    per length, device and dtype: the CPU dropout path below adds it at every layer of every
    step. (torch.compile traces the plain function: dynamo does not follow an lru_cache.)"""
    if torch.compiler.is_compiling():
        return _causal_bias.__wrapped__(T, device, dtype)
    return _causal_bias(T, device, dtype)


def dropout_masks(shapes: Sequence[torch.Size], p: float, dtype: torch.dtype = torch.float32
                  ) -> list[torch.Tensor]:
    """Dropout's multipliers for tensors of these shapes: 0 with probability p (to 1/65536), else
    1 / P(keep).

    PyTorch's CPU dropout draws one Bernoulli sample per element, and on the book's small model
    that was a third of a training step. Here each 64-bit word of `random_words` gives four 16-bit
    uniforms, and one draw serves every mask of a forward pass: the book's model takes 19 masks
    per step, mostly small, and each separate draw would pay the per-operation overhead again.
    The masks come back as floats with the scale folded in, so applying one is a single
    multiplication forward and backward (a boolean mask would be converted to floats again in
    both). `dtype` is float32 or float64: bfloat16 would round the scale itself (1/0.9 to 1.109).
    """
    sizes = [math.prod(shape) for shape in shapes]
    n = sum(sizes)
    bits = random_words((n + 3) // 4)
    # one tensor per mask, so that each is freed on its own (a view would keep the whole draw)
    return [_threshold(u, p, dtype).view(shape)
            for u, shape in zip(bits.view(torch.int16)[:n].split(sizes), shapes, strict=True)]


def random_words(n: int) -> torch.Tensor:
    """n random 64-bit words (int64) for the CPU dropout masks, determined by torch's generator.

    One draw from torch's default generator (so `torch.manual_seed` and a checkpoint's saved RNG
    state decide the masks, as they decide the weights) seeds numpy's SFC64, which makes the
    words about twice as fast as torch's own `random_` (a Mersenne Twister): 0.7 ms against
    1.3 ms for the 166k words of a step of the book's model on a 2-core CPU, seeding included.
    """
    seed = int(torch.empty((), dtype=torch.int64).random_())  # in [0, 2**63)
    return torch.from_numpy(np.random.SFC64(seed).random_raw(n).view(np.int64))


def _threshold(u: torch.Tensor, p: float, dtype: torch.dtype) -> torch.Tensor:
    """int16 uniforms u -> dropout multipliers: 0 where u + 32768 < dropped = round(p * 65536)
    (at most 65535), else the scale 1 / P(keep) = 65536 / (65536 - dropped).

    Shifted by one less than the threshold and clamped to [0, 1], u is exactly 1 where kept and 0
    where dropped. (Comparisons, which return booleans, and booleans to floats are each 4-6x slower
    on a CPU than these three float operations.)
    """
    dropped = min(round(p * 65536), 65535)  # p just below 1 keeps 1 in 65536, not none
    return u.to(dtype).sub_(dropped - 32769).clamp_(0, 1).mul_(65536 / (65536 - dropped))


def dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype = torch.float32
                 ) -> torch.Tensor:
    """One tensor's `dropout_masks`."""
    return dropout_masks([shape], p, dtype)[0]


def causal_packed_shape(n: int, T: int) -> torch.Size:
    """The shape of `unfold_causal`'s input for n (T, T) attention-dropout masks: a little over
    half their size."""
    return torch.Size((n, (T + 1) // 2, T + 1))


def unfold_causal(packed: torch.Tensor, T: int) -> torch.Tensor:
    """(n, ceil(T/2), T+1) dropout multipliers -> (n, T, T) masks for causal attention weights.

    A query attends only to keys at or before it, so of a (T, T) mask only the T(T+1)/2 entries
    on and below the diagonal matter: drawing those alone halves the random bits the attention
    masks need, which were three quarters of a CPU training step's draw. Row i (i < ceil(T/2))
    takes packed row i's first i+1 entries, and for i < floor(T/2) row T-1-i takes the rest of
    packed row i (T-i entries), reversed. So every entry on or below the diagonal is its own draw.
    The entries above repeat others, and never count: they multiply weights the causal mask has
    made exactly 0, whose softmax gradient is 0 as well.
    """
    h = (T + 1) // 2
    top = packed[:, :, :T]  # rows 0 .. h-1
    bottom = packed[:, :T - h].flip(1, 2)[:, :, :T]  # rows h .. T-1
    return torch.cat([top, bottom], dim=1)


def _mask_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def apply_dropout_mask(x: torch.Tensor, p: float, mask: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """x times `mask` (by default a fresh `dropout_mask`). In bfloat16 or float16 (CPU autocast)
    the product is taken in float32 and rounded once, as F.dropout scales in float32."""
    if mask is None:
        mask = dropout_mask(x.shape, p, _mask_dtype(x))
    if x.dtype in (torch.float32, torch.float64):
        return x * mask
    return (x * mask).to(x.dtype)


def dropout(x: torch.Tensor, p: float, training: bool, mask: torch.Tensor | None = None
            ) -> torch.Tensor:
    """`F.dropout`, with `dropout_masks` on the CPU (`mask`, when the caller drew it); other
    devices keep `F.dropout`."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    return apply_dropout_mask(x, p, mask)


def add_dropped(residual: torch.Tensor, x: torch.Tensor, p: float, training: bool,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """residual + dropout(x): a branch joining the residual stream. On the CPU in float32 or
    float64 it is one `addcmul` with the mask: one operation, one autograd node and one pass over
    memory where a product then a sum take two."""
    if training and p > 0.0 and x.device.type == "cpu" and x.dtype == residual.dtype \
            and x.dtype in (torch.float32, torch.float64):
        if mask is None:
            mask = dropout_mask(x.shape, p, x.dtype)
        return torch.addcmul(residual, x, mask)
    return residual + dropout(x, p, training, mask)


class Dropout(nn.Module):
    """nn.Dropout through `dropout` above."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return dropout(x, self.p, self.training, mask)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated up to max_length.

    During a forward pass each layer writes its chunk at [length, length + T) with `update`; the
    model then calls `advance(T)` once, so all layers agree on where the chunk starts.
    """

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, max_length: int,
                 head_size: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        shape = (2, batch_size, num_heads, max_length, head_size)
        # keys and values of a layer share one tensor, so one copy stores both for a new token
        self.kv = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.k = [kv[0] for kv in self.kv]  # views: (B, H, max_length, hs) each
        self.v = [kv[1] for kv in self.kv]
        self.batch_size = batch_size
        self.max_length = max_length
        self.length = 0
        self.decode_params: list | None = None  # filled by GPT._decode_one on first use

    def reset(self) -> None:
        """Forget every cached token; entries past `length` are never read, so nothing is zeroed."""
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store a chunk's (B, H, T, hs) keys/values after the cached ones; return all of them."""
        end = self.length + k.size(2)
        assert k.size(0) == self.batch_size, f"cache batch {self.batch_size}, chunk {k.size(0)}"
        assert end <= self.max_length, f"cache holds {self.max_length} tokens, asked for {end}"
        # a cache serves inference: what it stores carries no gradient
        self.k[layer][:, :, self.length:end] = k.detach()
        self.v[layer][:, :, self.length:end] = v.detach()
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, H, end, hs)

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        # one matmul for all heads' queries, keys and values; no bias, like the book's Wq/Wk/Wv
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.layer = layer  # which slot of a KVCache is ours

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None,
                masks: Iterator[torch.Tensor] | None = None) -> torch.Tensor:
        """The heads' output projected back to (B, T, C); its dropout is the block's, as it joins
        the residual stream. `masks`: the pass's dropout masks (see GPT.forward), next one ours."""
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, hs)
        k = k.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, hs)
        v = v.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, hs)

        mask, is_causal = None, True
        if kv_cache is not None and kv_cache.length > 0:
            prefix = kv_cache.length
            k, v = kv_cache.update(self.layer, k, v)  # (B, H, prefix + T, hs)
            k, v = k.to(q.dtype), v.to(q.dtype)  # a float32 cache under autocast
            is_causal = False  # SDPA aligns is_causal top-left, wrong once q is shorter than k
            if T > 1:
                # new token i sits at prefix + i: it sees the whole prefix and new tokens 0..i
                mask = torch.ones(T, prefix + T, dtype=torch.bool, device=x.device)
                mask = mask.tril(diagonal=prefix)  # (T, prefix + T)
        elif kv_cache is not None:
            kv_cache.update(self.layer, k, v)  # empty cache: the chunk attends to itself, causally

        if self.training and self.dropout > 0 and x.device.type == "cpu":
            y = self._attention_with_dropout(q, k, v, next(masks) if masks else None)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal,
                dropout_p=self.dropout if self.training else 0.0,
            )  # (B, H, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.proj(y)

    def _attention_with_dropout(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Causal attention with dropout on the weights, as SDPA's math path computes it.

        For CPU training with dropout where `fused.BlockFunction` does not apply (autocast, or a
        Block given no masks): there SDPA falls back to that path anyway, drawing its dropout
        mask one Bernoulli sample at a time; `dropout_masks` is cheaper.
        `mask`: the (B*H, T, T) dropout mask (see `unfold_causal`), drawn here if not given.
        """
        B, H, T, hs = q.size()
        if mask is None:
            packed = dropout_mask(causal_packed_shape(B * H, T), self.dropout, _mask_dtype(q))
            mask = unfold_causal(packed, T)
        att = torch.baddbmm(causal_bias(T, q.device, q.dtype), q.reshape(B * H, T, hs),
                            k.reshape(B * H, T, hs).mT, alpha=1.0 / math.sqrt(hs))
        att = att.softmax(dim=-1)  # (B*H, T, T)
        att = apply_dropout_mask(att, self.dropout, mask)
        return (att @ v.reshape(B * H, T, hs)).view(B, H, T, hs)


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model)
        self.proj = nn.Linear(4 * config.d_model, config.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) out; like the attention's, its dropout is applied by the block."""
        return self.proj(F.relu(self.fc(x)))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm: normalise, transform, drop out, add back to the residual stream."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config, layer)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.ffwd = FeedForward(config)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None,
                masks: Iterator[torch.Tensor] | None = None) -> torch.Tensor:
        """`masks`: the pass's dropout masks (see GPT.forward), consumed in the order used."""
        def mask() -> torch.Tensor | None:
            return next(masks) if masks else None

        if self.training and kv_cache is None and (masks is not None or self.dropout == 0.0) \
                and fused.applies(x):
            # CPU training: the same arithmetic as below, as one autograd node (fused.py)
            attn, ffwd = self.attn, self.ffwd
            drop = (mask(), mask(), mask()) if self.dropout > 0.0 else (None, None, None)
            return fused.BlockFunction.apply(
                x.contiguous(), *drop, causal_bias(x.size(1), x.device, x.dtype),
                self.ln1.weight, self.ln1.bias, attn.qkv.weight, attn.proj.weight,
                attn.proj.bias, self.ln2.weight, self.ln2.bias, ffwd.fc.weight, ffwd.fc.bias,
                ffwd.proj.weight, ffwd.proj.bias, attn.num_heads, self.ln1.eps, self.ln2.eps)
        # x + dropout(branch), for the attention then the feed-forward
        x = add_dropped(x, self.attn(self.ln1(x), kv_cache, masks), self.dropout,
                        self.training, mask())
        x = add_dropped(x, self.ffwd(self.ln2(x)), self.dropout, self.training, mask())
        return x  # (B, T, C)


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        # a fixed function of the shape: computed once, moved with .to(), never saved
        self.register_buffer("pos_encoding",
                             sinusoidal_table(config.context_length, config.d_model),
                             persistent=False)  # (context_length, C)
        self.dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.num_blocks)])
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)  # untied, as in the book

        # nanoGPT's init for the linear layers: small normal weights, zero biases, so the first
        # loss is about ln(vocab); the projections into the residual stream shrink with depth
        # (GPT-2's scaled init). The token embedding keeps PyTorch's (and the book's) N(0, 1):
        # the sinusoidal table has unit amplitude, and 0.02-sized embeddings would be drowned in
        # it (measured: valid loss 5.02 instead of 3.57 after the book's 500 steps).
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.num_blocks))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=1.0)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) for every position of idx (B, T), and the loss when targets are given.

        With a cache, idx is the next chunk: its positions start after the cached tokens, and its
        keys and values are appended to the cache.
        """
        B, T = idx.size()
        start = 0 if kv_cache is None else kv_cache.length
        assert start + T <= self.config.context_length, (
            f"{start} cached + {T} new tokens exceed context_length {self.config.context_length}")
        if kv_cache is not None and B == 1 and T == 1 and start > 0 and not self.training \
                and targets is None:
            return self._decode_one(idx, kv_cache), None

        x = self.token_embedding(idx) + self.pos_encoding[start:start + T]  # (B, T, C)
        masks = self._dropout_masks(x) if kv_cache is None else None
        x = self.dropout(x, next(masks) if masks else None)
        for block in self.blocks:
            x = block(x, kv_cache, masks)  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if kv_cache is not None:
            kv_cache.advance(T)

        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return logits, loss

    def _dropout_masks(self, x: torch.Tensor) -> Iterator[torch.Tensor] | None:
        """Training on the CPU: every dropout mask of this pass from one draw (`dropout_masks`),
        in the order they are used: the embeddings', then per block the attention weights' (see
        `unfold_causal`), the attention's output and the feed-forward's output. None where
        `dropout` applies its own."""
        c = self.config
        if not self.training or c.dropout == 0.0 or x.device.type != "cpu":
            return None
        L, (B, T, C) = c.num_blocks, x.shape
        packed, streams = dropout_masks(
            [causal_packed_shape(L * B * c.num_heads, T), torch.Size((2 * L + 1, B, T, C))],
            c.dropout, _mask_dtype(x))
        attention = unfold_causal(packed, T).view(L, B * c.num_heads, T, T)
        order = [streams[0]]
        for i in range(L):
            order += [attention[i], streams[2 * i + 1], streams[2 * i + 2]]
        return iter(order)

    def _decode_one(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """`forward` for one new token of one sequence after a cached prefix, on plain vectors.

        The same arithmetic as the modules above (tests hold the two to 1e-5). At one token a
        step is all per-call overhead, and matrix-vector calls without modules or reshapes make
        about half as many calls: that is what makes the KV cache pay on a small model. The
        weights are looked up once per cache (attribute access on modules is slow Python).
        """
        if cache.decode_params is None:
            cache.decode_params = [
                (b.ln1.weight, b.ln1.bias, b.attn.qkv.weight, b.attn.proj.weight,
                 b.attn.proj.bias, b.ln2.weight, b.ln2.bias, b.ffwd.fc.weight, b.ffwd.fc.bias,
                 b.ffwd.proj.weight, b.ffwd.proj.bias) for b in self.blocks]
        C, H, eps = self.config.d_model, self.config.num_heads, self.ln_f.eps
        hs, pos = C // H, cache.length
        x = self.token_embedding.weight[idx[0, 0]] + self.pos_encoding[pos]  # (C,)
        scores = x.new_empty(H, pos + 1, 1)  # baddbmm's ignored input (beta=0)
        for i, (ln1_w, ln1_b, qkv_w, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b) \
                in enumerate(cache.decode_params):
            h = F.layer_norm(x, (C,), ln1_w, ln1_b, eps)
            qkv = torch.mv(qkv_w, h).view(3, H, hs)  # q, k, v: (H, hs) each
            kv = cache.kv[i]  # (2, 1, H, max_length, hs)
            kv[:, 0, :, pos] = qkv[1:]  # this token's key and value
            keys, values = kv[0, 0, :, :pos + 1], kv[1, 0, :, :pos + 1]  # (H, L, hs)
            att = torch.baddbmm(scores, keys, qkv[0].unsqueeze(-1), beta=0.0,
                                alpha=1.0 / math.sqrt(hs))  # (H, L, 1)
            y = torch.bmm(att.softmax(dim=1).transpose(1, 2), values).view(C)  # (C,)
            x = x + torch.addmv(proj_b, proj_w, y)
            h = torch.addmv(fc_b, fc_w, F.layer_norm(x, (C,), ln2_w, ln2_b, eps)).relu_()
            x = x + torch.addmv(out_b, out_w, h)  # (C,)
        cache.advance(1)
        x = F.layer_norm(x, (C,), self.ln_f.weight, self.ln_f.bias, eps)
        return torch.addmv(self.lm_head.bias, self.lm_head.weight, x).view(1, 1, -1)  # (1, 1, V)

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty KV cache for `batch_size` sequences, on the model's device and dtype."""
        c, weight = self.config, self.lm_head.weight
        return KVCache(c.num_blocks, batch_size, c.num_heads, c.context_length, c.head_size,
                       device=weight.device, dtype=weight.dtype)

    def num_params(self) -> dict[str, int]:
        """Parameter counts: token embedding, everything else, total (the encoding is a buffer)."""
        embedding = self.token_embedding.weight.numel()
        total = sum(p.numel() for p in self.parameters())
        return {"embedding": embedding, "other": total - embedding, "total": total}

    def flops_per_token(self) -> int:
        """Training FLOPs per token, forward and backward (PaLM appendix B, as nanoGPT's MFU)."""
        c = self.config
        return 6 * self.num_params()["total"] + 12 * c.num_blocks * c.d_model * c.context_length

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """The book's sampler: append max_new_tokens to idx (B, T), drawn at temperature 1.

        For streaming, top-k/top-p and the KV cache, use `sampling.generate_tokens`.
        """
        from .sampling import sample_next  # sampling builds on the model, not the reverse

        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.context_length:]  # (B, <= context_length)
            logits, _ = self(idx_cond)  # (B, T, V)
            idx_next = sample_next(logits[:, -1, :], temperature=1.0)  # (B,)
            idx = torch.cat((idx, idx_next.unsqueeze(1)), dim=1)  # (B, T + 1)
        return idx
