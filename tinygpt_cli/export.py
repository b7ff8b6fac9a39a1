"""`tinygpt export`: a trained model in a form other tools load. So far one format:

- `safetensors`: a folder with `model.safetensors` (the weights and the vocabulary's token ids,
  plain tensors: no pickle anywhere) and `config.json` (the model's shape, the tokenizer, and
  what the run recorded). `tinygpt generate`, `eval` and `info` take the folder in place of a
  checkpoint (`checkpoint.load_folder`).

A folder is written whole or not at all: into a temporary folder beside it, then renamed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from . import __version__
from .checkpoint import CONFIG, FOLDER_FORMAT, FOLDER_VERSION, IDS, RECORDED, WEIGHTS, load_model
from .errors import UsageError

FORMATS = ("safetensors",)


def require(fmt: str) -> None:
    """A missing optional package is one line naming the extra that brings it."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if importlib.util.find_spec("safetensors") is None:
        raise UsageError("--format safetensors needs the safetensors package: "
                         "pip install 'tinygpt[safetensors]'")


def export(checkpoint: Path, out: Path, fmt: str = "safetensors", force: bool = False) -> dict:
    """Write `checkpoint` (a tinygpt checkpoint or exported folder) to the folder `out`.
    Refuses a file that is not tinygpt's, non-finite weights (both `load_model`'s checks) and an
    `out` that exists and is not an empty folder, unless `force`. Returns what was written."""
    require(fmt)
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder to export into")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {out} exists and is not empty",
                         hint="give a new folder, or --force to replace what is there")
    model, vocab, state = load_model(checkpoint)
    if out.resolve() == Path(checkpoint).resolve():
        raise UsageError("--out is the model being exported; give another folder")
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous()
               for name, t in model.state_dict().items()}
    tensors[IDS] = torch.as_tensor(vocab.ids, dtype=torch.int64).contiguous()
    config = {"format": FOLDER_FORMAT, "format_version": FOLDER_VERSION,
              "tinygpt_version": __version__, "model_config": asdict(model.config),
              "tokenizer": {k: v for k, v in state["tokenizer"].items() if k != "ids"},
              **{key: _plain(state[key]) for key in RECORDED if key in state}}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        save_file(tensors, str(staging / WEIGHTS), metadata={"format": FOLDER_FORMAT})
        (staging / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
        for file in staging.iterdir():  # as any new file (mkdtemp's are private)
            file.chmod(0o666 & ~umask)
        staging.chmod(0o777 & ~umask)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except OSError as exc:
        from .files import write_hint

        raise UsageError(f"cannot write {out}: {exc.strerror or exc}",
                         hint=write_hint(exc, "export elsewhere with --out")) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"checkpoint": str(checkpoint), "out": str(out), "format": fmt,
            "files": sorted(p.name for p in out.iterdir()),
            "parameters": sum(t.numel() for name, t in tensors.items() if name != IDS)}


def _plain(value: object) -> object:
    """A checkpoint's recorded value as JSON (tensors as lists, tuples as lists)."""
    if torch.is_tensor(value):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
