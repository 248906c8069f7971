"""The regions as the network predicts them: probabilities, decoding, postprocessing.

The network outputs one logit per region of its task (WT, TC, ET, and e.g. RC; a sigmoid each, as
nnU-Net's region-based training), or, for checkpoints of brats 0.1, four class logits whose softmax
probabilities are summed per region. Either way every consumer (loss, validation, scoring,
ensembles, exports) sees the same (R, ...) region probabilities and decodes them one way: each
region painted in order with its label, a nested region only inside its parent (`labels.Region`).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any

import cc3d
import numpy as np
import torch

from .labels import LEGACY_REGIONS, Region, removed_becomes

THRESHOLD = 0.5
Regions = tuple[Region, ...]


def region_probabilities(logits: torch.Tensor, regions: int = len(LEGACY_REGIONS)) -> torch.Tensor:
    """(B, R or 4, ...) logits -> (B, R, ...) float32 probabilities of the `regions` regions."""
    logits = logits.float()
    if logits.shape[1] == regions:
        return torch.sigmoid(logits)
    p = torch.softmax(logits, dim=1)  # four classes (brats 0.1 checkpoints: WT, TC, ET)
    return torch.stack([p[:, list(r.labels)].sum(1) for r in LEGACY_REGIONS], dim=1)


def region_targets(label: torch.Tensor, regions: Regions = LEGACY_REGIONS) -> torch.Tensor:
    """(B, ...) integer store labels -> (B, R, ...) float region masks."""
    masks = [functools.reduce(operator.or_, (label == c for c in r.labels)) for r in regions]
    return torch.stack(masks, dim=1).float()  # comparisons with Python ints: no tensor copied to the device


def decode_regions(probabilities: torch.Tensor, regions: Regions = LEGACY_REGIONS,
                   threshold: float = THRESHOLD) -> torch.Tensor:
    """(R, ...) region probabilities -> (...) uint8 store labels: each region in order paints its
    label where its probability is above `threshold` (a nested region only inside its parent), a
    later region over an earlier one. For WT, TC, ET: WT where P(WT) > t; inside it TC; inside
    that ET; so a voxel is tumour exactly when the WT channel says so."""
    masks: dict[str, torch.Tensor] = {}
    labels = torch.zeros(probabilities.shape[1:], dtype=torch.uint8, device=probabilities.device)
    for channel, region in zip(probabilities, regions, strict=True):
        mask = channel > threshold
        if region.parent is not None:
            mask = mask & masks[region.parent]
        masks[region.name] = mask
        labels = torch.where(mask, region.paint, labels).to(torch.uint8)
    return labels


def suppress_small_et(labels: np.ndarray, min_voxels: int, regions: Regions = LEGACY_REGIONS) -> np.ndarray:
    """Relabel all enhancing tumour (region `et`) as the region around it (necrosis for glioma)
    when there are fewer than `min_voxels` ET voxels.

    A predicted ET in a case without ET scores Dice 0 under the BraTS rules, while a few
    hundred missed voxels in a case with ET cost little: the postprocessing of the BraTS
    winners (threshold chosen on validation cases). The other regions are unchanged.
    """
    et = next((r for r in regions if r.name == "et"), None)
    if min_voxels <= 0 or et is None:
        return labels
    mask = np.isin(labels, et.labels)
    count = int(mask.sum())
    if 0 < count < min_voxels:
        labels = labels.copy()
        labels[mask] = removed_becomes(et, regions)
    return labels


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


def remove_small_components(labels: np.ndarray, region: Region | str, min_voxels: int,
                            regions: Regions = LEGACY_REGIONS) -> np.ndarray:
    """Remove the 26-connected components of `region` smaller than `min_voxels` (they become the
    label of the region around it, `labels.removed_becomes`), except the largest one inside each
    component of its parent region (`protected_components`).

    Stray blobs far from the tumour each count as a false-positive lesion under the BraTS 2023
    lesion-wise rules (Dice 0, HD95 374), however small; but the tumour, and a small core or
    enhancing part inside a tumour, are never removed, whatever the size.
    """
    if min_voxels <= 1:
        return labels
    if isinstance(region, str):
        region = next(r for r in regions if r.name == region)
    mask = np.isin(labels, region.labels)
    components = cc3d.connected_components(mask, connectivity=26)
    sizes = np.bincount(components.ravel())
    small = sizes < min_voxels
    small[0] = False
    if not small.any():
        return labels
    parent_region = next((r for r in regions if r.name == region.parent), None)
    parent = (None if parent_region is None
              else cc3d.connected_components(np.isin(labels, parent_region.labels), connectivity=26))
    small &= ~protected_components(components, sizes, parent)
    drop = small[components]
    if not drop.any():
        return labels
    labels = labels.copy()
    labels[drop] = removed_becomes(region, regions)
    return labels


@dataclass(frozen=True)
class Postprocessing:
    """What happens to decoded labels, in order: components smaller than `min_component_voxels`
    removed per region (in the regions' order: WT, then TC, then ET, ...), never the largest one
    inside each component of the region around it (`remove_small_components`), then all ET
    relabelled as the region around it when there is less than `et_min_voxels` of it. Kept in the
    checkpoint (`trainer.postprocess` chooses it).

    Checkpoints of brats <= 0.3 load with their sizes, now applied under that protection: their
    largest-candidate choices (2000 voxels) still clean stray blobs but no longer erase a case's
    only tumour core or enhancing region."""

    min_component_voxels: tuple[int, ...] = (0, 0, 0)  # per region, in the regions' order; all 0: none
    et_min_voxels: int = 0

    def sizes(self, regions: int) -> tuple[int, ...]:
        """The sizes of `regions` regions (all 0 when none are removed)."""
        return self.min_component_voxels if any(self.min_component_voxels) else (0,) * regions

    @classmethod
    def from_dict(cls, saved: dict[str, Any] | None) -> "Postprocessing":
        saved = saved or {}
        return cls(tuple(int(v) for v in saved.get("min_component_voxels", (0, 0, 0))),
                   int(saved.get("et_min_voxels", 0)))

    def to_dict(self) -> dict[str, Any]:
        return {"min_component_voxels": list(self.min_component_voxels), "et_min_voxels": self.et_min_voxels}

    def apply(self, labels: np.ndarray, regions: Regions = LEGACY_REGIONS) -> np.ndarray:
        if any(self.min_component_voxels):
            for region, min_voxels in zip(regions, self.min_component_voxels, strict=True):
                labels = remove_small_components(labels, region, min_voxels, regions)
        return suppress_small_et(labels, self.et_min_voxels, regions)
