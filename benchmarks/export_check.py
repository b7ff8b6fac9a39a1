"""How faithful `tinygpt export --format hf|onnx` is, on a real checkpoint: logits against
tinygpt's on windows of the training corpus, the exported tokenizer against tinygpt's encoding on
the training corpus (must be identical) and on other text (how often they agree), and what
CTRL's fixed LayerNorm eps (1e-6, tinygpt's is 1e-5) alone moves the logits by.

    tinygpt train --out /tmp/book/model.ckpt              # the README's main job
    python benchmarks/export_check.py /tmp/book/model.ckpt \
        --other ../shared/corpora/tinyshakespeare.txt

"Other text" is compared line by line: a line agrees when both tokenizers give the same ids.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def export(checkpoint: Path, fmt: str, out: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tinygpt_cli", "export", "-c", str(checkpoint),
                           "--format", fmt, "--out", str(out), "--json"],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--other", type=Path, required=True, help="text unlike the corpus")
    parser.add_argument("--windows", type=int, default=16)
    args = parser.parse_args()

    import onnxruntime
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from tinygpt_cli.checkpoint import load_model
    from tinygpt_cli.data import TokenizeSettings, prepare

    model, vocab, state = load_model(args.checkpoint)
    data = state["data"]
    cache = prepare(Path(data["path"]), TokenizeSettings(**data["settings"]))
    corpus_ids = np.concatenate([cache.split("train"), cache.split("valid")])
    T, V = model.config.context_length, vocab.size
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, len(corpus_ids) - T, (args.windows,), generator=g)
    windows = torch.stack([torch.from_numpy(corpus_ids[s:s + T].astype(np.int64))
                           for s in starts.tolist()])
    with torch.no_grad():
        ours = model(windows)[0]

    work = Path(tempfile.mkdtemp(prefix="tinygpt-export-check-"))
    hf_result, hf_seconds = export(args.checkpoint, "hf", work / "hf")
    onnx_result, onnx_seconds = export(args.checkpoint, "onnx", work / "onnx")
    hf = AutoModelForCausalLM.from_pretrained(work / "hf").eval()
    with torch.no_grad():
        hf_diff = float((hf(windows).logits[..., :V] - ours).abs().max())
    session = onnxruntime.InferenceSession(str(work / "onnx" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    onnx_diff = float(np.abs(session.run(None, {"input_ids": windows.numpy()})[0][..., :V]
                             - ours.numpy()).max())
    for block in model.blocks:  # tinygpt's model with CTRL's eps: the eps alone
        block.ln1.eps = block.ln2.eps = 1e-6
    with torch.no_grad():
        eps_diff = float((model(windows)[0] - ours).abs().max())

    tokenizer = Tokenizer.from_file(str(work / "hf" / "tokenizer.json"))
    text = Path(data["path"]).read_text(encoding="utf-8-sig")
    corpus_same = tokenizer.encode(text).ids == corpus_ids.tolist()
    lines = [line for line in args.other.read_text(encoding="utf-8").splitlines(keepends=True)
             if line.strip()]
    theirs = [e.ids for e in tokenizer.encode_batch(lines)]
    same = sum(vocab.encode(line) == ids for line, ids in zip(lines, theirs, strict=True))
    unlearned = sum(any(i >= V for i in ids) for ids in theirs)
    round_trip = sum(tokenizer.decode(ids) == line for line, ids in zip(lines, theirs,
                                                                        strict=True))
    print(f"checkpoint {args.checkpoint}: {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, {vocab.mode} vocabulary of {V:,} tokens, "
          f"{hf_result['extra_tokens']:,} extra tokens in the exported tokenizer")
    print(f"export: hf {hf_seconds:.1f} s, onnx {onnx_seconds:.1f} s (whole process)")
    print(f"max |logit difference| on {args.windows} corpus windows of {T}: "
          f"transformers {hf_diff:.2e}, onnxruntime {onnx_diff:.2e}; "
          f"LayerNorm eps 1e-6 instead of 1e-5 alone: {eps_diff:.2e}")
    print(f"tokenizer on the training corpus ({len(corpus_ids):,} tokens): "
          f"{'identical' if corpus_same else 'DIFFERENT'}")
    print(f"tokenizer on {args.other.name} ({len(lines):,} non-empty lines): same ids on "
          f"{same:,} ({same / len(lines):.1%}); a token the model never learned on "
          f"{unlearned:,} ({unlearned / len(lines):.1%}); round trip on "
          f"{round_trip:,} ({round_trip / len(lines):.1%})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
