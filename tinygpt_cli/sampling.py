"""Choosing the next token (temperature, top-k, top-p) and streaming a continuation id by id.

The KV cache and absolute positions
-----------------------------------
The book's model adds a sinusoidal encoding of each token's position in the window to its
embedding, so every key and value in every layer depends on where its token sits. While the whole
sequence fits in context_length, positions never change: the prompt is prefilled once and each new
token costs one single-token forward pass. Once the sequence is longer than the window, the
reference (uncached) sampler runs the model on the last context_length tokens, so each step shifts
every kept token one position to the left, and every cached key and value is stale. Nothing can be
reused exactly, so past the window the cache is reset and re-prefilled with the last
context_length tokens on every step: the cost is a full window pass per token, the same as without
a cache, and the logits are identical to the uncached sampler's at every step. (Sliding by half a
window, StreamingLLM's attention sinks or relative positions would be cheaper, but each changes
the logits; the exactness is what the tests hold on to.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .model import GPT, KVCache
    from .tokenizer import Utf8Table


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one id per row of logits (B, V); returns (B,) long.

    temperature 0 is greedy (argmax). top_k keeps the k largest logits (k >= V keeps all); top_p
    keeps the smallest set of most likely tokens whose probability reaches top_p, never fewer than
    the top token. `generator` must live on the logits' device.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    logits = logits.float() / temperature  # (B, V)

    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))

    if top_p < 1.0:
        probs, order = torch.sort(torch.softmax(logits, dim=-1), dim=-1, descending=True)  # (B, V)
        # drop a token when the more likely ones before it already reach top_p; the top never is
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p  # (B, V)
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))

    # inverse-CDF sampling: one uniform per row (torch.multinomial draws one per token, and at
    # one token a step that was the most expensive op of sampling); a token of probability 0,
    # filtered out above, has a flat step in the CDF and is never chosen
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)  # (B, V)
    u = torch.rand(cdf.size(0), 1, generator=generator, device=cdf.device, dtype=cdf.dtype)
    choice = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # (B, 1)
    return choice.clamp_(max=cdf.size(-1) - 1).squeeze(-1)  # (B,)


class Utf8Guard:
    """Keeps a sample valid UTF-8: before each draw, the tokens that would break the character
    being written (or start one with a continuation byte, or write U+FFFD) get probability 0;
    the others keep their ratios (the logits are masked, then softmax renormalises).

    `finishing` restricts the draw to tokens that complete the open character, or bring it
    closer, for the few tokens a sample may take past max_new_tokens to end on a whole one.
    """

    def __init__(self, table: Utf8Table, prompt_ids: list[int], device: torch.device) -> None:
        from .tokenizer import COMPLETE, REJECT

        self.complete, self.reject, self.next_state = COMPLETE, REJECT, table.next_state
        self.allowed = torch.from_numpy(table.allowed).to(device)  # (S, V)
        finishing = table.finishes.copy()
        stuck = ~finishing.any(axis=1)
        finishing[stuck] = table.closer[stuck]
        self.finishing = torch.from_numpy(finishing).to(device)  # (S, V)
        state = COMPLETE
        for token in prompt_ids:  # a prompt cut mid-character starts afresh at its next token
            state = int(self.next_state[state, token])
            if state == REJECT:
                state = int(self.next_state[COMPLETE, token])
                state = COMPLETE if state == REJECT else state
        self.state = state

    @property
    def open(self) -> bool:
        """A character has begun and is not finished."""
        return self.state != self.complete

    def restrict(self, logits: torch.Tensor, finishing: bool = False) -> torch.Tensor:
        row = (self.finishing if finishing else self.allowed)[self.state]  # (V,)
        return logits.masked_fill(~row, float("-inf"))

    def advance(self, token: int) -> None:
        self.state = int(self.next_state[self.state, token])
        if self.state == self.reject:  # only a draw from all -inf logits lands here: start afresh
            self.state = self.complete


FINISH_TOKENS = 3  # a character has at most 4 bytes: 3 tokens always finish one


@torch.inference_mode()
def _forward_last(model: GPT, ids: list[int], kv_cache: KVCache | None,
                  decode_one=None) -> torch.Tensor:
    """Logits (1, V) at the last of ids; with a cache, ids are the tokens not yet in it.
    `decode_one`: the speed path's one-token decoder, for one new token after a cached prefix."""
    if decode_one is not None and kv_cache is not None and kv_cache.length > 0 and len(ids) == 1:
        return decode_one(ids[0], kv_cache)[:, -1, :]
    idx = torch.tensor([ids], dtype=torch.long, device=model.lm_head.weight.device)  # (1, T)
    logits, _ = model(idx, kv_cache=kv_cache)  # (1, T, V)
    return logits[:, -1, :]


def generate_tokens(model: GPT, prompt_ids: list[int], max_new_tokens: int, *,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
                    generator: torch.Generator | None = None,
                    use_cache: bool = True, fast: bool = False,
                    utf8: Utf8Table | None = None) -> Iterator[int]:
    """Continue one sequence, yielding each new id as soon as it is drawn.

    A prompt longer than the window keeps its last context_length ids. The model is in eval mode
    while this runs and gets its previous mode back when the generator finishes or is closed.
    Cached and uncached runs give the same logits at every step (see the module docstring).
    `fast`: decode each new token on the speed path (`fast.decode`; with the cache only).
    `utf8` (a vocabulary's `Vocabulary.utf8`): draw only tokens that keep the text valid UTF-8,
    and if the last of max_new_tokens leaves a character open, finish it with up to
    FINISH_TOKENS more (tokens of its remaining bytes), so the text never shows U+FFFD.
    """
    if not prompt_ids:
        raise ValueError("prompt_ids is empty; give at least one token (e.g. a start token)")
    return _generate(model, list(prompt_ids), max_new_tokens, temperature, top_k, top_p,
                     generator, use_cache, fast, utf8)


def _generate(model: GPT, ids: list[int], max_new_tokens: int, temperature: float,
              top_k: int | None, top_p: float, generator: torch.Generator | None,
              use_cache: bool, fast: bool, utf8: Utf8Table | None) -> Iterator[int]:
    # inference mode is entered per forward pass, never across a yield: a generator holding it
    # open would leak it into the caller's code between tokens
    context = model.config.context_length
    ids = ids[-context:]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            cache = model.new_cache(1) if use_cache else None
        decode_one = None
        if fast and use_cache:
            from .fast.decode import OneTokenDecoder

            decode_one = OneTokenDecoder(model)
        guard = Utf8Guard(utf8, ids, model.lm_head.weight.device) if utf8 is not None else None
        pending = ids  # tokens the cache has not seen yet
        drawn = 0
        while drawn < max_new_tokens or (guard is not None and guard.open and drawn > 0
                                         and drawn < max_new_tokens + FINISH_TOKENS):
            if cache is None:
                logits = _forward_last(model, ids, None)  # the reference: the whole window
            else:
                if cache.length + len(pending) > context:
                    cache.reset()  # the window slid: every position shifted, re-prefill it
                    pending = ids
                logits = _forward_last(model, pending, cache, decode_one)
            if not bool(torch.isfinite(logits).all()):
                from .errors import CheckpointError

                raise CheckpointError("the model's logits are not finite (NaN or inf): its "
                                      "training diverged before it was saved",
                                      hint="generate from the .best.ckpt beside it")
            if guard is not None:
                logits = guard.restrict(logits, finishing=drawn >= max_new_tokens)
            next_id = int(sample_next(logits, temperature, top_k, top_p, generator)[0])
            if guard is not None:
                guard.advance(next_id)
            drawn += 1
            ids = (ids + [next_id])[-context:]
            pending = [next_id]
            yield next_id
    finally:
        model.train(was_training)


def generate_ids(model: GPT, prompt_ids: list[int], max_new_tokens: int, *,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 fast: bool = False, utf8: Utf8Table | None = None) -> list[int]:
    """All of `generate_tokens` at once, as a list."""
    return list(generate_tokens(model, prompt_ids, max_new_tokens, temperature=temperature,
                                top_k=top_k, top_p=top_p, generator=generator,
                                use_cache=use_cache, fast=fast, utf8=utf8))
