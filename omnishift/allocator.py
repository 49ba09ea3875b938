"""Keep freed memory in the process instead of handing it back to the kernel after every step.

Why: a training step on the CPU allocates and frees tensors of tens of megabytes (a batch of encoder
states, the vocabulary scores). glibc serves each allocation above its mmap threshold with a fresh
``mmap`` and returns it with ``munmap`` when freed, so the next step page-faults the same megabytes
in again, zero-filled by the kernel. On a machine whose memory is full of page cache (alignment sets
just written and read), every fault also reclaims a page first, and the system time grows with the
run: the CPU recipe's step went from 0.67 s to 1.07 s over 5,000 steps. Raising the mmap and trim
thresholds makes freed blocks stay in the heap and be reused; the measured effect (page faults and
system seconds a step) is in ``docs/benchmarks.md``. This is the pip-only equivalent of preloading
jemalloc or tcmalloc, which PyTorch recommends for CPU training; under another allocator the call
changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLDS = (1 << 30, 32 << 20)  # blocks under 1 GiB come from the heap (glibc < 2.35 caps it at 32 MiB)
TRIM_THRESHOLD = 2**31 - 1               # the heap's free top is kept up to 2 GiB

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process (idempotent).

    Returns:
        True when glibc accepted both settings; False elsewhere (macOS, musl, no ``mallopt``).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok_mmap = any(mallopt(_M_MMAP_THRESHOLD, t) == 1 for t in MMAP_THRESHOLDS)
    ok_trim = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _applied = ok_mmap and ok_trim
    log.info("glibc mmap/trim thresholds raised: %s", _applied)
    return _applied
