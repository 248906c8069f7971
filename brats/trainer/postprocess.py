"""Choosing the postprocessing on the validation cases: minimum component sizes, then the ET threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..labels import REGIONS
from ..lesionwise import CHALLENGES, LesionRules, lesion_dice_by_min_size
from ..metrics import dice, region_mask
from ..regions import Postprocessing, remove_small_components, suppress_small_et

# Candidate minimum ET sizes in voxels of the stored (1 mm) grid; nnU-Net searched 0-750, the
# BraTS 2021 winner used 200.
ET_THRESHOLDS = (0, 50, 100, 200, 300, 500, 750, 1000)
# Candidate minimum component sizes (voxels); BraTS 2023 ignores reference lesions of <= 50 voxels.
COMPONENT_THRESHOLDS = (0, 10, 25, 50, 100, 200, 350, 500, 1000, 2000)


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


@dataclass(frozen=True)
class PostprocessChoice:
    postprocessing: Postprocessing
    lesion_dice: dict[str, float] = field(default_factory=dict)  # region -> mean lesion-wise Dice, chosen size
    et_dice: float = float("nan")  # mean legacy ET Dice with the chosen ET threshold
    labels: list[np.ndarray] = field(default_factory=list)  # the predictions with the postprocessing applied


def choose_postprocessing(pairs: Sequence[tuple[np.ndarray, np.ndarray]], rules: LesionRules = CHALLENGES["GLI"],
                          candidates: Sequence[int] = COMPONENT_THRESHOLDS) -> PostprocessChoice:
    """Per region in turn (WT, TC, ET, each on the labels the previous choice left), the minimum
    component size that maximises mean lesion-wise Dice (ties: the smallest); then the ET threshold
    on the cleaned labels."""
    if not pairs:
        return PostprocessChoice(Postprocessing())
    labels = [prediction for prediction, _ in pairs]
    sizes, lesion_dice = [], {}
    for region in REGIONS:
        per_case = [lesion_dice_by_min_size(region_mask(p, region), region_mask(r, region), candidates, rules)
                    for p, (_, r) in zip(labels, pairs)]
        means = np.mean(per_case, axis=0)
        best = max(range(len(candidates)), key=lambda i: (round(float(means[i]), 12), -candidates[i]))
        sizes.append(int(candidates[best]))
        lesion_dice[region] = float(means[best])
        labels = [remove_small_components(p, region, sizes[-1]) for p in labels]
    et = choose_et_threshold([(p, r) for p, (_, r) in zip(labels, pairs)])
    labels = [suppress_small_et(p, et.threshold) for p in labels]
    return PostprocessChoice(Postprocessing(tuple(sizes), et.threshold), lesion_dice, et.dice, labels)  # type: ignore[arg-type]
