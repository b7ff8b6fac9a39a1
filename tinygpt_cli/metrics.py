"""The metrics file beside a checkpoint (NAME.metrics.jsonl): its one writer, used by the
trainer, and its one reader, used by `plot` and `info`, so its format has one owner.

One JSON object per line: {"type": "eval", "step", "train_loss", "valid_loss", ...} at each
evaluation, {"type": "train", "step", "loss", ...} every log interval (the running mean of the
training loss since the last one), {"type": "sample", "step", "text"} for --sample-every,
and last {"type": "report", "steps", ...}: the run's report card (`Trainer.report_card`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import TinyGPTError
from .events import EvalDone, StepDone
from .files import permit_like_a_new_file

METRICS_SUFFIX = ".metrics.jsonl"


class RunError(TinyGPTError):
    """A RUN to plot is missing, unreadable, or neither a checkpoint nor a metrics file."""


# --- writing ----------------------------------------------------------------------------------

def record(event: StepDone | EvalDone) -> dict:
    return rounded(asdict(event))


def rounded(values: dict) -> dict:
    """Floats to 6 decimals: what the file keeps."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}


class MetricsWriter:
    """JSON lines beside the checkpoint: one record per evaluation and per log interval.

    A resumed run keeps the records up to its checkpoint and drops any written after it (by a run
    that went on and was then killed), so the file never holds a step twice.
    """

    def __init__(self, path: Path, resume_step: int | None = None,
                 evaluated_step: int | None = None, enabled: bool = True,
                 notify: Callable[[str], None] | None = None) -> None:
        self.path, self.enabled = path, enabled
        self.resume_step, self.evaluated_step = resume_step, evaluated_step
        self.notify = notify or (lambda message: None)
        self._file = None

    def _kept_lines(self) -> list[str]:
        if self.resume_step is None or not self.path.exists():
            return []
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                step = int(record["step"])
            except (ValueError, KeyError, TypeError):
                # a line cut off by a crash, or the report card of the run before (no "step":
                # the resumed run ends with its own)
                continue
            kind = record.get("type")
            # an evaluation at the resume step ran before its checkpoint was saved, and a sample
            # at it after the step that led there: neither is repeated by the resumed run
            if step < self.resume_step or (step == self.evaluated_step and kind == "eval") \
                    or (step == self.resume_step and kind == "sample"):
                kept.append(line + "\n")
        return kept

    def __enter__(self) -> MetricsWriter:
        if self.enabled:
            kept = self._kept_lines()
            tmp = None
            try:
                # the kept records go into a new file that replaces the old in one rename, so a
                # crash here never leaves the run without the records it had
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                           suffix=".tmp")
                permit_like_a_new_file(fd)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.writelines(kept)
                os.replace(tmp, self.path)
                # unbuffered: each record is one write, and a failed one leaves nothing queued
                self._file = open(self.path, "ab", buffering=0)
            except OSError as exc:
                if tmp is not None:
                    Path(tmp).unlink(missing_ok=True)
                self._give_up(exc)
            except BaseException:
                if tmp is not None:
                    Path(tmp).unlink(missing_ok=True)
                raise
        return self

    def write(self, record: dict) -> None:
        if self._file is None:
            return
        end = self._file.tell()
        line = memoryview((json.dumps(record) + "\n").encode("utf-8"))
        try:
            while line:
                line = line[self._file.write(line):]
        except OSError as exc:
            # no record cut in half: back to the last whole line, freeing what was written (if
            # that fails too, the reader skips a cut-off last line anyway)
            with contextlib.suppress(OSError):
                self._file.truncate(end)
            self._give_up(exc)

    def _give_up(self, exc: OSError) -> None:
        """A failed write (a full disk): the run goes on without its metrics, which are only a
        record of it, and says so once; a save that fails for the same reason stops the run,
        with one line, in every process together."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file = None
        self.notify(f"could not write the metrics file {self.path}: {exc.strerror or exc}; "
                    "this run's losses are no longer recorded there")

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


# --- reading ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metrics:
    """The loss records of one metrics file, in step order (a restarted run's later records win)."""

    evals: list[tuple[int, float, float]]  # (step, train_loss, valid_loss), from "eval" records
    train: list[tuple[int, float]]  # (step, running mean of the training loss), "train" records
    skipped: int = 0  # lines that are not JSON or not a well-formed record
    restarts: list[int] = field(default_factory=list)  # steps where the records went back


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _step(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _append(points: list, point: tuple, restarts: list[int]) -> None:
    # A run resumed from an earlier checkpoint (say the .best.ckpt) appends records for steps
    # that are already there; the later records are the ones the checkpoint continues from.
    if points and point[0] <= points[-1][0]:
        restarts.append(point[0])
        while points and points[-1][0] >= point[0]:
            points.pop()
    points.append(point)


def read_metrics(path: Path) -> Metrics:
    """Read a metrics file, keeping every readable record and counting the lines that are not.

    A file cut off mid-line (a crash, a run still writing) loses only that line. Record types
    this version does not know are ignored, so newer files still plot.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: no such metrics file") from None
    except IsADirectoryError:
        raise RunError(f"{path} is a directory, not a metrics file") from None
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
    evals: list[tuple[int, float, float]] = []
    train: list[tuple[int, float]] = []
    restarts: list[int] = []
    skipped = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, ValueError):
            skipped += 1
            continue
        if not isinstance(record, dict):
            skipped += 1
            continue
        kind, step = record.get("type"), record.get("step")
        if kind == "eval" and _step(step) and _number(record.get("train_loss")) \
                and _number(record.get("valid_loss")):
            _append(evals, (step, float(record["train_loss"]), float(record["valid_loss"])),
                    restarts)
        elif kind == "train" and _step(step) and _number(record.get("loss")):
            _append(train, (step, float(record["loss"])), restarts)
        elif kind in ("eval", "train") or not isinstance(kind, str):
            skipped += 1
    return Metrics(evals, train, skipped, sorted(set(restarts)))
