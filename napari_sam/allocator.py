"""Keep glibc from handing large freed blocks back to the kernel between model calls.

CPU inference allocates and frees tensors of tens of megabytes at a high rate (the decoder's
per-prompt image tokens, the encoder's attention and MLP activations). glibc serves blocks
above its mmap threshold (at most 32 MiB, often far less) with a fresh `mmap` and unmaps them
on `free`, and trims the top of the heap when more than the trim threshold is free: every
such tensor is then first touched page by page (one page fault per 4 KiB) on the next call.
Measured on this project's 2-core CPU: the ViT-B decoder of a 16 x 16 automask grid took
2.9 s with glibc's defaults and 2.0 s with blocks up to 256 MiB kept in the heap; embedding
a 1024 x 1024 image 1.6 s and 1.3 s (`benchmarks/bench_automask.py`).

`tune()` raises both thresholds once per process (`mallopt`). Peak memory is what the work
needs either way; what changes is that memory freed after a peak stays with the process
for reuse instead of going back to the system. Set NAPARI_SAM_MALLOC_TUNING=0 to keep the
allocator's defaults. Elsewhere than on glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 256 << 20  # blocks below this come from the heap and are reused
TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top kept for reuse, at most

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_STATE = {"done": False, "tuned": False}


def enabled() -> bool:
    """Whether the tuning is wanted: NAPARI_SAM_MALLOC_TUNING is unset or not 0/false/no/off.

    Returns
    -------
    bool
        True unless the environment variable turns the tuning off.
    """
    return os.environ.get("NAPARI_SAM_MALLOC_TUNING", "1").strip().lower() not in (
        "0", "false", "no", "off")


def tune() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); True when they are set.

    Returns
    -------
    bool
        True when both thresholds were set (now or by an earlier call); False when tuning is
        off, the platform is not Linux, or the C library is not glibc.
    """
    if _STATE["done"]:
        return _STATE["tuned"]
    _STATE["done"] = True
    if not enabled() or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
          and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    _STATE["tuned"] = ok
    return ok


def tuned() -> bool:
    """Whether `tune()` has set the thresholds in this process.

    Returns
    -------
    bool
        True once a `tune()` call has set both thresholds.
    """
    return _STATE["tuned"]
