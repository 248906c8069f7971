"""Voxel-grid geometry shared by every stage: crops, their inverse, and the affines of sub-grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AFFINE_ATOL = 1e-3
"""Largest difference (mm) between two affines that still describe the same grid."""


def shifted_affine(affine: np.ndarray, start: Sequence[int]) -> np.ndarray:
    """The affine of a grid whose first voxel is voxel `start` of the grid of `affine` (a crop, a pad, a patch)."""
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] = out[:3, :3] @ np.asarray(start, dtype=np.float64) + out[:3, 3]
    return out


def crop_slices(crop_box: Sequence[Sequence[int]]) -> tuple[slice, ...]:
    """The slices of a crop box given as [start, stop) per axis."""
    return tuple(slice(int(a), int(b)) for a, b in crop_box)


def uncrop(cropped: np.ndarray, crop_box: Sequence[Sequence[int]], original_shape: tuple[int, ...],
           fill: int | float = 0) -> np.ndarray:
    """Put an array of the cropped frame back into the original volume (the inverse of the crop)."""
    out = np.full(original_shape, fill, dtype=cropped.dtype)
    out[crop_slices(crop_box)] = cropped
    return out
