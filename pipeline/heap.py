"""Let glibc reuse freed large buffers instead of returning them to the kernel.

glibc serves allocations above its mmap threshold (128 KiB, adapting up to 32 MiB) with a fresh
``mmap`` and returns the heap top above its trim threshold to the kernel, so a loop that allocates
and frees buffers of a few MiB (a padded batch, a shuffle buffer) pays a page fault per 4 KiB on
every iteration. On the shared 2-core machine of the benchmarks that made a batch gather 2.6x slower
than the same gather into reused memory (``bench/bench_loader.py``). :func:`reuse_freed_memory` sets
fixed thresholds (mmap 32 MiB, trim 256 MiB), as ``pipeline.dask_executor`` does for Dask workers:
buffers up to 32 MiB come from the heap and up to 256 MiB of freed heap is kept for reuse.
Process-wide; a no-op where the C library is not glibc.
"""

from __future__ import annotations

import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


@functools.cache
def reuse_freed_memory() -> bool:
    """Set glibc's mmap/trim thresholds once per process; ``True`` if they were set."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20) == 1
        return bool(libc.mallopt(M_TRIM_THRESHOLD, 256 * 2**20) == 1 and ok)
    except (OSError, AttributeError):  # not glibc
        return False
