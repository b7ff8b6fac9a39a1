"""User-facing errors: each carries a message a user can act on and the exit code to leave with.

The CLI catches `TinyGPTError` in one place and prints one line (plus a hint); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TinyGPTError(Exception):
    """A mistake the user can fix. Exit code 1 (bad data) unless a subclass says otherwise."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(TinyGPTError):
    """A bad option or combination of options (exit code 2, like Click's usage errors)."""

    exit_code = 2


class ConfigError(UsageError):
    """Invalid hyperparameters; the message lists every problem at once."""


class DataError(TinyGPTError):
    """The corpus or its cache cannot be used."""


class CheckpointError(TinyGPTError):
    """A checkpoint is missing, unreadable, unsafe or does not fit the run."""


class DivergedError(TinyGPTError):
    """Training produced non-finite losses too many steps in a row."""


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM that stops a command where it is: the command's `finally` blocks run
    (temporary files go), and the CLI says "interrupted" with exit code 128 + the signal."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (`kill`, a scheduler's stop, a container's shutdown) unwinds
    like Ctrl-C instead of ending the process on the spot, so nothing half-written stays behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:  # None: a handler set from C, which Python cannot put back; leave ours then
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)
