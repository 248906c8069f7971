"""Choosing the postprocessing on the validation cases, only where they give evidence for it.

A run starts from the configured rule (`PostprocessConfig`: sizes chosen across institutions)
and changes a size only when enough validation cases support the change: at least `min_cases`
of them, a gain of at least `margin` in the mean of legacy and lesion-wise Dice over all three
regions, and more cases helped than hurt. The score reported for the choice is out of fit: each
validation case is scored with the rule chosen on the other cases, so the printed validation Dice
never includes the fit itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..labels import LEGACY_REGIONS, Region
from ..lesionwise import CHALLENGES, LesionRules, lesion_dice
from ..metrics import dice, region_mask
from ..regions import Postprocessing, Regions
from .config import PostprocessConfig

# Candidate minimum ET totals in voxels of the stored (1 mm) grid; nnU-Net searched 0-750, the
# BraTS 2021 winner used 200.
ET_THRESHOLDS = (0, 50, 100, 200, 300, 500, 750, 1000)
# Candidate minimum component sizes (voxels); BraTS 2023 ignores reference lesions of <= 50 voxels.
COMPONENT_THRESHOLDS = (0, 10, 25, 50, 100, 200, 350, 500, 1000, 2000)


def configured(config: PostprocessConfig, regions: Regions = LEGACY_REGIONS) -> Postprocessing:
    """The rule a run starts from and falls back to: the configured WT, TC and ET sizes for those
    regions, 0 (nothing removed) for the others a task has."""
    sizes = dict(zip(("wt", "tc", "et"), config.min_component_voxels, strict=True))
    return Postprocessing(tuple(int(sizes.get(r.name, 0)) for r in regions), int(config.et_min_voxels))


def region_scores(labels: np.ndarray, reference: np.ndarray, region: Region,
                  rules: LesionRules = CHALLENGES["GLI"]) -> tuple[float, float]:
    """(legacy Dice, lesion-wise Dice) of one region between two store-label volumes."""
    p, r = region_mask(labels, region), region_mask(reference, region)
    return dice(p, r), lesion_dice(p, r, rules)


class CaseScores:
    """Per validation case and rule, the score the choice maximises: the mean over the regions
    (WT, TC, ET, ...) of legacy and lesion-wise Dice. Scores are cached (labels would not fit in
    memory): the searches and their leave-one-out repeats ask for the same (case, rule) pairs many times."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], rules: LesionRules,
                 regions: Regions = LEGACY_REGIONS) -> None:
        self.pairs, self.rules, self.region_list = list(pairs), rules, regions
        self._regions: dict[tuple[int, Postprocessing], dict[str, tuple[float, float]]] = {}

    def regions(self, case: int, rule: Postprocessing) -> dict[str, tuple[float, float]]:
        """Region -> (legacy Dice, lesion-wise Dice) of the case under `rule`."""
        key = (case, rule)
        if key not in self._regions:
            labels, reference = rule.apply(self.pairs[case][0], self.region_list), self.pairs[case][1]
            self._regions[key] = {region.name: region_scores(labels, reference, region, self.rules)
                                  for region in self.region_list}
        return self._regions[key]

    def score(self, case: int, rule: Postprocessing) -> float:
        return float(np.mean([v for pair in self.regions(case, rule).values() for v in pair]))


@dataclass(frozen=True)
class PostprocessChoice:
    postprocessing: Postprocessing  # chosen on all the validation cases
    searched: bool  # False: too few validation cases (or search off): the configured rule
    dice: dict[str, float] = field(default_factory=dict)  # region -> mean legacy Dice, out of fit
    lesion_dice: dict[str, float] = field(default_factory=dict)  # region -> mean lesion-wise Dice, out of fit
    held_out: list[Postprocessing] = field(default_factory=list)  # per case, the rule chosen on the others
    predictions: list[np.ndarray] = field(default_factory=list, repr=False)
    regions: Regions = LEGACY_REGIONS

    @property
    def labels(self) -> list[np.ndarray]:
        """Each case postprocessed by the rule chosen on the others (computed when asked)."""
        return [rule.apply(prediction, self.regions)
                for rule, prediction in zip(self.held_out, self.predictions, strict=True)]


def _may_search(config: PostprocessConfig, cases: int) -> bool:
    return config.search and cases >= config.min_cases


def _supported(scores: CaseScores, cases: Sequence[int], candidate: Postprocessing, current: Postprocessing,
               margin: float) -> bool:
    gains = np.array([scores.score(c, candidate) - scores.score(c, current) for c in cases])
    return bool(gains.mean() >= margin and (gains > 1e-12).sum() > (gains < -1e-12).sum())


def _search(scores: CaseScores, cases: Sequence[int], config: PostprocessConfig) -> Postprocessing:
    """Per region in turn (WT, TC, ET, ...), then the ET total: the best candidate by mean score, kept
    only where it beats the rule so far by the margin (ties go to the smaller size)."""
    current = configured(config, scores.region_list)
    if not _may_search(config, len(cases)):
        return current
    for index in range(len(scores.region_list)):
        def with_size(size: int, rule: Postprocessing = current, i: int = index) -> Postprocessing:
            sizes = list(rule.sizes(len(scores.region_list)))
            sizes[i] = size
            return dataclasses.replace(rule, min_component_voxels=tuple(sizes))
        current = _best(scores, cases, [with_size(t) for t in COMPONENT_THRESHOLDS], current, config.margin)
    if "et" not in {r.name for r in scores.region_list}:
        return current
    candidates = [dataclasses.replace(current, et_min_voxels=t) for t in ET_THRESHOLDS]
    return _best(scores, cases, candidates, current, config.margin)


def _best(scores: CaseScores, cases: Sequence[int], candidates: list[Postprocessing], current: Postprocessing,
          margin: float) -> Postprocessing:
    means = [float(np.mean([scores.score(c, rule) for c in cases])) for rule in candidates]
    best = candidates[max(range(len(candidates)), key=lambda i: (round(means[i], 12), -i))]
    return best if best != current and _supported(scores, cases, best, current, margin) else current


def choose_postprocessing(pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                          config: PostprocessConfig = PostprocessConfig(),
                          rules: LesionRules = CHALLENGES["GLI"], regions: Regions = LEGACY_REGIONS
                          ) -> PostprocessChoice:
    """The rule for (prediction, reference) store-label pairs of the validation cases, and its
    out-of-fit scores: each case postprocessed by the rule chosen on the other cases."""
    if not pairs:
        return PostprocessChoice(configured(config, regions), False, regions=regions)
    scores = CaseScores(pairs, rules, regions)
    everyone = list(range(len(pairs)))
    chosen = _search(scores, everyone, config)
    searched = _may_search(config, len(pairs))
    held_out = [_search(scores, [c for c in everyone if c != case], config) if searched else chosen
                for case in everyone]
    per_case = [scores.regions(case, rule) for case, rule in zip(everyone, held_out, strict=True)]
    legacy = {r.name: float(np.mean([s[r.name][0] for s in per_case])) for r in regions}
    lesion = {r.name: float(np.mean([s[r.name][1] for s in per_case])) for r in regions}
    return PostprocessChoice(chosen, searched, legacy, lesion, held_out, [prediction for prediction, _ in pairs],
                             regions)
