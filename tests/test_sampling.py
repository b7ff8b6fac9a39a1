from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt_cli.config import ModelConfig
from tinygpt_cli.model import GPT
from tinygpt_cli.sampling import generate_ids, generate_tokens, sample_next

CFG = ModelConfig(vocab_size=64, d_model=16, num_blocks=2, num_heads=2, context_length=16,
                  dropout=0.0)
C = CFG.context_length



def sharp_model(seed: int = 0) -> GPT:
    """Large random weights: peaked distributions and attention, so a wrong cache shows."""
    torch.manual_seed(seed)
    model = GPT(CFG)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draws(logits: list[float], n: int = 2000, seed: int = 0, **kwargs: object) -> set[int]:
    """The ids drawn in n samples from one row of logits."""
    rows = torch.tensor(logits).repeat(n, 1)  # (n, V)
    return set(sample_next(rows, generator=seeded(seed), **kwargs).tolist())


# -- sample_next ---------------------------------------------------------------------------------

def test_temperature_zero_is_argmax():
    logits = torch.randn(8, 50, generator=seeded())
    out = sample_next(logits, temperature=0.0, top_k=3, top_p=0.5)
    assert out.dtype == torch.long and out.shape == (8,)
    assert torch.equal(out, logits.argmax(dim=-1))


@settings(max_examples=40, deadline=None)
@given(tenths=st.lists(st.integers(-50, 50), min_size=2, max_size=30),
       k=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       temperature=st.sampled_from([0.5, 1.0, 3.0]))
def test_top_k_never_samples_outside_the_k_largest(tenths, k, seed, temperature):
    logits = [t / 10 for t in tenths]  # distinct values stay distinct in float32
    kth = sorted(logits, reverse=True)[min(k, len(logits)) - 1]
    allowed = {i for i, x in enumerate(logits) if x >= kth}  # ties at the k-th value count as in
    assert draws(logits, 300, seed, top_k=k, temperature=temperature) <= allowed


def test_top_k_at_least_vocab_means_no_filter():
    assert draws([0.0] * 6, 600, top_k=6) == set(range(6))
    assert draws([0.0] * 6, 600, top_k=100) == set(range(6))
    assert draws([0.0] * 6, 600, top_k=2) == set(range(6))  # all tied with the 2nd: all kept


def test_top_p_never_samples_outside_the_nucleus():
    # probabilities 0.5, 0.3, 0.15, 0.05, shuffled so that order in the vocabulary does not help
    probs = {2: 0.5, 0: 0.3, 3: 0.15, 1: 0.05}
    logits = [math.log(probs[i]) for i in range(4)]
    assert draws(logits, top_p=0.4) == {2}  # the top token alone already reaches 0.4
    assert draws(logits, top_p=0.75) == {2, 0}  # 0.5 < 0.75 <= 0.8
    assert draws(logits, top_p=0.9) == {2, 0, 3}  # 0.8 < 0.9 <= 0.95
    assert draws(logits, top_p=1.0) == {2, 0, 3, 1}


def test_top_p_renormalises_within_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])).repeat(20000, 1)
    out = sample_next(logits, top_p=0.75, generator=seeded())
    assert abs((out == 0).float().mean().item() - 0.5 / 0.8) < 0.02


def test_top_p_keeps_the_top_token_even_for_a_tiny_p():
    assert draws([0.1, 3.0, 0.2], 500, top_p=1e-6) == {1}


def test_same_seed_same_samples():
    logits = torch.randn(16, 100, generator=seeded(3))
    a = sample_next(logits, temperature=1.3, top_k=20, top_p=0.9, generator=seeded(7))
    b = sample_next(logits, temperature=1.3, top_k=20, top_p=0.9, generator=seeded(7))
    c = sample_next(logits, temperature=1.3, top_k=20, top_p=0.9, generator=seeded(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- generate_tokens -----------------------------------------------------------------------------

def record_last_logits(model: GPT) -> tuple[list[torch.Tensor], object]:
    """Capture, at each forward pass, the logits of the last position (the ones sampled from)."""
    seen: list[torch.Tensor] = []
    handle = model.register_forward_hook(lambda m, args, out: seen.append(out[0][:, -1].clone()))
    return seen, handle


@pytest.mark.parametrize("prompt_len", [1, C - 1, C, 2 * C])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_equals_uncached_across_the_slide(prompt_len, temperature):
    model = sharp_model()
    prompt = torch.randint(0, CFG.vocab_size, (prompt_len,), generator=seeded(1)).tolist()
    runs = {}
    for use_cache in (True, False):
        seen, handle = record_last_logits(model)
        ids = generate_ids(model, prompt, 3 * C, temperature=temperature, generator=seeded(5),
                           use_cache=use_cache)
        handle.remove()
        runs[use_cache] = ids, seen
    (cached, cached_logits), (plain, plain_logits) = runs[True], runs[False]
    assert cached == plain
    assert len(cached_logits) == len(plain_logits) == 3 * C
    for step, (a, b) in enumerate(zip(cached_logits, plain_logits, strict=True)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"step {step}")
    # and the uncached run is the book's loop: the model on the last C tokens, last position
    with torch.no_grad():
        for step, got in enumerate(plain_logits):
            window = torch.tensor([(prompt + plain[:step])[-C:]])
            torch.testing.assert_close(got, model(window)[0][:, -1], atol=1e-5, rtol=0)
    if temperature:
        assert len(set(cached)) > 1  # not stuck on one token (greedy may be): the ids have teeth


def test_long_prompt_is_cropped_from_the_left():
    model = sharp_model()
    prompt = torch.randint(0, CFG.vocab_size, (3 * C,), generator=seeded(2)).tolist()
    for use_cache in (True, False):
        long = generate_ids(model, prompt, 20, generator=seeded(4), use_cache=use_cache)
        short = generate_ids(model, prompt[-C:], 20, generator=seeded(4), use_cache=use_cache)
        assert long == short


def test_empty_prompt_raises_at_call_time():
    with pytest.raises(ValueError, match="empty"):
        generate_tokens(sharp_model(), [], 5)


def test_seeded_generator_is_reproducible():
    model = sharp_model()
    kwargs = {"temperature": 1.0, "top_k": 10, "top_p": 0.95}
    a = generate_ids(model, [1, 2, 3], 30, generator=seeded(11), **kwargs)
    b = generate_ids(model, [1, 2, 3], 30, generator=seeded(11), **kwargs)
    c = generate_ids(model, [1, 2, 3], 30, generator=seeded(12), **kwargs)
    assert a == b and a != c
    assert all(isinstance(i, int) and 0 <= i < CFG.vocab_size for i in a)


def test_streams_lazily_without_leaking_inference_mode_and_restores_train_mode():
    model = sharp_model().train()
    stream = generate_tokens(model, [0], 50, generator=seeded())
    first = next(stream)
    assert isinstance(first, int)
    assert not torch.is_inference_mode_enabled()  # the caller's code between tokens is normal
    assert not model.training  # dropout off while sampling
    stream.close()
    assert model.training
    assert generate_ids(model, [0], 0) == []
