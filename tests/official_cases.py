"""The segmentation pairs the official BraTS evaluation is checked on, built the same way by the test
suite and by `bench/official_reference.py` (which runs `BraTS-evaluation` itself, in its own virtual
environment): numpy, scipy and nibabel only, deterministic.

Hand-worked pairs (a split lesion, a merged one, a far false positive, empty pairs, one-sided
empties, no overlap) and, where `../shared/realdata` is present, real references against perturbed
copies of themselves (a shell removed, a shift, a component dropped with a blob added, a relabelling).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

SHAPE = (48, 44, 40)
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
REAL_CASES = ("BraTS-GLI-00000-000", "BraTS2021_00006", "Brats18_CBICA_APY_1")
"""The real cases perturbed: a 2023-named and a 2021-named one, so both conventions' files are read, and
one whose eroded copy has matchings that tie (the evaluator's component numbering breaks the tie)."""


def _ball(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius ** 2


def _box(shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return mask


def _tumour(shape: tuple[int, ...] = SHAPE, centre: tuple[float, ...] = (22, 20, 18), radius: float = 11) -> np.ndarray:
    """Edema (2) around a core of necrosis (1) and an enhancing rim (3), labels of 2023+."""
    label = np.zeros(shape, np.uint8)
    label[_ball(shape, centre, radius)] = 2
    label[_ball(shape, centre, radius * 0.6)] = 3
    label[_ball(shape, centre, radius * 0.35)] = 1
    return label


def hand_pairs() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, prediction, reference) of small hand-worked cases, labels 0-4."""
    ref = _tumour()
    yield "identical", ref.copy(), ref
    shifted = np.roll(ref, 2, axis=0)
    yield "shifted", shifted, ref
    # One reference lesion predicted as two pieces (a slab cut through it).
    split = ref.copy()
    split[21:24] = 0
    yield "split-prediction", split, ref
    # Two reference lesions a few voxels apart, predicted as one merged blob.
    two = np.zeros(SHAPE, np.uint8)
    two[_box(SHAPE, (8, 8, 8), (18, 20, 20))] = 2
    two[_box(SHAPE, (21, 8, 8), (32, 20, 20))] = 2
    merged = np.zeros(SHAPE, np.uint8)
    merged[_box(SHAPE, (8, 8, 8), (32, 20, 20))] = 2
    yield "merged-prediction", merged, two
    # A far false positive of every label, and a missed small lesion.
    far = ref.copy()
    far[_box(SHAPE, (40, 36, 32), (45, 41, 37))] = 3
    far[_box(SHAPE, (2, 36, 2), (6, 40, 6))] = 1
    missed = ref.copy()
    missed[_box(SHAPE, (40, 2, 30), (44, 6, 34))] = 3
    yield "far-false-positives", far, missed
    # A resection cavity (4) in both, partly overlapping; the reference has no enhancing tumour.
    cavity_ref = _tumour()
    cavity_ref[cavity_ref == 3] = 1
    cavity_ref[_ball(SHAPE, (36, 32, 30), 5)] = 4
    cavity_pred = cavity_ref.copy()
    cavity_pred[_ball(SHAPE, (37, 33, 30), 5)] = 4
    cavity_pred[_box(SHAPE, (20, 20, 18), (22, 22, 20))] = 3
    yield "cavity-spurious-et", cavity_pred, cavity_ref
    empty = np.zeros(SHAPE, np.uint8)
    yield "both-empty", empty, empty
    yield "empty-prediction", empty, ref
    yield "empty-reference", ref, empty
    # Both present, no voxel shared.
    apart = np.zeros(SHAPE, np.uint8)
    apart[_ball(SHAPE, (10, 10, 10), 5)] = 2
    other = np.zeros(SHAPE, np.uint8)
    other[_ball(SHAPE, (34, 32, 28), 6)] = 2
    yield "no-overlap", apart, other
    # A tumour touching the volume's edge, predicted with a one-voxel-thinner shell.
    edge = _tumour(centre=(4, 20, 18), radius=10)
    yield "at-the-edge", np.where(ndimage.binary_erosion(edge > 0), edge, 0).astype(np.uint8), edge


def _perturbations(ref: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    tumour = ref > 0
    shell = tumour & ~ndimage.binary_erosion(tumour, iterations=1)
    yield "eroded", np.where(shell, 0, ref).astype(np.uint8)
    yield "shifted", np.roll(ref, (2, -1, 1), axis=(0, 1, 2))
    dropped = ref.copy()
    components, n = ndimage.label(ref == 3, structure=np.ones((3, 3, 3)))
    if n:
        sizes = np.bincount(components.ravel())[1:]
        dropped[components == 1 + int(np.argmin(sizes))] = 1
    box = tuple(slice(int(idx.max()) + 4, int(idx.max()) + 8) for idx in np.nonzero(tumour))
    dropped[box] = 3
    yield "dropped-and-blob", dropped
    relabelled = ref.copy()
    core = (ref == 1) & ndimage.binary_dilation(ref == 3, iterations=2)
    relabelled[core] = 3
    yield "relabelled", relabelled


def read_reference(case_dir: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A real case's seg in the 2023+ labels (a 2018-2021 4 read as 3), and its spacing."""
    seg = next(p for p in case_dir.iterdir() if p.name.lower().endswith(("seg.nii.gz", "seg.nii")))
    image = nib.load(seg)
    label = np.asarray(image.dataobj).astype(np.uint8)
    label[label == 4] = 3
    return label, tuple(float(z) for z in image.header.get_zooms()[:3])


def labelled_cases(root: Path = REALDATA) -> tuple[str, ...]:
    """Every case folder of `root` with a seg file."""
    return tuple(sorted(d.name for d in root.iterdir()
                        if d.is_dir() and any(p.name.lower().endswith(("seg.nii.gz", "seg.nii")) for p in d.iterdir())))


def real_pairs(root: Path = REALDATA, cases: tuple[str, ...] = REAL_CASES
               ) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    """(name, prediction, reference, spacing) of the real cases against perturbed copies."""
    for case in cases:
        ref, spacing = read_reference(root / case)
        for name, prediction in _perturbations(ref):
            yield f"{case}.{name}", prediction, ref, spacing
