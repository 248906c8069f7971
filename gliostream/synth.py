"""Synthetic BraTS-layout cases: a brain-like head with a nested tumour, for demos and tests.

Each case has four modalities with tissue contrasts in the spirit of real MRI (edema bright
on FLAIR/T2, enhancing rim bright on T1ce, necrosis dark on T1ce), a smooth bias field,
noise, per-case intensity scaling, an int16 data type and a BraTS-like affine. Every fourth
case has no enhancing tumour.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from .files import check_output
from .pipeline.naming import CONVENTIONS, MODALITIES

log = logging.getLogger(__name__)

# Mean intensity per tissue: background, white matter, grey matter, CSF, necrosis, edema, enhancing.
_CONTRAST = {
    "t1": (0.0, 0.85, 0.60, 0.20, 0.30, 0.50, 0.65),
    "t1ce": (0.0, 0.85, 0.60, 0.20, 0.25, 0.50, 1.40),
    "t2": (0.0, 0.40, 0.60, 1.20, 1.10, 0.95, 0.80),
    "flair": (0.0, 0.50, 0.60, 0.15, 0.60, 1.25, 0.90),
}


@dataclass(frozen=True)
class SynthConfig:
    """Shape and count of the synthetic dataset."""

    cases: int = 8
    shape: tuple[int, int, int] = (128, 128, 96)
    naming: str = "2021"
    seed: int = 0
    no_et_every: int = 4


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 6) -> np.ndarray:
    """Low-frequency noise in [-1, 1] (a coarse random grid upsampled smoothly)."""
    grid = rng.uniform(-1, 1, size=(coarse,) * 3)
    zoom = [s / coarse for s in shape]
    return ndimage.zoom(grid, zoom, order=1, mode="nearest")[: shape[0], : shape[1], : shape[2]]


def _blob(coords: tuple[np.ndarray, ...], centre: np.ndarray, radii: np.ndarray, wobble: np.ndarray) -> np.ndarray:
    d = sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, radii, strict=True))
    return d < (1.0 + 0.25 * wobble)


def synth_volume(rng: np.random.Generator, shape: tuple[int, int, int], with_et: bool
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One case: modality arrays (int16) and a seg in BraTS 2021 labels (0, 1, 2, 4)."""
    coords = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    wobble = _smooth_noise(rng, shape)
    head = _blob(coords, np.zeros(3), np.array([0.82, 0.88, 0.80]) * rng.uniform(0.92, 1.05, 3), 0.3 * wobble)
    wm = _blob(coords, np.zeros(3), np.array([0.55, 0.62, 0.52]), wobble)
    ventricles = _blob(coords, np.array([0.0, 0.05, 0.1]), np.array([0.10, 0.25, 0.12]), 0.5 * wobble)
    tissue = np.where(head, 2, 0).astype(np.uint8)
    tissue[head & wm] = 1
    tissue[head & ventricles] = 3
    # Tumour: edema around a core; the core is an enhancing rim around necrosis (or all necrosis).
    brain_idx = np.argwhere(head)
    centre_vox = brain_idx[rng.integers(len(brain_idx))]
    centre = np.array([coords[a][tuple(centre_vox)] for a in range(3)])
    r_edema = rng.uniform(0.16, 0.30) * rng.uniform(0.85, 1.15, 3)
    r_core = r_edema * rng.uniform(0.45, 0.65)
    r_nec = r_core * rng.uniform(0.40, 0.60)
    tumour_wobble = _smooth_noise(rng, shape, coarse=8)
    edema = _blob(coords, centre, r_edema, tumour_wobble) & head
    core = _blob(coords, centre, r_core, tumour_wobble) & head
    necrosis = _blob(coords, centre, r_nec, tumour_wobble) & head
    seg = np.zeros(shape, dtype=np.uint8)
    seg[edema] = 2
    seg[core] = 4 if with_et else 1
    seg[necrosis] = 1
    tissue[edema] = 5
    tissue[core] = 6 if with_et else 4
    tissue[necrosis] = 4
    bias = 1.0 + 0.1 * _smooth_noise(rng, shape, coarse=3)
    mods = {}
    for m in MODALITIES:
        means = np.asarray(_CONTRAST[m], dtype=np.float32)
        img = means[tissue] * bias + rng.normal(0, 0.04, shape).astype(np.float32)
        img = img * rng.uniform(300, 1500) + rng.uniform(0, 200)
        img[~head] = 0
        mods[m] = np.clip(np.rint(img), 1, 32000).astype(np.int16) * head
    return mods, seg


def synth_dataset(out_dir: str | Path, config: SynthConfig = SynthConfig(), progress: bool = True) -> list[Path]:
    """Write `config.cases` cases in BraTS layout (one folder per case) and return their folders."""
    conv = CONVENTIONS[config.naming]
    out = check_output(out_dir, "the output folder")
    out.mkdir(parents=True, exist_ok=True)
    spacing = 240.0 / config.shape[0]
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = [0.0, 239.0, 0.0]
    folders = []
    for i in tqdm(range(config.cases), desc="synth", unit="case", disable=not progress):
        rng = np.random.default_rng([config.seed, i])
        case_id = f"BraTS2021_{i:05d}" if conv.name == "2021" else f"BraTS-GLI-{i:05d}-000"
        with_et = not (config.no_et_every and i % config.no_et_every == config.no_et_every - 1)
        mods, seg = synth_volume(rng, config.shape, with_et)
        folder = out / case_id
        folder.mkdir(exist_ok=True)
        if conv.name == "2023":
            seg = np.where(seg == 4, 3, seg).astype(np.uint8)
        for role, arr in list(mods.items()) + [("seg", seg)]:
            img = nib.Nifti1Image(arr, affine)
            img.header.set_xyzt_units("mm", "sec")
            nib.save(img, folder / f"{case_id}{conv.separator}{conv.suffixes[role]}.nii.gz")
        folders.append(folder)
    log.info("wrote %d synthetic cases (%s naming) to %s", len(folders), conv.name, out)
    return folders
