"""The training objective on the nested BraTS regions: soft Dice + binary cross-entropy, with deep supervision.

Why both terms: a soft Dice computed per patch scores a region that is absent from the patch
as 1 - s/(Σp + s), which is flat once a few voxels are predicted, so false positives in
tumour-free patches (half of them) and in cases without TC/ET get almost no gradient: the
model learns patches and marks tumour all over whole volumes. The binary cross-entropy of
every voxel and region penalises each false positive wherever it is; the Dice, computed over
the whole (micro-)batch per region (nnU-Net's batch Dice), keeps the region's overlap as the
target even when the region is small. nnU-Net's region-based BraTS training uses the same pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..regions import region_probabilities, region_targets
from .config import LossConfig

SMOOTH = 1.0


def deep_supervision_weights(heads: int) -> list[float]:
    """1, 1/2, 1/4, ... for the full-resolution output and each deeper head (the design's 1/0.5/0.25)."""
    return [0.5**i for i in range(heads)]


def soft_dice_loss(probabilities: torch.Tensor, targets: torch.Tensor, smooth: float = SMOOTH,
                   batch_dice: bool = False) -> torch.Tensor:
    """1 - mean over regions (and samples, unless `batch_dice`) of (2·Σpt + s) / (Σp + Σt + s)."""
    dims = tuple(range(2, probabilities.ndim))
    intersection = (probabilities * targets).sum(dims)
    total = probabilities.sum(dims) + targets.sum(dims)
    if batch_dice:
        intersection, total = intersection.sum(0), total.sum(0)
    return 1.0 - ((2 * intersection + smooth) / (total + smooth)).mean()


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """The region soft Dice alone (brats 0.1's objective)."""
    return soft_dice_loss(region_probabilities(logits, targets.shape[1]), targets, batch_dice=config.batch_dice)


def dice_bce_loss(logits: torch.Tensor, targets: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """The region soft Dice plus the binary cross-entropy, mean over voxels and regions (the default)."""
    return dice_loss(logits, targets, config) + F.binary_cross_entropy_with_logits(logits.float(), targets)


def region_loss(logits: torch.Tensor, targets: torch.Tensor, config: LossConfig = LossConfig()) -> torch.Tensor:
    """The objective at one resolution: (B, R, ...) region logits against (B, R, ...) soft region
    targets, by the loss the config names."""
    return LOSS_FUNCTIONS[config.kind][0](logits, targets, config)


# LossConfig.kind -> (the loss at one resolution, its name in the training curves); the built-in
# ones, and those added by `registry.register_loss`.
LOSS_FUNCTIONS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor, LossConfig], torch.Tensor], str]] = {
    "dice+bce": (dice_bce_loss, "region Dice + BCE"), "dice": (dice_loss, "region Dice")}


def downsample_targets(targets: torch.Tensor, factor: int) -> torch.Tensor:
    """Targets at 1/factor resolution: voxel factor·i, where the stride-2 convolutions centre output i."""
    if factor == 1:
        return targets
    return targets[..., ::factor, ::factor, ::factor]


def deep_supervision_loss(outputs: torch.Tensor | Sequence[torch.Tensor], targets: torch.Tensor,
                          config: LossConfig = LossConfig()) -> torch.Tensor:
    """1.0·L(full) + 0.5·L(1/2) + 0.25·L(1/4), halving on for every further head (fewer terms if
    fewer heads): every output the model gives is trained.

    `targets` are (B, R, ...) region masks (`region_targets`, soft where the input was pooled)
    or (B, ...) integer store labels of WT, TC and ET.
    """
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    if targets.ndim == outputs[0].ndim - 1:
        targets = region_targets(targets)
    total = torch.zeros((), device=targets.device)
    for i, (logits, weight) in enumerate(zip(outputs, deep_supervision_weights(len(outputs)), strict=True)):
        target = downsample_targets(targets, 2**i)
        if target.shape[-3:] != logits.shape[-3:]:
            target = F.interpolate(target, size=logits.shape[-3:], mode="nearest")
        total = total + weight * region_loss(logits, target, config)
    return total
