"""Choosing the enhancing-tumour postprocessing threshold on the validation cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..metrics import dice, region_mask

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
    # Per case `regions.suppress_small_et` has two outcomes: the ET kept as predicted, or all of it
    # relabelled (Dice 1 when the reference has no ET, else 0) when 0 < predicted voxels < threshold.
    cases = []
    for prediction, reference in pairs:
        predicted, referenced = region_mask(prediction, "et"), region_mask(reference, "et")
        cases.append((int(predicted.sum()), dice(predicted, referenced), 0.0 if referenced.any() else 1.0))
    means = {int(t): float(np.mean([removed if 0 < count < t else kept for count, kept, removed in cases]))
             for t in candidates}
    best = max(means, key=lambda t: (means[t], -t))
    return ThresholdChoice(best, means[best], means)
