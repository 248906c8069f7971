"""Sliding-window inference over whole volumes with Gaussian weighting (validation and scoring).

Window placement and weighting follow MONAI's `sliding_window_inference` with
`mode="gaussian"` (interval int(window·(1 - overlap)), last window flush with the end, sigma
window/8, weights clamped at 1e-3, volumes smaller than a window zero-padded symmetrically),
so predictions can be checked against it; windows are batched, run under autocast on GPU,
and only region probabilities (`regions.region_probabilities`) are accumulated. A model
trained at 1/`downsample` resolution sees the average-pooled volume, and its probabilities
are upsampled trilinearly; an ensemble averages its members' probabilities; labels are the
nested decoding of the probabilities, then the postprocessing chosen in training.

A network is a torch module (its logits become region probabilities here) or a
`ProbabilityModel`: any callable from a batch of windows to their region probabilities, such as
an ONNX Runtime or OpenVINO session of an exported model (`scoring/engines.py`); both go through
the same windows, weights, mirrorings and ensemble mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from .devices import cuda_autocast_dtype
from .inference_config import InferenceConfig
from .regions import Postprocessing, decode_regions, region_probabilities


class ProbabilityModel:
    """A network that is not a torch module: (N, C, *window) float32 windows -> (N, R, *window)
    float32 region probabilities, on the windows' device (the engines' sessions)."""

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


Network = nn.Module | ProbabilityModel


def gaussian_weights(window: Sequence[int], sigma_scale: float = 0.125, device: torch.device | str = "cpu") -> torch.Tensor:
    """Separable Gaussian importance map (sigma window/8, peak 1 at the centre), clamped to at least 1e-3."""
    weights = torch.ones((), device=device)
    for n in window:
        x = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, device=device)
        g = torch.exp(x**2 / (-2 * (sigma_scale * n) ** 2))
        weights = weights.unsqueeze(-1) * g
    return weights.clamp_min(max(float(weights.min()), 1e-3))


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """First voxels of the windows along one axis (size >= window)."""
    if size == window:
        return [0]
    interval = max(int(window * (1 - overlap)), 1)
    count = next(d for d in range(math.ceil(size / interval)) if d * interval + window >= size) + 1
    return [min(d * interval, size - window) for d in range(count)]


def _mirrorings(tta: bool) -> list[tuple[int, ...]]:
    if not tta:
        return [()]
    return [tuple(a for a, bit in zip((2, 3, 4), (m & 1, m & 2, m & 4), strict=True) if bit) for m in range(8)]


@torch.no_grad()
def sliding_window_probabilities(model: Network, image: torch.Tensor, config: InferenceConfig,
                                 device: torch.device | str) -> torch.Tensor:
    """Region probabilities (3, x, y, z) float32 on `device` for one (channels, x, y, z) volume, at
    the volume's own resolution."""
    device = torch.device(device)
    image = image.to(device, non_blocking=True).float()
    shape = image.shape[1:]
    pads = [max(w - s, 0) for w, s in zip(config.window, shape, strict=True)]
    padding = [v for p in reversed(pads) for v in (p // 2, p - p // 2)]
    padded = F.pad(image, padding) if any(pads) else image
    full = padded.shape[1:]
    weights = gaussian_weights(config.window, device=device)
    starts = [(a, b, c) for a in window_starts(full[0], config.window[0], config.overlap)
              for b in window_starts(full[1], config.window[1], config.overlap)
              for c in window_starts(full[2], config.window[2], config.overlap)]
    total: torch.Tensor | None = None
    norm = torch.zeros(full, device=device)
    autocast = (torch.autocast("cuda", dtype=cuda_autocast_dtype())
                if config.amp and device.type == "cuda" else nullcontext())
    mirrorings = _mirrorings(config.tta)
    for i in range(0, len(starts), config.batch_windows):
        group = starts[i:i + config.batch_windows]
        slices = [tuple(slice(s, s + w) for s, w in zip(start, config.window, strict=True)) for start in group]
        batch = torch.stack([padded[(slice(None), *sl)] for sl in slices])
        probs: torch.Tensor | None = None
        for axes in mirrorings:
            windows = batch.flip(axes) if axes else batch
            if isinstance(model, ProbabilityModel):
                p = model(windows)
            else:
                with autocast:
                    p = region_probabilities(model(windows), len(config.region_specs))
            p = p.flip(axes) if axes else p
            probs = p if probs is None else probs + p
        assert probs is not None
        probs = probs / len(mirrorings)
        if total is None:
            total = torch.zeros((probs.shape[1], *full), device=device)
        for sl, p in zip(slices, probs, strict=True):
            total[(slice(None), *sl)] += p * weights
            norm[sl] += weights
    assert total is not None
    total /= norm
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pads, shape, strict=True))
    return total[(slice(None), *crop)]


def predict_probabilities(models: Network | Sequence[Network], image: torch.Tensor, config: InferenceConfig,
                          device: torch.device | str) -> torch.Tensor:
    """Region probabilities (3, x, y, z) on `device`: the mean over the models (an ensemble), each
    by sliding window at the models' resolution, upsampled to the volume's."""
    models = [models] if isinstance(models, (nn.Module, ProbabilityModel)) else list(models)
    device = torch.device(device)
    image = image.to(device, non_blocking=True).float()
    shape = image.shape[1:]
    factor = config.downsample
    if factor > 1:
        image = F.avg_pool3d(image[None], factor, ceil_mode=True)[0]
    total = sliding_window_probabilities(models[0], image, config, device)
    for model in models[1:]:
        total += sliding_window_probabilities(model, image, config, device)
    total /= len(models)
    if factor > 1:
        total = F.interpolate(total[None], scale_factor=factor, mode="trilinear", align_corners=False)[0]
        total = total[(slice(None), *(slice(0, s) for s in shape))]
    return total


def predict_labels(models: Network | Sequence[Network], image: torch.Tensor, config: InferenceConfig,
                   device: torch.device | str, postprocessing: Postprocessing = Postprocessing()) -> torch.Tensor:
    """Store labels (x, y, z) uint8 on CPU: nested decoding of the (ensemble's) region probabilities,
    then the postprocessing (none by default)."""
    regions = config.region_specs
    labels = decode_regions(predict_probabilities(models, image, config, device), regions).cpu()
    return torch.from_numpy(postprocessing.apply(labels.numpy(), regions))
