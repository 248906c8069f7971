"""Synthetic BraTS-layout cases: a brain-like head with a nested tumour, for demos and tests.

Each case has four modalities with tissue contrasts in the spirit of real MRI (edema bright
on FLAIR/T2, enhancing rim bright on T1ce, necrosis dark on T1ce), a smooth bias field,
noise, per-case intensity scaling, an int16 data type and a BraTS-like affine. Every fourth
case has no enhancing tumour. Each task's cases carry its labels (`--task`): a resection cavity
(fluid, dark on FLAIR) beside the tumour in every other post-treatment glioma and metastasis case,
a cyst inside the core of paediatric tumours, one gross tumour volume for meningioma radiotherapy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm import tqdm

from .errors import ConfigError
from .files import check_output
from .pipeline.naming import CONVENTIONS, MODALITIES
from .tasks import task as task_named

log = logging.getLogger(__name__)

# Mean intensity per tissue: background, white matter, grey matter, CSF, necrosis, edema, enhancing,
# resection cavity (fluid), cyst.
_CONTRAST = {
    "t1": (0.0, 0.85, 0.60, 0.20, 0.30, 0.50, 0.65, 0.15, 0.25),
    "t1ce": (0.0, 0.85, 0.60, 0.20, 0.25, 0.50, 1.40, 0.15, 0.30),
    "t2": (0.0, 0.40, 0.60, 1.20, 1.10, 0.95, 0.80, 1.30, 1.45),
    "flair": (0.0, 0.50, 0.60, 0.15, 0.60, 1.25, 0.90, 0.10, 0.75),
}
# The seg codes synth_volume writes: BraTS 2021 glioma labels, and two more tissues.
NECROSIS, EDEMA, ENHANCING, CAVITY, CYST = 1, 2, 4, 6, 7

# synth_volume's codes -> each task's labels (2023+ naming; GLI in 2021 naming keeps the codes).
_TASK_LABELS: dict[str, dict[int, int]] = {
    "GLI": {NECROSIS: 1, EDEMA: 2, ENHANCING: 3, CAVITY: 4},
    "MET": {NECROSIS: 1, EDEMA: 2, ENHANCING: 3, CAVITY: 4},
    "PED": {ENHANCING: 1, NECROSIS: 2, CYST: 3, EDEMA: 4},
    "MEN-RT": {NECROSIS: 1, ENHANCING: 1},
}
_GLIOMA = {NECROSIS: 1, EDEMA: 2, ENHANCING: 3}


@dataclass(frozen=True)
class SynthConfig:
    """Shape and count of the synthetic dataset."""

    cases: int = 8
    shape: tuple[int, int, int] = (128, 128, 96)
    naming: str = "2021"
    seed: int = 0
    no_et_every: int = 4
    task: str = "GLI"  # whose labels the segs hold (`tasks.TASKS`); tasks other than GLI use 2023 naming

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", task_named(self.task).name)
        if self.task != "GLI" and self.naming == "2021":
            raise ConfigError(f"the {self.task} task has no BraTS 2018-2021 files; use --naming 2023")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 6) -> np.ndarray:
    """Low-frequency noise in [-1, 1] (a coarse random grid upsampled smoothly)."""
    grid = rng.uniform(-1, 1, size=(coarse,) * 3)
    zoom = [s / coarse for s in shape]
    return ndimage.zoom(grid, zoom, order=1, mode="nearest")[: shape[0], : shape[1], : shape[2]]


def _blob(coords: tuple[np.ndarray, ...], centre: np.ndarray, radii: np.ndarray, wobble: np.ndarray) -> np.ndarray:
    d = sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, radii, strict=True))
    return d < (1.0 + 0.25 * wobble)


def synth_volume(rng: np.random.Generator, shape: tuple[int, int, int], with_et: bool, cavity: bool = False,
                 cyst: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One case: modality arrays (int16) and a seg in BraTS 2021 labels (0, 1, 2, 4), with CAVITY
    (a fluid blob beside the tumour) and CYST (inside the core) where asked for."""
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
    if cavity:  # where the tumour was resected: beside what remains, never inside it
        side = np.zeros(3)
        side[int(rng.integers(3))] = rng.choice([-1.0, 1.0])
        hole = _blob(coords, centre + side * r_edema * 1.3, r_edema * 0.6, tumour_wobble) & head & (seg == 0)
        seg[hole] = CAVITY
        tissue[hole] = 7
    if cyst:
        pocket = _blob(coords, centre + r_core * 0.3, r_core * 0.45, tumour_wobble) & core
        seg[pocket] = CYST
        tissue[pocket] = 8
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
        case_id = f"BraTS2021_{i:05d}" if conv.name == "2021" else f"BraTS-{config.task}-{i:05d}-000"
        with_et = not (config.no_et_every and i % config.no_et_every == config.no_et_every - 1)
        cavity = conv.name == "2023" and config.task in ("GLI", "MET") and i % 2 == 1
        mods, seg = synth_volume(rng, config.shape, with_et, cavity=cavity, cyst=config.task == "PED")
        folder = out / case_id
        folder.mkdir(exist_ok=True)
        if conv.name == "2023":
            seg = task_labels(seg, config.task)
        for role, arr in list(mods.items()) + [("seg", seg)]:
            img = nib.Nifti1Image(arr, affine)
            img.header.set_xyzt_units("mm", "sec")
            nib.save(img, folder / f"{case_id}{conv.separator}{conv.suffixes[role]}.nii.gz")
        folders.append(folder)
    log.info("wrote %d synthetic %s cases (%s naming) to %s", len(folders), config.task, conv.name, out)
    return folders


def task_labels(seg: np.ndarray, task: str) -> np.ndarray:
    """synth_volume's codes as `task`'s labels (2023+ naming); tissue a task does not label is 0."""
    lut = np.zeros(256, np.uint8)
    for code, label in _TASK_LABELS.get(task, _GLIOMA).items():
        lut[code] = label
    return lut[seg]
