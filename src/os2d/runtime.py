"""Process-wide memory settings that make CPU inference faster without changing a single number.

A detection at default settings allocates tensors of 50-250 MB per backbone layer (a photo upscaled to sqrt(w*h) =
1536 has 768 x 768 x 96 activations in its first blocks). glibc serves every allocation above its mmap threshold
(128 kB, growing to at most 32 MB) with a fresh ``mmap``, and returns it to the kernel on ``free``. Each new block is
then page-faulted in and zeroed by the kernel, 4 kB at a time: on this project's 2-core VM that was half of the
backbone's time on such a level (0.56 s, 0.25 s with the settings below; ``benchmarks/allocator.py``).

Two remedies, both on by default in the ``os2d`` command line and service, and by :class:`~os2d.detector.Detector`:

* ``heap``: ``mallopt`` raises glibc's mmap and trim thresholds to :data:`HEAP_THRESHOLD`, so large blocks come
  from the heap and freed ones are reused by the next layer instead of being unmapped. The cost: memory freed at
  the top of the heap is kept by the process (peak resident memory is reached once and stays).
* ``thp``: PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` aligns blocks of 2 MB and more to huge pages and asks for transparent
  huge pages (``madvise``), 512x fewer page faults where a block is still new. PyTorch reads it once, when torch
  is imported, so it is set only while torch is not imported yet (the command line imports torch after it).

Neither changes any result: the same arithmetic runs on the same values. ``OS2D_ALLOCATOR=system`` (or ``heap``,
``thp``; default ``heap+thp``) chooses; anything but glibc on Linux keeps its own allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

from os2d.errors import Os2dError

logger = logging.getLogger(__name__)

ENV = "OS2D_ALLOCATOR"
MODES = ("heap+thp", "heap", "thp", "system")
HEAP_THRESHOLD = 1 << 30  # bytes: blocks up to this come from the heap; this much freed memory may stay mapped
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)

_applied: set[str] = set()


def allocator_mode() -> str:
    """The mode ``OS2D_ALLOCATOR`` asks for (``heap+thp`` when unset or empty); :class:`~os2d.errors.Os2dError`
    for an unknown one."""
    mode = os.environ.get(ENV, "").strip().lower() or MODES[0]
    if mode not in MODES:
        raise Os2dError(f"{ENV}={mode!r}: choose one of {', '.join(MODES)}")
    return mode


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # only glibc has it (musl does not)
        return libc
    except (OSError, AttributeError):
        return None


def tune_allocator(mode: str | None = None) -> list[str]:
    """Apply ``mode`` (default: :func:`allocator_mode`) to this process; returns the settings os2d has applied
    to it so far (``"heap"``, ``"thp"``), possibly none. Each is applied once; nothing is ever undone. Safe to call
    any number of times, from any composition root."""
    mode = allocator_mode() if mode is None else mode
    if mode not in MODES:
        raise Os2dError(f"allocator mode {mode!r}: choose one of {', '.join(MODES)}")
    if "thp" in mode and "thp" not in _applied and "torch" not in sys.modules \
            and "THP_MEM_ALLOC_ENABLE" not in os.environ and sys.platform.startswith("linux"):
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"  # read by PyTorch when it is imported
        _applied.add("thp")
    if "heap" in mode and "heap" not in _applied:
        libc = _glibc()
        if libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, HEAP_THRESHOLD) == 1:
            libc.mallopt(_M_TRIM_THRESHOLD, HEAP_THRESHOLD)
            _applied.add("heap")
    if _applied:
        logger.debug("allocator settings in effect: %s", ", ".join(sorted(_applied)))
    return sorted(_applied)


__all__ = ["ENV", "HEAP_THRESHOLD", "MODES", "allocator_mode", "tune_allocator"]
