"""Small file helpers shared by the modules that write files atomically."""

from __future__ import annotations

import errno
import os


def umask() -> int:
    mask = os.umask(0o077)  # the only way to read it is to set it; restore at once
    os.umask(mask)
    return mask


def permit_like_a_new_file(fd: int) -> None:
    """mkstemp creates 0600 files; give a file renamed into place the mode `open` would have."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o666 & ~umask())


def fsync(path, strict: bool = True) -> None:
    """Make a file's (or a folder's: a rename in it) contents durable. Not `strict`: where a
    filesystem cannot sync a folder, let it be (the data itself was synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        if strict:
            raise


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no room: the disk, a quota, a size limit


def write_hint(exc: OSError, elsewhere: str) -> str:
    """What to do about a failed write: make room when there was none, else go `elsewhere`."""
    if exc.errno in FULL:
        return f"free some disk space, or {elsewhere}"
    return elsewhere[0].upper() + elsewhere[1:]
