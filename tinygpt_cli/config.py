"""Frozen, validated configurations. One object travels whole; change it with dataclasses.replace.

Every check runs on construction and all problems are reported together, each naming the option
and the fix, so a user corrects a bad command line in one go.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .errors import ConfigError, UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MAX_SEED = 2**63 - 1


def _seed(value: int, problems: list[str]) -> None:
    if not 0 <= value <= MAX_SEED:
        problems.append(f"--seed must be between 0 and 2**63 - 1 (got {value})")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Bounds checked before anything is allocated: far beyond any run tinygpt makes, far below sizes
# that would exhaust memory (the trainer then checks its memory estimate against the machine).
SIZE_LIMITS = {"d_model": 1 << 16, "num_blocks": 4096, "num_heads": 4096,
               "context_length": 1 << 20}
COUNT_LIMITS = {"grad_accum": 1 << 16, "eval_iters": 1 << 17, "batch_size": 1 << 20}
LR_SCHEDULES = ("constant", "cosine", "linear")


def _opt(name: str) -> str:
    return "--" + name.replace("_", "-")


def _positive(obj: object, names: tuple[str, ...], problems: list[str]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            problems.append(f"{_opt(name)} must be greater than 0 (got {value})")


def _raise(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class ModelConfig:
    """The GPT's shape. `vocab_size` comes from the tokenizer's vocabulary, never from the user."""

    vocab_size: int
    d_model: int = 80
    num_blocks: int = 6
    num_heads: int = 4
    context_length: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        problems: list[str] = []
        _positive(self, ("vocab_size", "d_model", "num_blocks", "num_heads", "context_length"),
                  problems)
        if self.d_model > 0 and self.num_heads > 0 and self.d_model % self.num_heads:
            fits = [h for h in range(1, min(self.d_model, 64) + 1) if self.d_model % h == 0]
            problems.append(
                f"--d-model {self.d_model} is not divisible by --num-heads {self.num_heads} "
                f"(head counts that divide it: {', '.join(map(str, fits[-6:]))})"
            )
        if not math.isfinite(self.dropout):
            problems.append(f"--dropout must be a finite number (got {self.dropout})")
        elif not 0.0 <= self.dropout < 1.0:
            problems.append(f"--dropout must be in [0, 1) (got {self.dropout})")
        for name, limit in SIZE_LIMITS.items():
            if getattr(self, name) > limit:
                problems.append(f"{_opt(name)} must be at most {limit:,} (got "
                                f"{getattr(self, name):,})")
        _raise(problems)

    @property
    def head_size(self) -> int:
        return self.d_model // self.num_heads


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the book's loop settings plus the options nanoGPT users expect."""

    batch_size: int = 2
    max_iters: int = 500
    learning_rate: float = 1e-3
    eval_interval: int = 50
    eval_iters: int = 10
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    grad_accum: int = 1
    grad_clip: float = 0.0
    weight_decay: float = 0.01  # torch.optim.AdamW's own default, which the book uses
    lr_schedule: str = "constant"
    warmup_iters: int = 0
    min_lr: float = 0.0
    max_time: float = 0.0  # seconds; 0 means no limit
    log_interval: int = 10  # steps between running-loss records in the metrics file
    fast: bool | None = None  # the speed path (fast/): None = wherever it applies

    def __post_init__(self) -> None:
        problems: list[str] = []
        _positive(self, ("batch_size", "max_iters", "eval_interval", "eval_iters", "grad_accum",
                         "log_interval"), problems)
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            problems.append(f"--learning-rate must be a finite number above 0 "
                            f"(got {self.learning_rate})")
        for name in ("grad_clip", "weight_decay", "min_lr", "max_time", "warmup_iters"):
            value = getattr(self, name)
            if not math.isfinite(value):
                problems.append(f"{_opt(name)} must be a finite number (got {value})")
            elif not value >= 0:
                problems.append(f"{_opt(name)} must be 0 or more (got {value})")
        for name, limit in COUNT_LIMITS.items():  # loops that no run needs this long
            if getattr(self, name) > limit:
                problems.append(f"{_opt(name)} must be at most {limit:,} (got "
                                f"{getattr(self, name):,})")
        if self.min_lr > self.learning_rate:
            problems.append(f"--min-lr {self.min_lr} is above --learning-rate {self.learning_rate}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            problems.append(f"--device must be one of {', '.join(DEVICES)} or cuda:N "
                            f"(got {self.device!r})")
        if self.dtype not in DTYPES:
            problems.append(f"--dtype must be one of {', '.join(DTYPES)} (got {self.dtype!r})")
        _seed(self.seed, problems)
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)} "
                            f"(got {self.lr_schedule!r})")
        _raise(problems)


@dataclass(frozen=True)
class SampleConfig:
    """How to sample: temperature 0 means greedy; top_k None and top_p 1.0 mean off."""

    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float = 1.0
    num_samples: int = 1
    seed: int = 1337
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.max_new_tokens < 0:
            problems.append(f"--max-new-tokens must be 0 or more (got {self.max_new_tokens})")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            problems.append(f"--temperature must be 0 (greedy) or more (got {self.temperature})")
        if self.top_k is not None and self.top_k < 1:
            problems.append(f"--top-k must be 1 or more (got {self.top_k}); leave it out for off")
        if not 0 < self.top_p <= 1:
            problems.append(f"--top-p must be in (0, 1] (got {self.top_p})")
        _seed(self.seed, problems)
        if self.num_samples < 1:
            problems.append(f"--num-samples must be 1 or more (got {self.num_samples})")
        _raise(problems)


# Named presets: model shape plus the training settings that belong with it.
PRESETS: dict[str, dict[str, object]] = {
    "book": {},  # the chapter's defaults, exactly
    "gpt2-small": {"d_model": 768, "num_blocks": 12, "num_heads": 12, "context_length": 1024,
                   "dropout": 0.0},
}

MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig)) - {"vocab_size"}
TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))


AUTO = "auto"  # the preset `autosize` computes for the corpus, the budget and the machine


def preset(name: str) -> dict[str, object]:
    """The option values a named preset sets; an unknown name lists the known ones."""
    if name == AUTO:
        raise ConfigError("--preset auto is sized when a run starts (tinygpt train), not here")
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: "
                          f"{', '.join([AUTO, *PRESETS])}") from None


# --- durations -----------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|m|s)", re.IGNORECASE)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: str | float | int, option: str = "--max-time") -> float:
    """Seconds from a number (seconds) or a duration: 90s, 10m, 1.5h, 1h30m. Raises
    ConfigError naming `option` for anything else (non-finite numbers included)."""
    if isinstance(value, bool):
        raise ConfigError(f"{option} must be a duration such as 90s, 10m or 1h (got {value!r})")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)  # plain seconds, as before: "90", "0.5", "inf" (refused below)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or _DURATION.sub("", text).strip():
                raise ConfigError(f"{option} must be a duration such as 90s, 10m or 1h, or a "
                                  f"number of seconds (got {value!r})") from None
            seconds = sum(float(n) * _UNIT_SECONDS[unit.lower()] for n, unit in parts)
    if not math.isfinite(seconds):
        raise ConfigError(f"{option} must be a finite number (got {seconds})")
    return seconds


# --- the settings of a training run -------------------------------------------------------------

# What describes this machine or this invocation, never taken from a resumed run's checkpoint.
PER_INVOCATION = frozenset({"device", "dtype", "compile", "max_time", "fast"})
TOKENIZE_KEYS = ("encoding", "vocab_mode", "val_fraction", "column", "errors", "include",
                 "exclude", "field", "separator", "split", "strict")


@dataclass(frozen=True)
class RunSettings:
    """A training run's settings after the merge: the model's shape (without the vocabulary,
    which the data decides), how to train, and how to tokenize."""

    model_options: dict
    train_config: TrainConfig
    tokenize: dict
    data: tuple[Path, ...] | None  # files and folders; None: the bundled corpus


def merge_settings(*, resumed: dict | None = None, preset_name: str | None = None,
                   file_values: dict | None = None, command_line: dict | None = None,
                   preset_values: dict | None = None) -> RunSettings:
    """The one place where a run's settings are merged. Later layers win:

        the book's defaults < the resumed run < --preset < --config (TOML) < the command line

    `resumed` is what `checkpoint.saved_run` read from --resume's checkpoint ({"model_config",
    "train_config", "data"}): a resumed run continues with its own shape, settings and data
    unless told otherwise, but never inherits what describes the machine it ran on
    (PER_INVOCATION). Its tokenizer settings count only when the data is not given again.
    `command_line` holds only what the user typed (None values are left out).
    `preset_values`: a preset's values computed for this run (`--preset auto`, `autosize`),
    in the preset's place.
    """
    resumed = resumed or {}
    command_line = {k: v for k, v in (command_line or {}).items() if v is not None}
    known = MODEL_FIELDS | TRAIN_FIELDS
    values: dict = {k: v for k, v in resumed.get("model_config", {}).items() if k in MODEL_FIELDS}
    values.update({k: v for k, v in resumed.get("train_config", {}).items()
                   if k in TRAIN_FIELDS and k not in PER_INVOCATION})
    problems = _type_problems(values)
    if problems:  # a damaged or hand-edited checkpoint: one line, not a TypeError
        raise ConfigError(f"the checkpoint to resume has unusable settings: {'; '.join(problems)}")
    if preset_values is None:
        preset_values = preset(preset_name) if preset_name else {}
    for layer in (preset_values, file_values or {}, command_line):
        values.update({k: v for k, v in layer.items() if k in known})
    # a --max-time run resumed without a budget of its own ends where its plan ended (not at
    # the bound --preset auto set), so its schedule goes on decaying as planned
    given = {**(file_values or {}), **command_line}
    planned = resumed.get("planned_steps")
    if planned and resumed.get("train_config", {}).get("max_time", 0) > 0 \
            and "max_time" not in given and "max_iters" not in given:
        values["max_iters"] = int(planned)
    tokenize = {}
    if "data" not in command_line:
        recorded = resumed.get("data", {}).get("settings", {})
        tokenize.update({k: recorded[k] for k in TOKENIZE_KEYS if k in recorded})
    tokenize.update({k: command_line[k] for k in TOKENIZE_KEYS if k in command_line})
    data = command_line.get("data")
    if isinstance(data, str | Path):
        data = (Path(data),)
    elif data is not None:
        data = tuple(Path(p) for p in data) or None
    recorded = resumed.get("data", {})
    if data is None and recorded.get("path"):
        paths = tuple(Path(p) for p in recorded.get("paths") or [recorded["path"]])
        data = paths if all(p.exists() for p in paths) else None
    return RunSettings(
        model_options={k: v for k, v in values.items() if k in MODEL_FIELDS},
        train_config=TrainConfig(**{k: v for k, v in values.items() if k in TRAIN_FIELDS}),
        tokenize=tokenize, data=data)


def read_toml(path: Path) -> dict:
    """The settings of a --config TOML file (d_model = 128, ...), checked: unknown keys and
    values of the wrong type are one error naming each."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"--config {path} is not valid TOML: {exc}") from None
    known = MODEL_FIELDS | TRAIN_FIELDS
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    if isinstance(values.get("max_time"), str):  # max_time = "10m", as on the command line
        try:
            values["max_time"] = parse_duration(values["max_time"], "max_time")
        except ConfigError as exc:
            raise UsageError(f"--config {path}: {exc.message}") from None
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {', '.join(unknown)}",
                         hint=f"known keys: {', '.join(sorted(known))}")
    # TOML has its own types: "128" or 1.5 for d_model must be a clear error, not a traceback
    problems = _type_problems(values)
    if problems:
        raise UsageError(f"--config {path}: {'; '.join(problems)}")
    return values


def _type_problems(values: dict) -> list[str]:
    """Settings whose value is not of their field's type (an int for a float is converted)."""
    kinds = {f.name: type(f.default) for cls in (ModelConfig, TrainConfig) for f in fields(cls)
             if f.default is not MISSING}
    kinds["fast"] = bool
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    problems = []
    for key, value in values.items():
        kind = kinds.get(key)
        if kind is None:
            continue
        if kind is float and type(value) is int:
            values[key] = float(value)
        elif type(value) is not kind and not (key == "fast" and value is None):
            problems.append(f"{key} must be {names[kind]} (got {value!r})")
    return problems
