"""Crop to the brain, z-score each modality on its non-zero voxels, remap labels, sample tumour locations."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidCaseError
from ..store.layout import no_locations
from ..tasks import TASKS, Task
from .naming import MODALITIES, Convention
from .validation import LoadedCase, table_size, unsigned_view


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters that change what preprocessing writes (part of every case's fingerprint)."""

    locations_per_region: int = 10_000
    min_location_fraction: float = 0.01
    min_brain_voxels: int = 100


@dataclass
class PreprocessedCase:
    """What the store keeps for one case: arrays in the cropped frame plus undo metadata."""

    image: np.ndarray  # (4, x, y, z) float16, z-scored
    label: np.ndarray | None  # (x, y, z) uint8, 0..3
    locations: dict[str, np.ndarray]  # region -> (n, 3) uint16 voxel coordinates in the crop
    crop_box: tuple[tuple[int, int], ...]  # per axis [start, stop) in the original volume
    original_shape: tuple[int, int, int]
    normalization: dict[str, dict[str, float]]
    voxel_counts: dict[str, int]


def brain_bounding_box(modalities: list[np.ndarray], seg: np.ndarray | None) -> tuple[slice, slice, slice]:
    """Bounding box of voxels that are non-zero (`!= 0`, negatives count) in any modality or the seg."""
    mask = modalities[0] != 0
    for arr in modalities[1:]:
        mask |= arr != 0
    if seg is not None:
        mask |= seg != 0
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            raise ValueError("no non-zero voxel")
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def _offset_codes(arr: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Integer voxels as monotone unsigned codes (value + offset), or None for other types.

    A view plus at most one pass (flipping the sign bit), keeping the memory order of `arr`.
    """
    codes = unsigned_view(arr)
    if codes is None or arr.dtype.kind == "u":
        return None if codes is None else (codes, 0)
    offset = table_size(codes) // 2
    return np.bitwise_xor(codes, codes.dtype.type(offset), order="K"), offset


def zscore_nonzero(arr: np.ndarray, out: np.ndarray) -> tuple[float, float, int]:
    """Write (arr - mean) / std over the non-zero voxels into `out` (zeros stay 0); return mean, std, n.

    Integer scans (all BraTS data): exact statistics from a histogram of the codes, then one
    gather through a float16 lookup table, which fuses subtract, scale, mask, cast and memory
    reorder. Float scans: float64 arithmetic (a finite float32 voxel squared overflows float32);
    statistics that still overflow come back non-finite, and the caller refuses the case. No clipping is needed: a
    z-score cannot exceed sqrt(n) (Samuelson), far below the float16 range.
    """
    coded = _offset_codes(arr)
    if coded is not None:
        codes, offset = coded
        hist = np.bincount(codes.ravel(order="K"), minlength=table_size(codes))
        values = np.arange(hist.size, dtype=np.float64) - offset
        hist[offset] = 0  # the zero voxels
        n = int(hist.sum())
        if n == 0:
            return 0.0, 0.0, 0
        mean = float(hist @ values) / n
        std = float(np.sqrt(max(float(hist @ np.square(values - mean)) / n, 0.0)))
        if std <= 1e-6 * max(1.0, abs(mean)):
            return mean, 0.0, n
        lut = ((values - mean) / std).astype(np.float16)
        lut[offset] = 0
        out[...] = lut[codes]  # gather in the source's order, then one reorder: faster than take(out=)
        return mean, std, n
    a = np.array(arr, dtype=np.float64, order="C")  # float32 arithmetic would overflow on finite values
    nonzero = a != 0
    n = int(np.count_nonzero(nonzero))
    if n == 0:
        return 0.0, 0.0, 0
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused by the caller
        mean = float(a.sum(dtype=np.float64)) / n
        var = float(np.square(a).sum(dtype=np.float64)) / n - mean * mean
        std = float(np.sqrt(var)) if var > 0 or not np.isfinite(var) else 0.0
        if std <= 1e-6 * max(1.0, abs(mean)):
            return mean, 0.0, n
        a -= a.dtype.type(mean)
        a *= a.dtype.type(1.0 / std)
        out[...] = 0
        np.copyto(out, a, where=nonzero, casting="same_kind")
    return mean, std, n


def remap_labels(seg: np.ndarray, conv: Convention, task: Task = TASKS["GLI"]) -> np.ndarray:
    """Raw labels of `task` in `conv`'s naming (an unsigned array, see `validation.check_seg_labels`)
    to store labels, C order."""
    lut = np.zeros(table_size(seg), dtype=np.uint8)
    for raw, stored in conv.to_store_labels(task).items():
        lut[raw] = stored
    return np.ascontiguousarray(lut[seg])


def sample_locations(label: np.ndarray, cfg: PreprocessConfig, seed: int, task: Task = TASKS["GLI"]
                     ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per region of the task, up to `locations_per_region` voxel coordinates (at least
    `min_location_fraction` of it).

    Like nnU-Net's class locations: the sampler centres patches on these, so no full-volume
    probability map is ever rebuilt at training time.
    """
    rng = np.random.default_rng(seed)
    counts = np.bincount(label.ravel(), minlength=1 + max(task.labels))
    locations, voxels = {}, {}
    for region, labels in ((r.name, r.labels) for r in task.regions):
        voxels[region] = int(sum(int(counts[v]) for v in labels))
        if voxels[region] == 0:
            locations[region] = no_locations()
            continue
        flat = np.flatnonzero(np.isin(label.ravel(), labels) if len(labels) > 1 else label.ravel() == labels[0])
        take = min(flat.size, max(cfg.locations_per_region, int(np.ceil(flat.size * cfg.min_location_fraction))))
        chosen = np.sort(rng.choice(flat, size=take, replace=False)) if take < flat.size else flat
        locations[region] = np.stack(np.unravel_index(chosen, label.shape), axis=1).astype(np.uint16)
    return locations, voxels


def case_seed(case_id: str) -> int:
    """A seed fixed by the case id, so a re-ingest writes identical bytes on any worker."""
    return int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "little")


Box = tuple[slice, slice, slice]


def normalised_image(modalities: list[np.ndarray], seg: np.ndarray | None, names: dict[str, str],
                     min_brain_voxels: int = PreprocessConfig.min_brain_voxels
                     ) -> tuple[np.ndarray, Box, dict[str, dict[str, float]]]:
    """The (4, x, y, z) float16 image cropped to the brain and z-scored per modality, its crop box
    and statistics; `names` (role -> file, or how an array was given) names what is refused."""
    try:
        box = brain_bounding_box(modalities, seg)
    except ValueError:
        raise InvalidCaseError(names[MODALITIES[0]], "every modality is empty (all voxels are 0)") from None
    shape = tuple(s.stop - s.start for s in box)
    image = np.empty((len(MODALITIES),) + shape, dtype=np.float16)
    normalization = {}
    for c, (role, arr) in enumerate(zip(MODALITIES, modalities, strict=True)):
        mean, std, n = zscore_nonzero(arr[box], image[c])
        if n < min_brain_voxels or std == 0.0:
            raise InvalidCaseError(names[role], f"{role} has {n} non-zero voxels and std {std:.3g} inside the brain "
                                   "box: no usable contrast")
        # Integer scans cannot overflow (|z| <= sqrt(n)); float ones can, in their own arithmetic.
        overflowed = arr.dtype.kind == "f" and not np.isfinite(image[c].sum(dtype=np.float32))
        if not (np.isfinite(mean) and np.isfinite(std)) or overflowed:
            raise InvalidCaseError(names[role],
                                   f"{role} cannot be normalised: its values overflow (mean {mean:.3g}, std {std:.3g})")
        normalization[role] = {"mean": mean, "std": std, "nonzero_voxels": n}
    return image, box, normalization


def preprocess_case(case: LoadedCase, cfg: PreprocessConfig = PreprocessConfig()) -> PreprocessedCase:
    """Turn a validated raw case into the arrays and metadata the store keeps."""
    names = {role: str(source.path) for role, source in case.sources.items()}
    image, box, normalization = normalised_image(case.modalities, case.seg, names, cfg.min_brain_voxels)
    label, locations, voxels = None, {}, {}
    if case.seg is not None:
        label = remap_labels(case.seg[box], case.convention, case.task)
        locations, voxels = sample_locations(label, cfg, case_seed(case.raw.case_id), case.task)
    voxels["brain"] = int(max(v["nonzero_voxels"] for v in normalization.values()))
    return PreprocessedCase(
        image=image,
        label=label,
        locations=locations,
        crop_box=tuple((s.start, s.stop) for s in box),
        original_shape=tuple(int(s) for s in case.modalities[0].shape),  # type: ignore[arg-type]
        normalization=normalization,
        voxel_counts=voxels,
    )
