"""Segmentations as NIfTI files in the raw geometry and label convention (BraTS submission naming)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InvalidCaseError
from ..pipeline.naming import CONVENTIONS
from ..pipeline.nifti import open_nifti
from ..pipeline.preprocess import uncrop
from .cases import ScoreCase

AFFINE_ATOL = 1e-3


def to_raw_labels(store_labels: np.ndarray, convention: str) -> np.ndarray:
    """Store labels (3 = enhancing) -> the labels of the case's convention (4 for 2018-2021)."""
    lut = np.zeros(256, dtype=np.uint8)
    for store, raw in CONVENTIONS[convention].from_store_labels().items():
        lut[store] = raw
    return lut[store_labels]


def to_store_labels(raw_labels: np.ndarray, convention: str, path: Path) -> np.ndarray:
    """Raw labels -> store labels; any value outside the convention is refused."""
    conv = CONVENTIONS[convention]
    values = np.unique(raw_labels)
    bad = [int(v) for v in values if int(v) not in conv.labels]
    if bad:
        raise InvalidCaseError(path, f"labels {bad} are not BraTS {convention} labels {list(conv.labels)}")
    lut = np.zeros(int(values.max()) + 1 if len(values) else 1, dtype=np.uint8)
    for raw, store in conv.to_store_labels().items():
        if raw < len(lut):
            lut[raw] = store
    return lut[raw_labels.astype(np.int64)]


def save_prediction(folder: Path, case: ScoreCase, cropped_labels: np.ndarray) -> Path:
    """Write `<case_id>.nii.gz`: crop undone, original affine and shape, source label convention."""
    labels = to_raw_labels(uncrop(cropped_labels, case.crop_box, case.original_shape), case.convention)
    image = nib.Nifti1Image(labels.astype(np.uint8), case.affine)
    image.set_qform(case.affine, code=1)
    image.set_sform(case.affine, code=1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case.case_id}.nii.gz"
    tmp = folder / f".{case.case_id}.tmp.nii.gz"
    nib.save(image, tmp)
    os.replace(tmp, path)
    return path


def read_prediction(folder: Path, case: ScoreCase) -> np.ndarray:
    """The prediction file of a case, checked against its reference geometry, in store labels."""
    path = folder / f"{case.case_id}.nii.gz"
    if not path.is_file():
        raise InvalidCaseError(path, "no prediction file for this case (expected <case_id>.nii.gz)")
    source = open_nifti(path)
    if tuple(source.shape) != tuple(case.original_shape):
        raise InvalidCaseError(path, f"shape {tuple(source.shape)} differs from the reference {tuple(case.original_shape)}")
    if not np.allclose(source.affine, case.affine, atol=AFFINE_ATOL):
        raise InvalidCaseError(path, "affine differs from the reference's (another space or orientation)")
    data = source.load()
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
            raise InvalidCaseError(path, "holds non-integer label values")
        data = data.astype(np.int64)
    if data.min() < 0:
        raise InvalidCaseError(path, f"holds negative label {int(data.min())}")
    return to_store_labels(data, case.convention, path)
