"""The C allocator under CPU training: keep freed memory for the next step instead of returning it.

Every training step allocates and frees the same tensors. Above 128 KB (logits, attention
weights, feed-forward activations) glibc's malloc serves each from freshly mapped pages and unmaps
them when it is freed, and trims the heap whenever its top is free, so each step page-faults its
way through memory the kernel must zero again. PyTorch's CPU performance guide recommends jemalloc
or tcmalloc for this; `mallopt` gets the same effect from glibc itself, with nothing to install.
Peak memory does not grow: the next step reuses what the last one freed. (Page faults and time
saved: benchmarks/README.md.)
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>: free heap top kept before trimming
M_MMAP_THRESHOLD = -3  # allocations this size and larger get pages of their own
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit systems
TRIM_THRESHOLD = 256 << 20


def is_glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError):  # musl (Alpine) has no such name
        return False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for a loop that reuses the same buffers; False where it is not glibc
    (macOS, Windows, musl keep their own allocators and behaviour)."""
    if not is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
