"""Allocator tuning for the training process."""

from __future__ import annotations

import logging

from ..files import libc

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 1 << 30
MMAP_LIMIT = 512 << 20


def keep_freed_memory() -> bool:
    """Let glibc reuse freed volume and batch buffers instead of unmapping them.

    By default glibc serves blocks over ~32 MiB with mmap and unmaps them on free, so every
    new 30-60 MB case or batch buffer is page-faulted in afresh: on the 2-core test machine
    that took half of the streaming time (docs/benchmarks.md). Raising the mmap and trim
    thresholds keeps up to 1 GiB of freed memory for reuse, the effect PyTorch's performance
    guide gets from jemalloc or tcmalloc. Returns False where the C library is not glibc.
    """
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is None:
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_LIMIT)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    log.debug("glibc mallopt thresholds raised: %s", done)
    return done
