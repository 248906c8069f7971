"""Segmentation metrics per BraTS region, with the empty-mask rules stated."""

from __future__ import annotations

import numpy as np

# Store labels 1 necrosis, 2 edema, 3 enhancing; regions as label sets.
REGION_LABELS: dict[str, tuple[int, ...]] = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}
REGIONS = tuple(REGION_LABELS)


def region_mask(label: np.ndarray, region: str) -> np.ndarray:
    return np.isin(label, REGION_LABELS[region])


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks; BraTS legacy rule: both empty 1, one empty 0."""
    p, r = int(prediction.sum()), int(reference.sum())
    if p + r == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, reference).sum()) / (p + r)


def region_dice(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC and ET between two store-label volumes."""
    return {r: dice(region_mask(prediction, r), region_mask(reference, r)) for r in REGIONS}
