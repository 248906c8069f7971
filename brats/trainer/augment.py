"""Batch augmentation on the training device: flips, intensity scale/shift, gamma, noise, small affine.

Applied to whole batches where they already are (the GPU when there is one), after the
float16 patches were copied over, instead of per subject on CPU workers as TorchIO transforms
would. Parameters come from a seeded CPU generator and the noise from a seeded generator on
the device, so a run is reproducible and its augmentation state can be checkpointed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import AugmentConfig


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
    """Random augmentation of (image float (B, C, x, y, z), label integer (B, x, y, z)) batches."""

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
        chosen = torch.rand((batch, 6), generator=gen)  # affine, noise, and spares for stable streams
        if cfg.affine_prob > 0:
            image, label = self._affine(image, label, chosen[:, 0] < cfg.affine_prob)
        flips = torch.rand((batch, 3), generator=gen) < cfg.flip_prob
        for b in range(batch):
            axes = [a for a in range(3) if flips[b, a]]
            if axes:
                image[b] = image[b].flip([a + 1 for a in axes])
                label[b] = label[b].flip(axes)
        scale = torch.where(torch.rand((batch, channels), generator=gen) < cfg.scale_prob,
                            _uniform(gen, (batch, channels), cfg.scale_range), torch.ones(()))
        shift = torch.where(torch.rand((batch, channels), generator=gen) < cfg.shift_prob,
                            _uniform(gen, (batch, channels), cfg.shift_range), torch.zeros(()))
        view = (batch, channels, 1, 1, 1)
        image = image * self._to_device(scale).view(view) + self._to_device(shift).view(view)
        gamma = torch.where(torch.rand((batch, channels), generator=gen) < cfg.gamma_prob,
                            _uniform(gen, (batch, channels), cfg.gamma_range), torch.ones(()))
        for b, c in (gamma != 1).nonzero().tolist():
            image[b, c] = self._gamma(image[b, c], float(gamma[b, c]))
        stds = _uniform(gen, (batch,), cfg.noise_std)
        for b in (chosen[:, 1] < cfg.noise_prob).nonzero().flatten().tolist():
            noise = torch.randn(image.shape[1:], generator=self.noise, device=self.noise.device)
            image[b] += noise.to(image.device, image.dtype) * float(stds[b])
        return image, label

    def _to_device(self, values: torch.Tensor) -> torch.Tensor:
        """Parameters drawn on the CPU, copied without a host sync (page-locked, asynchronous)."""
        if self.device.type != "cuda":
            return values
        return values.pin_memory().to(self.device, non_blocking=True)

    @staticmethod
    def _gamma(channel: torch.Tensor, gamma: float) -> torch.Tensor:
        """x ** gamma on the channel rescaled to [0, 1], then mapped back to its range (nnU-Net's)."""
        low, high = channel.min(), channel.max()
        span = (high - low).clamp_min(1e-6)
        return ((channel - low) / span).pow(gamma) * span + low

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


def warp(image: torch.Tensor, label: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample (B, C, x, y, z) images (trilinear) and (B, x, y, z) labels (nearest) through the
    (B, 3, 4) affine maps `theta` of `F.affine_grid` (normalised output -> input coordinates)."""
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    warped = F.grid_sample(image.float(), grid, mode="bilinear", align_corners=False)
    labels = F.grid_sample(label.unsqueeze(1).float(), grid, mode="nearest", align_corners=False)[:, 0]
    return warped, labels.to(label.dtype)
