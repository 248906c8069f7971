"""Segmentation metrics per BraTS region, with the empty-mask rules stated.

Regions are label sets of store labels (1 necrosis, 2 edema, 3 enhancing): WT = {1, 2, 3},
TC = {1, 3}, ET = {3}. Empty masks follow the BraTS legacy rules (the default of the BraTS
2018-2021 evaluation): both empty gives Dice 1 and HD95 0; exactly one empty gives Dice 0
and HD95 = 373.13 mm (the diagonal of the 240 x 240 x 155 mm BraTS volume). HD95 is the official
BraTS 2023 code's (DeepMind's surface elements, `surface.py`), not the border-voxel one of MONAI. Sensitivity is 1
when the reference is empty (nothing to miss); specificity counts every voxel of the original
volume, as the BraTS evaluation does on the full 240 x 240 x 155 grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .labels import LEGACY_REGIONS, REGIONS, Region
from .surface import robust_hausdorff, surfel_distances

EMPTY_HD95 = 373.13
METRICS = ("dice", "hd95", "sens", "spec", "ref_vol", "pred_vol")


def region_mask(label: np.ndarray, region: Region | str) -> np.ndarray:
    """Boolean mask of a region (or a WT/TC/ET name) in a store-label volume."""
    return np.isin(label, region.labels if isinstance(region, Region) else REGIONS[region])


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks; both empty 1, one empty 0."""
    return _dice(int(np.logical_and(prediction, reference).sum()), int(prediction.sum()), int(reference.sum()))


def _dice(overlap: int, predicted: int, referenced: int) -> float:
    return 1.0 if predicted + referenced == 0 else 2.0 * overlap / (predicted + referenced)


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95th-percentile Hausdorff distance between the mask surfaces, in mm, as the official BraTS
    2023 code computes it: DeepMind's area-weighted surface elements, the larger of the two
    directions (`surface.robust_hausdorff`). Both empty 0; one empty EMPTY_HD95."""
    has_p, has_r = bool(prediction.any()), bool(reference.any())
    if not has_p and not has_r:
        return 0.0
    if not has_p or not has_r:
        return EMPTY_HD95
    return robust_hausdorff(surfel_distances(reference, prediction, spacing))


def region_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
                   total_voxels: int | None = None, regions: tuple[Region, ...] = LEGACY_REGIONS) -> dict[str, float]:
    """Every metric of every region, keyed `<metric>_<region>` (volumes in mm^3).

    `total_voxels` is the size of the original volume when the arrays are a crop of it.
    """
    total = int(total_voxels if total_voxels is not None else prediction.size)
    voxel_mm3 = float(np.prod(spacing))
    by_name = {r.name: r for r in regions}
    out: dict[str, float] = {}
    for region in (r.name for r in regions):
        p, r = region_mask(prediction, by_name[region]), region_mask(reference, by_name[region])
        tp = int(np.logical_and(p, r).sum())
        n_p, n_r = int(p.sum()), int(r.sum())
        fp = n_p - tp
        out[f"dice_{region}"] = _dice(tp, n_p, n_r)
        out[f"hd95_{region}"] = hd95(p, r, spacing)
        out[f"sens_{region}"] = tp / n_r if n_r else 1.0
        negatives = total - n_r
        out[f"spec_{region}"] = (negatives - fp) / negatives if negatives else 1.0
        out[f"ref_vol_{region}"] = n_r * voxel_mm3
        out[f"pred_vol_{region}"] = n_p * voxel_mm3
    return out


def region_dice(prediction: np.ndarray, reference: np.ndarray,
                regions: tuple[Region, ...] = LEGACY_REGIONS) -> dict[str, float]:
    """Dice of each region between two store-label volumes (validation during training)."""
    return {r.name: dice(region_mask(prediction, r), region_mask(reference, r)) for r in regions}
