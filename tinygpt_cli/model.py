"""The book's GPT decoder, in nanoGPT's voice.

Token embedding + sinusoidal positional encoding -> dropout -> `num_blocks` pre-LayerNorm blocks
(masked multi-head self-attention, 4x ReLU feed-forward) -> LayerNorm -> linear to the vocabulary.
This is the model that every path computes; `fast/` computes the same function faster on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from .config import ModelConfig


def sinusoidal_table(context_length: int, d_model: int) -> torch.Tensor:
    """The book's encoding: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same)."""
    pos = torch.arange(context_length, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (ceil(C/2),)
    angle = pos / torch.pow(10000.0, two_i / d_model)  # (T, ceil(C/2))
    pe = torch.zeros(context_length, d_model)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)[:, : d_model // 2]  # an odd d_model has one cosine column less
    return pe


class KVCache:
    """Keys and values of every layer for the tokens seen so far, up to max_length, so that
    sampling runs the model on each new token only. Each layer writes its chunk at
    [length, length + T) with `update`; the model then calls `advance(T)` once."""

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, max_length: int,
                 head_size: int, *, device=None, dtype=None) -> None:
        shape = (2, batch_size, num_heads, max_length, head_size)  # keys and values together
        self.kv = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.batch_size, self.max_length, self.length = batch_size, max_length, 0

    def reset(self) -> None:
        self.length = 0  # entries past `length` are never read

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store a chunk's (B, H, T, hs) keys and values after the cached ones; return all."""
        end = self.length + k.size(2)
        assert end <= self.max_length, f"cache holds {self.max_length} tokens, asked for {end}"
        kv = self.kv[layer]
        kv[0, :, :, self.length:end], kv[1, :, :, self.length:end] = k, v
        return kv[0, :, :, :end], kv[1, :, :, :end]  # (B, H, end, hs) each

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        # one matmul for all heads' queries, keys and values; no bias, like the book's Wq/Wk/Wv
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.num_heads, self.dropout, self.layer = config.num_heads, config.dropout, layer

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, hs)
        k = k.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, hs)
        v = v.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)  # (B, H, T, hs)

        mask, is_causal = None, True
        if kv_cache is not None:
            prefix = kv_cache.length
            cached = kv_cache.update(self.layer, k, v)  # (B, H, prefix + T, hs) each
            if prefix > 0:  # new token i sits at prefix + i: it sees the prefix and tokens 0..i
                k, v = cached
                is_causal = False  # SDPA aligns is_causal top-left, wrong once q is shorter
                if T > 1:
                    mask = torch.ones(T, prefix + T, dtype=torch.bool, device=x.device)
                    mask = mask.tril(diagonal=prefix)  # (T, prefix + T)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model)
        self.proj = nn.Linear(4 * config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.relu(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm: normalise, transform, add back to the residual stream."""

    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config, layer)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.ffwd = FeedForward(config)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), kv_cache)  # (B, T, C)
        x = x + self.ffwd(self.ln2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        # a fixed function of the shape: computed once, moved with .to(), never saved
        self.register_buffer("pos_encoding",
                             sinusoidal_table(config.context_length, config.d_model),
                             persistent=False)  # (context_length, C)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.num_blocks)])
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)  # untied, as in the book

        # nanoGPT's init for the linear layers: small normal weights, zero biases, so the first
        # loss is about ln(vocab); the projections into the residual stream shrink with depth
        # (GPT-2's scaled init). The token embedding keeps PyTorch's (and the book's) N(0, 1):
        # the sinusoidal table has unit amplitude, and 0.02-sized embeddings would drown in it.
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
        With a cache, idx is the next chunk: its positions follow the cached tokens."""
        B, T = idx.size()
        start = 0 if kv_cache is None else kv_cache.length
        assert start + T <= self.config.context_length, (
            f"{start} cached + {T} new tokens exceed context_length {self.config.context_length}")
        x = self.token_embedding(idx) + self.pos_encoding[start:start + T]  # (B, T, C)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, kv_cache)  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if kv_cache is not None:
            kv_cache.advance(T)

        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return logits, loss

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
        (`sampling.generate_tokens` adds streaming, top-k/top-p and the KV cache.)"""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.context_length:]  # (B, <= context_length)
            logits, _ = self(idx_cond)  # (B, T, V)
            probs = F.softmax(logits[:, -1, :], dim=-1)  # (B, V)
            idx_next = torch.multinomial(probs, num_samples=1)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T + 1)
        return idx
