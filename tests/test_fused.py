"""The hand-written block backward (fused.py) against autograd through the modules."""

from __future__ import annotations

import pytest
import torch

from tinygpt_cli import fused
from tinygpt_cli.config import ModelConfig
from tinygpt_cli.model import GPT


def graph_nodes(tensor: torch.Tensor) -> set[str]:
    """The names of the autograd nodes behind a tensor."""
    names, seen, stack = set(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack += [child for child, _ in node.next_functions]
    return names


def loss_and_grads(model: GPT, idx, targets, seed: int, *, use_fused: bool, monkeypatch):
    monkeypatch.setattr(fused, "applies", fused.applies if use_fused else lambda x: False)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks for both paths
    _, loss = model(idx, targets)
    nodes = graph_nodes(loss)
    loss.backward()
    monkeypatch.undo()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, nodes


@pytest.mark.parametrize(("d_model", "heads", "T", "dropout"), [
    (16, 2, 16, 0.3),  # the tests' usual shape
    (12, 3, 5, 0.5),   # odd context, three heads
    (8, 1, 7, 0.0),    # one head, no dropout (no masks at all)
])
def test_fused_block_is_the_modules_arithmetic_values_and_gradients(monkeypatch, d_model, heads,
                                                                    T, dropout):
    """Float64, same masks: the fused pass and autograd through the modules give the same loss
    and the same gradient for every parameter, to rounding."""
    config = ModelConfig(vocab_size=40, d_model=d_model, num_blocks=2, num_heads=heads,
                         context_length=T, dropout=dropout)
    torch.manual_seed(0)
    model = GPT(config).double().train()
    with torch.no_grad():  # biases and norms away from their zero/one init, so each one counts
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
    idx = torch.randint(0, 40, (3, T))
    targets = torch.randint(0, 40, (3, T))
    loss_f, grads_f, nodes_f = loss_and_grads(model, idx, targets, 5, use_fused=True,
                                              monkeypatch=monkeypatch)
    loss_m, grads_m, nodes_m = loss_and_grads(model, idx, targets, 5, use_fused=False,
                                              monkeypatch=monkeypatch)
    assert "BlockFunctionBackward" in nodes_f and "BlockFunctionBackward" not in nodes_m
    torch.testing.assert_close(loss_f, loss_m, rtol=1e-12, atol=1e-12)
    for name, grad in grads_m.items():
        assert grad.abs().max() > 0, name  # every parameter's gradient is exercised
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_fused_block_output_and_input_gradient_in_float32(monkeypatch):
    """The output and the gradient that flows back into the residual stream, checked on one block
    in float32 against the module path with the same explicit masks."""
    config = ModelConfig(vocab_size=40, d_model=16, num_blocks=1, num_heads=4,
                         context_length=9, dropout=0.2)
    torch.manual_seed(1)
    block = GPT(config).train().blocks[0]
    x = torch.randn(2, 9, 16)
    masks = [(torch.rand(shape) > 0.2).float() / 0.8
             for shape in ((8, 9, 9), (2, 9, 16), (2, 9, 16))]
    results = []
    for use_fused in (True, False):
        monkeypatch.setattr(fused, "applies", fused.applies if use_fused else lambda x: False)
        xi = x.clone().requires_grad_()
        out = block(xi, None, iter(masks))
        assert (type(out.grad_fn).__name__ == "BlockFunctionBackward") == use_fused
        assert out._base is None  # a tensor of its own, which a caller may change in place
        weight = torch.randn_like(out, generator=torch.Generator().manual_seed(2))
        (out * weight).sum().backward()
        results.append((out.detach(), xi.grad))
        monkeypatch.undo()
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


def test_only_cpu_training_in_full_precision_takes_the_fused_path():
    config = ModelConfig(vocab_size=40, d_model=16, num_blocks=1, num_heads=2,
                         context_length=8, dropout=0.1)
    model = GPT(config)
    idx = torch.randint(0, 40, (2, 8))
    assert "BlockFunctionBackward" in graph_nodes(model.train()(idx, idx)[1])
    assert "BlockFunctionBackward" not in graph_nodes(model.eval()(idx, idx)[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "BlockFunctionBackward" not in graph_nodes(model.train()(idx, idx)[1])
    assert fused.applies(torch.zeros(1, dtype=torch.float64))
    assert not fused.applies(torch.zeros(1, dtype=torch.bfloat16))
    assert not fused.applies(torch.zeros(1, device="meta"))
