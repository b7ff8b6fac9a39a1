"""`tinygpt export`: a trained model in a form other tools load, as a folder.

- `hf`: a Hugging Face transformers model (CTRL, which computes the book's GPT) with its
  tokenizer, generation settings and a model card (`export_hf`).
- `safetensors`: `model.safetensors` (the weights and the vocabulary's token ids, plain tensors:
  no pickle anywhere) and `config.json` (the model's shape, the tokenizer, and what the run
  recorded). `tinygpt generate`, `eval` and `info` take the folder in place of a checkpoint
  (`checkpoint.load_folder`).
- `onnx`: `model.onnx` (input_ids of any batch and length up to the context, to logits),
  `tokenizer.json` for the `tokenizers` library, and `config.json`.

Each format is checked before it is kept: loaded back and its logits compared with the model's.
A folder is written whole or not at all: into a temporary folder beside it, then renamed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from . import __version__
from .checkpoint import CONFIG, FOLDER_FORMAT, FOLDER_VERSION, IDS, RECORDED, WEIGHTS, load_model
from .errors import DataError, TinyGPTError, UsageError
from .export_hf import logit_difference
from .files import fsync, umask, write_hint
from .model import GPT
from .tokenizer import Vocabulary

# each format: the optional extra that brings what it needs, and those packages' modules
FORMATS = {"hf": ("hf", ("transformers", "tokenizers", "safetensors")),
           "safetensors": ("safetensors", ("safetensors",)),
           "onnx": ("onnx", ("onnx", "onnxscript", "onnxruntime", "tokenizers"))}
ONNX_OPSET = 20
# what an export folder may hold: --force replaces a folder holding nothing else
EXPORT_FILES = {CONFIG, WEIGHTS, "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                "README.md", "model.onnx", "model.onnx.data"}
MAX_DIFFERENCE = 1e-3  # a larger logit difference after the round trip is a bug: refused


def require(fmt: str) -> None:
    """A missing optional package is one line naming the extra that brings it."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    extra, modules = FORMATS[fmt]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--format {fmt} needs {', '.join(missing)}: "
                         f"pip install 'tinygpt[{extra}]'")


def export(checkpoint: Path, out: Path, fmt: str = "safetensors", force: bool = False) -> dict:
    """Write `checkpoint` (a tinygpt checkpoint or exported folder) to the folder `out`.
    Refuses a file that is not tinygpt's, non-finite weights (both `load_model`'s checks), an
    `out` that is a file, and one that is a folder holding anything; with `force`, a folder
    holding an earlier export (and nothing else) is replaced, never any other. Returns what was
    written."""
    require(fmt)
    out = Path(out)
    _check_out(out, Path(checkpoint), force)
    model, vocab, state = load_model(checkpoint)
    writer = {"hf": _write_hf, "safetensors": _write_safetensors, "onnx": _write_onnx}[fmt]
    staging = old = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            written = writer(staging, model, vocab, state, str(out))
        except (TinyGPTError, OSError, KeyboardInterrupt):
            raise
        except Exception as exc:  # transformers, torch.onnx, onnxruntime: one line, not theirs
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise DataError(f"could not export to {fmt}: {type(exc).__name__}: {first}",
                            hint="a version of the extra's packages tinygpt does not know? "
                            f"pip install -U 'tinygpt[{FORMATS[fmt][0]}]'") from None
        mask = umask()
        for file in staging.iterdir():  # as any new file (mkdtemp's are private), on disk
            file.chmod(0o666 & ~mask)
            fsync(file)
        staging.chmod(0o777 & ~mask)
        fsync(staging, strict=False)
        if out.is_dir():  # empty, or an earlier export (`_check_out`): aside until replaced
            old = out.parent / f".{out.name}.old.{staging.name}"
            out.rename(old)
        staging.rename(out)
        staging = None
        fsync(out.parent, strict=False)
    except OSError as exc:
        if old is not None and not out.exists():
            old.rename(out)  # the new folder never got there: the old one goes back
            old = None
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}",
                         hint=write_hint(exc, "export elsewhere with --out")) from None
    finally:
        for folder in (staging, old):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    return {"checkpoint": str(checkpoint), "out": str(out), "format": fmt,
            "files": sorted(p.name for p in out.iterdir()),
            "parameters": sum(p.numel() for p in model.parameters()), **written}


def _write_safetensors(folder: Path, model: GPT, vocab: Vocabulary, state: dict,
                       where: str) -> dict:
    from safetensors.torch import save_file

    tensors = {name: t.detach().to("cpu", torch.float32).contiguous()
               for name, t in model.state_dict().items()}
    tensors[IDS] = torch.as_tensor(vocab.ids, dtype=torch.int64).contiguous()
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    _write_json(folder / CONFIG, {
        "format": FOLDER_FORMAT, "format_version": FOLDER_VERSION,
        "tinygpt_version": __version__, "model_config": asdict(model.config),
        "tokenizer": {k: v for k, v in state["tokenizer"].items() if k != "ids"},
        **{key: _plain(state[key]) for key in RECORDED if key in state}})
    again, _, _ = load_model(folder)
    difference = logit_difference(model, lambda ids: again(ids)[0], model.config.context_length)
    _refuse_if_different(difference)
    return {"max_logit_difference": difference}


def _write_hf(folder: Path, model: GPT, vocab: Vocabulary, state: dict, where: str) -> dict:
    from . import export_hf

    written = export_hf.write(folder, model, vocab, state, where)
    _refuse_if_different(written["max_logit_difference"])
    return written


def _write_onnx(folder: Path, model: GPT, vocab: Vocabulary, state: dict,
                where: str) -> dict:
    """model.onnx (opset ONNX_OPSET; input_ids (batch, sequence) int64 -> logits (batch,
    sequence, vocabulary) float32, sequence up to the context length), the tokenizer as
    tokenizer.json, and config.json saying so. Checked with onnxruntime before it is kept."""
    import onnxruntime

    from .export_hf import build_tokenizer, quiet, with_extra_tokens

    tokenizer, extra = build_tokenizer(vocab)
    wide = with_extra_tokens(model, extra)
    c = wide.config
    dims = {0: torch.export.Dim("batch", min=1, max=1 << 20)}
    if c.context_length > 1:  # (a context of one token is a fixed length)
        dims[1] = torch.export.Dim("sequence", min=1, max=c.context_length)
    with quiet():
        program = torch.onnx.export(
            _Logits(wide), (torch.zeros(2, min(8, c.context_length), dtype=torch.long),),
            input_names=["input_ids"], output_names=["logits"], opset_version=ONNX_OPSET,
            dynamic_shapes={"input_ids": dims}, dynamo=True, verbose=False)
        program.save(str(folder / "model.onnx"))
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_json(folder / CONFIG, {
        "tinygpt_export": "onnx", "tinygpt_version": __version__, "opset": ONNX_OPSET,
        "inputs": {"input_ids": ["batch", "sequence"]},
        "outputs": {"logits": ["batch", "sequence", c.vocab_size]},
        "context_length": c.context_length, "model_config": asdict(model.config),
        "tokenizer": {"file": "tokenizer.json", "encoding": vocab.encoding_name,
                      "mode": vocab.mode, "model_tokens": vocab.size, "extra_tokens": extra}})
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    difference = max(logit_difference(model, lambda ids: torch.from_numpy(
        session.run(None, {"input_ids": ids.numpy()})[0]), length)
        for length in sorted({1, c.context_length}))
    _refuse_if_different(difference)
    return {"opset": ONNX_OPSET, "extra_tokens": extra, "max_logit_difference": difference}


class _Logits(torch.nn.Module):
    """The model's logits alone: what the ONNX graph computes."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)[0]


def _refuse_if_different(difference: float) -> None:
    if not difference <= MAX_DIFFERENCE:
        raise DataError(f"the exported model's logits differ from the checkpoint's by "
                        f"{difference:.2g}: not written",
                        hint="this is a tinygpt bug: please report it with the checkpoint")


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                    encoding="utf-8")


def _check_out(out: Path, checkpoint: Path, force: bool) -> None:
    """--out must be a new or empty folder, or with --force an earlier export; never a file,
    never the folder the checkpoint is in (or one above it)."""
    try:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file; give a folder to export into")
        if checkpoint.resolve() == out.resolve():
            raise UsageError("--out is the export being read; give another folder")
        if out.resolve() in checkpoint.resolve().parents:
            raise UsageError(f"--out {out} holds the checkpoint being exported; give a new "
                             "folder")
        held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from None
    if not held:
        return
    earlier = set(held) <= EXPORT_FILES and _is_export(out)
    if not force or not earlier:
        raise UsageError(f"--out {out} exists and is not empty",
                         hint="give a new folder" + (", or --force to replace the earlier "
                                                     "export there" if earlier else ""))


def _is_export(folder: Path) -> bool:
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        return config.get("format") == FOLDER_FORMAT or config.get("tinygpt_export") in FORMATS
    except (OSError, ValueError, AttributeError):
        return False


def _plain(value: object) -> object:
    """A checkpoint's recorded value as JSON (tensors as lists, tuples as lists)."""
    if torch.is_tensor(value):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN or infinity
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
