"""Checkpoints: atomic save, safe load, and the checks that a checkpoint fits a run.

A checkpoint holds only tensors and plain Python types, so `torch.load(..., weights_only=True)`
always reads it; that is the only way tinygpt loads one, so a file carrying a pickle payload is
refused and never executed. The book's two keys (`model_state_dict`, `h_params`) are kept.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .config import ModelConfig
from .errors import CheckpointError, UsageError
from .files import fsync, permit_like_a_new_file, write_hint
from .runtime import memory_bytes
from .tokenizer import Vocabulary

FORMAT_VERSION = 1
REQUIRED = ("model_state_dict", "h_params", "model_config", "tokenizer", "format_version")
# `tinygpt export --format safetensors` (export.py) writes a folder that loads as a checkpoint:
FOLDER_FORMAT = "tinygpt-safetensors"
FOLDER_VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
IDS = "tokenizer.ids"  # the vocabulary's token ids, beside the weights
# what config.json carries over from the checkpoint (plain values only)
RECORDED = ("h_params", "train_config", "data", "step", "evaluated_step", "last_losses",
            "best_valid_loss", "best_step", "valid_windows", "world_size", "sample_start",
            "init_from")  # RECORDED_TYPES


def related_path(checkpoint: Path, kind: str) -> Path:
    """Files kept beside a checkpoint: `model.best.ckpt`, `model.metrics.jsonl`, `model.png`."""
    checkpoint = Path(checkpoint)
    suffix = {"best": ".best.ckpt", "metrics": ".metrics.jsonl", "plot": ".png"}[kind]
    return checkpoint.with_name(checkpoint.stem + suffix)


def tokenizer_state(vocab: Vocabulary) -> dict:
    """The vocabulary itself travels in the checkpoint, so the checkpoint alone can generate."""
    return {**vocab.identity(), "ids": torch.from_numpy(vocab.ids.copy())}


def vocabulary_from(state: dict) -> Vocabulary:
    tok = state["tokenizer"]
    return Vocabulary(tok["encoding"], tok["mode"], tok["ids"].numpy().astype(np.int64))


def model_config_from(state: dict) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in state["model_config"].items() if k in known})


def all_finite(state_dict: dict) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state_dict.values()
               if torch.is_tensor(t) and t.is_floating_point())


def save(state: dict, path: Path, check_finite: bool = True) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then `os.replace`.

    A crash (or SIGKILL) at any point leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    if check_finite and not all_finite(state["model_state_dict"]):
        raise CheckpointError(f"refusing to write {path}: the model has non-finite weights")
    with _atomic_path(path) as tmp:
        torch.save(stamped(state), tmp)


def stamped(state: dict) -> dict:
    return {**state, "format_version": FORMAT_VERSION, "tinygpt_version": __version__}


class Saver:
    """Checkpoints saved on the calling thread, each to one or more paths (the best model, then
    the last: separate files with the same bytes). `save` returns a done Future, the interface of
    `fast.saver.BackgroundSaver`, so the trainer handles both the same way; its `result()` raises
    a failed write as a CheckpointError."""

    def save(self, state: dict, *paths: Path) -> Future:
        done: Future = Future()
        try:
            write_state(stamped(state), tuple(Path(p) for p in paths))
        except CheckpointError as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)
        return done

    def close(self) -> None:
        """Nothing is in flight: every save is written before `save` returns."""


def tensor_bytes(obj) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def write_bytes(data: memoryview, paths: tuple[Path, ...]) -> None:
    """A serialised checkpoint's bytes to each path, atomically."""
    for path in paths:
        with _write_error(path), _atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data)


def write_state(state: dict, paths: tuple[Path, ...]) -> None:
    """torch.save into the first path (atomically), then copy its bytes to the others: the
    kernel's copy of a file the save just put in the page cache costs a fraction of serialising
    again."""
    first, *others = paths
    with _write_error(first), _atomic_path(first) as tmp:
        torch.save(state, tmp)
    for path in others:
        with _write_error(path), _atomic_path(path) as tmp:
            shutil.copyfile(first, tmp)


@contextmanager
def _write_error(path: Path) -> Iterator[None]:
    """A failed write of a checkpoint, as the one line a user can act on. (torch.save into a
    file reports a full disk as a RuntimeError of its stream writer, not as an OSError.)"""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
        elsewhere = "pass --out to another location"
        hint = write_hint(exc, elsewhere) if isinstance(exc, OSError) and exc.errno \
            else f"free some disk space, or {elsewhere}"
        raise CheckpointError(f"could not write the checkpoint {path}: {reason}",
                              hint=hint) from None


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file in `path`'s folder for the block to write; when the block ends it is
    fsynced and renamed over `path` (the rename fsynced too), and if the block raises it is
    removed. A crash (or SIGKILL) at any point leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        try:
            permit_like_a_new_file(fd)  # mkstemp makes it 0600; a checkpoint is shared as any file
        finally:
            os.close(fd)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(path.parent, strict=False)  # make the rename itself durable


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files a killed save left beside `path` (its best copy, its metrics)."""
    path = Path(path)
    for name in (path.name, related_path(path, "best").name, related_path(path, "metrics").name):
        for stale in path.parent.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a tinygpt checkpoint safely, turning every way it can be wrong into one clear error."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint",
                              hint="train one with `tinygpt train`, or pass --checkpoint PATH")
    if path.is_dir():
        if (path / CONFIG).is_file():  # `tinygpt export --format safetensors`: no pickle
            return load_folder(path)
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"refused to load {path}: it contains Python objects that could run code when "
                "loaded (a pickle payload); tinygpt only loads plain tensors",
                hint="only use checkpoints written by tinygpt from a source you trust") from None
        raise CheckpointError(f"{path} is not a tinygpt checkpoint (not a file torch.save "
                              "wrote)") from None
    except UnicodeDecodeError:  # a ValueError, but from bytes that were never a pickle's text
        raise CheckpointError(f"{path} is not a tinygpt checkpoint (not a file torch.save "
                              "wrote)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        if path.stat().st_size == 0:
            what = "the file is empty"
        elif isinstance(exc, EOFError | zipfile.BadZipFile) or "zip archive" in str(exc):
            what = "an incomplete zip archive: cut off while it was written or copied"
        else:
            what = _first_line(exc)
        raise CheckpointError(f"{path} is truncated or not a checkpoint ({what})",
                              hint="use the .best.ckpt beside it, or train again") from None
    except Exception as exc:  # the unpickler trips over random bytes in many ways
        raise CheckpointError(f"{path} is not a tinygpt checkpoint (unreadable: "
                              f"{type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a tinygpt checkpoint (it holds a "
                              f"{type(state).__name__}, not a dict)")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a tinygpt checkpoint (it lacks "
                              f"{', '.join(missing)})")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer tinygpt "
                              f"({state.get('tinygpt_version')}); upgrade tinygpt to load it")
    return state


def load_folder(path: Path) -> dict:
    """An exported folder as a checkpoint's state (what `checkpoint.load` returns), read without
    pickle; `checkpoint.check` then holds it to the same rules as a checkpoint."""
    path = Path(path)
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / CONFIG} is not readable JSON ({exc})") from None
    other = config.get("tinygpt_export") if isinstance(config, dict) else None
    if other in ("hf", "onnx"):
        raise CheckpointError(f"{path} is a --format {other} export, for "
                              f"{'transformers' if other == 'hf' else 'onnxruntime'}; tinygpt "
                              "reads the checkpoint it came from, or a --format safetensors "
                              "export")
    if not isinstance(config, dict) or config.get("format") != FOLDER_FORMAT:
        raise CheckpointError(f"{path} is not a tinygpt export (its {CONFIG} does not say "
                              f"format {FOLDER_FORMAT!r})")
    version = config.get("format_version")
    if type(version) is not int:
        raise CheckpointError(f"{path} is not a tinygpt export (its format_version is "
                              f"{version!r}, not a whole number)")
    if version > FOLDER_VERSION:
        raise CheckpointError(f"{path} was exported by a newer tinygpt "
                              f"({config.get('tinygpt_version')}); upgrade tinygpt to load it")
    model_config, tokenizer = config.get("model_config"), config.get("tokenizer")
    if not (isinstance(model_config, dict) and isinstance(tokenizer, dict)
            and all(isinstance(tokenizer.get(k), str) for k in ("encoding", "mode"))):
        raise CheckpointError(f"{path} is not a tinygpt export (its {CONFIG} lacks the model's "
                              "settings or the tokenizer's encoding and mode)")
    if importlib.util.find_spec("safetensors") is None:
        raise UsageError(f"{path} is a safetensors export: pip install 'tinygpt[safetensors]'")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path / WEIGHTS} is missing or not a safetensors file "
                              f"({str(exc).splitlines()[0] if str(exc) else exc})") from None
    # what the run recorded is a record, not the model: a value of the wrong type is left out
    recorded = {key: config[key] for key, kinds in RECORDED_TYPES.items()
                if key in config and _recorded_ok(config[key], kinds)}
    return {**recorded, "model_state_dict": tensors, "model_config": model_config,
            "tokenizer": {**tokenizer, "ids": tensors.pop(IDS, None)},
            "h_params": recorded.get("h_params", dict(model_config)),
            "format_version": 1, "tinygpt_version": config.get("tinygpt_version")}


RECORDED_TYPES = {"h_params": dict, "train_config": dict, "data": dict, "step": int,
                  "evaluated_step": int, "last_losses": list, "best_valid_loss": float,
                  "best_step": int, "valid_windows": str, "world_size": int,
                  "sample_start": dict, "init_from": dict}


def _recorded_ok(value: object, kind: type) -> bool:
    if kind is float:
        return type(value) in (int, float)
    if kind is list:  # last_losses: (train, valid)
        return isinstance(value, list) and len(value) == 2 \
            and all(type(v) in (int, float) for v in value)
    if kind is dict:  # settings: names to plain values (data's tokenize settings: a table)
        return isinstance(value, dict) and all(
            _plain_value(v) or (isinstance(v, dict) and all(map(_plain_value, v.values())))
            for v in value.values())
    return type(value) is kind


def _plain_value(value: object) -> bool:
    """A JSON scalar, or a list of them (the paths of a corpus, --include globs)."""
    if isinstance(value, list):
        return all(isinstance(v, str | int | float | bool | type(None)) for v in value)
    return isinstance(value, str | int | float | bool | type(None))


# What a checkpoint's configuration may hold: far beyond any model tinygpt trains, far below what
# would make building one (even on the meta device) run for minutes or allocate terabytes.
LIMITS = {"vocab_size": 1 << 22, "d_model": 1 << 16, "num_blocks": 4096, "num_heads": 4096,
          "context_length": 1 << 20}
MAX_TOKEN_ID = 1 << 31
COMPILED_PREFIX = "_orig_mod."  # what torch.compile's wrapper adds to every key


def check(state: dict, path: Path) -> ModelConfig:
    """Everything a checkpoint says about the model, checked before anything is built from it:
    each field's type and range, the memory the weights need against the machine's, and the
    vocabulary's ids. One line each. Returns the model's configuration. (`check_weights` then
    holds the weights to the model built from it.)"""
    config = state.get("model_config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a tinygpt checkpoint (its model_config is not a "
                              "table of settings)")
    for name, limit in LIMITS.items():
        value = config.get(name)
        if type(value) is not int or not 1 <= value <= limit:
            raise CheckpointError(f"{path} has an unusable configuration: {name} must be a whole "
                                  f"number from 1 to {limit:,} (it holds {value!r})")
    dropout = config.get("dropout", 0.0)
    if type(dropout) not in (int, float) or not 0 <= dropout < 1:
        raise CheckpointError(f"{path} has an unusable configuration: dropout must be a number "
                              f"in [0, 1) (it holds {dropout!r})")
    try:
        model_config = model_config_from(state)
    except Exception as exc:  # ConfigError: heads that do not divide d_model, say
        raise CheckpointError(f"{path} has an unusable configuration: {_first_line(exc)}") \
            from None
    need = 4 * parameter_count(model_config)
    have = memory_bytes()
    if have and need > have:
        raise CheckpointError(f"{path} describes a model of {need / 2**30:,.1f} GiB of float32 "
                              f"weights; this machine has {have / 2**30:,.1f} GiB of memory")
    tok = state.get("tokenizer")
    ids = tok.get("ids") if isinstance(tok, dict) else None
    if not (torch.is_tensor(ids) and ids.dim() == 1 and not ids.is_floating_point()
            and len(ids) == model_config.vocab_size):
        raise CheckpointError(f"{path} does not hold together: its vocabulary is not a list of "
                              f"{model_config.vocab_size:,} token ids")
    if len(ids) and not (int(ids.min()) >= 0 and int(ids.max()) < MAX_TOKEN_ID):
        raise CheckpointError(f"{path} has a vocabulary id outside [0, 2**31): "
                              f"{int(ids.min())}..{int(ids.max())}")
    weights = state.get("model_state_dict")
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path} is not a tinygpt checkpoint (its weights are not a table)")
    if any(isinstance(k, str) and k.startswith(COMPILED_PREFIX) for k in weights):
        state["model_state_dict"] = {
            (k[len(COMPILED_PREFIX):] if k.startswith(COMPILED_PREFIX) else k): v
            for k, v in weights.items()}
    return model_config


def check_weights(state: dict, path: Path, model: torch.nn.Module) -> None:
    """The checkpoint's weights against `model`'s (built from its configuration): every name
    there, none extra, every shape the same; one line naming what differs."""
    weights = state["model_state_dict"]
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(map(str, set(weights) - set(expected)))
    wrong = [k for k in expected if k in weights and (
        not torch.is_tensor(weights[k]) or tuple(weights[k].shape) != expected[k])]
    if not (missing or extra or wrong):
        return
    found = []
    if missing:
        found.append(f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    if extra:
        found.append(f"unexpected {', '.join(extra[:3])}" + (" ..." if len(extra) > 3 else ""))
    for key in wrong[:3]:
        shape = tuple(weights[key].shape) if torch.is_tensor(weights[key]) else "not a tensor"
        found.append(f"{key} is {shape}, the configuration needs {expected[key]}")
    raise CheckpointError(f"{path}: the weights do not fit its model configuration ("
                          + "; ".join(found) + ")")


def parameter_count(config: ModelConfig) -> int:
    """Parameters of the book's GPT of this shape, counted without building it."""
    C, V, L = config.d_model, config.vocab_size, config.num_blocks
    block = 3 * C * C + (C * C + C) + 2 * (2 * C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    return V * C + L * block + 2 * C + (C * V + V)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def load_model(path: Path, device: str | torch.device = "cpu"):
    """Load a checkpoint and rebuild its model (eval mode) and vocabulary.

    Returns (model, vocab, state). Non-finite weights are a clear error here, not a sampling crash.
    """
    from .model import GPT

    state = load(path)
    check(state, path)
    try:
        config = model_config_from(state)
        vocab = vocabulary_from(state)
    except Exception as exc:
        raise CheckpointError(f"{path} has an unusable configuration: {exc}") from None
    weights = state["model_state_dict"]
    if not all_finite(weights):
        raise CheckpointError(f"{path} has non-finite weights (NaN or inf): training diverged "
                              "before it was saved", hint="use the .best.ckpt beside it")
    if vocab.size != config.vocab_size:
        raise CheckpointError(f"{path} does not hold together: its vocabulary has {vocab.size} "
                              f"tokens but its model expects {config.vocab_size}")
    model = GPT(config)
    check_weights(state, path, model)
    weights = state["model_state_dict"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not fit its model configuration "
                              f"({_first_line(exc)})") from None
    return model.to(device).eval(), vocab, state


def saved_run(path: Path) -> dict:
    """The model shape (`model_config`), training settings (`train_config`) and data (`data`) a
    checkpoint was written with, for `config.merge_settings`; {} when it cannot be read (`load`
    reports why, later). Memory-mapped, so the weights are not read twice."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return {"model_config": dict(state.get("model_config", {})),
                "train_config": dict(state["train_config"]), "data": dict(state.get("data", {})),
                "planned_steps": state.get("planned_steps")}
    except Exception:  # any unreadable or foreign file: the Trainer's load names the problem
        return {}


def differences(state: dict, *, model_config: ModelConfig, vocab: Vocabulary,
                data_sha256: str | None) -> list[str]:
    """What differs between a checkpoint and the run that wants to resume from it."""
    found = []
    tok = state["tokenizer"]
    if (tok["encoding"], tok["mode"], tok["size"]) != (vocab.encoding_name, vocab.mode, vocab.size):
        found.append(f"tokenizer: checkpoint {tok['encoding']}/{tok['mode']}/{tok['size']} tokens, "
                     f"run {vocab.encoding_name}/{vocab.mode}/{vocab.size} tokens")
    elif not np.array_equal(tok["ids"].numpy(), vocab.ids):
        found.append("vocabulary: same size but different token ids")
    saved = state["model_config"]
    for key, value in asdict(model_config).items():
        if key != "dropout" and saved.get(key) != value:
            found.append(f"{key}: checkpoint {saved.get(key)}, run {value}")
    data = state.get("data", {})
    if data_sha256 is not None and data.get("sha256") not in (None, data_sha256):
        found.append(f"data: checkpoint trained on {data.get('path')} (sha256 "
                     f"{str(data.get('sha256'))[:12]}), run uses sha256 {data_sha256[:12]}")
    return found

