"""A transformer block's CPU training pass as one autograd node, its backward written by hand.

Autograd records `model.Block` as about 40 nodes (linears, views, transposes, the split of the
fused QKV output, softmax, dropout products, residual sums, layer norms), and on the book's small
model the CPU spends a good part of a step walking them and doing what each does separately:
copying q, k and v into head-major layout one by one and their gradients back through a
concatenation, taking a view's backward, accumulating. `BlockFunction` is one node: its forward is
the block's arithmetic, its backward the chain rule taken by hand, with q, k and v moved to
head-major layout in one copy each way and every weight gradient a single matrix product. Tests
hold it to the module path, values and gradients, in float64.

Being one node, it reads the block's parameters directly: hooks or parametrizations registered on
the block's submodules are not run, and it is differentiable once (no `create_graph`).
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

aten = torch.ops.aten


class BlockFunction(torch.autograd.Function):
    """x -> x + drop(attn(ln1(x))) -> + drop(ffwd(ln2(.))), as `model.Block` computes it.

    Masks are dropout multipliers (0 or 1/P(keep), see `dropout.dropout_masks`), or None for no
    dropout: `attn_mask` (B*H, T, T) for the attention weights, `attn_out_mask` and `ffwd_mask`
    (B, T, C) for the two branches. `bias` is the (T, T) causal bias (0 on and below the
    diagonal, -inf above).
    """

    @staticmethod
    def forward(ctx, x, attn_mask, attn_out_mask, ffwd_mask, bias, ln1_w, ln1_b, qkv_w, proj_w,
                proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b, num_heads: int, eps1: float,
                eps2: float):
        B, T, C = x.shape
        N, H, hs = B * T, num_heads, C // num_heads
        scale = 1.0 / math.sqrt(hs)
        h1, mean1, rstd1 = aten.native_layer_norm(x, [C], ln1_w, ln1_b, eps1)  # (B, T, C)
        qkv = torch.mm(h1.view(N, C), qkv_w.t())  # (N, 3C)
        # q, k and v of every head, head-major, in one copy: (3, B*H, T, hs)
        heads = qkv.view(B, T, 3, H, hs).permute(2, 0, 3, 1, 4).reshape(3, B * H, T, hs)
        q, k, v = heads.unbind(0)  # (B*H, T, hs) each
        att = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale).softmax(-1)  # (B*H, T, T)
        dropped = att * attn_mask if attn_mask is not None else att
        y = torch.bmm(dropped, v)  # (B*H, T, hs)
        y = y.view(B, H, T, hs).transpose(1, 2).reshape(N, C)  # heads side by side
        branch = torch.addmm(proj_b, y, proj_w.t()).view(B, T, C)
        x1 = _add_dropped(x, branch, attn_out_mask)  # (B, T, C)
        h2, mean2, rstd2 = aten.native_layer_norm(x1, [C], ln2_w, ln2_b, eps2)
        hidden = torch.addmm(fc_b, h2.view(N, C), fc_w.t()).relu_()  # (N, 4C)
        branch = torch.addmm(out_b, hidden, out_w.t()).view(B, T, C)
        # a tensor of its own, not a view: the caller may change it in place, as a module's output
        out = _add_dropped(x1, branch, ffwd_mask)  # (B, T, C)
        ctx.save_for_backward(x, h1, mean1, rstd1, heads, att, dropped, y, x1, h2, mean2, rstd2,
                              hidden, attn_mask, attn_out_mask, ffwd_mask, ln1_w, ln1_b, qkv_w,
                              proj_w, ln2_w, ln2_b, fc_w, out_w)
        ctx.num_heads, ctx.scale = num_heads, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x, h1, mean1, rstd1, heads, att, dropped, y, x1, h2, mean2, rstd2, hidden, attn_mask,
         attn_out_mask, ffwd_mask, ln1_w, ln1_b, qkv_w, proj_w, ln2_w, ln2_b, fc_w,
         out_w) = ctx.saved_tensors
        B, T, C = x.shape
        N, H, hs = B * T, ctx.num_heads, C // ctx.num_heads
        all_three = [True, True, True]
        g = grad.reshape(N, C)  # into the residual stream after the block

        # feed-forward branch: out = x1 + drop(hidden @ out_w.T + out_b)
        d_branch = g * ffwd_mask.view(N, C) if ffwd_mask is not None else g
        d_out_w, d_out_b = d_branch.t().mm(hidden), d_branch.sum(0)
        d_hidden = aten.threshold_backward(d_branch.mm(out_w), hidden, 0)  # ReLU
        d_fc_w, d_fc_b = d_hidden.t().mm(h2.view(N, C)), d_hidden.sum(0)
        d_x1, d_ln2_w, d_ln2_b = aten.native_layer_norm_backward(
            d_hidden.mm(fc_w).view(B, T, C), x1, [C], mean2, rstd2, ln2_w, ln2_b, all_three)
        d_x1 = d_x1.view(N, C).add_(g)

        # attention branch: x1 = x + drop(y @ proj_w.T + proj_b)
        d_branch = d_x1 * attn_out_mask.view(N, C) if attn_out_mask is not None else d_x1
        d_proj_w, d_proj_b = d_branch.t().mm(y), d_branch.sum(0)
        d_y = d_branch.mm(proj_w).view(B, T, H, hs).transpose(1, 2).reshape(B * H, T, hs)
        q, k, v = heads.unbind(0)
        d_heads = torch.empty_like(heads)  # (3, B*H, T, hs): dq, dk, dv
        torch.bmm(dropped.transpose(1, 2), d_y, out=d_heads[2])
        d_att = torch.bmm(d_y, v.transpose(1, 2))  # (B*H, T, T)
        if attn_mask is not None:
            d_att.mul_(attn_mask)
        d_scores = aten._softmax_backward_data(d_att, att, -1, att.dtype)
        torch.baddbmm(d_heads[0], d_scores, k, beta=0, alpha=ctx.scale, out=d_heads[0])
        torch.baddbmm(d_heads[1], d_scores.transpose(1, 2), q, beta=0, alpha=ctx.scale,
                      out=d_heads[1])
        d_qkv = d_heads.view(3, B, H, T, hs).permute(1, 3, 0, 2, 4).reshape(N, 3 * C)
        d_qkv_w = d_qkv.t().mm(h1.view(N, C))
        d_x, d_ln1_w, d_ln1_b = aten.native_layer_norm_backward(
            d_qkv.mm(qkv_w).view(B, T, C), x, [C], mean1, rstd1, ln1_w, ln1_b, all_three)
        d_x = d_x.view(N, C).add_(d_x1).view(B, T, C)
        return (d_x, None, None, None, None, d_ln1_w, d_ln1_b, d_qkv_w, d_proj_w, d_proj_b,
                d_ln2_w, d_ln2_b, d_fc_w, d_fc_b, d_out_w, d_out_b, None, None, None)


def _add_dropped(residual: torch.Tensor, branch: torch.Tensor, mask: torch.Tensor | None
                 ) -> torch.Tensor:
    """residual + branch * mask: one `addcmul`, one pass over memory where a product then a sum
    take two."""
    return residual + branch if mask is None else torch.addcmul(residual, branch, mask)
