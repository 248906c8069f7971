"""Region-wise soft Dice on the nested BraTS regions, with deep supervision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..pipeline.preprocess import REGIONS

DEEP_SUPERVISION_WEIGHTS = (1.0, 0.5, 0.25)
SMOOTH = 1.0


def region_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(B, 4, ...) logits -> (B, 3, ...) soft WT, TC, ET masks: each the sum of its classes' softmax
    probabilities (store labels, `preprocess.REGIONS`)."""
    p = torch.softmax(logits.float(), dim=1)
    return torch.stack([p[:, list(c)].sum(1) for c in REGIONS.values()], dim=1)


def region_targets(label: torch.Tensor) -> torch.Tensor:
    """(B, ...) integer labels -> (B, 3, ...) float WT, TC, ET masks."""
    masks = [sum((label == c for c in classes), torch.zeros_like(label, dtype=torch.bool))
             for classes in REGIONS.values()]
    return torch.stack(masks, dim=1).float()


def soft_dice_loss(probabilities: torch.Tensor, targets: torch.Tensor, smooth: float = SMOOTH) -> torch.Tensor:
    """1 - mean over samples and regions of (2·Σpt + s) / (Σp + Σt + s).

    Per sample and per region, so each region is normalised by its own size and a mean over
    micro-batches equals the loss of the whole batch (gradient accumulation is exact). The
    smoothing term makes an empty region with an empty prediction a perfect score and an
    empty region with false positives a loss that grows with them.
    """
    dims = tuple(range(2, probabilities.ndim))
    intersection = (probabilities * targets).sum(dims)
    total = probabilities.sum(dims) + targets.sum(dims)
    return 1.0 - ((2 * intersection + smooth) / (total + smooth)).mean()


def downsample_label(label: torch.Tensor, factor: int) -> torch.Tensor:
    """Label at 1/factor resolution: voxel factor·i, where the stride-2 convolutions centre output i."""
    if factor == 1:
        return label
    return label[..., ::factor, ::factor, ::factor]


def deep_supervision_loss(outputs: torch.Tensor | Sequence[torch.Tensor], label: torch.Tensor,
                          weights: Sequence[float] = DEEP_SUPERVISION_WEIGHTS) -> torch.Tensor:
    """1.0·L(full) + 0.5·L(1/2) + 0.25·L(1/4) (fewer terms if fewer heads)."""
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    total = torch.zeros((), device=label.device)
    for i, (logits, weight) in enumerate(zip(outputs, weights)):
        target = downsample_label(label, 2**i)
        if target.shape[-3:] != logits.shape[-3:]:
            target = F.interpolate(target[:, None].float(), size=logits.shape[-3:], mode="nearest")[:, 0].long()
        total = total + weight * soft_dice_loss(region_probabilities(logits), region_targets(target))
    return total
