"""Checkpoints written on a background thread while training goes on.

`checkpoint.Saver` writes on the training thread. Here `save` takes a snapshot at once (the state
is serialised into memory: the weights change at the next step) and a worker thread writes those
bytes to each path as `checkpoint.save` does (temporary file, fsync, rename), so the disk's
latency (the writes, the fsyncs, the best model's second file) leaves the training thread.
"""

from __future__ import annotations

import io
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..errors import CheckpointError

IN_MEMORY_LIMIT = 256 << 20  # tensor bytes up to which a state is serialised in memory


class BackgroundSaver(ckpt.Saver):
    """`checkpoint.Saver`'s interface, written in the background.

    Saves are written in the order they were made. A state over IN_MEMORY_LIMIT (a big model) is
    not copied in memory: it is written on the calling thread instead, after the earlier saves.
    `save` returns a Future that is done once the files are in place; its `result()` raises a
    failed write as a CheckpointError.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def save(self, state: dict, *paths: Path) -> Future:
        """Write one snapshot of `state` to each of `paths`, in order (the best model, then the
        last: separate files with the same bytes)."""
        paths = tuple(Path(p) for p in paths)
        state = ckpt.stamped(state)
        # forget the saves that are done, but not the failed ones: `wait` raises those
        self._pending = [future for future in self._pending
                         if not future.done() or future.exception() is not None]
        if ckpt.tensor_bytes(state) > IN_MEMORY_LIMIT:
            for future in self._pending:  # after the earlier saves, whose failures stay theirs
                future.exception()
            done: Future = Future()
            try:
                ckpt.write_state(state, paths)
            except CheckpointError as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)
            self._pending.append(done)
            return done
        buffer = io.BytesIO()
        torch.save(state, buffer)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinygpt-save")
        # looked up at each call, so that tests can stand in for the disk
        future = self._pool.submit(ckpt.write_bytes, buffer.getbuffer(), paths)
        self._pending.append(future)
        return future

    def wait(self, raise_errors: bool = True) -> None:
        """Block until every save so far is on disk; raise the first that failed (and has not
        been raised by an earlier `wait`)."""
        pending, self._pending = self._pending, []
        errors = [exc for exc in (future.exception() for future in pending) if exc is not None]
        if errors and raise_errors:
            raise errors[0]

    def close(self) -> None:
        """Wait for the saves in flight (without raising: their Futures hold any failure) and
        stop the worker; `save` may be called again afterwards."""
        self.wait(raise_errors=False)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
