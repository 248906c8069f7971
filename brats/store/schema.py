"""What a store records, typed: the root attributes and one record per case, with the schema version.

Both live in the Zarr attributes (`attributes["brats"]` of the root group and of each case group)
as plain JSON; these dataclasses are the only code that reads or writes those dicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import StoreError, StoreMismatchError
from ..geometry import shifted_affine

SCHEMA_VERSION = 2
"""v2 (brats 0.3): the Zarr hierarchy moved into `store.zarr/` beside the bookkeeping; v1 stores are re-ingested."""
ROOT_ATTR = "brats"


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
        return {
            "case_id": self.case_id, "labelled": self.labelled, "convention": self.convention,
            "modalities": list(self.modalities),
            "source": {"dir": self.source_dir, "files": {role: asdict(f) for role, f in self.source_files.items()}},
            "fingerprint": self.fingerprint, "params_fingerprint": self.params_fingerprint,
            "original_shape": list(self.original_shape), "cropped_shape": list(self.cropped_shape),
            "crop_box": [list(b) for b in self.crop_box], "affine": [list(r) for r in self.affine],
            "spacing": list(self.spacing), "normalization": self.normalization, "voxels": self.voxels,
            "ingested_at": self.ingested_at, "brats_version": self.brats_version, "checksums": self.checksums,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], where: str) -> CaseRecord:
        try:
            source = attrs["source"]
            return cls(
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
                checksums=dict(attrs.get("checksums") or {}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(f"{where}: damaged case record ({type(error).__name__}: {error}); "
                             "run `brats verify` and ingest the case again") from None
