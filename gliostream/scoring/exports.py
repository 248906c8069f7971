"""Segmentations as NIfTI files in the raw geometry and label convention (BraTS submission naming)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InvalidCaseError
from ..files import replaced_on_success
from ..geometry import AFFINE_ATOL, uncrop
from ..pipeline.naming import CONVENTIONS
from ..pipeline.nifti import open_nifti
from ..pipeline.preprocess import remap_labels
from ..pipeline.validation import check_seg_labels
from ..tasks import TASKS
from .cases import ScoreCase


def to_raw_labels(store_labels: np.ndarray, convention: str, task: str = "GLI") -> np.ndarray:
    """Store labels -> the task's labels in the case's naming (glioma's 3 is 4 in 2018-2021 files)."""
    lut = np.zeros(256, dtype=np.uint8)
    for store, raw in CONVENTIONS[convention].from_store_labels(TASKS[task]).items():
        lut[store] = raw
    return lut[store_labels]


def save_prediction(folder: Path, case: ScoreCase, cropped_labels: np.ndarray) -> Path:
    """Write `<case_id>.nii.gz`: crop undone, original affine and shape, source label convention."""
    labels = to_raw_labels(uncrop(cropped_labels, case.crop_box, case.original_shape), case.convention, case.task)
    image = nib.Nifti1Image(labels.astype(np.uint8), case.affine)
    image.set_qform(case.affine, code=1)
    image.set_sform(case.affine, code=1)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case.case_id}.nii.gz"
    with replaced_on_success(path, suffix=".nii.gz") as tmp:
        nib.save(image, tmp)
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
    convention, task = CONVENTIONS[case.convention], TASKS[case.task]  # checked exactly like an ingested seg
    return remap_labels(check_seg_labels(source, source.load(), convention, task), convention, task)
