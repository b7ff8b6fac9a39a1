"""`tinygpt export --format hf`: the book's GPT as a Hugging Face transformers CTRL model.

transformers' CTRL (`CTRLLMHeadModel`) computes the book's function: sinusoidal positions,
pre-LayerNorm blocks of multi-head attention and a 4x ReLU feed-forward, a final LayerNorm and an
output layer with a bias. What differs is layout, mapped here weight by weight:

- CTRL's positional table holds all the sines, then all the cosines; the book interleaves them
  (sin, cos, sin, cos, ...). Reordering the model dimension the same way in every weight that
  reads or writes the residual stream gives CTRL's layout and the same function.
- CTRL multiplies token embeddings by sqrt(d_model): the exported embedding is divided by it.
- CTRL projects queries, keys and values separately, with biases: the fused `qkv` is split in
  three and the biases are zero.
- CTRL's blocks use LayerNorm eps 1e-6 (fixed in its code) where tinygpt uses 1e-5; the final
  LayerNorm's eps is a setting and is exported as 1e-5. That difference moves a trained model's
  logits by up to about 4e-5 (benchmarks/export_check.py); nothing else moves them by more than
  a few 1e-6.

The tokenizer is tiktoken's BPE written as a `tokenizers` BPE whose ids are the model's ids
(`tokenizer_json`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import re
import shlex
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .model import GPT
from .tokenizer import COMPACT, Vocabulary

LN_EPS = 1e-5  # torch.nn.LayerNorm's default, which the book's model uses
SUPPRESSED_BIAS = -1e4  # logits of tokens the model never learned: never sampled, fp16-safe


def residual_order(d_model: int) -> torch.Tensor:
    """CTRL's order of the model dimension in the book's terms: the sine columns (0, 2, 4, ...),
    then the cosine columns (1, 3, 5, ...)."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def with_extra_tokens(model: GPT, extra: int) -> GPT:
    """The model with `extra` tokens appended to its vocabulary, for the exported tokenizer's
    tokens it never learned (`tokenizer_tokens`): a zero embedding, zero output weights and a
    bias that keeps them from ever being sampled. The model's own logits are unchanged."""
    if not extra:
        return model
    sd = {name: t.detach().to("cpu", torch.float32) for name, t in model.state_dict().items()}
    emb, head_w, head_b = (sd[k] for k in ("token_embedding.weight", "lm_head.weight",
                                           "lm_head.bias"))
    sd["token_embedding.weight"] = torch.cat([emb, emb.new_zeros(extra, emb.size(1))])
    sd["lm_head.weight"] = torch.cat([head_w, head_w.new_zeros(extra, head_w.size(1))])
    sd["lm_head.bias"] = torch.cat([head_b, head_b.new_full((extra,), SUPPRESSED_BIAS)])
    wide = GPT(replace(model.config, vocab_size=model.config.vocab_size + extra))
    wide.load_state_dict(sd)
    return wide.eval()


def ctrl_weights(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights under CTRL's names and in its layout (see the module's notes)."""
    c = model.config
    p = residual_order(c.d_model)
    sd = {name: t.detach().to("cpu", torch.float32) for name, t in model.state_dict().items()}
    out = {"transformer.w.weight": sd["token_embedding.weight"][:, p] / math.sqrt(c.d_model),
           "transformer.layernorm.weight": sd["ln_f.weight"][p],
           "transformer.layernorm.bias": sd["ln_f.bias"][p],
           "lm_head.weight": sd["lm_head.weight"][:, p], "lm_head.bias": sd["lm_head.bias"]}
    for i in range(c.num_blocks):
        book, ctrl = f"blocks.{i}.", f"transformer.h.{i}."
        q, k, v = sd[book + "attn.qkv.weight"].split(c.d_model, dim=0)  # rows: q, k, v outputs
        for name, w in (("Wq", q), ("Wk", k), ("Wv", v)):
            out[ctrl + f"multi_head_attention.{name}.weight"] = w[:, p]  # reads the stream
            out[ctrl + f"multi_head_attention.{name}.bias"] = w.new_zeros(c.d_model)
        out[ctrl + "multi_head_attention.dense.weight"] = sd[book + "attn.proj.weight"][p]
        out[ctrl + "multi_head_attention.dense.bias"] = sd[book + "attn.proj.bias"][p]
        for n in (1, 2):
            out[ctrl + f"layernorm{n}.weight"] = sd[book + f"ln{n}.weight"][p]
            out[ctrl + f"layernorm{n}.bias"] = sd[book + f"ln{n}.bias"][p]
        out[ctrl + "ffn.0.weight"] = sd[book + "ffwd.fc.weight"][:, p]
        out[ctrl + "ffn.0.bias"] = sd[book + "ffwd.fc.bias"]
        out[ctrl + "ffn.2.weight"] = sd[book + "ffwd.proj.weight"][p]
        out[ctrl + "ffn.2.bias"] = sd[book + "ffwd.proj.bias"][p]
    return {name: t.contiguous() for name, t in out.items()}


def ctrl_config(model: GPT) -> dict:
    """CTRLConfig's fields for the model (dropout off: an export is for inference)."""
    c = model.config
    return {"vocab_size": c.vocab_size,
            "n_positions": c.context_length, "n_embd": c.d_model, "dff": 4 * c.d_model,
            "n_layer": c.num_blocks, "n_head": c.num_heads, "resid_pdrop": 0.0,
            "embd_pdrop": 0.0, "layer_norm_epsilon": LN_EPS, "tie_word_embeddings": False,
            "use_cache": True}


def logit_difference(model: GPT, logits, length: int) -> float:
    """The largest difference between the model's logits and `logits(ids)`'s on two random
    windows of `length` ids (the model's vocabulary; an export may have more, after them)."""
    ids = torch.randint(0, model.config.vocab_size, (2, length),
                        generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        ours, theirs = model(ids)[0], logits(ids)[..., :model.config.vocab_size]
    return float((ours - theirs).abs().max())


# --- the tokenizer ------------------------------------------------------------------------------

def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte, the alphabet of byte-level BPE vocabularies."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, shift = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shift)
            shift += 1
    return table


def _merge_history(ranks: dict[bytes, int], token: bytes) -> list[bytes]:
    """The tokens tiktoken's BPE forms, in order, while encoding `token`'s bytes alone: merge
    the adjacent pair whose join ranks lowest, leftmost first, until no join is a token."""
    parts, formed = [bytes([b]) for b in token], []
    while len(parts) > 1:
        joins = [ranks.get(parts[i] + parts[i + 1]) for i in range(len(parts) - 1)]
        best = min((r, i) for i, r in enumerate(joins) if r is not None) \
            if any(r is not None for r in joins) else None
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
        formed.append(parts[i])
    return formed


def tokenizer_tokens(vocab: Vocabulary) -> tuple[list[bytes], list[bytes]]:
    """(the model's tokens by model id, the extra tokens a BPE over them needs).

    tiktoken's BPE reaches a token through shorter ones; a compact vocabulary keeps only the
    tokens its corpus ended on, so the shorter ones it passed through are added after the model's
    ids. On the corpus's text they are always merged on, never output; on other text they can be
    (the model then sees a token it never learned: `ctrl_weights`' extra rows)."""
    encoding = vocab.encoding
    ranks = encoding._mergeable_ranks
    tokens = [vocab.token_bytes(i) for i in range(vocab.size)]
    if vocab.mode != COMPACT:
        return tokens, []  # ids 0..max: every shorter token ranks lower, so it is in
    have, extra = set(tokens), []
    for token in tokens:
        for formed in _merge_history(ranks, token):
            if formed not in have:
                have.add(formed)
                extra.append(formed)
    return tokens, extra


def _oniguruma(pattern: str) -> str:
    """tiktoken's pattern for `tokenizers`' regex engine (Oniguruma), where `x{1,3}+` repeats
    `x{1,3}` instead of making it possessive: written as the atomic group it means."""
    return re.sub(r"(\\p\{\w+\}|\[[^\]]*\]|\\.|[^\\])(\{\d+(?:,\d*)?\})\+", r"(?>\1\2)", pattern)


def build_tokenizer(vocab: Vocabulary):  # -> (tokenizers.Tokenizer, number of extra tokens)
    """tiktoken's encoding of the vocabulary as a `tokenizers` byte-level BPE whose ids are the
    model's: the same pre-tokenizing pattern, every merge between its tokens ranked as tiktoken
    ranks their join, and a whole piece that is a token taken as it is (as tiktoken does).
    Special tokens the vocabulary holds (`<|endoftext|>`) are special tokens at their ids."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    encoding = vocab.encoding
    ranks = encoding._mergeable_ranks
    specials = {i for i in range(vocab.size) if int(vocab.ids[i]) in
                set(encoding._special_tokens.values())}
    tokens, extra = tokenizer_tokens(vocab)
    alphabet = _byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    ids = {token: i for i, token in enumerate(tokens) if i not in specials}
    ids.update({token: len(tokens) + j for j, token in enumerate(extra)})
    merges = []
    for token in ids:
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ids and right in ids:
                merges.append((ranks[token], ranks[left], ranks[right], left, right))
    merges.sort()
    # a special token keeps the model's id: in the vocabulary (merged into by nothing), then
    # marked special, so "<|endoftext|>" in a prompt is that token, as transformers users expect
    named = {text(t): i for t, i in ids.items()}
    named.update({tokens[i].decode(): i for i in specials})
    bpe = models.BPE(vocab=named, merges=[(text(a), text(b)) for *_, a, b in merges],
                     ignore_merges=True)
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_oniguruma(encoding._pat_str)), behavior="isolated",
                             invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    if specials:
        tokenizer.add_special_tokens([AddedToken(tokens[i].decode(), special=True)
                                      for i in sorted(specials)])
    return tokenizer, len(extra)


# --- the folder ---------------------------------------------------------------------------------

def write(folder: Path, model: GPT, vocab: Vocabulary, state: dict, where: str) -> dict:
    """Write the Hugging Face folder into `folder` (empty; it is renamed to `where` later),
    load it back as a user would and compare its logits with the model's (the model card says
    by how much); returns what was written and the largest difference."""
    from transformers import CTRLConfig, CTRLLMHeadModel, GenerationConfig, PreTrainedTokenizerFast

    tokenizer, extra = build_tokenizer(vocab)
    wide = with_extra_tokens(model, extra)
    with quiet():
        hf = CTRLLMHeadModel(CTRLConfig(**ctrl_config(wide), tinygpt_export="hf")).eval()
        hf.load_state_dict(ctrl_weights(wide), strict=True)
        hf.generation_config = GenerationConfig(**generation_defaults(model))
        hf.save_pretrained(folder)
        PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, model_max_length=model.config.context_length,
            clean_up_tokenization_spaces=False).save_pretrained(folder)
    (folder / "special_tokens_map.json").unlink(missing_ok=True)  # transformers 4: all is in
    # tokenizer.json; the class name both transformers 4 and 5 know (5 writes its own new name)
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    settings.pop("backend", None)
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n",
                                                  encoding="utf-8")
    loaded = load(folder)
    difference = logit_difference(model, lambda ids: loaded(ids).logits,
                                  model.config.context_length)
    (folder / "README.md").write_text(model_card(model, vocab, state, extra, where, difference),
                                      encoding="utf-8")
    return {"extra_tokens": extra, "max_logit_difference": difference}


def generation_defaults(model: GPT) -> dict:
    """`tinygpt generate`'s sampling defaults, in transformers' terms (top_k 0 is off: its own
    default is 50). CTRL's positions end at the context length, so a sample does too."""
    return {"do_sample": True, "temperature": 0.8, "top_k": 0, "top_p": 1.0,
            "max_length": model.config.context_length}


def load(folder: Path):  # -> transformers.CTRLLMHeadModel
    """The folder as a user loads it: transformers' Auto class, no custom code."""
    from transformers import AutoModelForCausalLM

    with quiet():
        return AutoModelForCausalLM.from_pretrained(folder).eval()


@contextlib.contextmanager
def quiet():
    """transformers' and torch's warnings and progress bars stay off the user's terminal."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        loggers = [logging.getLogger(name) for name in ("transformers", "torch")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def training_command(state: dict) -> str:
    """A `tinygpt train` command with the run's data (file names), shape and settings."""
    from .data import TokenizeSettings

    data = state.get("data", {})
    settings, defaults = data.get("settings", {}), asdict(TokenizeSettings())
    shape, train = state.get("model_config", {}), state.get("train_config", {})
    words = ["tinygpt", "train"]
    for path in data.get("paths") or ([data["path"]] if data.get("path") else []):
        words += ["--data", Path(path).name]
    started = isinstance(state.get("init_from"), dict)  # its tokenizer came with the weights
    for key, value in settings.items():  # what differs from tokenize's defaults
        if key not in defaults or value == defaults[key] or \
                (started and key in ("encoding", "vocab_mode")) or \
                (isinstance(value, list) and tuple(value) == defaults[key]):
            continue
        if key == "vocab_mode":
            words.append("--full-vocab")
        elif key == "strict":
            words.append("--strict")
        elif isinstance(value, list):
            for item in value:
                words += ["--" + key, str(item)]
        else:
            words += ["--" + key.replace("_", "-"), str(value)]
    for key in ("d_model", "num_blocks", "num_heads", "context_length", "dropout"):
        if key in shape:
            words += ["--" + key.replace("_", "-"), str(shape[key])]
    for key in ("batch_size", "max_iters", "learning_rate", "lr_schedule", "warmup_iters",
                "min_lr", "weight_decay", "grad_clip", "grad_accum", "seed"):
        if key in train:
            words += ["--" + key.replace("_", "-"), str(train[key])]
    if isinstance(state.get("init_from"), dict) and state["init_from"].get("path"):
        words += ["--init-from", Path(state["init_from"]["path"]).name]
    return shlex.join(words)


def model_card(model: GPT, vocab: Vocabulary, state: dict, extra: int, where: str,
               difference: float) -> str:
    c, data = model.config, state.get("data", {})
    folder = Path(where).name  # (never the path on this machine: the card is for sharing)
    params = sum(p.numel() for p in model.parameters())
    losses = state.get("last_losses") or [None, None]
    best = state.get("best_valid_loss")
    names = [Path(p).name for p in data.get("paths") or ([data["path"]] if data.get("path")
                                                            else [])]
    corpus = ", ".join(names) if names else "(not recorded)"
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation",
        "tags: [tinygpt, ctrl, text-generation]", "---", "",
        f"# {corpus}: a tinygpt model", "",
        "A small GPT trained from scratch with tinygpt and exported with "
        "`tinygpt export --format hf`. It is the book's decoder (sinusoidal positions, "
        "pre-LayerNorm blocks, ReLU feed-forward) in transformers' CTRL layout.", "",
        "| | |", "|---|---|",
        f"| trained on | `{corpus}` (sha256 `{str(data.get('sha256', '?'))[:16]}...`), "
        f"{data.get('train_tokens', '?'):,} training and {data.get('valid_tokens', '?'):,} "
        "validation tokens |" if isinstance(data.get("train_tokens"), int)
        else f"| trained on | `{corpus}` |",
        f"| steps | {state.get('step', '?')} |",
        f"| last losses | train {_loss(losses[0])}, validation {_loss(losses[1])} |",
        f"| best validation loss | {_loss(best)} (step {state.get('best_step', '?')}) |",
        f"| parameters | {params:,} |",
        f"| shape | d_model {c.d_model}, {c.num_blocks} block{'s' * (c.num_blocks != 1)}, "
        f"{c.num_heads} head{'s' * (c.num_heads != 1)}, context "
        f"{c.context_length} tokens |",
        f"| tokenizer | tiktoken `{vocab.encoding_name}`, {vocab.mode} vocabulary of "
        f"{vocab.size:,} tokens |",
        f"| tinygpt | {state.get('tinygpt_version', '?')} |", "",
        "Trained with (equivalent settings):", "", "```", training_command(state), "```", "",
        "## Use it", "", "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        f"model = AutoModelForCausalLM.from_pretrained({folder!r})",
        f"tokenizer = AutoTokenizer.from_pretrained({folder!r})",
        f"ids = tokenizer({default_prompt(state)!r}, return_tensors='pt').input_ids",
        "out = model.generate(ids)  # samples as `tinygpt generate` does, to the context's end",
        "print(tokenizer.decode(out[0]))", "```", "",
        "## Limits", "",
        f"- The model sees at most {c.context_length} tokens: prompt and sample together "
        "(`generation_config.json` stops there). tinygpt's own generate slides a window on.",
        f"- Logits agree with tinygpt's within {difference:.1e} (checked on two random windows "
        "when exported). Most of that is CTRL's LayerNorm eps in its blocks, fixed at 1e-6 "
        "where tinygpt's is 1e-5.",
        "- transformers may sample a token that leaves a character unfinished (a U+FFFD in "
        "the text); `tinygpt generate` only draws tokens that keep the text valid UTF-8.",
    ]
    if extra:
        lines.append(
            f"- Ids {vocab.size:,} to {vocab.size + extra - 1:,} are {extra:,} tokens the "
            "tokenizer needs on its way to the corpus's tokens; on text unlike the corpus it "
            "can end on one. The model never learned them: zero embedding, never sampled. "
            "tinygpt itself would split such text into byte tokens, so there the two "
            "tokenizations can differ; on the training corpus they are identical.")
    return "\n".join(lines) + "\n"


def default_prompt(state: dict) -> str:
    """The prompt `tinygpt generate` starts this model from, as transformers' tokenizer reads
    it (the end-of-text token as its special token's text)."""
    from .generation import DEFAULT_PROMPT

    start = state.get("sample_start")
    if not isinstance(start, dict):
        return DEFAULT_PROMPT
    if start.get("token") == "eot":
        return "<|endoftext|>"
    return start["text"] if isinstance(start.get("text"), str) else DEFAULT_PROMPT


def _loss(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "?"
