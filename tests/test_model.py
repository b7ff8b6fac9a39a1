from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

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


def test_dropout_is_the_books_nn_dropout_on_in_training_off_in_eval():
    """Dropout sits where the book puts it: after the embeddings, on the attention weights, and
    on each branch before it joins the residual stream; training draws, evaluation does not."""
    config = ModelConfig(vocab_size=64, d_model=16, num_blocks=2, num_heads=2,
                         context_length=16, dropout=0.3)
    model = GPT(config)
    drops = [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]
    assert drops == ["dropout", "blocks.0.attn.resid_dropout", "blocks.0.ffwd.dropout",
                     "blocks.1.attn.resid_dropout", "blocks.1.ffwd.dropout"]
    assert all(block.attn.dropout == 0.3 for block in model.blocks)  # SDPA's dropout_p
    idx = torch.randint(0, 64, (2, 16))
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])
    model.train()
    torch.manual_seed(0)
    first = model(idx)[0]
    assert not torch.equal(first, model(idx)[0])  # fresh masks each pass
    torch.manual_seed(0)
    assert torch.equal(first, model(idx)[0])  # decided by torch's seed


# -- KV cache ------------------------------------------------------------------------------------

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
    assert cache.kv[0].shape == (2, 1, CFG.num_heads, CFG.context_length, CFG.head_size)
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
