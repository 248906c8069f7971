"""Read case records and arrays from a store."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import StoreError, StoreMismatchError
from . import layout
from .schema import ROOT_ATTR, SCHEMA_VERSION, CaseRecord, StoreAttrs

log = logging.getLogger(__name__)


def _attributes(meta: Path) -> dict[str, Any] | None:
    """The brats attributes of a Zarr group's metadata file, or None when absent or unreadable."""
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get(ROOT_ATTR)
    except (OSError, ValueError):
        return None


def read_case_record(root: Path, case_id: str) -> CaseRecord | None:
    """The record of a completely written case, or None if the case is absent, incomplete or its
    record unreadable (a case is complete once its record is written)."""
    case_dir = layout.case_dir(Path(root), case_id)
    attrs = _attributes(layout.metadata_path(case_dir))
    if not attrs:
        return None
    try:
        return CaseRecord.from_attrs(attrs, str(case_dir))
    except StoreError as error:
        log.warning("%s", error)
        return None


def list_case_ids(root: Path) -> list[str]:
    """Ids of the complete cases in a store, sorted."""
    cdir = layout.cases_dir(Path(root))
    if not cdir.is_dir():
        return []
    return sorted(p.name for p in cdir.iterdir() if p.is_dir() and read_case_record(Path(root), p.name) is not None)


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
            return np.zeros((0, 3), dtype=np.uint16)
        return self.group[name][...]


def labelled_case_ids(root: str | Path) -> list[str]:
    """Ids of the complete cases that carry a segmentation, sorted."""
    root = Path(root)
    return [c for c in list_case_ids(root) if (r := read_case_record(root, c)) is not None and r.labelled]


def array_path(root: str | Path, case_id: str, name: str) -> Path:
    """Folder of one case array (`layout.IMAGE`, `layout.LABEL`, or a location array)."""
    return layout.case_dir(Path(root), case_id) / name


def load_array(path: str | Path) -> np.ndarray:
    """Read one whole array: its single chunk decodes faster than any partial read (layout docs)."""
    return zarr.open_array(str(path), mode="r")[...]


def load_locations(case_path: str | Path, regions: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The sampled tumour voxel coordinates of each region, (n, 3) uint16; empty when absent."""
    out = {}
    for region in regions:
        path = Path(case_path) / (layout.LOCATION_PREFIX + region)
        out[region] = load_array(path) if path.is_dir() else np.zeros((0, 3), dtype=np.uint16)
    return out


def open_case(root: str | Path, case_id: str) -> CaseArrays:
    """Open a complete case read-only."""
    root = Path(root)
    record = read_case_record(root, case_id)
    if record is None:
        raise StoreError(f"{layout.case_dir(root, case_id)}: case not in store or incomplete")
    group = zarr.open_group(str(layout.case_dir(root, case_id)), mode="r")
    label = group[layout.LABEL] if record.labelled else None
    return CaseArrays(case_id, record, group[layout.IMAGE], label, group)  # type: ignore[arg-type]


def case_modified(root: str | Path, case_id: str) -> float:
    """When a case was last written to the store (its metadata file's modification time)."""
    return layout.metadata_path(layout.case_dir(Path(root), case_id)).stat().st_mtime
