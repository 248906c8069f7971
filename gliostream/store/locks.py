"""Advisory file locks, so concurrent ingest runs never write the same case or index twice."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .layout import locks_dir


def _lock_file(root: Path, name: str) -> Path:
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]
    return locks_dir(root) / f"{digest}.lock"


@contextmanager
def locked(root: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock named `name` in the store (blocks until free; freed if the process dies)."""
    path = _lock_file(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def case_lock(root: Path, case_id: str):  # noqa: ANN201 - a context manager
    return locked(root, "case:" + case_id)


def store_lock(root: Path):  # noqa: ANN201
    return locked(root, "store")
