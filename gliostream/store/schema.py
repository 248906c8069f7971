"""What a store records, typed: the root attributes and one record per case, with the schema version.

Both live in the Zarr attributes (`attributes["brats"]` of the root group and of each case group)
as plain JSON; these dataclasses are the only code that reads or writes those dicts.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import StoreError, StoreMismatchError
from ..geometry import shifted_affine
from ..labels import CONVENTION_NAMES
from ..tasks import TASKS
from . import layout

SCHEMA_VERSION = 3
"""v3 (brats 0.4): each case record carries its own checksum and must carry its arrays'. v2 (brats 0.3):
the Zarr hierarchy moved into `cases.zarr/`. A v2 store is upgraded in place by the next ingest
(every case ingested again); v1 stores are re-ingested into a new folder."""
UPGRADABLE_VERSIONS = (2,)
ROOT_ATTR = "brats"
RECORD_CHECKSUM = "record_checksum"
REPAIR = "run `brats verify`, then `brats ingest RAW --out STORE --redo-damaged` to rewrite it from its raw files"


@dataclass(frozen=True)
class StoreAttrs:
    """The root attributes: the schema version and the ingest parameters every case was made with."""

    schema_version: int
    ingest_config: dict[str, Any]

    def to_attrs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], where: str) -> StoreAttrs:
        version = attrs.get("schema_version")
        if version in UPGRADABLE_VERSIONS:
            raise StoreMismatchError(f"{where}: store schema v{version} (brats 0.3), this brats reads "
                                     f"v{SCHEMA_VERSION}: run `brats ingest RAW --out {where}` to upgrade it in place "
                                     "(every case is ingested again)")
        if version != SCHEMA_VERSION:
            raise StoreMismatchError(f"{where}: store schema v{version}, this brats reads v{SCHEMA_VERSION}; "
                                     "ingest the raw cases again into a new folder")
        return cls(int(version), dict(attrs.get("ingest_config") or {}))


@dataclass(frozen=True)
class SourceFile:
    """One raw file a case was made from: name, content hash, and the size and mtime ingest checks first."""

    name: str
    sha256: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class CaseRecord:
    """Everything the store knows about one case besides its arrays: provenance, geometry to undo
    the crop, normalisation statistics and tumour voxel counts."""

    case_id: str
    labelled: bool
    convention: str  # "2021" or "2023": the label convention predictions are exported in
    modalities: tuple[str, ...]
    source_dir: str
    source_files: dict[str, SourceFile]  # role -> file
    fingerprint: str
    params_fingerprint: str
    original_shape: tuple[int, int, int]
    cropped_shape: tuple[int, int, int]
    crop_box: tuple[tuple[int, int], ...]  # per axis [start, stop) in the original volume
    affine: tuple[tuple[float, ...], ...]  # 4 x 4, of the original volume
    spacing: tuple[float, float, float]
    normalization: dict[str, dict[str, float]]
    voxels: dict[str, int]  # per region (wt, tc, et) and "brain"
    ingested_at: str
    brats_version: str
    checksums: dict[str, str] = field(default_factory=dict)  # array name -> checksum, added by the writer
    task: str = "GLI"  # the BraTS task whose labels the case holds (`tasks.TASKS`); GLI for brats <= 0.4

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions whose tumour locations the case holds (its task's; WT, TC, ET before tasks)."""
        return tuple(k for k in self.voxels if k != "brain") if self.labelled else ()

    @property
    def affine_matrix(self) -> np.ndarray:
        return np.asarray(self.affine, dtype=np.float64)

    @property
    def cropped_affine(self) -> np.ndarray:
        """Voxel-to-world affine of the stored (cropped) arrays."""
        return shifted_affine(self.affine_matrix, [start for start, _ in self.crop_box])

    def with_checksums(self, checksums: dict[str, str]) -> CaseRecord:
        return replace(self, checksums=dict(checksums))

    def to_attrs(self) -> dict[str, Any]:
        """The record as stored, sealed with its own checksum (any later edit shows)."""
        attrs = {
            "case_id": self.case_id, "labelled": self.labelled, "convention": self.convention,
            "modalities": list(self.modalities),
            "source": {"dir": self.source_dir, "files": {role: asdict(f) for role, f in self.source_files.items()}},
            "fingerprint": self.fingerprint, "params_fingerprint": self.params_fingerprint,
            "original_shape": list(self.original_shape), "cropped_shape": list(self.cropped_shape),
            "crop_box": [list(b) for b in self.crop_box], "affine": [list(r) for r in self.affine],
            "spacing": list(self.spacing), "normalization": self.normalization, "voxels": self.voxels,
            "ingested_at": self.ingested_at, "brats_version": self.brats_version, "checksums": self.checksums,
            "task": self.task,
        }
        return {**attrs, RECORD_CHECKSUM: record_digest(attrs)}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], where: str) -> CaseRecord:
        """The record of stored attributes; StoreError when they were edited or damaged since ingest,
        or describe no consistent case (checked before any array is read by their numbers)."""
        if not isinstance(attrs, dict):
            raise StoreError(f"{where}: damaged case record (not a JSON object); {REPAIR}")
        sealed = attrs.get(RECORD_CHECKSUM)
        if sealed is None:
            raise StoreError(f"{where}: case record has no checksum of its own (written by brats 0.3 or older, or "
                             f"edited); {REPAIR}")
        if sealed != record_digest({k: v for k, v in attrs.items() if k != RECORD_CHECKSUM}):
            raise StoreError(f"{where}: case record was edited or damaged since ingest (its checksum differs); {REPAIR}")
        try:
            source = attrs["source"]
            record = cls(
                case_id=str(attrs["case_id"]), labelled=bool(attrs["labelled"]), convention=str(attrs["convention"]),
                modalities=tuple(attrs["modalities"]), source_dir=str(source["dir"]),
                source_files={role: SourceFile(**f) for role, f in source["files"].items()},
                fingerprint=str(attrs["fingerprint"]), params_fingerprint=str(attrs["params_fingerprint"]),
                original_shape=tuple(int(v) for v in attrs["original_shape"]),  # type: ignore[arg-type]
                cropped_shape=tuple(int(v) for v in attrs["cropped_shape"]),  # type: ignore[arg-type]
                crop_box=tuple((int(a), int(b)) for a, b in attrs["crop_box"]),
                affine=tuple(tuple(float(v) for v in row) for row in attrs["affine"]),
                spacing=tuple(float(v) for v in attrs["spacing"]),  # type: ignore[arg-type]
                normalization=dict(attrs["normalization"]), voxels={k: int(v) for k, v in attrs["voxels"].items()},
                ingested_at=str(attrs["ingested_at"]), brats_version=str(attrs["brats_version"]),
                checksums=dict(attrs.get("checksums") or {}), task=str(attrs.get("task", "GLI")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(f"{where}: damaged case record ({type(error).__name__}: {error}); {REPAIR}") from None
        problem = record.inconsistency()
        if problem:
            raise StoreError(f"{where}: case record is inconsistent ({problem}); {REPAIR}")
        return record

    def inconsistency(self) -> str | None:
        """What makes this record describe no possible case (None: consistent)."""
        if self.convention not in CONVENTION_NAMES:
            return f"unknown label convention {self.convention!r}"
        if self.task not in TASKS:
            return f"unknown task {self.task!r}"
        if len(self.original_shape) != 3 or len(self.cropped_shape) != 3 or len(self.crop_box) != 3:
            return "shapes and crop box must have three axes"
        axes = zip(self.crop_box, self.cropped_shape, self.original_shape, strict=True)
        for axis, ((start, stop), size, full) in enumerate(axes):
            if not 0 <= start < stop <= full:
                return f"crop box [{start}, {stop}) of axis {axis} lies outside the volume of {full} voxels"
            if stop - start != size:
                return f"cropped size {size} of axis {axis} differs from its crop box [{start}, {stop})"
        affine = self.affine_matrix
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            return "affine is not a finite 4 x 4 matrix"
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            return f"spacing {list(self.spacing)} is not three positive sizes"
        if not self.modalities:
            return "no modality"
        needed = [layout.IMAGE] + ([layout.LABEL] + [layout.LOCATION_PREFIX + r for r in self.regions]
                                   if self.labelled else [])
        missing = [name for name in needed if name not in self.checksums]
        if missing:
            return f"no checksum for array(s) {', '.join(missing)}, so their contents cannot be checked"
        return None


def record_digest(attrs: dict[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON (sorted keys): what seals it against edits."""
    text = json.dumps(attrs, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
