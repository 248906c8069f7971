import numpy as np
import pytest

from gliostream.errors import InvalidCaseError
from gliostream.geometry import uncrop
from gliostream.pipeline.discovery import discover_cases
from gliostream.pipeline.naming import BRATS_2021, BRATS_2023
from gliostream.pipeline.preprocess import (
    PreprocessConfig,
    brain_bounding_box,
    preprocess_case,
    remap_labels,
    sample_locations,
    zscore_nonzero,
)
from gliostream.pipeline.validation import load_case

from .helpers import brain_arrays, write_case


def test_bounding_box_counts_negative_values_and_seg():
    a = np.zeros((10, 10, 10), np.int16)
    a[2, 3, 4] = -5  # real skull-stripped scans have small negatives inside the brain
    a[6, 7, 5] = 9
    seg = np.zeros_like(a, dtype=np.uint8)
    seg[8, 3, 4] = 2
    assert brain_bounding_box([a, np.zeros_like(a)], None) == (slice(2, 7), slice(3, 8), slice(4, 6))
    assert brain_bounding_box([a], seg) == (slice(2, 9), slice(3, 8), slice(4, 6))


def test_zscore_uses_nonzero_voxels_only_and_keeps_background_zero():
    rng = np.random.default_rng(0)
    a = np.zeros((30, 30, 30), np.float32)
    a[5:25, 5:25, 5:25] = rng.normal(1000, 80, (20, 20, 20))
    out = np.empty(a.shape, np.float16)
    mean, std, n = zscore_nonzero(a, out)
    inside = a != 0
    assert n == inside.sum()
    assert mean == pytest.approx(a[inside].mean(dtype=np.float64), rel=1e-6)
    assert std == pytest.approx(a[inside].std(dtype=np.float64), rel=1e-5)
    assert out.dtype == np.float16 and np.all(out[~inside] == 0)
    assert abs(out[inside].astype(np.float64).mean()) < 1e-3
    assert out[inside].astype(np.float64).std() == pytest.approx(1.0, abs=1e-3)


def test_label_remap_per_convention():
    seg = np.array([0, 1, 2, 4], np.uint8)
    np.testing.assert_array_equal(remap_labels(seg, BRATS_2021), [0, 1, 2, 3])
    np.testing.assert_array_equal(remap_labels(np.array([0, 1, 2, 3], np.uint8), BRATS_2023), [0, 1, 2, 3])
    assert BRATS_2021.from_store_labels() == {0: 0, 1: 1, 2: 2, 3: 4}


def test_locations_cover_regions_and_are_deterministic():
    label = np.zeros((40, 40, 40), np.uint8)
    label[5:35, 5:35, 5:35] = 2  # 27,000 edema voxels: more than the cap
    label[10:12, 10:12, 10:12] = 3
    cfg = PreprocessConfig(locations_per_region=1000, min_location_fraction=0.05)
    locs, voxels = sample_locations(label, cfg, seed=3)
    assert voxels == {"wt": 27000, "tc": 8, "et": 8, "rc": 0}  # GLI's regions: no resection cavity here
    assert len(locs["wt"]) == 1350  # 5% of 27,000 beats the cap of 1,000
    assert len(locs["et"]) == 8 and locs["et"].dtype == np.uint16
    for region, labels in {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}.items():
        assert np.isin(label[tuple(locs[region].T)], labels).all()
    again, _ = sample_locations(label, cfg, seed=3)
    np.testing.assert_array_equal(locs["wt"], again["wt"])
    empty, v = sample_locations(np.zeros((5, 5, 5), np.uint8), cfg, 0)
    assert v["et"] == 0 and empty["et"].shape == (0, 3)


def test_preprocess_crops_and_undoes_crop(tmp_path):
    mods, seg = brain_arrays()
    write_case(tmp_path / "c", "c", mods, seg)
    pre = preprocess_case(load_case(discover_cases(tmp_path)[0]))
    assert pre.crop_box == ((5, 35), (6, 34), (4, 28))
    assert pre.image.shape == (4, 30, 28, 24) and pre.image.dtype == np.float16
    assert pre.original_shape == (40, 40, 32)
    restored = uncrop(pre.label, pre.crop_box, pre.original_shape)
    np.testing.assert_array_equal(restored, remap_labels(seg, BRATS_2021))
    assert pre.voxel_counts["et"] == int((seg == 4).sum())
    assert set(pre.locations) == {"wt", "tc", "et", "rc"}


def test_modality_without_contrast_is_rejected(tmp_path):
    mods, seg = brain_arrays()
    mods[3] = (mods[0] != 0).astype(np.int16) * 7  # constant inside the brain
    write_case(tmp_path / "c", "c", mods, seg)
    with pytest.raises(InvalidCaseError, match="flair has .* no usable contrast") as info:
        preprocess_case(load_case(discover_cases(tmp_path)[0]))
    assert info.value.file.endswith("c_flair.nii.gz")


def test_all_empty_case_is_rejected(tmp_path):
    zeros = [np.zeros((8, 8, 8), np.int16)] * 4
    write_case(tmp_path / "c", "c", zeros, None)
    with pytest.raises(InvalidCaseError, match="every modality is empty"):
        preprocess_case(load_case(discover_cases(tmp_path)[0]))
