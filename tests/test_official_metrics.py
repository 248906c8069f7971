"""The official BraTS evaluation (`gliostream.official`) and the official HD95 (`gliostream.surface`)
against the values `BraTS-evaluation` 0.0.10 and DeepMind's `surface-distance` computed themselves on
the same pairs (tests/data/official_reference.json; regenerate with bench/official_reference.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gliostream.metrics import hd95
from gliostream.official import GROUPS, MEASURES, official_metrics
from gliostream.surface import robust_hausdorff, surface_dice, surfel_distances

from . import official_cases

REFERENCE = json.loads((Path(__file__).parent / "data" / "official_reference.json").read_text())
REGIONS = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}
HAND = {name: (p, r) for name, p, r in official_cases.hand_pairs()}


def _same(ours: float, official: float | None) -> bool:
    expected = math.nan if official is None else official
    if math.isnan(expected) or math.isinf(expected):
        return (math.isnan(ours) and math.isnan(expected)) or ours == expected
    return abs(ours - expected) <= 1e-6


def _check(name: str, prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> None:
    entry = REFERENCE["pairs"][name]
    for config in GROUPS:
        if config not in entry:
            continue
        p, r = prediction, reference
        if config == "MenRT":  # as the reference was made: the pair binarised
            p, r = (prediction > 0).astype(np.uint8), (reference > 0).astype(np.uint8)
        ours = official_metrics(p, r, spacing, config)
        assert list(ours) == [f"{m}_{g}" for g in GROUPS[config] for m in MEASURES]
        assert set(ours) == set(entry[config]), f"{name} {config}: other columns than the official parser's"
        wrong = {k: (ours[k], v) for k, v in entry[config].items() if not _same(ours[k], v)}
        assert not wrong, f"{name} {config}: ours vs official {wrong}"
    for region, labels in REGIONS.items():
        if f"hd95_{region}" not in entry["deepmind"]:
            continue
        a, b = np.isin(reference, labels), np.isin(prediction, labels)
        surfels = surfel_distances(a, b, spacing)
        assert robust_hausdorff(surfels) == pytest.approx(entry["deepmind"][f"hd95_{region}"], abs=1e-9)
        assert surface_dice(surfels, 1.0) == pytest.approx(entry["deepmind"][f"nsd1_{region}"], abs=1e-9)
        assert hd95(b, a, spacing) == pytest.approx(entry["deepmind"][f"hd95_{region}"], abs=1e-9)


@pytest.mark.parametrize("name", list(HAND))
def test_hand_worked_pairs_score_as_the_official_evaluation(name):
    prediction, reference = HAND[name]
    _check(name, prediction, reference, (1.0, 1.0, 1.0))


def test_the_hand_worked_rules_read_as_stated():
    """What the official evaluation says of a split, a merge, empties and no overlap, in its own columns."""
    pairs = REFERENCE["pairs"]
    split, merged = pairs["split-prediction"]["gli"], pairs["merged-prediction"]["gli"]
    assert (split["all_instance_tp_wt"], split["all_instance_fp_wt"], split["all_instance_fn_wt"]) == (1, 1, 0)
    assert (merged["all_instance_tp_wt"], merged["all_instance_fp_wt"], merged["all_instance_fn_wt"]) == (1, 0, 1)
    both_empty = official_metrics(*HAND["both-empty"], (1.0, 1.0, 1.0))
    assert math.isnan(both_empty["global_dsc_et"]) and both_empty["all_instance_tp_et"] == 0
    missed = official_metrics(*HAND["empty-prediction"], (1.0, 1.0, 1.0))
    assert (missed["global_dsc_wt"], missed["global_hd95_wt"], missed["lesionwise_hd95_mean_wt"]) == (0, 373, math.inf)
    assert math.isnan(missed["all_instance_prec_wt"]) and missed["all_instance_rec_wt"] == 0


@pytest.mark.realdata
@pytest.mark.skipif(not official_cases.REALDATA.is_dir(), reason="../shared/realdata absent")
def test_real_cases_against_perturbed_copies_score_as_the_official_evaluation():
    count = 0
    for name, prediction, reference, spacing in official_cases.real_pairs():
        _check(name, prediction, reference, spacing)
        count += 1
    assert count == 4 * len(official_cases.REAL_CASES)


def test_surfels_agree_with_deepmind_at_anisotropic_spacing():
    import warnings

    import surface_distance

    rng = np.random.default_rng(0)
    for i in range(4):
        a = np.zeros((26, 24, 22), bool)
        b = a.copy()
        a[4:18, 6:20, 3:15] = True
        b[6:21, 4:18, 5:19] = True
        a &= rng.random(a.shape) > 0.15
        b &= rng.random(b.shape) > 0.15
        spacing = (1.0 + 0.3 * i, 0.8, 2.5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            theirs = surface_distance.compute_surface_distances(a, b, spacing)
        ours = surfel_distances(a, b, spacing)
        assert robust_hausdorff(ours) == surface_distance.compute_robust_hausdorff(theirs, 95)
        assert surface_dice(ours, 1.5) == pytest.approx(surface_distance.compute_surface_dice_at_tolerance(theirs, 1.5),
                                                        abs=1e-12)
