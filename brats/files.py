"""Small file-system helpers shared by every stage: output checks, atomic replacement, the C library."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)


def check_output(path: str | Path, what: str, folder: bool = True) -> Path:
    """Refuse, before any work and without creating anything, an output location that cannot be
    written: `path` (a folder, or with `folder=False` a file) exists as the wrong kind, or its
    nearest existing ancestor is not a writable folder. Returns the absolute path."""
    path = Path(path).absolute()
    if path.exists() and path.is_dir() != folder:
        raise ConfigError(f"{path}: {what} must be a {'folder' if folder else 'file'}, and this is not one")
    existing = path if folder and path.exists() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{path}: {what} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: {what} cannot be written: no write permission in {existing}")
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{path}: {what} cannot be written: the file is read-only")
    return path


@contextmanager
def replaced_on_success(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block succeeds,
    removed when it fails. Readers and crashes see the old file or the new one, never half.
    `suffix` keeps an extension that writers look at (`.nii.gz`)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=1)
def libc() -> ctypes.CDLL | None:
    """The C library (errno kept), or None where it cannot be found."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 1 << 30
MMAP_LIMIT = 512 << 20


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Let glibc reuse freed volume and batch buffers instead of unmapping them.

    By default glibc serves blocks over ~32 MiB with mmap and unmaps them on free (and Dask's
    nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes the mmap
    threshold at 128 KiB), so every new 30-60 MB case or batch buffer is page-faulted in
    afresh: on the 2-core test machine that took half of the streaming time
    (docs/benchmarks.md). Raising the mmap and trim thresholds keeps up to 1 GiB of freed memory
    for reuse, the effect PyTorch's performance guide gets from jemalloc or tcmalloc. Returns
    False where the C library is not glibc. Once per process.
    """
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is None:
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_LIMIT)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    log.debug("glibc mallopt thresholds raised: %s", done)
    return done
