"""Small file helpers shared by the modules that write files atomically."""

from __future__ import annotations

import os


def umask() -> int:
    mask = os.umask(0o077)  # the only way to read it is to set it; restore at once
    os.umask(mask)
    return mask


def permit_like_a_new_file(fd: int) -> None:
    """mkstemp creates 0600 files; give a file renamed into place the mode `open` would have."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o666 & ~umask())
