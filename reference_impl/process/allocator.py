"""glibc malloc tuned for a proxy that moves large buffers: keep freed memory for the next one.

A bulk stream allocates a buffer per read and per TLS record batch (256 KiB reads, 1 MiB DATA
frames). glibc serves anything above its mmap threshold (128 KiB at start) with a fresh mmap and
gives memory above its trim threshold (also 128 KiB) back to the kernel on free, so every such
buffer cost page faults and the kernel zeroing its pages: measured on a TLS 1.3 stream of 1 MiB
writes through uvloop, the receiver spent 0.55-0.8 CPU s per 256 MiB, 0.18-0.28 s with the
thresholds below (README, "Data-plane hop"). Envoy links tcmalloc, which keeps such memory.
The cost is resident memory: up to TRIM_THRESHOLD of freed heap kept per process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt() parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 4 * 1024 * 1024   # above a 1 MiB frame with its header, below anything unusual
TRIM_THRESHOLD = 32 * 1024 * 1024  # a few frames' worth of freed heap kept for reuse


def keep_large_buffers() -> bool:
    """Apply the thresholds to this process's allocator. False, and the allocator left as it
    is, where malloc is not glibc's (musl has no mallopt) or where the operator chose them with
    glibc's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ environment variables."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
