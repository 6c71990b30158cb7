"""glibc malloc settings for a process that moves large tensors.

By default glibc serves allocations above a (dynamic) threshold with fresh mmap()s and gives them
back on free, so every large request or response the gateway touches costs page faults on all
its pages, several times per request (gRPC's buffers, the bytes object, the upstream copy).
Measured on the 602 KB `image` request: ~17% of the gateway's CPU per request. Keeping such
blocks in the heap (a fixed mmap threshold, a high trim threshold) removes that; the price is that
freed memory up to the trim threshold stays with the process instead of going back to the OS.

Settings given through glibc's own environment variables (MALLOC_MMAP_THRESHOLD_, ...) win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "tune_allocator"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's own ceiling for the threshold (64-bit)
TRIM_THRESHOLD_BYTES = 128 << 20


def tune_allocator() -> bool:
    """Apply the settings; False where they do not apply (not glibc, or set by the environment)."""
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    applied = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    applied = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and applied
    log.debug("malloc thresholds %s", "set" if applied else "refused")
    return applied
