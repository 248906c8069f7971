"""Create stores and write cases atomically: a case appears whole, by one rename, or not at all."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import StoreError, StoreMismatchError
from ..faults import fault_point
from ..files import libc
from . import layout
from .locks import case_lock, store_lock
from .reader import checksum, raw_store_attrs
from .schema import ROOT_ATTR, SCHEMA_VERSION, UPGRADABLE_VERSIONS, CaseRecord, StoreAttrs

log = logging.getLogger(__name__)
AT_FDCWD, RENAME_EXCHANGE = -100, 2


def create_or_check_store(root: str | Path, ingest_config: dict[str, Any]) -> Path:
    """Make `root` a brats store, or check that the existing one has our schema and config.

    Cases written with other preprocessing parameters would be silently inconsistent, so a
    mismatch is an error rather than a partial re-ingest.
    """
    root = Path(root)
    foreign = root.is_dir() and any(p.name not in STORE_ENTRIES for p in root.iterdir())
    if foreign and raw_store_attrs(root) is None:  # a v1 store is refused by name in there
        _refuse_foreign(root)  # before anything is created in a folder that is not ours
    try:
        root.mkdir(parents=True, exist_ok=True)
        for d in (layout.locks_dir(root), layout.staging_dir(root), layout.trash_dir(root)):
            d.mkdir(exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{root}: cannot create store folder ({exc.strerror or exc})") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise StoreError(f"{root}: store folder is not writable")
    with store_lock(root):
        attrs = raw_store_attrs(root)
        if attrs is None:
            _refuse_foreign(root)  # again under the lock: another process may have written meanwhile
            group = zarr.open_group(str(layout.cases_dir(root)), mode="a")  # "w" would wipe cases being written
            group.attrs[ROOT_ATTR] = StoreAttrs(SCHEMA_VERSION, ingest_config).to_attrs()
            log.info("created store %s (schema v%d)", root, SCHEMA_VERSION)
            return root
        if attrs.get("schema_version") in UPGRADABLE_VERSIONS and attrs.get("ingest_config") == ingest_config:
            group = zarr.open_group(str(layout.cases_dir(root)), mode="a")
            group.attrs[ROOT_ATTR] = StoreAttrs(SCHEMA_VERSION, ingest_config).to_attrs()
            log.warning("%s: upgrading the store from schema v%s to v%d: every case is ingested again", root,
                        attrs.get("schema_version"), SCHEMA_VERSION)
            return root
        existing = StoreAttrs.from_attrs(attrs, str(root))  # refuses another schema version
        held, wanted = existing.ingest_config.get("task", "GLI"), ingest_config.get("task", "GLI")
        if held != wanted:
            raise StoreMismatchError(f"{root}: the store holds {held} cases, not {wanted}: ingest with --task {held}, "
                                     "or into a new folder")
        if existing.ingest_config != ingest_config:
            raise StoreMismatchError(f"{root}: store was ingested with other parameters {existing.ingest_config}; "
                                     "use the same options or a new folder")
    return root


# What a store (or one another run is creating right now) may hold at its top level.
STORE_ENTRIES = {".locks", ".staging", ".trash", ".stale", layout.HIERARCHY, layout.INDEX_FILE, layout.REPORT_FILE}


def _refuse_foreign(root: Path) -> None:
    if layout.v1_metadata_path(root).exists() or layout.metadata_path(layout.cases_dir(root)).exists():
        raise StoreError(f"{root}: a Zarr store not written by brats")
    if any(p.name not in {".locks", ".staging", ".trash", ".stale"} for p in root.iterdir()):
        raise StoreError(f"{root}: folder is not empty and is not a brats store")


def _write_array(group: zarr.Group, name: str, data: np.ndarray) -> None:
    arr = group.create_array(name, shape=data.shape, dtype=data.dtype,
                             chunks=layout.chunk_shape(data.shape, data.dtype.itemsize),
                             compressors=layout.codec(), fill_value=0, config=layout.WRITE_CONFIG)
    arr[...] = data


def exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported.

    With it a replaced case is never absent from `cases.zarr/`, even for an instant: readers (a
    training job) see the old version or the new one.
    """
    renameat2 = getattr(libc(), "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(error, os.strerror(error), str(b))


def write_case(root: Path, case_id: str, arrays: dict[str, np.ndarray], record: CaseRecord) -> None:
    """Write a case into staging, then rename it into place (caller holds the case lock).

    A process killed at any point leaves either the previous complete case or nothing under
    `cases.zarr/`, plus staging debris that the next writer of that case removes.
    """
    staging = layout.staging_dir(root) / f"{case_id}.{uuid.uuid4().hex}"
    try:
        group = zarr.open_group(str(staging), mode="w")
        fault_point("write:staging-opened")
        record = record.with_checksums({name: checksum(a) for name, a in arrays.items()})
        for name, data in arrays.items():
            _write_array(group, name, data)
            fault_point("write:array-written")
        group.attrs[ROOT_ATTR] = record.to_attrs()  # written last: a case without it is not complete
        fault_point("write:record-written")
        target = layout.case_dir(root, case_id)
        if target.exists() and exchange(staging, target):
            fault_point("write:exchanged")
            shutil.rmtree(staging, ignore_errors=True)  # now the previous version
        elif target.exists():
            old = layout.trash_dir(root) / f"{case_id}.{uuid.uuid4().hex}"
            os.rename(target, old)
            fault_point("write:between-renames")
            os.rename(staging, target)
            fault_point("write:replaced")
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
        fault_point("write:renamed")
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StoreError(f"{staging}: cannot write case ({exc.strerror or exc})") from None


def recover_case(root: Path, case_id: str) -> None:
    """Clean what a killed writer of `case_id` left (caller holds the case lock).

    If a replacement was interrupted between its two renames, the previous complete version
    sits in the trash: put it back, so nothing complete is ever lost.
    """
    for stale in layout.staging_dir(root).glob(f"{glob_escape(case_id)}.*"):
        if debris_owner(stale.name) == case_id:  # not case `a.b`'s staging, when cleaning `a`
            shutil.rmtree(stale, ignore_errors=True)
    trashed = sorted(p for p in layout.trash_dir(root).glob(f"{glob_escape(case_id)}.*")
                     if debris_owner(p.name) == case_id)
    target = layout.case_dir(root, case_id)
    for old in trashed:
        if not target.exists() and layout.metadata_path(old).exists():
            os.rename(old, target)
            log.warning("restored %s from an interrupted replacement", case_id)
        else:
            shutil.rmtree(old, ignore_errors=True)


def sweep_debris(root: Path) -> int:
    """Recover every case that a killed writer left debris for (staging or trash), each under its
    case lock so a concurrent writer's live staging is never touched. Returns how many."""
    names = set()
    for folder in (layout.staging_dir(root), layout.trash_dir(root)):
        if folder.is_dir():
            names |= {debris_owner(p.name) for p in folder.iterdir() if "." in p.name}
    for case_id in sorted(names):
        if layout.case_id_problem(case_id):  # no case could own it: not ours to keep
            for folder in (layout.staging_dir(root), layout.trash_dir(root)):
                for path in folder.glob(f"{glob_escape(case_id)}.*"):
                    shutil.rmtree(path, ignore_errors=True)
            continue
        with case_lock(root, case_id):
            recover_case(root, case_id)
    return len(names)


def debris_owner(name: str) -> str:
    """The case a staging or trash folder `<case_id>.<hex>` belongs to."""
    return name.rsplit(".", 1)[0]


def glob_escape(name: str) -> str:
    """Escape glob metacharacters in a case id."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)
