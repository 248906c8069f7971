"""Small file-system helpers shared by every stage: output checks, atomic replacement, the C library."""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import functools
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BusyError, ConfigError, OutputError, printable
from .faults import fault_point

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
    `suffix` keeps an extension that writers look at (`.nii.gz`). A file-system error (a full
    disk) becomes an OutputError naming `path`."""
    with replaced_together([path], suffix) as (tmp,):
        yield tmp


@contextmanager
def replaced_together(paths: list[Path], suffix: str = "") -> Iterator[list[Path]]:
    """Temporary paths for files that belong together (a report, its provenance, its plot): all
    are renamed into place once every one is written, or none is (the old ones stay)."""
    paths = [Path(p) for p in paths]
    tmps = [p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp{suffix}") for p in paths]
    current = paths[0]
    try:
        yield tmps
        fault_point("output:written")
        for current, tmp in zip(paths, tmps, strict=True):
            os.replace(tmp, current)
    except OSError as error:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        written = {str(tmp): path for tmp, path in zip(tmps, paths, strict=True)}  # the file being written, by its name
        raise OutputError(written.get(str(error.filename), current), str(error.strerror or error)) from None
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise


def check_not_inside(out: str | Path, inputs: str | Path, what: str, inputs_what: str) -> None:
    """Refuse an output folder that is, or lies inside, a folder read as input: what is written
    there could replace an input file, or be read as one by the next run."""
    out_real, in_real = Path(out).resolve(), Path(inputs).resolve()
    if out_real == in_real or in_real in out_real.parents:
        raise ConfigError(f"{printable(str(out))}: {what} lies inside {inputs_what} {printable(str(inputs))}, whose "
                          "files are read as input; give a folder outside it")


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder`'s lock for `what` (a run writing there) or refuse at once: two runs never write
    one folder. The lock dies with its process; the file `.brats-<what>.lock` stays, harmless."""
    path = folder / f".brats-{what}.lock"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise BusyError(f"{printable(str(folder))}: another `brats {what}` (process {owner}) is writing here; "
                            "wait for it to finish or give another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


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
