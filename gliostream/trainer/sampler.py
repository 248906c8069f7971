"""A TorchIO label sampler driven by the store's precomputed tumour coordinates.

Unlike `tio.LabelSampler` it builds no per-voxel probability map (the store already holds
sampled tumour voxels per region, as nnU-Net's class locations), and patches may overhang
the volume, zero-padded, so a tumour at the very edge of the brain crop can still be the
centre of a patch (TorchIO zeroes the probability within half a patch of the border).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np
import torch
import torchio as tio

from ..geometry import shifted_affine
from ..tasks import ALL_REGIONS
from .subjects import LOCATIONS_KEY, ORIGIN_KEY, STORED_SHAPE_KEY

TUMOUR_CENTRED = "tumour_centred"
START = "start"
BACKGROUND_TRIES = 16


def padded_window(volume: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """The window [start, start + size) of the last three axes, zero where it leaves the volume.

    A window inside the volume is a view (no copy: the batch collation makes the one copy).
    """
    spatial = volume.shape[-3:]
    inside = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
    if all(s >= 0 and s + n <= dim for s, n, dim in zip(start, size, spatial, strict=True)):
        return volume[(..., *inside)]
    out = volume.new_zeros((*volume.shape[:-3], *size))
    src, dst = [], []
    for s, n, dim in zip(start, size, spatial, strict=True):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(..., *dst)] = volume[(..., *src)]
    return out


class TumourSampler(tio.data.PatchSampler):
    """Yields patches centred on a tumour voxel with probability `tumour_fraction`, else on a
    random non-tumour position. The tumour region (WT, TC, ET) is drawn uniformly among those
    present in the case, so small enhancing regions are seen as often as edema.

    Randomness comes only from `self.rng`, reseeded by the queue for each epoch: the patch
    sequence is a function of the seed, whatever the worker timing.
    """

    def __init__(self, patch_size: Sequence[int], tumour_fraction: float = 0.5,
                 regions: Sequence[str] = ALL_REGIONS, seed: int = 0) -> None:
        super().__init__(tuple(patch_size))
        self.tumour_fraction = tumour_fraction
        self.regions = tuple(regions)
        self.size = tuple(int(s) for s in self.patch_size)
        self.rng = np.random.default_rng(seed)

    def reseed(self, *seed: int) -> None:
        self.rng = np.random.default_rng(list(seed))

    def __call__(self, subject: tio.Subject, num_patches: int | None = None) -> Generator[tio.Subject]:
        # No "patch larger than image" refusal: windows are zero-padded where they overhang.
        return self._generate_patches(subject, num_patches)

    def _generate_patches(self, subject: tio.Subject, num_patches: int | None = None) -> Generator[tio.Subject]:
        drawn = 0
        while num_patches is None or drawn < num_patches:
            start, centred = self.draw_start(subject)
            yield self.extract(subject, start, centred)
            drawn += 1

    def draw_start(self, subject: tio.Subject) -> tuple[tuple[int, ...], bool]:
        """First voxel of the next patch, and whether it was centred on a tumour voxel."""
        half = np.array(self.size) // 2
        locations = subject.get(LOCATIONS_KEY, {})
        present = [r for r in self.regions if len(locations.get(r, ())) > 0]
        if present and self.rng.random() < self.tumour_fraction:
            coords = locations[present[self.rng.integers(len(present))]]
            centre = coords[self.rng.integers(len(coords))].astype(np.int64)
            return tuple(int(v) for v in centre - half), True
        return self._background_start(subject, half), False

    def _background_start(self, subject: tio.Subject, half: np.ndarray) -> tuple[int, ...]:
        """A uniformly placed patch (inside the case where it fits) whose centre is not tumour."""
        shape = np.array(subject.get(STORED_SHAPE_KEY, subject.spatial_shape))
        origin = np.array(subject.get(ORIGIN_KEY, (0, 0, 0)))
        lo = np.minimum(0, shape - self.size)
        hi = np.maximum(0, shape - self.size)
        label = subject["label"].data[0]
        start = lo
        for _ in range(BACKGROUND_TRIES):
            start = self.rng.integers(lo, hi + 1)
            centre = np.clip(start + half, 0, shape - 1) + origin
            if label[tuple(centre)] == 0:
                break
        return tuple(int(v) for v in start)

    def extract(self, subject: tio.Subject, start: Sequence[int], centred: bool) -> tio.Subject:
        """The patch whose first voxel is `start` of the stored case (image float16, label uint8)."""
        image, label = subject["image"], subject["label"]
        at = [s + o for s, o in zip(start, subject.get(ORIGIN_KEY, (0, 0, 0)), strict=True)]
        affine = shifted_affine(image.affine, at)
        return tio.Subject(
            image=tio.ScalarImage(tensor=padded_window(image.data, at, self.size), affine=affine),
            label=tio.LabelMap(tensor=padded_window(label.data, at, self.size), affine=affine),
            case_id=subject["case_id"],
            **{START: torch.tensor(start), TUMOUR_CENTRED: centred},
        )
