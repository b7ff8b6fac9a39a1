"""One new token of one sequence after a cached prefix: `model.GPT.forward` on plain vectors.

At one token a step is all per-call overhead: the modules' forward calls, reshapes to (B, H, T, hs)
and back, and attribute look-ups. Matrix-vector calls on the weights, looked up once, make about
half as many calls, and that is what makes the KV cache pay on a small model. Tests hold the
logits to the readable model's cached forward.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ..model import GPT, KVCache


class OneTokenDecoder:
    """`decoder(token, cache)`: logits (1, 1, V) for `token` at position `cache.length`, its key
    and value written into the cache (batch 1) as the model's forward would."""

    def __init__(self, model: GPT) -> None:
        self.model = model
        self.blocks = [
            (b.ln1.weight, b.ln1.bias, b.attn.qkv.weight, b.attn.proj.weight, b.attn.proj.bias,
             b.ln2.weight, b.ln2.bias, b.ffwd.fc.weight, b.ffwd.fc.bias, b.ffwd.proj.weight,
             b.ffwd.proj.bias) for b in model.blocks]

    @torch.inference_mode()
    def __call__(self, token: int, cache: KVCache) -> torch.Tensor:
        model = self.model
        C, H, eps = model.config.d_model, model.config.num_heads, model.ln_f.eps
        hs, pos = C // H, cache.length
        assert cache.batch_size == 1 and pos < cache.max_length, "one sequence, room for one more"
        x = model.token_embedding.weight[token] + model.pos_encoding[pos]  # (C,)
        scores = x.new_empty(H, pos + 1, 1)  # baddbmm's ignored input (beta=0)
        for i, (ln1_w, ln1_b, qkv_w, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b) \
                in enumerate(self.blocks):
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
        x = F.layer_norm(x, (C,), model.ln_f.weight, model.ln_f.bias, eps)
        return torch.addmv(model.lm_head.bias, model.lm_head.weight, x).view(1, 1, -1)
