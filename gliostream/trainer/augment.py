"""Batch augmentation on the training device: the transforms a 3D segmentation user expects.

Rotation and zoom, mirroring, and per channel: a smooth bias field, brightness, contrast, shift,
simulated low resolution, blur, gamma (also inverted) and Gaussian noise, in nnU-Net's spirit.
Applied to whole batches where they already are (the GPU when there is one), after the float16
patches were copied over, instead of per subject on CPU workers as TorchIO transforms would.
Intensities change inside the brain only (voxels non-zero in some channel), so the background
stays exactly zero, as it is at test time. Parameters come from a seeded CPU generator (drawn in
fixed shapes every call, so the stream does not depend on which transforms fired) and the noise
from a seeded generator on the device, so a run is reproducible and its state can be checkpointed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .config import AugmentConfig

# Where the z-scored intensities came from: the brain's raw mean over its standard deviation, the
# offset that turns a multiplicative field on raw intensities into z-score terms (measured on the
# real cases of ../shared/realdata: 1.7-2.9 for T2, 2.2-3.5 for T1ce and FLAIR, 3.4-4.7 for T1).
RAW_MEAN_OVER_STD = (1.5, 4.5)


def _uniform(generator: torch.Generator, shape: tuple[int, ...], bounds: tuple[float, float]) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator)


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles in radians about the three axes -> (B, 3, 3) rotations."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1).view(-1, 3, 3)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1).view(-1, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1).view(-1, 3, 3)
    return rz @ ry @ rx


class BatchAugmenter:
    """Random augmentation of (image float (B, C, x, y, z), label) batches: the label either integer
    store labels (B, x, y, z), warped nearest, or soft float region targets (B, R, x, y, z), warped
    trilinearly (a model at 1/`downsample` resolution is augmented after pooling: 8x fewer voxels at 2 mm)."""

    def __init__(self, config: AugmentConfig, seed: int, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.params = torch.Generator().manual_seed(seed)
        self.noise = (torch.Generator(device=self.device).manual_seed(seed + 1)
                      if self.device.type != "cpu" else self.params)

    def state_dict(self) -> dict[str, torch.Tensor | str]:
        return {"params": self.params.get_state(), "noise": self.noise.get_state(), "device_type": self.device.type}

    def load_state_dict(self, state: dict[str, torch.Tensor | str]) -> bool:
        """Restore the generators; False when the noise stream could not carry over (saved on
        another device type, whose generator state has another form) and was re-seeded from the
        restored parameter stream instead."""
        self.params.set_state(state["params"])
        if state.get("device_type", self.device.type) == self.device.type:
            self.noise.set_state(state["noise"])
            return True
        if self.noise is not self.params:
            self.noise.manual_seed(int(torch.randint(2**62, (1,), generator=self.params.clone_state())))
        return False

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, gen = self.config, self.params
        batch, channels = image.shape[:2]
        chosen = torch.rand((batch, 6), generator=gen)  # affine, noise, blur, low resolution, bias, spare
        if cfg.affine_prob > 0:
            image, label = self._affine(image, label, chosen[:, 0] < cfg.affine_prob)
        flips = torch.rand((batch, 3), generator=gen) < cfg.flip_prob
        for b in range(batch):
            axes = [a for a in range(3) if flips[b, a]]
            if axes:
                image[b] = image[b].flip([a + 1 for a in axes])
                label[b] = label[b].flip([a + label.ndim - 4 for a in axes])
        brain = (image != 0).any(dim=1, keepdim=True) if cfg.keep_background else None
        image = self._bias_field(image, chosen[:, 4] < cfg.bias_prob)
        pick = (batch, channels)
        scale = torch.where(torch.rand(pick, generator=gen) < cfg.scale_prob,
                            _uniform(gen, pick, cfg.scale_range), torch.ones(()))
        shift = torch.where(torch.rand(pick, generator=gen) < cfg.shift_prob,
                            _uniform(gen, pick, cfg.shift_range), torch.zeros(()))
        contrast = torch.where(torch.rand(pick, generator=gen) < cfg.contrast_prob,
                               _uniform(gen, pick, cfg.contrast_range), torch.ones(()))
        view = (batch, channels, 1, 1, 1)
        if bool((scale != 1).any() or (shift != 0).any()):
            image = image * self._to_device(scale).view(view) + self._to_device(shift).view(view)
        picked = (contrast != 1).flatten().nonzero().flatten()
        if len(picked):
            self._on_channels(image, brain, picked, stretch_contrast, contrast.flatten()[picked])
        zooms = _uniform(gen, pick, cfg.lowres_zoom)
        lowres = (torch.rand(pick, generator=gen) < 0.5) & (chosen[:, 3:4] < cfg.lowres_prob)
        for b, c in lowres.nonzero().tolist():
            image[b, c] = low_resolution(image[b, c], float(zooms[b, c]))
        sigmas = _uniform(gen, pick, cfg.blur_sigma)
        blurred = (torch.rand(pick, generator=gen) < 0.5) & (chosen[:, 2:3] < cfg.blur_prob)
        for b, c in blurred.nonzero().tolist():
            image[b, c] = gaussian_blur(image[b, c], float(sigmas[b, c]))
        gamma = torch.where(torch.rand(pick, generator=gen) < cfg.gamma_prob,
                            _uniform(gen, pick, cfg.gamma_range), torch.ones(()))
        inverted = torch.rand(pick, generator=gen) < cfg.gamma_invert_prob
        picked = (gamma != 1).flatten().nonzero().flatten()
        if len(picked):
            sign = torch.where(inverted, -1.0, 1.0).flatten()[picked]
            self._on_channels(image, brain, picked, apply_gamma, gamma.flatten()[picked], sign)
        stds = _uniform(gen, (batch,), cfg.noise_std)
        for b in (chosen[:, 1] < cfg.noise_prob).nonzero().flatten().tolist():
            noise = torch.randn(image.shape[1:], generator=self.noise, device=self.noise.device)
            image[b] += noise.to(image.device, image.dtype) * float(stds[b])
        if brain is not None:
            image = image.masked_fill(~brain, 0.0)
        return image, label

    def _on_channels(self, image: torch.Tensor, brain: torch.Tensor | None, picked: torch.Tensor,
                     transform: Callable[..., torch.Tensor], *params: torch.Tensor) -> None:
        """Apply `transform` in place to the (sample, channel) pairs `picked` (flat indices b·C + c)
        only, with one (N,) parameter tensor per pair each."""
        channels = image.shape[1]
        flat = image.view(-1, 1, *image.shape[2:])
        index = self._to_device(picked)
        inside = brain[index // channels] if brain is not None else None
        shaped = [self._to_device(p.float()).view(-1, 1, 1, 1, 1) for p in params]
        flat[index] = transform(flat[index], *shaped, inside).to(image.dtype)

    def _to_device(self, values: torch.Tensor) -> torch.Tensor:
        """Parameters drawn on the CPU, copied without a host sync (page-locked, asynchronous)."""
        if self.device.type != "cuda":
            return values
        return values.pin_memory().to(self.device, non_blocking=True)

    def _bias_field(self, image: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        cfg, gen = self.config, self.params
        batch, channels = image.shape[:2]
        logs = _uniform(gen, (batch, channels, *(cfg.bias_nodes,) * 3), (-cfg.bias_strength, cfg.bias_strength))
        offsets = _uniform(gen, (batch, channels), RAW_MEAN_OVER_STD)
        index = chosen.nonzero().flatten()
        if len(index) == 0 or cfg.bias_strength == 0:
            return image
        image = image.clone()
        device_index = self._to_device(index)
        image[device_index] = bias_field(image[device_index], self._to_device(logs[index]),
                                         self._to_device(offsets[index])).to(image.dtype)
        return image

    def _affine(self, image: torch.Tensor, label: torch.Tensor,
                chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, gen = self.config, self.params
        batch = image.shape[0]
        limit = math.radians(cfg.rotation_degrees)
        angles = _uniform(gen, (batch, 3), (-limit, limit))
        zoom = _uniform(gen, (batch, 1, 1), cfg.zoom_range)
        index = chosen.nonzero().flatten()
        if len(index) == 0:
            return image, label
        theta = torch.zeros((len(index), 3, 4))
        theta[:, :, :3] = rotation_matrices(angles[index]) / zoom[index]
        index = self._to_device(index)
        warped_image, warped_label = warp(image[index], label[index], self._to_device(theta))
        image, label = image.clone(), label.clone()
        image[index], label[index] = warped_image.to(image.dtype), warped_label
        return image, label


def _masked_stats(image: torch.Tensor, brain: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Per sample and channel (B, C, 1, 1, 1): mean, min and max over the brain (everything: None)."""
    dims = (2, 3, 4)
    if brain is None:
        return image.mean(dims, keepdim=True), image.amin(dims, keepdim=True), image.amax(dims, keepdim=True)
    count = brain.sum(dims, keepdim=True).clamp_min(1)
    mean = (image * brain).sum(dims, keepdim=True) / count
    low = torch.where(brain, image, torch.inf).amin(dims, keepdim=True)
    high = torch.where(brain, image, -torch.inf).amax(dims, keepdim=True)
    empty = count.expand_as(mean) == 1  # no (or one) brain voxel: leave the channel unchanged
    return mean, torch.where(empty & low.isinf(), 0.0, low), torch.where(empty & high.isinf(), 0.0, high)


def stretch_contrast(image: torch.Tensor, factor: torch.Tensor, brain: torch.Tensor | None) -> torch.Tensor:
    """(B, C, ...) intensities stretched about each channel's brain mean by `factor` (B, C, 1, 1, 1),
    clipped to the channel's range over the brain (nnU-Net's contrast augmentation)."""
    mean, low, high = _masked_stats(image, brain)
    return torch.minimum(torch.maximum((image - mean) * factor + mean, low), high)


def apply_gamma(image: torch.Tensor, gamma: torch.Tensor, sign: torch.Tensor, brain: torch.Tensor | None) -> torch.Tensor:
    """x ** gamma on each channel's brain intensities rescaled to [0, 1] and mapped back to their
    range (nnU-Net's); with `sign` -1 on the inverted intensities (its inverted gamma). `gamma` and
    `sign` are (B, C, 1, 1, 1); a gamma of 1 leaves a channel as it is."""
    signed = image * sign
    _, low, high = _masked_stats(signed, brain)
    span = (high - low).clamp_min(1e-6)
    changed = ((signed - low) / span).clamp(0, 1).pow(gamma) * span + low
    changed = torch.where(gamma == 1, signed, changed) * sign
    return torch.where(brain, changed, image) if brain is not None else changed


def bias_field(image: torch.Tensor, log_nodes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(B, C, x, y, z) z-scored images under a smooth multiplicative field on their raw intensities.

    The field b is exp of `log_nodes` (B, C, n, n, n) control points upsampled trilinearly to the
    image (corners on the corner voxels); a raw intensity r = σx + μ becomes b·r, which in z-score
    terms is x -> b·(x + k) - k with k = μ/σ, `offsets` (B, C)."""
    field = F.interpolate(log_nodes.float(), size=list(image.shape[2:]), mode="trilinear", align_corners=True).exp()
    k = offsets.float().view(*offsets.shape, 1, 1, 1)
    return field * (image.float() + k) - k


def gaussian_blur(channel: torch.Tensor, sigma: float) -> torch.Tensor:
    """A (x, y, z) volume blurred by a separable Gaussian of `sigma` voxels (truncated at 3 sigma,
    edges replicated)."""
    if sigma <= 0:
        return channel
    radius = max(int(math.ceil(3 * sigma)), 1)
    x = torch.arange(-radius, radius + 1, device=channel.device, dtype=torch.float32)
    kernel = torch.exp(-x**2 / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(channel.dtype)
    out = channel[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis):2 * (2 - axis) + 2] = [radius, radius]
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out[0, 0]


def low_resolution(channel: torch.Tensor, zoom: float) -> torch.Tensor:
    """A (x, y, z) volume down-sampled by `zoom` (nearest) and up-sampled back (trilinear): a scan
    acquired with thicker voxels (nnU-Net's SimulateLowResolution)."""
    if zoom >= 1:
        return channel
    small = [max(int(round(s * zoom)), 1) for s in channel.shape]
    coarse = F.interpolate(channel[None, None].float(), size=small, mode="nearest")
    return F.interpolate(coarse, size=list(channel.shape), mode="trilinear", align_corners=False)[0, 0].to(channel.dtype)


def warp(image: torch.Tensor, label: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample (B, C, x, y, z) images (trilinear) and (B, x, y, z) labels (nearest) or (B, R, x, y, z)
    soft targets (trilinear) through the (B, 3, 4) affine maps `theta` of `F.affine_grid`
    (normalised output -> input coordinates)."""
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    warped = F.grid_sample(image.float(), grid, mode="bilinear", align_corners=False)
    if label.ndim == 5:
        return warped, F.grid_sample(label.float(), grid, mode="bilinear", align_corners=False).to(label.dtype)
    labels = F.grid_sample(label.unsqueeze(1).float(), grid, mode="nearest", align_corners=False)[:, 0]
    return warped, labels.to(label.dtype)
