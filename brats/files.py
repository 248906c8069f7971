"""Small file-system helpers shared by every stage: output checks, atomic replacement, the C library."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError


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
