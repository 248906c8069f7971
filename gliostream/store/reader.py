"""Read case records and arrays from a store."""

from __future__ import annotations

import json
import logging
import math
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import StoreError, StoreMismatchError, shortened
from ..tasks import ALL_REGIONS
from . import layout
from .schema import REPAIR, ROOT_ATTR, SCHEMA_VERSION, CaseRecord, StoreAttrs

try:  # zlib-ng's CRC-32 (the same checksum) runs several times faster than the standard zlib's
    from zlib_ng.zlib_ng import crc32 as _crc32
except ImportError:  # pragma: no cover - optional speed-up
    _crc32 = zlib.crc32

log = logging.getLogger(__name__)


def _attributes(meta: Path) -> dict[str, Any] | None:
    """The brats attributes of a Zarr group's metadata file, or None when absent or unreadable."""
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get(ROOT_ATTR)
    except (OSError, ValueError):
        return None


def read_case_record(root: Path, case_id: str) -> CaseRecord | None:
    """The record of a case, or None when no such case folder exists. StoreError when the folder
    holds no readable record, or one edited, damaged or inconsistent (`CaseRecord.from_attrs`):
    every reader refuses such a case rather than silently using or skipping it."""
    case_dir = layout.case_dir(Path(root), case_id)
    meta = layout.metadata_path(case_dir)
    if not case_dir.is_dir():
        return None
    attrs = _attributes(meta)
    if not attrs:
        raise StoreError(f"{case_dir}: case folder without a readable record (damaged, or not written by brats); "
                         f"{REPAIR}")
    return CaseRecord.from_attrs(attrs, str(case_dir))


@dataclass(frozen=True)
class StoreScan:
    """Every case folder of a store: the sound records, and why each other one cannot be used."""

    records: dict[str, CaseRecord]
    damaged: dict[str, str]  # case id -> the one-line problem


def scan_cases(root: str | Path) -> StoreScan:
    """Read every case record once, sorting sound cases from damaged ones."""
    root = Path(root)
    cdir = layout.cases_dir(root)
    records, damaged = {}, {}
    for path in sorted(cdir.iterdir()) if cdir.is_dir() else []:
        if not path.is_dir():
            continue
        try:
            record = read_case_record(root, path.name)
        except StoreError as error:
            damaged[path.name] = str(error)
            continue
        if record is not None:
            records[path.name] = record
    return StoreScan(records, damaged)


def sound_records(root: str | Path) -> dict[str, CaseRecord]:
    """The records of every case, refusing (StoreError, one line) a store with a damaged one."""
    scan = scan_cases(root)
    if scan.damaged:
        first = next(iter(scan.damaged.values()))
        more = f" (and {len(scan.damaged) - 1} more damaged case(s))" if len(scan.damaged) > 1 else ""
        raise StoreError(first + more)
    return scan.records


def list_case_ids(root: Path) -> list[str]:
    """Ids of the cases in a store, sorted; StoreError if any case is damaged."""
    return sorted(sound_records(root))


def raw_store_attrs(root: Path) -> dict[str, Any] | None:
    """The root attributes as stored, or None where there are none; StoreMismatchError for a v1 store."""
    attrs = _attributes(layout.metadata_path(layout.cases_dir(root)))
    if attrs is None:
        old = _attributes(layout.v1_metadata_path(root))
        if old is not None:
            raise StoreMismatchError(f"{root}: a store of schema v{old.get('schema_version')} (brats 0.2 or older); "
                                     f"this brats reads v{SCHEMA_VERSION}: ingest the raw cases again into a new folder")
    return attrs


def read_store_attrs(root: str | Path) -> StoreAttrs:
    """Root attributes (schema version, ingest config); StoreError if `root` is no brats store."""
    root = Path(root)
    attrs = raw_store_attrs(root)
    if not attrs:
        raise StoreError(f"{root}: not a brats store (run `brats ingest RAW --out {root}` first)")
    return StoreAttrs.from_attrs(attrs, str(root))


def store_task(root: str | Path) -> str:
    """The BraTS task of a store's cases (GLI for stores of brats <= 0.4, which record none)."""
    return str(read_store_attrs(root).ingest_config.get("task", "GLI"))


def existing_store_task(root: str | Path) -> str | None:
    """The task of the store at `root`, or None where there is no store yet."""
    return store_task(root) if raw_store_attrs(Path(root)) else None


@dataclass
class CaseArrays:
    """One case's lazily opened Zarr arrays and its record."""

    case_id: str
    record: CaseRecord
    image: zarr.Array
    label: zarr.Array | None
    group: zarr.Group

    def locations(self, region: str) -> np.ndarray:
        """Sampled (n, 3) voxel coordinates of a tumour region (empty for unlabelled cases)."""
        name = layout.LOCATION_PREFIX + region
        if self.label is None or name not in self.group:
            return layout.no_locations()
        return self.group[name][...]


def labelled_case_ids(root: str | Path) -> list[str]:
    """Ids of the cases that carry a segmentation, sorted; StoreError if any case is damaged."""
    return sorted(c for c, r in sound_records(root).items() if r.labelled)


def array_path(root: str | Path, case_id: str, name: str) -> Path:
    """Folder of one case array (`layout.IMAGE`, `layout.LABEL`, or a location array)."""
    return layout.case_dir(Path(root), case_id) / name


def checksum(arr: np.ndarray) -> str:
    """CRC-32 of an array's C-order bytes, recorded at ingest and checked on read."""
    return format(_crc32(np.ascontiguousarray(arr).data), "08x")


def expected_arrays(record: CaseRecord) -> dict[str, tuple[tuple[int, ...] | None, np.dtype]]:
    """Array name -> (shape, dtype) the schema and the record promise; shape None: (n, 3) locations."""
    shape = record.cropped_shape
    out: dict[str, tuple[tuple[int, ...] | None, np.dtype]] = {
        layout.IMAGE: ((len(record.modalities), *shape), np.dtype(np.float16))}
    if record.labelled:
        out[layout.LABEL] = (shape, np.dtype(np.uint8))
        for region in record.regions:
            out[layout.LOCATION_PREFIX + region] = (None, np.dtype(np.uint16))
    return out


# (array folder, recorded checksum) pairs whose contents this process has checked.
_checked: set[tuple[str, str]] = set()
_checked_lock = threading.Lock()


def read_array(case_path: str | Path, record: CaseRecord, name: str, recheck: bool = False) -> np.ndarray:
    """One whole case array, checked against what its record promises before it is used: shape
    and dtype before anything is decoded (so damaged metadata cannot make it allocate more than
    the record's volume), then the CRC-32 of the contents (once per array version per process,
    ~1 ms per 26 MB case with zlib-ng; `recheck` always), and for locations that every coordinate lies
    in the volume. StoreError (one line, the remedy) otherwise; a single chunk decodes faster than
    any partial read (layout docs)."""
    path = Path(case_path) / name
    shape, dtype = expected_arrays(record)[name]
    try:
        array = zarr.open_array(str(path), mode="r")
        found_shape, found_dtype = tuple(array.shape), np.dtype(array.dtype)
    except Exception as error:  # zarr raises many types for missing or corrupt metadata
        raise StoreError(f"{path}: unreadable array ({type(error).__name__}: {shortened(str(error), 100)}); "
                         f"{REPAIR}") from None
    if found_dtype != dtype:
        raise StoreError(f"{path}: dtype {found_dtype}, the schema says {dtype}; {REPAIR}")
    if shape is not None and found_shape != shape:
        raise StoreError(f"{path}: shape {found_shape}, the record says {shape}; {REPAIR}")
    if shape is None and (len(found_shape) != 2 or found_shape[1] != 3
                          or found_shape[0] > math.prod(record.cropped_shape)):
        raise StoreError(f"{path}: shape {found_shape}, expected (n, 3) voxel coordinates; {REPAIR}")
    try:
        data = array[...]
    except Exception as error:
        raise StoreError(f"{path}: unreadable chunk ({type(error).__name__}: {shortened(str(error), 100)}); "
                         f"{REPAIR}") from None
    key = (str(path), record.checksums.get(name, ""))
    if recheck or key not in _checked:
        if checksum(data) != key[1]:
            raise StoreError(f"{path}: content differs from the checksum recorded at ingest (corrupted); {REPAIR}")
        if shape is None and len(data) and (data.max(axis=0) >= np.asarray(record.cropped_shape)).any():
            raise StoreError(f"{path}: voxel coordinates outside the case's volume; {REPAIR}")
        with _checked_lock:
            _checked.add(key)
    return data


def read_locations(root: str | Path, case_id: str, regions: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The sampled tumour voxel coordinates of each of `regions` (default: the case's), (n, 3)
    uint16; empty for unlabelled cases and for a region the case has no locations of."""
    asked = regions if regions is not None else ALL_REGIONS
    record, arrays = read_case_arrays(root, case_id, tuple(layout.LOCATION_PREFIX + r for r in asked))
    found = dict(zip([r for r in asked if r in record.regions], arrays, strict=True))
    wanted = record.regions if regions is None else regions
    return {r: found.get(r, layout.no_locations()) for r in wanted}


def existing_record(root: str | Path, case_id: str) -> CaseRecord:
    """The record of a case that must exist (StoreError naming the case otherwise)."""
    record = read_case_record(Path(root), case_id)
    if record is None:
        raise StoreError(f"{layout.case_dir(Path(root), case_id)}: case not in the store")
    return record


@dataclass(frozen=True)
class CaseData:
    """One case read whole and checked (`read_array`): image (4, x, y, z) float16 or None, label or None."""

    record: CaseRecord
    image: np.ndarray | None
    label: np.ndarray | None


def read_case_arrays(root: str | Path, case_id: str, names: tuple[str, ...]) -> tuple[CaseRecord, list[np.ndarray]]:
    """The current record of a case and its arrays `names` (those the record has), each checked
    against that record. A case replaced by a concurrent ingest between reading the record and
    the arrays is read again (the exchange is atomic, the two reads are not), so only real
    damage is reported."""
    path = layout.case_dir(Path(root), case_id)
    for attempt in range(3):
        record = existing_record(root, case_id)
        wanted = [n for n in names if n in expected_arrays(record)]
        try:
            return record, [read_array(path, record, name) for name in wanted]
        except StoreError:
            if attempt == 2 or existing_record(root, case_id) == record:
                raise
    raise AssertionError("unreachable")


def read_case(root: str | Path, case_id: str, with_image: bool = True) -> CaseData:
    """A case's record and arrays, each checked against the record before use."""
    names = ((layout.IMAGE,) if with_image else ()) + (layout.LABEL,)
    record, arrays = read_case_arrays(root, case_id, names)
    image = arrays.pop(0) if with_image else None
    return CaseData(record, image, arrays[0] if arrays else None)


def open_case(root: str | Path, case_id: str) -> CaseArrays:
    """Open a case read-only, lazily (arrays unchecked: for inspection; stages use `read_case`)."""
    root = Path(root)
    record = existing_record(root, case_id)
    group = zarr.open_group(str(layout.case_dir(root, case_id)), mode="r")
    label = group[layout.LABEL] if record.labelled else None
    return CaseArrays(case_id, record, group[layout.IMAGE], label, group)  # type: ignore[arg-type]
