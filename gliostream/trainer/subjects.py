"""TorchIO subjects whose images are read from the store's Zarr arrays, in the loader workers."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchio as tio

from ..errors import StoreError
from ..geometry import shifted_affine
from ..store import layout
from ..store.reader import array_path, existing_record, read_case_arrays, read_locations

LOCATIONS_KEY = "tumour_locations"
ORIGIN_KEY = "origin"
STORED_SHAPE_KEY = "stored_shape"


def read_store_image(path: str | Path, root: str, case_id: str) -> tuple[torch.Tensor, np.ndarray]:
    """TorchIO reader for a (4, x, y, z) float16 image array: kept float16 (half the bytes), checked
    against the case's record (`reader.read_array`: StoreError on damage)."""
    record, (image,) = read_case_arrays(root, case_id, (layout.IMAGE,))
    return torch.from_numpy(image), record.cropped_affine


def read_store_label(path: str | Path, root: str, case_id: str) -> tuple[torch.Tensor, np.ndarray]:
    """TorchIO reader for an (x, y, z) uint8 label array, as (1, x, y, z), checked against the record."""
    record, (label,) = read_case_arrays(root, case_id, (layout.LABEL,))
    return torch.from_numpy(label[np.newaxis]), record.cropped_affine


class PrepareSubject:
    """Subject transform run in the loader worker, after the arrays were read.

    Adds the precomputed tumour voxel coordinates, and zero-pads the volume just enough for
    every window the sampler can draw (centred on any of those voxels, or anywhere when the
    case is smaller than a patch) to lie inside it. The padding is paid once per subject in
    a worker, and every patch is then a view: the only copy in the training process is the
    batch collation. `ORIGIN_KEY` is where the stored crop's first voxel now lies.
    """

    def __init__(self, patch_size: tuple[int, int, int]) -> None:
        self.patch_size = tuple(int(s) for s in patch_size)

    def __call__(self, subject: tio.Subject) -> tio.Subject:
        locations = read_locations(subject["store"], subject["case_id"])
        shape = np.array(subject.spatial_shape)
        size = np.array(self.patch_size)
        half = size // 2
        low = np.maximum(0, size - shape)
        high = low.copy()
        coords = np.concatenate([c.astype(np.int64) for c in locations.values()])
        if len(coords):
            low = np.maximum(low, half - coords.min(axis=0))
            high = np.maximum(high, coords.max(axis=0) - half + size - shape)
        if (low > 0).any() or (high > 0).any():
            padding = [int(v) for pair in zip(low[::-1], high[::-1], strict=True) for v in pair]  # F.pad: last axis first
            for image in (subject["image"], subject["label"]):
                image.set_data(F.pad(image.data, padding))
                image.affine = shifted_affine(image.affine, -low)
        subject[LOCATIONS_KEY] = locations
        subject[ORIGIN_KEY] = tuple(int(v) for v in low)
        subject[STORED_SHAPE_KEY] = tuple(int(v) for v in shape)
        return subject


def store_subject(root: str | Path, case_id: str) -> tio.Subject:
    """A lazy subject (nothing read yet) for one labelled case of the store."""
    record = existing_record(root, case_id)
    if not record.labelled:
        raise StoreError(f"{layout.case_dir(Path(root), case_id)}: case has no segmentation")
    where = {"root": str(root), "case_id": case_id}
    return tio.Subject(
        image=tio.ScalarImage(array_path(root, case_id, layout.IMAGE), reader=partial(read_store_image, **where)),
        label=tio.LabelMap(array_path(root, case_id, layout.LABEL), reader=partial(read_store_label, **where)),
        case_id=case_id,
        case_path=str(layout.case_dir(Path(root), case_id)),
        store=str(root),
    )


def store_subjects_dataset(root: str | Path, case_ids: list[str],
                           patch_size: tuple[int, int, int]) -> tio.SubjectsDataset:
    """A TorchIO SubjectsDataset over labelled store cases; loading happens in `__getitem__`."""
    if not case_ids:
        raise StoreError(f"{root}: no labelled case to train on")
    return tio.SubjectsDataset([store_subject(root, c) for c in case_ids], transform=PrepareSubject(patch_size))
