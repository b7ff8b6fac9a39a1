"""Generated text is always valid UTF-8: the decoder states of tokenizer.Utf8Table, the guard
that masks the logits (sampling.Utf8Guard), and every way of generating that uses it."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinygpt_cli.config import ModelConfig, SampleConfig
from tinygpt_cli.data import prepare
from tinygpt_cli.generation import encode_prompt, generate
from tinygpt_cli.model import GPT
from tinygpt_cli.sampling import Utf8Guard, generate_ids
from tinygpt_cli.tokenizer import COMPACT, COMPLETE, REJECT, Utf8Table, Vocabulary, get_encoding

ROOT = Path(__file__).resolve().parent.parent
ENGLISH = (ROOT / "README.md").read_text(encoding="utf-8")  # English prose, code and tables


@functools.lru_cache(maxsize=2)
def vocabulary(kind: str) -> Vocabulary:
    """The real compact cl100k vocabulary of the bundled (Chinese) corpus or of English text."""
    encoding = get_encoding("cl100k_base")
    if kind == "bundled":
        text = (ROOT / "data" / "order_items.csv").read_text(encoding="utf-8")
    else:
        text = ENGLISH
    counts = np.bincount(encoding.encode_ordinary(text), minlength=encoding.n_vocab)
    return Vocabulary.from_counts("cl100k_base", COMPACT, counts)


def is_whole_utf8(data: bytes) -> bool:
    try:
        return "\ufffd" not in data.decode("utf-8")
    except UnicodeDecodeError:
        return False


# --- the decoder states --------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=12) | st.text(max_size=6).map(lambda t: t.encode("utf-8")))
def test_the_states_accept_exactly_whole_utf8_without_replacement_characters(data):
    table = vocabulary("bundled").utf8
    state = table.state_after(data)
    assert (state == COMPLETE) == is_whole_utf8(data)
    if state not in (COMPLETE, REJECT):  # an open character: some bytes would finish it
        assert any(is_whole_utf8(data + bytes([b])) or is_whole_utf8(data + bytes([b, 0x80]))
                   or is_whole_utf8(data + bytes([b, 0x80, 0x80])) for b in range(0x80, 0xC0))


def test_the_table_is_each_tokens_bytes_run_from_each_state():
    vocab = vocabulary("bundled")
    table = vocab.utf8
    rng = np.random.default_rng(0)
    for token in rng.choice(vocab.size, 200, replace=False):
        raw = vocab.token_bytes(int(token))
        for state in range(table.allowed.shape[0]):
            after = table.state_after(raw, state)
            assert table.allowed[state, token] == (after != REJECT)
            if after != REJECT:
                assert table.next_state[state, token] == after
    # from a whole text, a lone continuation byte or U+FFFD is never allowed; ASCII always is
    byte_token = vocab.to_model[vocab.encoding.encode_single_token(b"\x80")]
    assert not table.allowed[COMPLETE, byte_token]
    assert table.allowed[COMPLETE, vocab.encode("a")[0]]
    for token in vocab.encode("\ufffd"):
        assert not table.finishes[COMPLETE, token]


def test_masking_keeps_the_ratios_of_the_allowed_tokens():
    vocab = vocabulary("bundled")
    table = vocab.utf8
    logits = torch.randn(1, vocab.size, generator=torch.Generator().manual_seed(0))
    guard = Utf8Guard(table, vocab.encode("农"), torch.device("cpu"))
    guard.state = int(table.next_state[COMPLETE, vocab.to_model[
        vocab.encoding.encode_single_token(b"\xe5")]])  # an open 3-byte character
    probs = torch.softmax(guard.restrict(logits), dim=-1)[0]
    allowed = torch.from_numpy(table.allowed[guard.state])
    assert probs[~allowed].sum() == 0 and 0 < int(allowed.sum()) < vocab.size
    want = torch.softmax(logits[0][allowed], dim=-1)  # renormalised, not reshaped
    torch.testing.assert_close(probs[allowed], want)


# --- sampling through the model ------------------------------------------------------------------

def random_model(vocab: Vocabulary, seed: int, scale: float) -> GPT:
    """An untrained model whose logits are random and, with a large scale, sharp: it picks byte
    pieces freely, as the raw model of a Chinese corpus does."""
    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=vocab.size, d_model=16, num_blocks=1, num_heads=2,
                            context_length=32, dropout=0.0))
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, scale)
    return model.eval()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["bundled", "english"]), seed=st.integers(0, 2**16),
       temperature=st.sampled_from([0.0, 0.8, 1.5, 3.0]), top_k=st.sampled_from([None, 5, 50]),
       top_p=st.sampled_from([1.0, 0.9]), use_cache=st.booleans(), fast=st.booleans(),
       scale=st.sampled_from([0.5, 3.0]), n=st.integers(1, 40))
def test_every_sample_decodes_without_a_replacement_character(kind, seed, temperature, top_k,
                                                               top_p, use_cache, fast, scale, n):
    vocab = vocabulary(kind)
    model = random_model(vocab, seed % 7, scale)
    ids = generate_ids(model, vocab.encode("农夫" if kind == "bundled" else "The "), n,
                       temperature=temperature, top_k=top_k, top_p=top_p,
                       generator=torch.Generator().manual_seed(seed), use_cache=use_cache,
                       fast=fast, utf8=vocab.utf8)
    assert n <= len(ids) <= n + 3  # at most 3 more, to finish the last character
    assert is_whole_utf8(vocab.decode_bytes(ids))


def test_without_the_guard_the_same_model_writes_broken_characters():
    """The property above is not vacuous: unguarded, these models do write U+FFFD."""
    vocab = vocabulary("bundled")
    broken = 0
    for seed in range(5):
        ids = generate_ids(random_model(vocab, seed, 3.0), vocab.encode("农夫"), 40,
                           temperature=1.0, generator=torch.Generator().manual_seed(seed))
        broken += not is_whole_utf8(vocab.decode_bytes(ids))
    assert broken >= 3


def test_an_open_character_at_the_last_token_is_finished_not_cut():
    vocab = vocabulary("bundled")
    model = random_model(vocab, 0, 0.5)
    lead = int(vocab.to_model[vocab.encoding.encode_single_token(b"\xe5")])
    with torch.no_grad():
        model.lm_head.bias[lead] = 100.0  # the first token opens a 3-byte character
    ids = generate_ids(model, vocab.encode("农夫"), 1, temperature=0.0, utf8=vocab.utf8)
    assert ids[0] == lead and 2 <= len(ids) <= 3
    assert is_whole_utf8(vocab.decode_bytes(ids))


def test_greedy_and_seeded_sampling_stay_deterministic():
    vocab = vocabulary("bundled")
    model = random_model(vocab, 1, 3.0)
    for temperature in (0.0, 1.0):
        runs = [generate_ids(model, vocab.encode("农夫"), 30, temperature=temperature,
                             generator=torch.Generator().manual_seed(3), utf8=vocab.utf8)
                for _ in range(2)]
        assert runs[0] == runs[1]


def test_generate_reports_the_finishing_tokens_and_allows_the_raw_model(corpus, cache_root):
    cache = prepare(corpus, cache_root=cache_root)
    vocab = cache.vocab
    model = random_model(vocab, 2, 3.0)
    prompt = encode_prompt(vocab, "Cotton", 32)
    config = SampleConfig(max_new_tokens=25, temperature=1.0, num_samples=6, seed=5)
    guarded = generate(model, vocab, prompt, config)
    for sample in guarded:
        assert "\ufffd" not in sample.text
        assert sample.finishing_tokens == sample.tokens - 25 and sample.finishing_tokens <= 3
    raw = generate(model, vocab, prompt, config, valid_utf8=False)
    assert all(sample.tokens == 25 for sample in raw)
    assert any("\ufffd" in sample.text for sample in raw)


def test_the_table_is_built_for_a_full_vocabulary_too():
    encoding = get_encoding("cl100k_base")
    counts = np.bincount(encoding.encode_ordinary("农夫山泉 hello"), minlength=encoding.n_vocab)
    vocab = Vocabulary.from_counts("cl100k_base", "full", counts)
    table = vocab.utf8
    assert table.allowed.shape == (10, vocab.size)
    assert isinstance(table, Utf8Table) and table.allowed[COMPLETE].sum() > 0.9 * 256
