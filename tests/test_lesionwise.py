"""Lesion-wise metrics (BraTS 2023 rules): hand-worked cases for each rule, and agreement with an
independent computation on real segmentations."""

from __future__ import annotations

import cc3d
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from gliostream.lesionwise import CHALLENGES, LESION_HD95_PENALTY, LesionScores, lesion_scores, lesionwise_metrics
from gliostream.metrics import hd95
from gliostream.pipeline.discovery import discover_cases
from gliostream.pipeline.preprocess import remap_labels

from .lesionwise_reference import perturbations, reference_lesion_scores

SHAPE = (40, 40, 40)
GLI, MET = CHALLENGES["GLI"], CHALLENGES["MET"]
ONE_MM = (1.0, 1.0, 1.0)


def box(x0, x1, y0=5, y1=10, z0=5, z1=10, shape=SHAPE):
    m = np.zeros(shape, bool)
    m[x0:x1, y0:y1, z0:z1] = True
    return m


def scores(pred, ref, rules=GLI, spacing=ONE_MM) -> LesionScores:
    return lesion_scores(pred, ref, spacing, rules)


def test_lesions_closer_than_the_dilation_are_one_lesion():
    a = box(5, 10)  # 125 voxels each; the 18-neighbourhood dilation grows them 3 voxels along x
    near, far = box(16, 21), box(17, 22)  # gaps of 6 (dilations touch) and 7 voxels (they do not)
    merged = scores(a, a | near)  # one lesion of 250 voxels, half of it predicted
    assert (merged.tp, merged.fn, merged.fp) == (1, 0, 0)
    assert merged.dice == pytest.approx(2 * 125 / (125 + 250))
    assert merged.hd95 == pytest.approx(hd95(a, a | near))
    apart = scores(a, a | far)  # two lesions: one perfect (1, 0 mm), one missed (0, 374 mm)
    assert (apart.tp, apart.fn, apart.fp) == (1, 1, 0)
    assert (apart.dice, apart.hd95) == (pytest.approx(0.5), pytest.approx(374 / 2))
    met = scores(a, a | box(14, 19), rules=MET)  # MET dilates once: a gap of 4 separates
    assert (met.tp, met.fn, met.dice) == (1, 1, pytest.approx(0.5))


def test_a_lesion_split_in_the_prediction_is_scored_against_the_union_of_its_parts():
    ref = box(5, 15, 5, 15, 5, 15)  # 1000 voxels
    pred = ref.copy()
    pred[10] = False  # two predicted components of 500 and 400 voxels, both on the lesion
    s = scores(pred, ref)
    assert (s.tp, s.fn, s.fp) == (1, 0, 0)
    assert s.dice == pytest.approx(2 * 900 / 1900)
    assert s.hd95 == pytest.approx(hd95(pred, ref))


def test_a_far_false_positive_counts_whatever_its_size():
    ref = box(5, 15, 5, 15, 5, 15)
    pred = ref.copy()
    pred[35, 35, 35] = True  # one voxel: legacy Dice barely moves (2000/2001)
    s = scores(pred, ref)
    assert (s.tp, s.fn, s.fp) == (1, 0, 1)
    assert (s.dice, s.hd95) == (pytest.approx(1 / 2), pytest.approx(374 / 2))


def test_lesions_of_at_most_50_voxels_are_not_counted_but_still_match():
    big = box(5, 15, 5, 15, 5, 15)
    small = box(28, 33, 28, 33, 28, 30)  # 5 x 5 x 2 = 50 voxels
    larger = small.copy()
    larger[33, 28, 28] = True  # 51 voxels
    assert scores(big | small, big | small) == LesionScores(1.0, 0.0, 1, 0, 0)  # its prediction is no FP
    assert scores(big, big | small) == LesionScores(1.0, 0.0, 1, 0, 0)  # missing it costs nothing
    assert scores(big, big | larger) == LesionScores(0.5, 374 / 2, 1, 1, 0)  # 51 voxels: counted, missed
    assert scores(small, small) == LesionScores(1.0, 0.0, 0, 0, 0)  # nothing counted: Dice 1, HD95 0


def test_empty_cases():
    empty, lesion = np.zeros(SHAPE, bool), box(5, 15, 5, 15, 5, 15)
    assert scores(empty, empty) == LesionScores(1.0, 0.0, 0, 0, 0)
    assert scores(lesion, empty) == LesionScores(0.0, LESION_HD95_PENALTY, 0, 0, 1)
    assert scores(lesion | box(30, 35), empty) == LesionScores(0.0, LESION_HD95_PENALTY, 0, 0, 2)
    assert scores(empty, lesion) == LesionScores(0.0, LESION_HD95_PENALTY, 0, 1, 0)


def test_hd95_in_millimetres():
    ref = box(5, 15, 5, 15, 5, 15)
    pred = np.roll(ref, 2, axis=0)  # 800 of 1000 voxels overlap; both x faces 2 voxels = 4 mm apart
    s = scores(pred, ref, spacing=(2.0, 1.0, 1.0))
    assert (s.dice, s.hd95) == (pytest.approx(0.8), pytest.approx(4.0))


def test_a_case_without_enhancing_tumour_and_the_nested_regions():
    ref = np.zeros(SHAPE, np.uint8)
    ref[5:15, 5:15, 5:15] = 2
    ref[8:12, 8:12, 8:12] = 1  # 64 voxels of necrosis: TC counted, no ET at all
    m = lesionwise_metrics(ref, ref, ONE_MM)
    assert (m["lw_dice_et"], m["lw_hd95_et"], m["lw_fp_et"]) == (1.0, 0.0, 0)
    assert (m["lw_dice_wt"], m["lw_tp_wt"], m["lw_dice_tc"], m["lw_tp_tc"]) == (1.0, 1, 1.0, 1)
    pred = ref.copy()
    pred[30:33, 30:33, 30:33] = 3  # an enhancing blob where there is none: ET, TC and WT false positives
    m = lesionwise_metrics(pred, ref, ONE_MM)
    assert (m["lw_dice_et"], m["lw_hd95_et"], m["lw_fp_et"]) == (0.0, 374.0, 1)
    assert (m["lw_dice_wt"], m["lw_fp_wt"], m["lw_dice_tc"], m["lw_fp_tc"]) == (0.5, 1, 0.5, 1)


def test_dilation_stops_at_the_volume_edge_as_scipy_does():
    ref = box(0, 3, 0, 3, 0, 3) | box(7, 10, 0, 3, 0, 3)  # gap 4 at the corner of the volume
    pred = box(0, 3, 0, 3, 0, 3)
    ours = scores(pred, ref, rules=GLI)
    expected = reference_lesion_scores(pred, ref, ONE_MM, GLI.dilation, GLI.min_lesion_voxels)
    assert (ours.dice, ours.hd95, ours.tp, ours.fn, ours.fp) == pytest.approx(expected)


def _around(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    if not mask.any():
        return tuple(slice(0, 1) for _ in mask.shape)
    hits = np.argwhere(mask)
    return tuple(slice(max(lo - margin, 0), hi + 1 + margin) for lo, hi in zip(hits.min(0), hits.max(0), strict=True))


# Real cases with several lesions per region, the 2023 naming, and no enhancing tumour (when present).
REAL_CASES = ("Brats18_CBICA_AOZ_1", "Brats18_CBICA_AOP_1", "BraTS-GLI-00000-000", "TCGA-DU-7294")


@pytest.mark.realdata
def test_agrees_with_an_independent_computation_on_real_segmentations(realdata):
    cases = [c for c in discover_cases(realdata) if c.labelled and c.case_id in REAL_CASES]
    if not cases:
        pytest.skip("none of the real cases chosen for this test is in ../shared/realdata")
    counts = np.zeros(3, int)
    for index, case in enumerate(cases):
        source = nib.load(case.files["seg"])
        reference = remap_labels(np.asarray(source.dataobj).astype(np.uint8), case.convention)
        spacing = tuple(float(z) for z in source.header.get_zooms()[:3])
        for name, prediction in perturbations(reference, index).items():
            for rules in (GLI, MET) if name == "eroded" else (GLI,):
                ours = lesionwise_metrics(prediction, reference, spacing, rules)
                for region, labels in (("wt", (1, 2, 3)), ("tc", (1, 3)), ("et", (3,))):
                    pred, ref = np.isin(prediction, labels), np.isin(reference, labels)
                    keep = _around(pred | ref, margin=8)  # only to save time: nothing lies outside
                    expected = reference_lesion_scores(pred[keep], ref[keep], spacing, rules.dilation,
                                                       rules.min_lesion_voxels)
                    got = tuple(ours[f"lw_{m}_{region}"] for m in ("dice", "hd95", "tp", "fn", "fp"))
                    assert got == pytest.approx(expected, abs=1e-4), (case.case_id, name, rules, region)
                    counts += got[2:]
    assert counts.min() > 0  # matched, missed and false-positive lesions were all compared


def test_the_fast_lesion_dice_equals_the_full_scores():
    from gliostream.lesionwise import lesion_dice

    rng = np.random.default_rng(7)
    seen = set()
    for _ in range(6):
        reference = ndimage.gaussian_filter(rng.random((48, 48, 48)), 2.5) > 0.535  # several lesions
        noise = ndimage.gaussian_filter(rng.random((48, 48, 48)), 1.0) > 0.64  # blobs of many sizes
        prediction = np.roll(reference, (1, 2, 0), (0, 1, 2)) | noise
        components = cc3d.connected_components(prediction, connectivity=26)
        counts = np.bincount(components.ravel())
        for size in (0, 3, 10, 30, 100, 300):  # matched, unmatched and uncounted lesions in turn
            kept = prediction & (counts[components] >= size)
            fast = lesion_dice(kept, reference, GLI)
            assert fast == pytest.approx(scores(kept, reference).dice, abs=1e-12)
            seen.add(round(fast, 6))
    assert len(seen) > 6  # the cases differ
    assert lesion_dice(np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool)) == 1.0
