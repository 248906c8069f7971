"""How much GPU memory one training step of a config needs, estimated before a GPU is touched.

The estimate is built from the network's own tensors: a forward pass and the loss on a small
patch on the CPU, under the run's precision (16-bit autocast is emulated by the CPU's bf16
autocast, which casts the same layers), counts every tensor autograd saves for the backward
pass (each storage once). Saved bytes grow linearly with the patch's voxels, so two small
patches give the line, and the run's patch and batch scale it. To that come the weights, their
gradients and AdamW's two moments (fp32), the backward pass's working set (the largest saved
tensor and its gradient), the data batch on the device with the augmentation's copies and the
region targets, and a margin for cuDNN workspaces and allocator fragmentation.
`bench/plan_memory.py` checks the estimate against real CPU steps (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..regions import region_targets
from ..tasks import regions_of
from .config import TrainConfig
from .loss import deep_supervision_loss
from .registry import build_network

GIB = 1 << 30
MARGIN_FRACTION, MARGIN_BYTES = 0.15, 256 << 20  # cuDNN workspaces, fragmentation of the caching allocator
# Per voxel and sample of the batch on the device: the float16 batch copied in (8 B), made float32
# (16 B) and augmented out of place (two float32 copies: 32 B), the int64 label (8 B) and the three
# float32 region targets (12 B).
BATCH_BYTES_PER_VOXEL = 8 + 16 + 32 + 8 + 12


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training step needs at its peak, by what holds them."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int  # saved for the backward pass
    backward: int  # the backward pass's working set beyond what was saved
    batch: int
    margin: int

    @property
    def total(self) -> int:
        return (self.parameters + self.gradients + self.optimizer + self.activations + self.backward + self.batch
                + self.margin)

    @property
    def per_step(self) -> int:
        """What a step adds to the resident weights, gradients and optimiser state."""
        return self.activations + self.backward + self.batch

    def line(self) -> str:
        gib = lambda b: f"{b / GIB:.2f}"  # noqa: E731
        return (f"{gib(self.total)} GiB (weights {gib(self.parameters)}, gradients {gib(self.gradients)}, AdamW "
                f"{gib(self.optimizer)}, saved activations {gib(self.activations)}, backward {gib(self.backward)}, "
                f"batch {gib(self.batch)}, margin {gib(self.margin)})")


def _saved_bytes(config: TrainConfig, side: int, amp: bool) -> tuple[int, int]:
    """(bytes autograd saves, largest saved storage) for one sample of a cube of `side` voxels."""
    torch.manual_seed(0)
    model = build_network(config.model).train()
    image = torch.randn(1, config.model.in_channels, side, side, side)
    regions = regions_of(config.task, config.regions)
    targets = region_targets(torch.randint(0, 5, (1, side, side, side)), regions)
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        deep_supervision_loss(model(image), targets, config.loss)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}  # counted as parameters
    saved = {ptr: size for ptr, size in storages.items() if ptr not in weights}
    return sum(saved.values()), max(saved.values(), default=0)


@dataclass(frozen=True)
class StepProfile:
    """What one sample costs, measured on the model: saved bytes per voxel and the fixed part, the
    largest saved storage per voxel, and the parameter bytes (fp32)."""

    per_voxel: float
    fixed: float
    largest_per_voxel: float
    parameters: int

    def estimate(self, batch: int, patch: tuple[int, int, int]) -> MemoryEstimate:
        voxels = math.prod(patch) * batch
        activations = int(self.fixed + self.per_voxel * voxels)
        backward = int(2 * self.largest_per_voxel * voxels)  # the largest tensor's gradient and its input's
        data = BATCH_BYTES_PER_VOXEL * voxels
        params = self.parameters
        subtotal = 4 * params + activations + backward + data
        return MemoryEstimate(parameters=params, gradients=params, optimizer=2 * params, activations=activations,
                              backward=backward, batch=data, margin=int(MARGIN_FRACTION * subtotal) + MARGIN_BYTES)


def profile_is_cheap(config: TrainConfig) -> bool:
    """Whether `step_profile` takes at most a few seconds and a few hundred MB on a CPU (its larger
    patch is 3 x 2^levels voxels a side: deep models need big patches)."""
    return (3 * config.model.divisor) ** 3 * config.model.base_channels <= 4 * 48**3 * 32


def step_profile(config: TrainConfig, amp: bool) -> StepProfile:
    """Measure the model of `config` on two small patches (a second or two on a CPU)."""
    divisor = config.model.divisor
    sides = (2 * divisor, 3 * divisor)
    (small, _), (large, large_max) = (_saved_bytes(config, s, amp) for s in sides)
    per_voxel = (large - small) / (sides[1] ** 3 - sides[0] ** 3)
    params = sum(p.numel() for p in build_network(config.model).parameters()) * 4
    return StepProfile(per_voxel, max(0.0, small - per_voxel * sides[0] ** 3), large_max / sides[1] ** 3, params)


def estimate_step_memory(config: TrainConfig, amp: bool) -> MemoryEstimate:
    """Peak memory of one training step (`amp`: 16-bit autocast, as on a GPU by default)."""
    return step_profile(config, amp).estimate(config.stream.batch_size, config.patch_size)


@dataclass(frozen=True)
class Fit:
    """What fits a GPU of `budget` bytes: the config's own estimate, and the largest batch (at its
    patch) and cubic patch (at its batch) under the budget (0 when none)."""

    estimate: MemoryEstimate
    budget: int
    largest_batch: int
    largest_patch: int

    @property
    def fits(self) -> bool:
        return self.estimate.total <= self.budget

    def line(self) -> str:
        verdict = "fits" if self.fits else "does NOT fit"
        return (f"one training step needs about {self.estimate.line()}: {verdict} in {self.budget / GIB:.1f} GiB; "
                f"largest batch at this patch: {self.largest_batch or 'none'}; largest cubic patch at this batch: "
                f"{f'{self.largest_patch}^3' if self.largest_patch else 'none'}")


def plan_fit(config: TrainConfig, amp: bool, budget_gib: float) -> Fit:
    """The estimate of `config` against `budget_gib`, and the largest batch and patch that fit it."""
    budget = int(budget_gib * GIB)
    profile = step_profile(config, amp)
    batch, patch = config.stream.batch_size, config.patch_size
    largest_batch = 0
    while largest_batch < 1024 and profile.estimate(largest_batch + 1, patch).total <= budget:
        largest_batch += 1
    divisor = config.model.divisor
    side, largest_patch = 2 * divisor, 0
    while side <= 512 and profile.estimate(batch, (side,) * 3).total <= budget:
        largest_patch, side = side, side + divisor
    return Fit(profile.estimate(batch, patch), budget, largest_batch, largest_patch)
