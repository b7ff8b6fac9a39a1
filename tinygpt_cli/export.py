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
import math
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from . import __version__
from .checkpoint import CONFIG, FOLDER_FORMAT, FOLDER_VERSION, IDS, RECORDED, WEIGHTS, load_model
from .errors import UsageError
from .files import fsync, umask, write_hint

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
    Refuses a file that is not tinygpt's, non-finite weights (both `load_model`'s checks), an
    `out` that is a file, and one that is a folder holding anything; with `force`, a folder
    holding an earlier export (and nothing else) is replaced, never any other. Returns what was
    written."""
    require(fmt)
    from safetensors.torch import save_file

    out = Path(out)
    _check_out(out, Path(checkpoint), force)
    model, vocab, state = load_model(checkpoint)
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous()
               for name, t in model.state_dict().items()}
    tensors[IDS] = torch.as_tensor(vocab.ids, dtype=torch.int64).contiguous()
    config = {"format": FOLDER_FORMAT, "format_version": FOLDER_VERSION,
              "tinygpt_version": __version__, "model_config": asdict(model.config),
              "tokenizer": {k: v for k, v in state["tokenizer"].items() if k != "ids"},
              **{key: _plain(state[key]) for key in RECORDED if key in state}}
    staging = old = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        save_file(tensors, str(staging / WEIGHTS), metadata={"format": "pt"})
        (staging / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False,
                                                 allow_nan=False) + "\n", encoding="utf-8")
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
            "parameters": sum(t.numel() for name, t in tensors.items() if name != IDS)}


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
    earlier = held == sorted([CONFIG, WEIGHTS]) and _is_export(out)
    if not force or not earlier:
        raise UsageError(f"--out {out} exists and is not empty",
                         hint="give a new folder" + (", or --force to replace the earlier "
                                                     "export there" if earlier else ""))


def _is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / CONFIG).read_text(encoding="utf-8")).get("format") \
            == FOLDER_FORMAT
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
