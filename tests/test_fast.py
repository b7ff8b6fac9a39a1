"""The speed path (tinygpt_cli/fast/) held to the readable model: the training pass, its dropout
draws, the one-token decode, the optimizer, and the switch that chooses between them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

from tests.helpers import TINY_MODEL, train_tiny
from tinygpt_cli import checkpoint as ckpt
from tinygpt_cli import fast
from tinygpt_cli.config import ModelConfig
from tinygpt_cli.errors import UsageError
from tinygpt_cli.events import Notice
from tinygpt_cli.fast import dropout as fd
from tinygpt_cli.fast import optim as fast_optim
from tinygpt_cli.fast import training as ft
from tinygpt_cli.fast.decode import OneTokenDecoder
from tinygpt_cli.model import GPT
from tinygpt_cli.sampling import generate_ids

CPU = torch.device("cpu")


# --- the training pass against the readable model, same masks ----------------------------------

class Feed:
    """The masks of one pass, handed out in order to the readable model's test doubles."""

    def __init__(self, masks: list[torch.Tensor]) -> None:
        self.masks, self.used = masks, 0

    def next(self) -> torch.Tensor:
        self.used += 1
        return self.masks[self.used - 1]


class FedDropout(nn.Module):
    """Stands in for an nn.Dropout of the readable model: multiplies by the feed's next mask."""

    def __init__(self, feed: Feed, p: float) -> None:
        super().__init__()
        self.feed, self.p = feed, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.feed.next() if self.training and self.p > 0 else x


def fed_attention(feed: Feed):
    """Stands in for F.scaled_dot_product_attention: causal attention whose weights, after the
    softmax, are multiplied by the feed's next mask where SDPA would drop out."""

    def attention(q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0):
        assert attn_mask is None and is_causal
        B, H, T, hs = q.shape
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, H, T, T)
        above = torch.ones(T, T, dtype=torch.bool).triu(1)
        att = att.masked_fill(above, float("-inf")).softmax(dim=-1)
        if dropout_p > 0:
            att = att * feed.next().view(B, H, T, T)
        return att @ v  # (B, H, T, hs)

    return attention


def with_fed_dropout(model: GPT, feed: Feed) -> GPT:
    """The readable model with every nn.Dropout replaced by FedDropout (in place)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(module, name, FedDropout(feed, child.p))
    return model


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


def perturbed_model(config: ModelConfig, dtype=torch.float64) -> GPT:
    torch.manual_seed(0)
    model = GPT(config).to(dtype).train()
    with torch.no_grad():  # biases and norms away from their zero/one init, so each one counts
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
    return model


def fast_and_readable(monkeypatch, model: GPT, idx, targets):
    """Loss and gradients of the fast pass, then of the readable model fed the masks the fast
    pass drew: (loss, grads, autograd nodes, masks drawn, masks the readable model used)."""
    drawn: list[torch.Tensor] = []

    def recording(config, x):
        drawn.extend(fd.pass_masks(config, x))
        return iter(drawn)

    monkeypatch.setattr(ft, "pass_masks", recording)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    _, loss_f = ft.forward(model, idx, targets)
    nodes = graph_nodes(loss_f)
    loss_f.backward()
    grads_f = {n: p.grad.clone() for n, p in model.named_parameters()}

    feed = Feed(drawn)
    monkeypatch.setattr(F, "scaled_dot_product_attention", fed_attention(feed))
    readable = with_fed_dropout(model, feed)
    readable.zero_grad(set_to_none=True)
    _, loss_r = readable(idx, targets)
    loss_r.backward()
    monkeypatch.undo()
    grads_r = {n: p.grad.clone() for n, p in readable.named_parameters()}
    return (loss_f.detach(), grads_f, nodes), (loss_r.detach(), grads_r), drawn, feed.used


@pytest.mark.parametrize(("d_model", "heads", "T", "dropout"), [
    (16, 2, 16, 0.3),  # the tests' usual shape
    (12, 3, 5, 0.5),   # odd context, three heads
    (8, 1, 7, 0.0),    # one head, no dropout (no masks at all)
])
def test_fast_pass_is_the_readable_model_loss_and_every_gradient(monkeypatch, d_model, heads, T,
                                                                 dropout):
    """Float64, the same dropout masks fed to both: the same loss and the same gradient for
    every parameter, to rounding."""
    config = ModelConfig(vocab_size=40, d_model=d_model, num_blocks=2, num_heads=heads,
                         context_length=T, dropout=dropout)
    model = perturbed_model(config)
    idx, targets = torch.randint(0, 40, (3, T)), torch.randint(0, 40, (3, T))
    (loss_f, grads_f, nodes), (loss_r, grads_r), drawn, used = fast_and_readable(
        monkeypatch, model, idx, targets)
    assert "BlockFunctionBackward" in nodes  # the hand-written backward really ran
    expected_masks = 1 + 3 * config.num_blocks if dropout else 0
    assert len(drawn) == used == expected_masks  # every mask used once, by both
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-12, atol=1e-12)
    for name, grad in grads_r.items():
        assert grad.abs().max() > 0, name  # every parameter's gradient is exercised
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_fast_pass_in_float32_matches_and_its_output_is_a_tensor_of_its_own(monkeypatch):
    config = ModelConfig(vocab_size=40, d_model=16, num_blocks=1, num_heads=4,
                         context_length=9, dropout=0.2)
    model = perturbed_model(config, torch.float32)
    idx = torch.randint(0, 40, (2, 9))
    (loss_f, grads_f, _), (loss_r, grads_r), _, _ = fast_and_readable(monkeypatch, model, idx,
                                                                      idx)
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-5, atol=1e-6)
    for name, grad in grads_r.items():
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    block = model.blocks[0]
    x = torch.randn(2, 9, 16)
    out = ft.BlockFunction.apply(
        x, None, None, None, ft.causal_bias(9, CPU, torch.float32), block.ln1.weight,
        block.ln1.bias, block.attn.qkv.weight, block.attn.proj.weight, block.attn.proj.bias,
        block.ln2.weight, block.ln2.bias, block.ffwd.fc.weight, block.ffwd.fc.bias,
        block.ffwd.proj.weight, block.ffwd.proj.bias, 4, 1e-5, 1e-5)
    assert out._base is None  # a caller may change it in place, as a module's output


def test_training_pass_module_is_the_model_outside_training():
    config = ModelConfig(vocab_size=40, **{**TINY_MODEL, "dropout": 0.2})
    model = GPT(config)
    wrapped = ft.TrainingPass(model)
    assert list(wrapped.state_dict()) == [f"model.{k}" for k in model.state_dict()]
    idx = torch.randint(0, 40, (2, 16))
    model.eval()
    logits, loss = wrapped(idx, idx)
    torch.testing.assert_close(loss, model(idx, idx)[1], rtol=0, atol=0)
    model.train()
    assert "BlockFunctionBackward" in graph_nodes(wrapped(idx, idx)[1])
    assert "BlockFunctionBackward" not in graph_nodes(model(idx, idx)[1])  # the model is plain


# --- dropout draws ------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5])
def test_masks_drop_p_of_the_values_and_keep_the_mean(p):
    torch.manual_seed(0)
    (mask,) = fd.dropout_masks([torch.Size((400, 1000))], p)  # 400k draws
    assert mask.dtype == torch.float32 and mask.shape == (400, 1000)
    kept = 1 / (1 - p)
    assert mask.unique().tolist() == pytest.approx([0.0, kept], rel=1e-4)
    assert (mask == 0).float().mean().item() == pytest.approx(p, abs=0.003)
    assert mask.mean().item() == pytest.approx(1.0, abs=0.006)  # dropout keeps the expectation


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_masks_are_exactly_the_16_bit_threshold(p):
    """The float arithmetic that builds a mask (shift, clamp, scale) gives exactly what the plain
    comparison gives, for every one of the 65536 uniforms: kept where u reaches round(p*65536)."""
    u = torch.arange(-32768, 32768).to(torch.int16)
    dropped = round(p * 65536)
    scale = 65536 / (65536 - dropped)
    assert fd._threshold(u, 0.9999999, torch.float32).count_nonzero() == 1  # not 1/0
    for dtype in (torch.float32, torch.float64):
        want = torch.zeros(65536, dtype=dtype)
        want[u.long() + 32768 >= dropped] = scale
        assert torch.equal(fd._threshold(u, p, dtype), want)


def test_masks_come_from_one_draw_of_the_generator():
    shapes = [torch.Size((3, 40)), torch.Size((2, 8, 8)), torch.Size((12,))]
    torch.manual_seed(7)
    masks = fd.dropout_masks(shapes, 0.2)
    assert [m.shape for m in masks] == shapes and masks[1].dtype == torch.float32
    torch.manual_seed(7)
    n = sum(math.prod(shape) for shape in shapes)
    bits = fd.random_words((n + 3) // 4)
    want = fd._threshold(bits.view(torch.int16)[:n], 0.2, torch.float32)
    assert torch.equal(torch.cat([m.flatten() for m in masks]), want)
    assert fd.dropout_masks(shapes, 0.2, torch.float64)[0].dtype == torch.float64


def test_random_words_follow_torchs_generator_and_use_all_64_bits():
    """The dropout bits are decided by torch's seed (so a checkpoint's RNG state resumes them),
    take one draw of it whatever their number, and are uniform over all 64 bits."""
    torch.manual_seed(3)
    first = fd.random_words(50_000)
    after_many = torch.get_rng_state()
    torch.manual_seed(3)
    assert torch.equal(fd.random_words(50_000), first)
    torch.manual_seed(3)
    fd.random_words(10)
    assert torch.equal(torch.get_rng_state(), after_many)  # however many words: one draw
    torch.manual_seed(3)
    torch.empty((), dtype=torch.int64).random_()
    assert torch.equal(torch.get_rng_state(), after_many)  # ... of exactly one int64
    torch.manual_seed(3)
    assert torch.equal(fd.random_words(10), first[:10])  # a prefix of the same stream
    assert not torch.equal(fd.random_words(10), first[:10])  # the next call moves on
    assert first.dtype == torch.int64 and fd.random_words(0).numel() == 0
    bits = torch.stack([(first >> i) & 1 for i in range(64)])  # (64, n)
    assert bits.float().mean(dim=1).sub(0.5).abs().max().item() < 0.01
    u = first.view(torch.int16).long() + 32768  # the uniforms the masks threshold
    counts = torch.bincount(u // 4096, minlength=16).float()  # 16 equal bins
    assert (counts / counts.mean() - 1).abs().max().item() < 0.03


@pytest.mark.parametrize("T", [1, 2, 5, 16, 17])
def test_causal_masks_give_every_entry_on_and_below_the_diagonal_its_own_draw(T):
    n = 3
    shape = fd.causal_packed_shape(n, T)
    packed = torch.arange(math.prod(shape), dtype=torch.float64).view(shape)
    masks = fd.unfold_causal(packed, T)
    assert masks.shape == (n, T, T) and masks.is_contiguous()
    rows, cols = torch.tril_indices(T, T)
    used = masks[:, rows, cols]  # (n, T(T+1)/2): the entries that count
    assert used.flatten().unique().numel() == n * T * (T + 1) // 2  # all distinct draws


def test_attention_mask_entries_above_the_diagonal_change_nothing():
    """unfold_causal fills them with repeats: they never reach the output or any gradient."""
    config = ModelConfig(vocab_size=40, d_model=16, num_blocks=1, num_heads=2,
                         context_length=16, dropout=0.3)
    model = perturbed_model(config)
    idx = torch.randint(0, 40, (2, 16))
    torch.manual_seed(1)
    masks = list(fd.pass_masks(config, torch.zeros(2, 16, 16, dtype=torch.float64)))
    garbage = [m.clone() for m in masks]
    garbage[1] += torch.rand(4, 16, 16, dtype=torch.float64).triu(1) * 5  # above only
    results = []
    for chosen in (masks, garbage):
        model.zero_grad(set_to_none=True)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ft, "pass_masks", lambda config, x, chosen=chosen: iter(chosen))
            _, loss = ft.forward(model, idx, idx)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(a, b)


# --- the one-token decode ------------------------------------------------------------------------

def test_one_token_decode_is_the_cached_forward():
    config = ModelConfig(vocab_size=64, d_model=16, num_blocks=2, num_heads=2,
                         context_length=16, dropout=0.0)
    model = perturbed_model(config, torch.float32).eval()
    idx = torch.randint(0, 64, (1, 16))
    full, _ = model(idx)
    decode = OneTokenDecoder(model)
    cache = model.new_cache(1)
    model(idx[:, :3], kv_cache=cache)
    reference = model.new_cache(1)
    model(idx[:, :3], kv_cache=reference)
    for t in range(3, 16):
        logits = decode(int(idx[0, t]), cache)
        want, _ = model(idx[:, t:t + 1], kv_cache=reference)
        assert logits.shape == (1, 1, 64) and cache.length == reference.length == t + 1
        torch.testing.assert_close(logits, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(logits[0, 0], full[0, t], atol=1e-5, rtol=0)
        for layer in range(2):  # it wrote the same keys and values
            torch.testing.assert_close(cache.kv[layer][:, :, :, :t + 1],
                                       reference.kv[layer][:, :, :, :t + 1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_is_the_same_on_both_paths(temperature):
    config = ModelConfig(vocab_size=64, d_model=16, num_blocks=2, num_heads=2,
                         context_length=16, dropout=0.0)
    model = perturbed_model(config, torch.float32).eval()
    ids = {}
    for use_fast in (True, False):
        generator = torch.Generator().manual_seed(4)
        ids[use_fast] = generate_ids(model, [1, 2, 3], 40, temperature=temperature,
                                     generator=generator, fast=use_fast)
    assert ids[True] == ids[False] and len(ids[True]) == 40  # past the window's slide too


# --- the optimizer and its fallback --------------------------------------------------------------

def test_the_optimizer_is_torchs_adamw_state_for_state():
    torch.manual_seed(0)
    ours_model, torch_model = nn.Linear(5, 3), nn.Linear(5, 3)
    torch_model.load_state_dict(ours_model.state_dict())
    ours, notice = fast.make_optimizer(ours_model.parameters(), 1e-2, 0.1)
    assert isinstance(ours, fast_optim.AdamW) and notice is None
    reference = torch.optim.AdamW(torch_model.parameters(), lr=1e-2, weight_decay=0.1)
    for step in range(5):
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(step))
        for model, opt in ((ours_model, ours), (torch_model, reference)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for a, b in zip(ours_model.parameters(), torch_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    ours_state, torch_state = ours.state_dict(), reference.state_dict()
    assert ours_state["state"].keys() == torch_state["state"].keys()
    for index, state in torch_state["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(ours_state["state"][index][key].float(),
                                       state[key].float(), rtol=1e-6, atol=1e-8)


def _removed(*args, **kwargs):
    raise TypeError("_fused_adamw_() got an unexpected keyword argument 'beta1'")


@pytest.mark.parametrize("breakage", ["missing", "signature"])
def test_a_torch_without_the_fused_op_falls_back_to_torch_optim(monkeypatch, breakage):
    if breakage == "missing":
        monkeypatch.delattr(torch, "_fused_adamw_")
    else:
        monkeypatch.setattr(torch, "_fused_adamw_", _removed)
    assert not fast_optim.fused_kernel_works()
    layer = nn.Linear(3, 2)
    optimizer, notice = fast.make_optimizer(layer.parameters(), 1e-3, 0.01)
    assert type(optimizer) is torch.optim.AdamW and notice.startswith("this torch (")
    assert "torch.optim.AdamW" in notice and "\n" not in notice
    before = layer.weight.detach().clone()
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()  # it really trains
    assert not torch.equal(layer.weight, before)


def test_the_trainer_says_when_the_optimizer_falls_back(monkeypatch, corpus, cache_root, tmp_path):
    monkeypatch.setattr(torch, "_fused_adamw_", _removed)
    events = train_tiny(tmp_path / "model.ckpt", corpus, cache_root, max_iters=2,
                        eval_interval=1, eval_iters=1)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert sum("lacks the fused AdamW op" in n for n in notices) == 1
    assert ckpt.load(tmp_path / "model.ckpt")["step"] == 2


# --- one run on both paths -----------------------------------------------------------------------

def test_a_short_float64_run_ends_at_the_same_weights_on_both_paths():
    """Dropout 0, the same batches: the fast pass with tinygpt's AdamW and the readable model
    with torch.optim.AdamW take the same 20 steps."""
    config = ModelConfig(vocab_size=40, d_model=16, num_blocks=2, num_heads=2,
                         context_length=8, dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 40, (4, 9), generator=gen) for _ in range(20)]
    weights = {}
    for use_fast in (True, False):
        torch.manual_seed(0)
        model = GPT(config).double().train()
        step = ft.TrainingPass(model) if use_fast else model
        if use_fast:
            optimizer, _ = fast.make_optimizer(model.parameters(), 3e-3, 0.01)
        else:
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            _, loss = step(batch[:, :-1], batch[:, 1:])
            loss.backward()
            optimizer.step()
        weights[use_fast] = model.state_dict()
    moved = 0.0
    for name, tensor in weights[True].items():
        torch.testing.assert_close(tensor, weights[False][name], rtol=1e-9, atol=1e-11, msg=name)
        moved = max(moved, float((tensor - GPT(config).double().state_dict()[name]).abs().max()))
    assert moved > 1e-3  # the weights did move


@pytest.mark.parametrize("use_fast", [True, False])
def test_the_trainer_uses_the_path_the_switch_chose_and_records_it(corpus, cache_root, tmp_path,
                                                                   use_fast):
    from tinygpt_cli.config import TrainConfig
    from tinygpt_cli.fast.saver import BackgroundSaver
    from tinygpt_cli.train import Trainer, TrainRequest

    config = TrainConfig(device="cpu", dtype="float32", max_iters=3, eval_interval=2,
                         eval_iters=1, fast=use_fast)
    trainer = Trainer(TrainRequest(train_config=config, model_options=TINY_MODEL, data=corpus,
                                   cache_dir=cache_root, out=tmp_path / "model.ckpt"))
    try:
        assert trainer.fast is use_fast
        assert isinstance(trainer.forward_model, ft.TrainingPass) is use_fast
        assert isinstance(trainer.optimizer, fast_optim.AdamW) is use_fast
        assert isinstance(trainer.saver, BackgroundSaver) is use_fast
        list(trainer.run())
    finally:
        trainer.close()
    state = ckpt.load(tmp_path / "model.ckpt")
    assert state["train_config"]["fast"] is use_fast and state["step"] == 3


def test_both_paths_train_the_same_tiny_model(corpus, cache_root, tmp_path):
    """Float32, dropout 0: the whole trainer on either path ends at nearly the same weights."""
    final = {}
    for use_fast in (True, False):
        out = tmp_path / str(use_fast) / "model.ckpt"
        train_tiny(out, corpus, cache_root, max_iters=8, eval_interval=4, eval_iters=1,
                   fast=use_fast)
        final[use_fast] = ckpt.load(out)["model_state_dict"]
    for name, tensor in final[True].items():
        torch.testing.assert_close(tensor, final[False][name], rtol=1e-4, atol=1e-5, msg=name)


# --- the switch ----------------------------------------------------------------------------------

def test_the_switch_is_on_where_the_speed_path_applies_and_refuses_it_elsewhere():
    assert fast.decide(None, CPU, torch.float32) is True
    assert fast.decide(None, CPU, torch.float64) is True
    assert fast.decide(False, CPU, torch.float32) is False
    assert fast.decide(True, CPU, torch.float32) is True
    for device, dtype, compiled in ((torch.device("cuda"), torch.float32, False),
                                    (CPU, torch.bfloat16, False), (CPU, torch.float32, True)):
        assert fast.decide(None, device, dtype, compiled) is False
        assert fast.decide(False, device, dtype, compiled) is False
        with pytest.raises(UsageError, match="--fast does not apply here"):
            fast.decide(True, device, dtype, compiled)


def test_the_readable_model_imports_nothing_of_the_speed_path():
    import ast
    import inspect

    from tinygpt_cli import model as model_mod

    tree = ast.parse(inspect.getsource(model_mod))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "." for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "math", "torch", "torch.nn", "torch.nn.functional",
                        "config"}, imported


# --- the switch on the command line ---------------------------------------------------------------

def test_the_command_line_switch_trains_and_samples_on_either_path(corpus, cache_root, tmp_path):
    from typer.testing import CliRunner

    from tests.helpers import assert_user_error
    from tinygpt_cli.cli import app

    tiny = ["--device", "cpu", "--d-model", "16", "--num-blocks", "1", "--num-heads", "2",
            "--context-length", "16", "--batch-size", "2", "--eval-iters", "1",
            "--max-iters", "3", "--cache-dir", str(cache_root), "--data", str(corpus)]
    runner = CliRunner()
    texts = {}
    for flag in ("--fast", "--no-fast"):
        out = tmp_path / flag / "model.ckpt"
        result = runner.invoke(app, ["train", *tiny, flag, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert ckpt.load(out)["train_config"]["fast"] is (flag == "--fast")
        generated = runner.invoke(app, ["generate", "-c", str(out), "--json", "-n", "12", flag,
                                        "--prompt", "Cotton"])
        assert generated.exit_code == 0, generated.output
        assert f'"fast": {str(flag == "--fast").lower()}' in generated.stdout
        texts[flag] = generated.stdout
        info = runner.invoke(app, ["info", str(out)], env={"COLUMNS": "200"})
        said = "speed path on" if flag == "--fast" else "speed path off (--no-fast)"
        assert said in info.output
    result = runner.invoke(app, ["train", *tiny, "--fast", "--compile",
                                 "--out", str(tmp_path / "c" / "model.ckpt")])
    assert_user_error(result, 2, "--fast does not apply here", "torch.compile")
    assert not (tmp_path / "c" / "model.ckpt").exists()
