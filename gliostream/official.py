"""The official BraTS evaluation since 2024 (`BraTS-evaluation`, which runs `panoptica`), computed here.

Per label group of the task (its bundled config's groups):
- instances are the 26-connected components of the group's mask in the reference and in the
  prediction, matched one to one by maximum bipartite matching on Dice (a pair may match when its
  Dice is at least 1e-6; no dilation, no size limit);
- `all_instance_{tp,fp,fn}` count matched pairs, unmatched predictions and unmatched references;
  `prec`, `rec` and `f1` follow (prec and rec NaN at 0/0; f1 0 without a match unless both are empty);
- `global_{dsc,nsd,hd95}` compare the whole masks: NSD and HD95 on border voxels at unit spacing,
  NSD within 0.5 (the evaluator passes no spacing to its global metrics); without a shared voxel
  Dice and NSD are 0 and HD95 is 373 (the parser's value for infinity);
- `lesionwise_{dsc,nsd,hd95}_{mean,std}` average the matched pairs only, at the file's spacing,
  NSD within the smallest spacing; without a match, 0, 0 and inf (std NaN);
- a group empty in both is NaN everywhere but the counts (0).

Checked against `BraTS-evaluation` 0.0.10 itself (tests/data/official_reference.json, made by
bench/official_reference.py). We compute it rather than depend on panoptica, which pins numpy < 2.3,
pandas < 3 and cc3d < 4 (bench/official.py times both, side by side).
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .surface import border_distances, border_nsd, joint_box, pooled_hd95

GROUPS: dict[str, dict[str, tuple[int, ...]]] = {
    "gli": {"snfh": (2,), "et": (3,), "netc": (1,), "rc": (4,), "tc": (1, 3), "wt": (1, 2, 3)},
    "mets": {"et": (3,), "rc": (4,), "tc": (1, 3), "wt": (1, 2, 3)},
    "ped": {"et": (1,), "netc": (2,), "cc": (3,), "ed": (4,), "tc": (1, 2, 3), "wt": (1, 2, 3, 4)},
    "MenPre": {"et": (3,), "tc": (1, 3), "wt": (1, 2, 3)},
    "MenRT": {"gtv": (1,)},
    "GoAT": {"et": (3,), "tc": (1, 3), "wt": (1, 2, 3)},
}
"""The label groups of each bundled config of BraTS-evaluation (`configs/config_<name>.yaml`), in its order."""

MEASURES = ("all_instance_tp", "all_instance_fp", "all_instance_fn", "all_instance_prec", "all_instance_rec",
            "all_instance_f1", "global_dsc", "global_nsd", "global_hd95", "lesionwise_dsc_mean", "lesionwise_dsc_std",
            "lesionwise_nsd_mean", "lesionwise_nsd_std", "lesionwise_hd95_mean", "lesionwise_hd95_std")
"""The columns of the official parser (`metrics_parser seg`) per group, `<measure>_<group>`, in its order."""

MATCH_THRESHOLD = 1e-6
INFINITE_HD95 = 373.0  # the parser's global HD95 for an infinite distance
NAN = float("nan")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else NAN


def _global(reference: np.ndarray, prediction: np.ndarray, n_ref: int, n_pred: int) -> tuple[float, float, float]:
    """Global Dice, NSD and HD95 of the group's masks."""
    if n_ref == 0 and n_pred == 0:
        return NAN, NAN, NAN
    shared = int(np.count_nonzero(reference & prediction))
    if shared == 0:
        return 0.0, 0.0, INFINITE_HD95
    dsc = 2.0 * shared / (int(reference.sum()) + int(prediction.sum()))
    ref_to_pred, pred_to_ref = border_distances(reference, prediction, (1.0, 1.0, 1.0))
    return dsc, border_nsd(ref_to_pred, pred_to_ref, 0.5), pooled_hd95(ref_to_pred, pred_to_ref)


def _matches(ref_cc: np.ndarray, n_ref: int, pred_cc: np.ndarray, n_pred: int) -> list[tuple[int, int, float]]:
    """(reference label, prediction label, Dice) of the one-to-one matching of maximal total Dice."""
    if n_ref == 0 or n_pred == 0:
        return []
    ref_sizes = np.bincount(ref_cc.ravel(), minlength=n_ref + 1)
    pred_sizes = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
    both = (ref_cc > 0) & (pred_cc > 0)
    codes, overlaps = np.unique(ref_cc[both].astype(np.int64) * (n_pred + 1) + pred_cc[both], return_counts=True)
    cost = np.full((n_ref, n_pred), 1.0 + MATCH_THRESHOLD)
    r, p = codes // (n_pred + 1), codes % (n_pred + 1)
    dice = 2.0 * overlaps / (ref_sizes[r] + pred_sizes[p])
    keep = dice >= MATCH_THRESHOLD
    cost[r[keep] - 1, p[keep] - 1] = 1.0 - dice[keep]
    rows, cols = linear_sum_assignment(cost)
    return [(int(i) + 1, int(j) + 1, 1.0 - float(cost[i, j])) for i, j in zip(rows, cols, strict=True) if cost[i, j] < 1.0]


def _union_box(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def _lesionwise(ref_cc: np.ndarray, pred_cc: np.ndarray, matches: list[tuple[int, int, float]],
                spacing: Sequence[float]) -> dict[str, list[float]]:
    """Dice, NSD (within the smallest spacing) and HD95 of each matched pair."""
    ref_boxes, pred_boxes = ndimage.find_objects(ref_cc), ndimage.find_objects(pred_cc)
    tolerance = min(float(s) for s in spacing)
    scores: dict[str, list[float]] = {"dsc": [], "nsd": [], "hd95": []}
    for ref_label, pred_label, dice in matches:
        box = _union_box(ref_boxes[ref_label - 1], pred_boxes[pred_label - 1])
        ref_to_pred, pred_to_ref = border_distances(ref_cc[box] == ref_label, pred_cc[box] == pred_label, spacing)
        scores["dsc"].append(dice)
        scores["nsd"].append(border_nsd(ref_to_pred, pred_to_ref, tolerance))
        scores["hd95"].append(pooled_hd95(ref_to_pred, pred_to_ref))
    return scores


def group_scores(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """The official measures (MEASURES) of one label group, from its two boolean masks."""
    box = joint_box(reference, prediction, 2)  # both empty: nothing to crop, the counts are all 0
    if box is not None:
        reference, prediction = reference[box], prediction[box]
    ref_cc, n_ref = cc3d.connected_components(reference, connectivity=26, return_N=True)
    pred_cc, n_pred = cc3d.connected_components(prediction, connectivity=26, return_N=True)
    n_ref, n_pred = int(n_ref), int(n_pred)
    matches = _matches(ref_cc, n_ref, pred_cc, n_pred)
    tp = len(matches)
    fp, fn = n_pred - tp, n_ref - tp
    if tp:
        f1 = tp / (tp + 0.5 * fp + 0.5 * fn)
    else:
        f1 = 0.0 if n_pred + n_ref else NAN
    out = {"all_instance_tp": float(tp), "all_instance_fp": float(fp), "all_instance_fn": float(fn),
           "all_instance_prec": _ratio(tp, tp + fp), "all_instance_rec": _ratio(tp, tp + fn), "all_instance_f1": f1}
    out["global_dsc"], out["global_nsd"], out["global_hd95"] = _global(reference, prediction, n_ref, n_pred)
    lists = _lesionwise(ref_cc, pred_cc, matches, spacing)
    unmatched = {"dsc": 0.0, "nsd": 0.0, "hd95": float("inf")}
    for measure, values in lists.items():
        if values:
            out[f"lesionwise_{measure}_mean"] = float(np.mean(values))
            out[f"lesionwise_{measure}_std"] = float(np.std(values))
        else:
            out[f"lesionwise_{measure}_mean"] = unmatched[measure] if n_pred + n_ref else NAN
            out[f"lesionwise_{measure}_std"] = NAN
    return {m: out[m] for m in MEASURES}


def official_columns(config: str) -> list[str]:
    """The CSV columns of one config's groups, `<measure>_<group>`, group by group."""
    return [f"{m}_{g}" for g in GROUPS[config] for m in MEASURES]


def official_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
                     config: str = "gli") -> dict[str, float]:
    """Every official measure of every label group of `config`, keyed `<measure>_<group>`.

    `prediction` and `reference` hold the task's raw labels on one grid (the whole raw volume or
    any crop that contains both segmentations)."""
    # The evaluator reads NIfTI files with SimpleITK (z, y, x axes; nibabel's Fortran-ordered x, y, z
    # arrays scan alike), so its components are numbered with x varying fastest; when two matchings
    # tie, that numbering chooses. Each axis keeps its own spacing here; SimpleITK's loader gives
    # panoptica the x, y, z spacing for z, y, x axes, which only differs for anisotropic voxels.
    prediction, reference, spacing = prediction.T, reference.T, tuple(spacing)[::-1]
    out: dict[str, float] = {}
    for group, labels in GROUPS[config].items():
        scores = group_scores(np.isin(prediction, labels), np.isin(reference, labels), spacing)
        out.update({f"{m}_{group}": v for m, v in scores.items()})
    return out
