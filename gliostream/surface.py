"""Distances between two mask surfaces, in the two definitions the BraTS evaluators use.

- `surfel_distances`: DeepMind's surface elements (`surface-distance`, the code inside the official
  BraTS 2023 evaluation): the surface lies on the voxel corners, each surfel weighted by its area
  (the lookup table of that package). `robust_hausdorff` and `surface_dice` reduce it. This is the
  HD95 of the legacy and the 2023 lesion-wise scores.
- `border_distances`: border voxels (the mask minus its 6-connected erosion) and the distance of
  each to the other border, as `panoptica` computes them for the official evaluation since 2024;
  `pooled_hd95` and `border_nsd` reduce it.

Both work inside the masks' joint bounding box, which gives the distances of the whole volume.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from surface_distance.lookup_tables import ENCODE_NEIGHBOURHOOD_3D_KERNEL, create_table_neighbour_code_to_surface_area

_FULL = 255  # all eight corners inside: no surface


@dataclass(frozen=True)
class Surfels:
    """The surface elements of masks A and B, each with its area (mm^2) and its distance (mm) to the
    other surface; a side's arrays are empty when its mask is."""

    a_to_b: np.ndarray
    a_areas: np.ndarray
    b_to_a: np.ndarray
    b_areas: np.ndarray


@lru_cache(maxsize=16)
def _area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    return create_table_neighbour_code_to_surface_area(spacing)


def joint_box(a: np.ndarray, b: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """The bounding box of `a | b` grown by `margin` voxels, clipped to the array; None when both are empty."""
    union = a | b
    box = []
    for axis in range(union.ndim):
        hit = np.flatnonzero(union.any(axis=tuple(x for x in range(union.ndim) if x != axis)))
        if hit.size == 0:
            return None
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, union.shape[axis])))
    return tuple(box)


def surfel_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> Surfels:
    """DeepMind's `compute_surface_distances(a, b, spacing)`, unsorted, for two boolean 3D masks."""
    spacing3 = tuple(float(s) for s in spacing)
    box = joint_box(a, b, 0)
    if box is None:
        empty = np.zeros(0)
        return Surfels(empty, empty, empty, empty)
    codes, borders = [], []
    for mask in (a, b):
        crop = np.zeros(tuple(s.stop - s.start + 1 for s in box), np.uint8)
        crop[:-1, :-1, :-1] = mask[box]  # the corner grid: one more point than voxels on each axis
        code = ndimage.correlate(crop, ENCODE_NEIGHBOURHOOD_3D_KERNEL, mode="constant", cval=0)
        codes.append(code)
        borders.append((code != 0) & (code != _FULL))
    distances = [ndimage.distance_transform_edt(~border, sampling=spacing3) if border.any() else None
                 for border in borders]
    table = _area_table(spacing3)

    def side(i: int) -> tuple[np.ndarray, np.ndarray]:
        other = distances[1 - i]
        border = borders[i]
        if not border.any():
            return np.zeros(0), np.zeros(0)
        to_other = other[border] if other is not None else np.full(int(border.sum()), np.inf)
        return to_other, table[codes[i][border]]

    (a_to_b, a_areas), (b_to_a, b_areas) = side(0), side(1)
    return Surfels(a_to_b, a_areas, b_to_a, b_areas)


def _area_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    if distances.size == 0:
        return float("inf")
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(areas[order]) / np.sum(areas)
    index = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[order][min(index, distances.size - 1)])


def robust_hausdorff(surfels: Surfels, percent: float = 95.0) -> float:
    """DeepMind's `compute_robust_hausdorff`: the larger of the two directions' area-weighted
    `percent`-th percentile distances; inf when a mask is empty."""
    return max(_area_percentile(surfels.a_to_b, surfels.a_areas, percent),
               _area_percentile(surfels.b_to_a, surfels.b_areas, percent))


def surface_dice(surfels: Surfels, tolerance_mm: float) -> float:
    """DeepMind's `compute_surface_dice_at_tolerance`: the surfel area within the tolerance of the
    other surface, over all surfel area."""
    close = np.sum(surfels.a_areas[surfels.a_to_b <= tolerance_mm]) + np.sum(surfels.b_areas[surfels.b_to_a <= tolerance_mm])
    return float(close / (np.sum(surfels.a_areas) + np.sum(surfels.b_areas)))


_FACES = ndimage.generate_binary_structure(3, 1)


def border_distances(reference: np.ndarray, prediction: np.ndarray,
                     spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(reference border -> prediction border, prediction border -> reference border) distances in
    mm, panoptica's `_surface_distance_pair`: a border voxel is one its 6-connected erosion (with
    the outside of the volume as background) removes. Both masks must be non-empty."""
    box = joint_box(reference, prediction, 1)
    assert box is not None
    sampling = tuple(float(s) for s in spacing)
    ref, pred = reference[box], prediction[box]
    ref_border = ref ^ ndimage.binary_erosion(ref, _FACES)
    pred_border = pred ^ ndimage.binary_erosion(pred, _FACES)
    # Inside the box the outside of the volume is background for the erosion only where the box
    # reaches the volume's edge; elsewhere the box's one-voxel margin is background already.
    ref_to_pred = ndimage.distance_transform_edt(~pred_border, sampling=sampling)[ref_border]
    pred_to_ref = ndimage.distance_transform_edt(~ref_border, sampling=sampling)[pred_border]
    return ref_to_pred, pred_to_ref


def pooled_hd95(ref_to_pred: np.ndarray, pred_to_ref: np.ndarray) -> float:
    """panoptica's HD95: the 95th percentile of both directions' border distances pooled."""
    return float(np.percentile(np.hstack((ref_to_pred, pred_to_ref)), 95))


def border_nsd(ref_to_pred: np.ndarray, pred_to_ref: np.ndarray, tolerance_mm: float) -> float:
    """panoptica's normalised surface Dice: the mean, over the two borders, of the share of border
    voxels within the tolerance (each border's shares weighted equally, as panoptica does)."""
    close = np.mean(ref_to_pred <= tolerance_mm) + np.mean(pred_to_ref <= tolerance_mm)
    far = np.mean(ref_to_pred > tolerance_mm) + np.mean(pred_to_ref > tolerance_mm)
    return float(close / (close + far + sys.float_info.min))
