"""Choosing the enhancing-tumour postprocessing threshold on the validation cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..metrics import dice, region_mask
from ..regions import suppress_small_et

# Candidate minimum ET sizes in voxels of the stored (1 mm) grid; nnU-Net searched 0-750, the
# BraTS 2021 winner used 200.
ET_THRESHOLDS = (0, 50, 100, 200, 300, 500, 750, 1000)


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: int
    dice: float  # mean ET Dice over the cases with that threshold
    dice_by_threshold: dict[int, float]


def choose_et_threshold(pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                        candidates: Sequence[int] = ET_THRESHOLDS) -> ThresholdChoice:
    """The candidate that maximises mean ET Dice over (prediction, reference) store-label pairs;
    ties go to the smallest (0 when it does not help, so nothing is changed without evidence)."""
    if not pairs:
        return ThresholdChoice(0, float("nan"), {})
    means = {}
    for threshold in candidates:
        scores = [dice(region_mask(suppress_small_et(p, threshold), "et"), region_mask(r, "et")) for p, r in pairs]
        means[int(threshold)] = float(np.mean(scores))
    best = max(means, key=lambda t: (means[t], -t))
    return ThresholdChoice(best, means[best], means)
