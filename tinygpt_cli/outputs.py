"""What a training run may write: never a file that is not a tinygpt checkpoint, never one of the
run's own inputs, never another run's checkpoint unless told to (`--overwrite`, as transformers'
trainer guards its output folder), and never while another run writes the same `--out`.

`claim` checks all of that before any work and returns a `Lock` the run holds for its lifetime
(an advisory lock on a file beside the checkpoint: the OS releases it when the process ends, even
by a crash or SIGKILL).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .checkpoint import related_path
from .errors import UsageError

KINDS = ("best", "metrics", "plot")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def describe(path: Path) -> str | None:
    """'N steps on DATA, valid loss L' for a tinygpt checkpoint; None for any other file."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a file torch.save wrote, or a pickle payload: not ours either way
        return None
    if not isinstance(state, dict) or not {"model_state_dict", "tokenizer"} <= set(state):
        return None
    data = (state.get("data") or {}).get("path", "unknown data")
    losses = state.get("last_losses")
    valid = f", valid loss {float(losses[1]):.3f}" if losses else ""
    step = state.get("step", "?")
    return f"{step} step{'' if step == 1 else 's'} on {data}{valid}"


def claim(out: Path, *, inputs: list[Path], resume: Path | None, overwrite: bool) -> Lock:
    """Check that `out` (and the files kept beside it) may be written by this run, and lock it.

    Raises UsageError naming what is there and what to do instead. With `overwrite`, the files
    an earlier run left beside `out` are removed, so none is shown as this run's.
    """
    out = Path(out)
    ours = [out] + [related_path(out, kind) for kind in KINDS]
    for path in ours:
        for given in inputs:
            if _same(path, given):
                raise UsageError(f"--out {out} would overwrite {given}, an input of this run",
                                 hint="give --out a path of its own, such as model/model.ckpt")
    for given in inputs:
        if Path(given).is_dir() and Path(given).resolve() in out.resolve().parents:
            raise UsageError(f"--out {out} is inside {given}, a folder of this run's corpus: "
                             "its metrics file would be read as text next time",
                             hint="give --out a path outside the data folder")
    continuing = resume is not None and any(_same(Path(resume), p) for p in ours[:2])
    for path in ours[:2]:  # the checkpoint and the best one beside it
        if not path.exists() or path.is_dir():
            continue  # a folder as --out is refused elsewhere, with its own message
        what = describe(path)
        if what is None:
            raise UsageError(f"--out: {path} exists and is not a tinygpt checkpoint; tinygpt will "
                             "not replace it", hint="give --out a path of its own")
        if not continuing and not overwrite:
            raise UsageError(f"--out: {path} holds another run ({what})",
                             hint=f"continue it with --resume {path}, replace it with "
                             "--overwrite, or give another --out")
    lock = Lock(out)
    if overwrite and not continuing:
        for kind in KINDS:  # an earlier run's files must not pass for this run's
            related_path(out, kind).unlink(missing_ok=True)
    return lock


class Lock:
    """An exclusive advisory lock on `.NAME.lock` beside a checkpoint, held until `release` (or
    the end of the process). Where the platform has no `fcntl` (Windows) it locks nothing."""

    def __init__(self, out: Path) -> None:
        self.path = out.with_name(f".{out.name}.lock")
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UsageError(f"--out {out} is in use by another tinygpt run",
                             hint="wait for it to finish, or give another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing releases the lock
            self._fd = None
