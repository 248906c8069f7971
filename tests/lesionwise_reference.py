"""An independent lesion-wise computation, written the way the official BraTS 2023 code works.

It follows `get_LesionWiseScores` / `get_LesionWiseResults` of rachitsaluja/BraTS-2023-Metrics
step by step on the whole volume (one mask per lesion, one dilation per lesion), with other tools
than `gliostream.lesionwise`: scipy's labelling instead of cc3d, and the HD95 of the package the official
code vendors (DeepMind's `surface-distance`) instead of ours.
Slow on purpose: it is the yardstick for tests and for bench/lesions.py.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PENALTY = 374.0
CONNECTIVITY_26 = ndimage.generate_binary_structure(3, 3)
DILATION_18 = ndimage.generate_binary_structure(3, 2)


def _official_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    import warnings

    import surface_distance

    if not a.any() or not b.any():
        return PENALTY
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its scipy.ndimage.filters namespace
        distances = surface_distance.compute_surface_distances(b, a, tuple(float(s) for s in spacing))
    value = surface_distance.compute_robust_hausdorff(distances, 95)
    return PENALTY if not np.isfinite(value) else float(value)


def reference_lesion_scores(pred: np.ndarray, gt: np.ndarray, spacing, dilation: int, min_voxels: int):
    """(dice, hd95, tp, fn, fp) of one region, by the official algorithm."""
    gt_cc, _ = ndimage.label(gt, CONNECTIVITY_26)
    pred_cc, _ = ndimage.label(pred, CONNECTIVITY_26)
    gt_dilated = ndimage.binary_dilation(gt, DILATION_18, iterations=dilation) if dilation else gt.copy()
    dilated_cc, n_dilated = ndimage.label(gt_dilated, CONNECTIVITY_26)
    combined = np.zeros_like(dilated_cc)  # get_GTseg_combinedByDilation
    for comp in range(1, n_dilated + 1):
        combined[(gt_cc * (dilated_cc == comp)) > 0] = comp
    tp_components, rows = [], []
    for comp in range(1, int(combined.max()) + 1):
        lesion = combined == comp
        own_dilation = ndimage.binary_dilation(lesion, DILATION_18, iterations=dilation) if dilation else lesion
        touching = np.unique(pred_cc * own_dilation)
        touching = touching[touching != 0]
        tp_components.extend(touching.tolist())
        predicted = np.isin(pred_cc, touching) & (pred_cc != 0)
        overlap = np.logical_and(predicted, lesion).sum()
        lesion_dice = 2.0 * overlap / (predicted.sum() + lesion.sum())
        lesion_hd = _official_hd95(predicted, lesion, spacing) if touching.size else PENALTY
        rows.append((touching.size, int(lesion.sum()), lesion_dice, lesion_hd))
    fp = np.unique(pred_cc[np.isin(pred_cc, tp_components + [0], invert=True)]).size
    counted = [r for r in rows if r[1] > min_voxels]
    tp = sum(1 for r in counted if r[0] > 0)
    fn = sum(1 for r in counted if r[0] == 0)
    if len(counted) + fp == 0:
        return 1.0, 0.0, tp, fn, fp
    lw_dice = sum(r[2] for r in counted) / (len(counted) + fp)
    lw_hd = (sum(r[3] for r in counted) + fp * PENALTY) / (len(counted) + fp)
    return lw_dice, lw_hd, tp, fn, fp


def perturbations(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Prediction-like versions of a reference: eroded, shifted, and with blobs added near and far."""
    rng = np.random.default_rng(seed)
    tumour = labels > 0
    eroded = np.where(ndimage.binary_erosion(tumour, iterations=2), labels, 0).astype(np.uint8)
    shifted = np.roll(labels, (3, -2, 2), axis=(0, 1, 2))
    blobs = labels.copy()
    centres = np.argwhere(tumour)
    grid = np.indices(labels.shape)
    for label, radius in ((3, 3), (2, 5), (1, 2), (3, 1)):
        near = centres[rng.integers(len(centres))] + rng.integers(-25, 26, 3)
        far = rng.integers(20, np.array(labels.shape) - 20)
        for centre in (near, far):
            ball = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2
            blobs[ball & (blobs == 0)] = label
    return {"eroded": eroded, "shifted": shifted, "blobs": blobs}
