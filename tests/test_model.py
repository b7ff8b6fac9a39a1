from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

from tinygpt_cli import model as model_mod
from tinygpt_cli.config import ModelConfig
from tinygpt_cli.model import GPT

CFG = ModelConfig(vocab_size=64, d_model=16, num_blocks=2, num_heads=2, context_length=16,
                  dropout=0.0)



def sharp_model(config: ModelConfig = CFG, seed: int = 0) -> GPT:
    """A model whose attention is far from uniform, so a masking or position bug shows."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def test_changing_a_token_never_changes_earlier_logits():
    model = sharp_model()
    idx = torch.randint(0, CFG.vocab_size, (2, CFG.context_length))
    base, _ = model(idx)
    for t in (0, 5, CFG.context_length - 1):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % CFG.vocab_size
        logits, _ = model(changed)
        torch.testing.assert_close(logits[:, :t], base[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(logits[:, t], base[:, t])  # the change is seen from t on


def test_positional_table_is_a_buffer_computed_once_with_the_books_formula(monkeypatch):
    model = GPT(CFG)
    pe = dict(model.named_buffers())["pos_encoding"]
    assert pe.shape == (CFG.context_length, CFG.d_model)
    assert "pos_encoding" not in model.state_dict()
    d = CFG.d_model
    for pos in (0, 1, 7, 15):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)

    def recomputed(*args: object) -> torch.Tensor:
        raise AssertionError("the positional table is recomputed in forward")

    monkeypatch.setattr(model_mod, "sinusoidal_table", recomputed)
    model(torch.zeros(1, CFG.context_length, dtype=torch.long))
    assert model.pos_encoding.data_ptr() == pe.data_ptr()


def test_odd_d_model_table():
    pe = model_mod.sinusoidal_table(4, 5)
    assert pe.shape == (4, 5)
    assert pe[3, 4].item() == pytest.approx(math.sin(3 / 10000 ** (4 / 5)), abs=1e-6)


def test_state_dict_round_trips_without_the_buffer():
    model, other = GPT(CFG), GPT(CFG)
    other.load_state_dict(model.state_dict())  # strict: the buffer is neither saved nor expected
    idx = torch.randint(0, CFG.vocab_size, (1, 8))
    torch.testing.assert_close(other.eval()(idx)[0], model.eval()(idx)[0])


def test_initial_loss_is_near_ln_vocab():
    config = ModelConfig(vocab_size=500, d_model=16, num_blocks=2, num_heads=2, context_length=16)
    torch.manual_seed(0)
    model = GPT(config)
    idx = torch.randint(0, 500, (4, 16))
    logits, loss = model(idx, torch.randint(0, 500, (4, 16)))
    assert logits.shape == (4, 16, 500)
    assert abs(loss.item() - math.log(500)) < 0.5


def test_a_fixed_batch_overfits():
    torch.manual_seed(0)
    model = GPT(CFG)
    x = torch.randint(0, CFG.vocab_size, (4, CFG.context_length))
    y = torch.randint(0, CFG.vocab_size, (4, CFG.context_length))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if loss.item() < 0.1:
            break
    assert loss.item() < 0.1


def test_logits_without_targets_cover_every_position_and_loss_is_none():
    logits, loss = GPT(CFG)(torch.zeros(3, 5, dtype=torch.long))
    assert logits.shape == (3, 5, CFG.vocab_size) and loss is None


def test_too_long_input_is_refused():
    with pytest.raises(AssertionError):
        GPT(CFG)(torch.zeros(1, CFG.context_length + 1, dtype=torch.long))


def test_param_counts_and_flops():
    model = GPT(CFG)
    counts = model.num_params()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embedding"] == CFG.vocab_size * CFG.d_model
    assert counts["embedding"] + counts["other"] == counts["total"]
    assert model.flops_per_token() == (
        6 * counts["total"] + 12 * CFG.num_blocks * CFG.d_model * CFG.context_length)


def test_fused_qkv_has_no_bias_and_init_is_nanogpts():
    model = GPT(CFG)
    attn = model.blocks[0].attn
    assert isinstance(attn.qkv, nn.Linear) and attn.qkv.bias is None
    assert attn.qkv.weight.shape == (3 * CFG.d_model, CFG.d_model)
    assert torch.count_nonzero(model.lm_head.bias) == 0
    # the embedding is N(0, 1), on the scale of the unit-amplitude sinusoidal table
    assert model.token_embedding.weight.std().item() == pytest.approx(1.0, rel=0.1)


# -- KV cache ------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cpu_dropout_drops_p_of_the_values_and_keeps_the_mean(p):
    torch.manual_seed(0)
    mask = model_mod.dropout_mask(torch.Size((400, 1000)), p)  # 400k draws
    assert mask.dtype == torch.float32 and mask.shape == (400, 1000)
    kept = 1 / (1 - p)
    assert mask.unique().tolist() == pytest.approx([0.0, kept], rel=1e-4)
    assert (mask == 0).float().mean().item() == pytest.approx(p, abs=0.003)
    assert mask.mean().item() == pytest.approx(1.0, abs=0.006)  # dropout keeps the expectation
    # in bfloat16 (CPU autocast) the scale is applied in float32 and the product rounded once
    half = torch.randn(64, 64).to(torch.bfloat16)
    dropped_half = model_mod.apply_dropout_mask(half, p)
    assert dropped_half.dtype == torch.bfloat16
    kept_half = dropped_half != 0
    scale = 65536 / (65536 - round(p * 65536))  # 1/P(keep) as the 16-bit uniforms give it
    assert torch.equal(dropped_half[kept_half],
                       (half.float() * scale).to(torch.bfloat16)[kept_half])

    x = torch.randn(64, 64, requires_grad=True)
    torch.manual_seed(1)
    y = model_mod.dropout(x, p, training=True)
    torch.manual_seed(1)
    assert torch.equal(y, model_mod.dropout(x, p, training=True))  # seeded: resumable
    dropped = y == 0
    assert 0 < dropped.float().mean().item() < 2 * p
    torch.testing.assert_close(y[~dropped], x[~dropped] * kept, rtol=1e-4, atol=0)
    y.sum().backward()  # the gradient flows through the kept values only, scaled the same way
    torch.testing.assert_close(x.grad, (~dropped).float() * kept, rtol=1e-4, atol=0)
    assert model_mod.dropout(x, p, training=False) is x


def test_cpu_dropout_attention_is_sdpas_causal_attention_with_the_mask_applied(monkeypatch):
    """The manual path that CPU training with dropout takes: with the mask forced to keep
    everything it must be SDPA's causal attention, forward and backward."""
    config = ModelConfig(vocab_size=64, d_model=16, num_blocks=1, num_heads=2,
                         context_length=16, dropout=0.3)
    attn = model_mod.CausalSelfAttention(config, 0)
    q, k, v = (torch.randn(2, 2, 16, 8, requires_grad=True) for _ in range(3))
    monkeypatch.setattr(model_mod, "dropout_mask",
                        lambda shape, p, dtype=torch.float32: torch.ones(shape, dtype=dtype))
    manual = attn._attention_with_dropout(q, k, v)
    grads = torch.autograd.grad(manual.square().sum(), (q, k, v))
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(manual, reference, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, torch.autograd.grad(reference.square().sum(), (q, k, v)),
                         strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    monkeypatch.undo()
    torch.manual_seed(0)
    dropped = attn._attention_with_dropout(q, k, v)
    assert not torch.allclose(dropped, reference)  # the real mask drops something


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_dropout_masks_are_exactly_the_16_bit_threshold(p):
    """The float arithmetic that builds a mask (shift, clamp, scale) must give exactly what the
    plain comparison gives, for every one of the 65536 uniforms: kept where u reaches
    round(p * 65536)."""
    u = torch.arange(-32768, 32768).to(torch.int16)
    dropped = round(p * 65536)
    scale = 65536 / (65536 - dropped)
    assert model_mod._threshold(u, 0.9999999, torch.float32).count_nonzero() == 1  # not 1/0
    for dtype in (torch.float32, torch.float64):
        want = torch.zeros(65536, dtype=dtype)
        want[u.long() + 32768 >= dropped] = scale
        assert torch.equal(model_mod._threshold(u, p, dtype), want)


def test_dropout_masks_come_from_one_draw_of_the_generator():
    shapes = [torch.Size((3, 40)), torch.Size((2, 8, 8)), torch.Size((12,))]
    torch.manual_seed(7)
    masks = model_mod.dropout_masks(shapes, 0.2)
    assert [m.shape for m in masks] == shapes and masks[1].dtype == torch.float32
    torch.manual_seed(7)
    n = sum(math.prod(shape) for shape in shapes)
    bits = model_mod.random_words((n + 3) // 4)
    want = model_mod._threshold(bits.view(torch.int16)[:n], 0.2, torch.float32)
    assert torch.equal(torch.cat([m.flatten() for m in masks]), want)
    assert model_mod.dropout_masks(shapes, 0.2, torch.float64)[0].dtype == torch.float64


def test_random_words_follow_torchs_generator_and_use_all_64_bits():
    """The dropout bits are decided by torch's seed (so a checkpoint's RNG state resumes them),
    take one draw of it whatever their number, and are uniform over all 64 bits."""
    torch.manual_seed(3)
    first = model_mod.random_words(50_000)
    after_many = torch.get_rng_state()
    torch.manual_seed(3)
    assert torch.equal(model_mod.random_words(50_000), first)
    torch.manual_seed(3)
    model_mod.random_words(10)
    assert torch.equal(torch.get_rng_state(), after_many)  # however many words: one draw
    torch.manual_seed(3)
    torch.empty((), dtype=torch.int64).random_()
    assert torch.equal(torch.get_rng_state(), after_many)  # ... of exactly one int64
    torch.manual_seed(3)
    assert torch.equal(model_mod.random_words(10), first[:10])  # a prefix of the same stream
    assert not torch.equal(model_mod.random_words(10), first[:10])  # the next call moves on
    assert first.dtype == torch.int64 and model_mod.random_words(0).numel() == 0
    # every bit position is set in about half the words (the 16-bit uniforms use them all)
    bits = torch.stack([(first >> i) & 1 for i in range(64)])  # (64, n)
    assert bits.float().mean(dim=1).sub(0.5).abs().max().item() < 0.01
    u = first.view(torch.int16).long() + 32768  # the uniforms the masks threshold
    counts = torch.bincount(u // 4096, minlength=16).float()  # 16 equal bins
    assert (counts / counts.mean() - 1).abs().max().item() < 0.03


def test_residual_dropout_is_one_addcmul_with_the_mask_and_its_gradient():
    residual = torch.randn(2, 5, 8, requires_grad=True)
    x = torch.randn(2, 5, 8, requires_grad=True)
    mask = model_mod.dropout_mask(x.shape, 0.3)
    out = model_mod.add_dropped(residual, x, 0.3, training=True, mask=mask)
    torch.testing.assert_close(out, residual + x * mask, rtol=0, atol=1e-6)
    out.backward(torch.ones_like(out))
    assert torch.equal(residual.grad, torch.ones_like(residual))
    assert torch.equal(x.grad, mask)
    torch.testing.assert_close(model_mod.add_dropped(residual, x, 0.3, training=False),
                               residual + x, rtol=0, atol=0)
    # under CPU autocast the branch is bfloat16 and the stream float32: dropped in float32
    half = x.detach().to(torch.bfloat16)
    out = model_mod.add_dropped(residual.detach(), half, 0.3, training=True, mask=mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, residual + (half.float() * mask).to(torch.bfloat16).float())


DROPPY = ModelConfig(vocab_size=64, d_model=16, num_blocks=2, num_heads=2, context_length=16,
                     dropout=0.3)


@pytest.mark.parametrize("T", [1, 2, 5, 16, 17])
def test_causal_masks_give_every_entry_on_and_below_the_diagonal_its_own_draw(T):
    n = 3
    shape = model_mod.causal_packed_shape(n, T)
    packed = torch.arange(math.prod(shape), dtype=torch.float64).view(shape)
    masks = model_mod.unfold_causal(packed, T)
    assert masks.shape == (n, T, T) and masks.is_contiguous()
    rows, cols = torch.tril_indices(T, T)
    used = masks[:, rows, cols]  # (n, T(T+1)/2): the entries that count
    assert used.flatten().unique().numel() == n * T * (T + 1) // 2  # all distinct draws


def test_attention_mask_entries_above_the_diagonal_change_nothing():
    """unfold_causal fills them with repeats: they must not reach the output or any gradient."""
    config = ModelConfig(vocab_size=64, d_model=16, num_blocks=1, num_heads=2,
                         context_length=16, dropout=0.3)
    attn = model_mod.CausalSelfAttention(config, 0)
    q, k, v = (torch.randn(2, 2, 16, 8, requires_grad=True) for _ in range(3))
    mask = model_mod.dropout_mask(torch.Size((4, 16, 16)), 0.3)
    mask += torch.rand(4, 16, 16).triu(1) * 5  # garbage above the diagonal only
    results = []
    for m in (mask, mask.tril()):
        out = attn._attention_with_dropout(q, k, v, m)
        results.append((out, torch.autograd.grad(out.square().sum(), (q, k, v))))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(a, b)


def test_a_training_pass_uses_each_drawn_mask_exactly_once(monkeypatch):
    model = GPT(DROPPY).train()
    handed_out = []
    pooled = GPT._dropout_masks

    def counting(self, x):
        masks = list(pooled(self, x))
        handed_out.append(len(masks))

        def each():
            for i, mask in enumerate(masks):
                handed_out.append(i)
                yield mask
        return each()

    monkeypatch.setattr(GPT, "_dropout_masks", counting)
    idx = torch.randint(0, DROPPY.vocab_size, (2, DROPPY.context_length))
    model(idx, idx)
    count = 1 + 3 * DROPPY.num_blocks  # the embeddings', then three per block
    assert handed_out == [count, *range(count)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_training_pass_with_nothing_dropped_is_the_eval_pass(monkeypatch, dtype):
    """With every mask forced to ones, the CPU training path (pooled masks, the fused block of
    fused.py) must compute the eval path's function (SDPA), values and gradients."""
    model = GPT(DROPPY).to(dtype)
    idx = torch.randint(0, DROPPY.vocab_size, (2, DROPPY.context_length))
    targets = torch.randint(0, DROPPY.vocab_size, (2, DROPPY.context_length))
    drawn = []

    def ones(shapes, p, mask_dtype=torch.float32):
        drawn.append((list(shapes), mask_dtype))
        return [torch.ones(shape, dtype=mask_dtype) for shape in shapes]

    monkeypatch.setattr(model_mod, "dropout_masks", ones)
    grads = {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        model.zero_grad(set_to_none=True)
        _, loss = model(idx, targets)
        loss.backward()
        grads[mode] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(grads["train"][0], grads["eval"][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads["train"][1], grads["eval"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    B, T, C, H, L = 2, DROPPY.context_length, DROPPY.d_model, DROPPY.num_heads, DROPPY.num_blocks
    assert drawn == [([model_mod.causal_packed_shape(L * B * H, T), (2 * L + 1, B, T, C)], dtype)]


def test_cache_prefill_then_token_by_token_matches_full_forward():
    model = sharp_model()
    idx = torch.randint(0, CFG.vocab_size, (2, CFG.context_length))
    full, _ = model(idx)  # causal: position t's logits are the uncached logits of idx[:, :t+1]
    cache = model.new_cache(2)
    logits, _ = model(idx[:, :5], kv_cache=cache)
    torch.testing.assert_close(logits, full[:, :5], atol=1e-5, rtol=0)
    for t in range(5, CFG.context_length):
        logits, _ = model(idx[:, t:t + 1], kv_cache=cache)
        torch.testing.assert_close(logits[:, 0], full[:, t], atol=1e-5, rtol=0)
    assert cache.length == CFG.context_length


def test_cache_multi_token_chunks_after_a_prefix_match_full_forward():
    model = sharp_model()
    idx = torch.randint(0, CFG.vocab_size, (2, CFG.context_length))
    full, _ = model(idx)
    cache = model.new_cache(2)
    start = 0
    for size in (4, 5, 1, 6):  # 4 + 5 + 1 + 6 = context_length
        logits, _ = model(idx[:, start:start + size], kv_cache=cache)
        torch.testing.assert_close(logits, full[:, start:start + size], atol=1e-5, rtol=0)
        start += size
    assert cache.length == CFG.context_length


def test_cache_reset_and_capacity():
    model = sharp_model()
    cache = model.new_cache(1)
    assert cache.k[0].shape == (1, CFG.num_heads, CFG.context_length, CFG.head_size)
    idx = torch.randint(0, CFG.vocab_size, (1, CFG.context_length))
    first, _ = model(idx, kv_cache=cache)
    with pytest.raises(AssertionError):
        model(idx[:, :1], kv_cache=cache)  # full: positions would run past the table
    cache.reset()
    assert cache.length == 0
    again, _ = model(idx, kv_cache=cache)
    torch.testing.assert_close(again, first)


def test_book_generate_appends_tokens_past_the_context():
    model = GPT(CFG)
    idx = torch.zeros(2, 3, dtype=torch.long)
    torch.manual_seed(1)
    out = model.generate(idx, 2 * CFG.context_length)
    assert out.shape == (2, 3 + 2 * CFG.context_length)
    assert torch.equal(out[:, :3], idx)
    assert int(out.min()) >= 0 and int(out.max()) < CFG.vocab_size
    torch.manual_seed(1)
    assert torch.equal(model.generate(idx, 2 * CFG.context_length), out)
