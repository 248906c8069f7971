"""The nested BraTS regions as the network predicts them: probabilities, nested decoding, postprocessing.

The network outputs one logit per region (WT, TC, ET; a sigmoid each, as nnU-Net's
region-based training), or, for checkpoints of brats 0.1, four class logits whose softmax
probabilities are summed per region. Either way every consumer (loss, validation, scoring,
ensembles, exports) sees the same (3, ...) region probabilities and decodes them one way.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any

import cc3d
import numpy as np
import torch

from .labels import EDEMA, ENHANCING, NECROSIS, REGIONS

THRESHOLD = 0.5


def region_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(B, 3 or 4, ...) logits -> (B, 3, ...) float32 P(WT), P(TC), P(ET)."""
    logits = logits.float()
    if logits.shape[1] == len(REGIONS):
        return torch.sigmoid(logits)
    p = torch.softmax(logits, dim=1)  # four classes (brats 0.1 checkpoints)
    return torch.stack([p[:, list(c)].sum(1) for c in REGIONS.values()], dim=1)


def region_targets(label: torch.Tensor) -> torch.Tensor:
    """(B, ...) integer store labels -> (B, 3, ...) float WT, TC, ET masks."""
    masks = [functools.reduce(operator.or_, (label == c for c in classes)) for classes in REGIONS.values()]
    return torch.stack(masks, dim=1).float()  # comparisons with Python ints: no tensor copied to the device


def decode_regions(probabilities: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """(3, ...) region probabilities -> (...) uint8 store labels, nested as the regions are:
    WT where P(WT) > t; inside it TC where P(TC) > t; inside that ET where P(ET) > t.
    So a voxel is tumour exactly when the WT channel says so, whatever the other channels say."""
    wt = probabilities[0] > threshold
    tc = wt & (probabilities[1] > threshold)
    et = tc & (probabilities[2] > threshold)
    labels = torch.where(tc, NECROSIS, torch.where(wt, EDEMA, 0))
    return torch.where(et, ENHANCING, labels).to(torch.uint8)


def suppress_small_et(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Relabel all enhancing tumour as necrosis when there are fewer than `min_voxels` ET voxels.

    A predicted ET in a case without ET scores Dice 0 under the BraTS rules, while a few
    hundred missed voxels in a case with ET cost little: the postprocessing of the BraTS
    winners (threshold chosen on validation cases). TC and WT are unchanged.
    """
    if min_voxels <= 0:
        return labels
    et = labels == ENHANCING
    count = int(et.sum())
    if 0 < count < min_voxels:
        labels = labels.copy()
        labels[et] = NECROSIS
    return labels


# What a removed component of each region becomes: WT -> background, TC -> edema, ET -> necrosis,
# so the regions stay nested.
REMOVED_BECOMES = {"wt": 0, "tc": EDEMA, "et": NECROSIS}
# The region each region's components sit in (nested decoding: ET inside TC inside WT).
PARENT = {"wt": None, "tc": "wt", "et": "tc"}


def protected_components(components: np.ndarray, sizes: np.ndarray, parent: np.ndarray | None) -> np.ndarray:
    """Boolean per component label (index 0 the background, never protected): the largest component
    within each component of the parent region (`parent`: that region's component labels; None for
    WT, whose parent is the whole volume). These are the tumour itself and the core of each kept
    tumour: no size rule may remove them."""
    protected = np.zeros(len(sizes), bool)
    if len(sizes) <= 1:
        return protected
    if parent is None:
        protected[1 + int(np.argmax(sizes[1:]))] = True
        return protected
    inside = components > 0
    owner = np.zeros(len(sizes), np.int64)
    owner[components[inside]] = parent[inside]  # a nested component lies in exactly one parent component
    order = 1 + np.argsort(-sizes[1:], kind="stable")  # largest first, ties to the lower label
    _, first = np.unique(owner[order], return_index=True)
    protected[order[first]] = True
    return protected


def remove_small_components(labels: np.ndarray, region: str, min_voxels: int) -> np.ndarray:
    """Remove the 26-connected components of `region` smaller than `min_voxels` (see REMOVED_BECOMES),
    except the largest one inside each component of its parent region (`protected_components`).

    Stray blobs far from the tumour each count as a false-positive lesion under the BraTS 2023
    lesion-wise rules (Dice 0, HD95 374), however small; but the tumour, and a small core or
    enhancing part inside a tumour, are never removed, whatever the size.
    """
    if min_voxels <= 1:
        return labels
    mask = np.isin(labels, REGIONS[region])
    components = cc3d.connected_components(mask, connectivity=26)
    sizes = np.bincount(components.ravel())
    small = sizes < min_voxels
    small[0] = False
    if not small.any():
        return labels
    parent_region = PARENT[region]
    parent = (None if parent_region is None
              else cc3d.connected_components(np.isin(labels, REGIONS[parent_region]), connectivity=26))
    small &= ~protected_components(components, sizes, parent)
    drop = small[components]
    if not drop.any():
        return labels
    labels = labels.copy()
    labels[drop] = REMOVED_BECOMES[region]
    return labels


@dataclass(frozen=True)
class Postprocessing:
    """What happens to decoded labels, in order: components smaller than `min_component_voxels`
    removed per region (WT, then TC, then ET), never the largest one inside each component of the
    region around it (`remove_small_components`), then all ET relabelled necrosis when there is
    less than `et_min_voxels` of it. Kept in the checkpoint (`trainer.postprocess` chooses it).

    Checkpoints of brats <= 0.3 load with their sizes, now applied under that protection: their
    largest-candidate choices (2000 voxels) still clean stray blobs but no longer erase a case's
    only tumour core or enhancing region."""

    min_component_voxels: tuple[int, int, int] = (0, 0, 0)  # WT, TC, ET
    et_min_voxels: int = 0

    @classmethod
    def from_dict(cls, saved: dict[str, Any] | None) -> "Postprocessing":
        saved = saved or {}
        return cls(tuple(int(v) for v in saved.get("min_component_voxels", (0, 0, 0))),  # type: ignore[arg-type]
                   int(saved.get("et_min_voxels", 0)))

    def to_dict(self) -> dict[str, Any]:
        return {"min_component_voxels": list(self.min_component_voxels), "et_min_voxels": self.et_min_voxels}

    def apply(self, labels: np.ndarray) -> np.ndarray:
        for region, min_voxels in zip(REGIONS, self.min_component_voxels, strict=True):
            labels = remove_small_components(labels, region, min_voxels)
        return suppress_small_et(labels, self.et_min_voxels)
