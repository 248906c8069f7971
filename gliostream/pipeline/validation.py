"""Load one raw case and check it whole before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidCaseError
from ..geometry import AFFINE_ATOL
from ..tasks import TASKS, Task
from .discovery import RawCase
from .naming import MODALITIES, Convention
from .nifti import NiftiLimits, NiftiSource, open_nifti


def unsigned_view(arr: np.ndarray) -> np.ndarray | None:
    """A same-memory unsigned view of a native-order integer array of at most 16 bits, or None
    for other types (a byte-swapped array's codes would not be its values)."""
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize > 2 or not arr.dtype.isnative:
        return None
    return arr.view(np.dtype(f"u{arr.dtype.itemsize}"))


def table_size(codes: np.ndarray) -> int:
    """Entries of a lookup table indexed by every possible code of `codes`."""
    return 1 << (8 * codes.dtype.itemsize)


@dataclass
class LoadedCase:
    """A raw case that passed validation: its arrays in file geometry plus provenance."""

    raw: RawCase
    sources: dict[str, NiftiSource]  # role -> source (hash, header, path)
    modalities: list[np.ndarray]  # in MODALITIES order, file dtype, (x, y, z)
    seg: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    task: Task = TASKS["GLI"]

    @property
    def convention(self) -> Convention:
        assert self.raw.convention is not None
        return self.raw.convention


def check_geometry(sources: dict[str, NiftiSource], atol: float) -> None:
    """All files of a case share one shape and (within `atol` mm) one affine."""
    ref_role = MODALITIES[0]
    ref = sources[ref_role]
    for src in sources.values():
        if src.shape != ref.shape:
            raise InvalidCaseError(src.path, f"shape {'x'.join(map(str, src.shape))} differs from "
                                             f"{ref.path.name} ({'x'.join(map(str, ref.shape))})")
        if not np.allclose(src.affine, ref.affine, atol=atol, rtol=0):
            worst = float(np.abs(src.affine - ref.affine).max())
            raise InvalidCaseError(src.path, f"affine differs from {ref.path.name} by {worst:.4g} mm "
                                             f"(tolerance {atol})")


def check_finite(src: NiftiSource, arr: np.ndarray) -> None:
    """Float images must hold no NaN or Inf (integer images always do)."""
    if arr.dtype.kind == "f" and not np.isfinite(arr.sum(dtype=np.float64)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InvalidCaseError(src.path, f"{bad} voxels are NaN or infinite")


def check_seg_labels(src: NiftiSource, seg: np.ndarray, conv: Convention, task: Task = TASKS["GLI"]) -> np.ndarray:
    """The seg as an unsigned integer array (same memory order), if it only holds the labels of
    `task` in `conv`'s naming.

    Integer segs of up to 16 bits are checked with one lookup of allowed codes and no copy;
    the offending values are only listed when there are some.
    """
    if conv.name == "2021" and task.name != "GLI":
        raise InvalidCaseError(src.path, f"BraTS 2018-2021 file naming is adult glioma's, not the {task.name} task's; "
                                         "ingest it with --task GLI")
    names = ", ".join(f"{k} {v}" for k, v in task.labels.items()) if conv.name != "2021" else "1 NCR, 2 ED, 4 ET"
    allowed = f"the {task.name} task in BraTS {conv.name} naming allows {list(conv.labels(task))} ({names})"
    codes = unsigned_view(seg)
    if codes is not None:
        ok = np.zeros(table_size(codes), dtype=bool)
        ok[list(conv.labels(task))] = True
        if ok[codes].all():
            return codes
        values = np.unique(codes[~ok[codes]]).view(seg.dtype).tolist()
    else:
        if seg.dtype.kind == "f":
            check_finite(src, seg)
            if not np.array_equal(seg, np.round(seg)):
                raise InvalidCaseError(src.path, "segmentation holds non-integer values")
        lo, hi = seg.min(), seg.max()
        if lo < 0 or hi > 255:
            raise InvalidCaseError(src.path, f"segmentation values range {lo:g}..{hi:g}; {allowed}")
        codes = seg.astype(np.uint8, order="K")
        values = np.flatnonzero(np.bincount(codes.ravel(order="K"))).tolist()
    unknown = sorted(set(values) - set(conv.labels(task)))
    if unknown:
        raise InvalidCaseError(src.path, f"unknown label value(s) {unknown}; {allowed}")
    return codes


def open_sources(raw: RawCase, limits: NiftiLimits = NiftiLimits(),
                 affine_atol: float = AFFINE_ATOL) -> dict[str, NiftiSource]:
    """Read every file of a case and check headers and geometry, before any voxel is decoded."""
    if raw.problem:
        raise InvalidCaseError(raw.problem_file or raw.folder, raw.problem)
    sources = {role: open_nifti(raw.files[role], limits) for role in raw.roles}
    check_geometry(sources, affine_atol)
    return sources


def decode_case(raw: RawCase, sources: dict[str, NiftiSource], task: Task = TASKS["GLI"]) -> LoadedCase:
    """Decode the voxels of opened sources and check them (finite values, the task's labels)."""
    modalities = []
    for role in MODALITIES:
        arr = sources[role].load()
        check_finite(sources[role], arr)
        modalities.append(arr)
    seg = None
    if raw.labelled:
        seg = check_seg_labels(sources["seg"], sources["seg"].load(), raw.convention, task)  # type: ignore[arg-type]
    ref = sources[MODALITIES[0]]
    return LoadedCase(raw=raw, sources=sources, modalities=modalities, seg=seg, affine=ref.affine,
                      spacing=ref.spacing, task=task)


def load_case(raw: RawCase, limits: NiftiLimits = NiftiLimits(), affine_atol: float = AFFINE_ATOL,
              task: Task = TASKS["GLI"]) -> LoadedCase:
    """Open, check and decode a whole case of `task`."""
    return decode_case(raw, open_sources(raw, limits, affine_atol), task)
