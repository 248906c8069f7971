"""Every kind of bad raw input is refused with one line naming the file and the problem."""

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from gliostream.errors import InvalidCaseError
from gliostream.pipeline.discovery import discover_cases
from gliostream.pipeline.nifti import NiftiLimits, open_nifti
from gliostream.pipeline.validation import load_case

from .helpers import brain_arrays, write_case


def save(path, arr, affine=None):
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), path)
    return path


def header_only_gz(path, shape, dtype=np.float32, payload=b"\0" * 64):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    path.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + payload))
    return path


def refused(path, match):
    with pytest.raises(InvalidCaseError, match=match) as info:
        open_nifti(path).load()
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_good_file_round_trips(tmp_path):
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    src = open_nifti(save(tmp_path / "a_t1.nii.gz", arr))
    np.testing.assert_array_equal(src.load(), arr)
    assert src.shape == (2, 3, 4) and len(src.sha256) == 64


def test_scaled_file_applies_slope(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4))
    img.header.set_slope_inter(2.0, 1.0)
    nib.save(img, tmp_path / "s.nii")
    np.testing.assert_allclose(open_nifti(tmp_path / "s.nii").load(), 3.0)


def test_zero_byte_file(tmp_path):
    (tmp_path / "z.nii.gz").write_bytes(b"")
    refused(tmp_path / "z.nii.gz", "empty file")


def test_truncated_gzip(tmp_path):
    good = save(tmp_path / "g.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32))
    raw = good.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 4):
        (tmp_path / "t.nii.gz").write_bytes(raw[:cut])
        refused(tmp_path / "t.nii.gz", "truncated")


def test_non_gzip_named_gz_and_non_nifti(tmp_path):
    (tmp_path / "n.nii.gz").write_bytes(b"this is not gzip at all" * 30)
    refused(tmp_path / "n.nii.gz", "not a gzip file")
    (tmp_path / "p.nii.gz").write_bytes(gzip.compress(b"%PDF-1.4 not a nifti" * 40))
    refused(tmp_path / "p.nii.gz", "not a NIfTI-1 file")
    (tmp_path / "short.nii").write_bytes(b"abc")
    refused(tmp_path / "short.nii", "too short")


def test_corrupt_gzip_payload(tmp_path):
    raw = bytearray(save(tmp_path / "c.nii.gz", np.ones((30, 30, 30), np.float32)).read_bytes())
    raw[40:60] = b"\xff" * 20
    (tmp_path / "c.nii.gz").write_bytes(bytes(raw))
    refused(tmp_path / "c.nii.gz", "corrupt gzip|truncated|more data")


@pytest.mark.parametrize("shape,match", [((8, 8, 8, 2), "4-D"), ((8, 8), "2-D")])
def test_wrong_dimensionality(tmp_path, shape, match):
    refused(save(tmp_path / "d.nii.gz", np.zeros(shape, np.float32)), match)


def test_absurd_header_size_is_refused_without_allocating(tmp_path):
    tracemalloc.start()
    try:
        refused(header_only_gz(tmp_path / "huge.nii.gz", (30000, 30000, 30000)), "implausible size")
        refused(header_only_gz(tmp_path / "big.nii.gz", (2000, 1000, 1000)), "implausible size")
        # Within limits but the data is not there: the bounded inflate must not allocate the claim.
        refused(header_only_gz(tmp_path / "lie.nii.gz", (500, 500, 500)), "truncated")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024


def test_limits_are_configurable(tmp_path):
    path = save(tmp_path / "x.nii.gz", np.zeros((10, 10, 10), np.float32))
    with pytest.raises(InvalidCaseError, match="implausible"):
        open_nifti(path, NiftiLimits(max_dim=8))


def test_trailing_garbage_after_data(tmp_path):
    arr = np.zeros((4, 4, 4), np.float32)
    img = nib.Nifti1Image(arr, np.eye(4))
    body = img.header.binaryblock + b"\0" * 4 + arr.tobytes(order="F") + b"extra bytes"
    (tmp_path / "g.nii.gz").write_bytes(gzip.compress(body))
    refused(tmp_path / "g.nii.gz", "holds 11 more bytes than the NIfTI header describes")


def case_problem(tmp_path, mods, seg, naming="2021", affines=None):
    folder = write_case(tmp_path / "c", "c", mods, seg, naming)
    if affines:
        for role, aff in affines.items():
            path = next(folder.glob(f"c_{role}.nii.gz"))
            img = nib.load(path)
            nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), aff), path)
    (case,) = discover_cases(tmp_path)
    with pytest.raises(InvalidCaseError) as info:
        load_case(case)
    return info.value


def test_mismatched_shapes(tmp_path):
    mods, seg = brain_arrays()
    mods[2] = mods[2][:, :, :-1]
    err = case_problem(tmp_path, mods, seg)
    assert err.file.endswith("c_t2.nii.gz") and "shape 40x40x31 differs" in err.problem


def test_mismatched_affines(tmp_path):
    mods, seg = brain_arrays()
    shifted = np.diag([-1.0, -1.0, 1.0, 1.0])
    shifted[0, 3] = 2.0
    err = case_problem(tmp_path, mods, seg, affines={"flair": shifted})
    assert err.file.endswith("c_flair.nii.gz") and "affine differs" in err.problem


def test_nan_and_inf_voxels(tmp_path):
    mods, seg = brain_arrays()
    mods[1] = mods[1].astype(np.float32)
    mods[1][10, 10, 10] = np.nan
    mods[1][11, 10, 10] = np.inf
    err = case_problem(tmp_path, mods, seg)
    assert err.file.endswith("c_t1ce.nii.gz") and "2 voxels are NaN or infinite" in err.problem


@pytest.mark.parametrize("naming,bad", [("2021", 3), ("2023", 5), ("2021", 7)])
def test_unknown_labels(tmp_path, naming, bad):
    mods, seg = brain_arrays()
    seg = np.where(seg == 4, 3 if naming == "2023" else 4, seg).astype(np.uint8)
    seg[1, 1, 1] = bad
    err = case_problem(tmp_path, mods, seg, naming)
    assert "seg.nii.gz" in err.file and f"unknown label value(s) [{bad}]" in err.problem
    assert f"the GLI task in BraTS {naming} naming allows" in err.problem


def test_each_task_reads_its_own_labels(tmp_path):
    """2023+ glioma's 4 is a resection cavity (2021's 4 is ET); paediatric labels go up to 4, the
    radiotherapy task has one label; 2018-2021 files are glioma's only."""
    from gliostream.pipeline.naming import BRATS_2021, BRATS_2023
    from gliostream.pipeline.preprocess import remap_labels
    from gliostream.tasks import TASKS

    seg = np.array([0, 1, 2, 3, 4], np.uint8)
    assert remap_labels(seg, BRATS_2023, TASKS["GLI"]).tolist() == [0, 1, 2, 3, 4]  # kept: no lossy remap
    assert remap_labels(np.array([0, 1, 2, 4], np.uint8), BRATS_2021, TASKS["GLI"]).tolist() == [0, 1, 2, 3]
    assert BRATS_2023.labels(TASKS["PED"]) == (0, 1, 2, 3, 4) and BRATS_2023.labels(TASKS["MEN-RT"]) == (0, 1)
    assert BRATS_2023.labels(TASKS["MEN"]) == (0, 1, 2, 3)
    mods, _ = brain_arrays()
    gtv = np.zeros(mods[0].shape, np.uint8)
    gtv[8:12, 8:12, 8:12] = 2
    folder = write_case(tmp_path / "rt", "BraTS-MEN-RT-0001-1", mods, gtv, "2023")
    (case,) = discover_cases(folder)
    with pytest.raises(InvalidCaseError, match=r"unknown label value\(s\) \[2\]; the MEN-RT task .* allows \[0, 1\]"):
        load_case(case, task=TASKS["MEN-RT"])
    folder = write_case(tmp_path / "old", "BraTS2021_00001", mods, gtv, "2021")
    (case,) = discover_cases(folder)
    with pytest.raises(InvalidCaseError, match="ingest it with --task GLI"):
        load_case(case, task=TASKS["PED"])


def test_negative_and_fractional_labels(tmp_path):
    mods, seg = brain_arrays()
    err = case_problem(tmp_path, mods, seg.astype(np.int16) - 1)
    assert "unknown label value(s) [-1, 3]" in err.problem
    err = case_problem(tmp_path / "neg", mods, seg.astype(np.float32) - 1)
    assert "values range -1..3" in err.problem
    frac = seg.astype(np.float32)
    frac[2, 2, 2] = 0.5
    err = case_problem(tmp_path / "f", mods, frac)
    assert "non-integer" in err.problem


def test_valid_case_loads(tmp_path):
    mods, seg = brain_arrays()
    write_case(tmp_path / "ok", "ok", mods, seg)
    (case,) = discover_cases(tmp_path)
    loaded = load_case(case)
    assert loaded.seg.dtype == np.uint8 and set(np.unique(loaded.seg)) == {0, 1, 2, 4}
    assert loaded.spacing == (1.0, 1.0, 1.0)


def test_standard_zlib_fallback_reads_and_refuses_the_same(tmp_path, monkeypatch):
    import zlib

    from gliostream.pipeline import nifti

    arr = np.random.default_rng(1).normal(size=(16, 16, 16)).astype(np.float32)
    good = save(tmp_path / "g.nii.gz", arr)
    (tmp_path / "t.nii.gz").write_bytes(good.read_bytes()[:-100])
    monkeypatch.setattr(nifti, "_inflate", zlib)
    np.testing.assert_array_equal(open_nifti(good).load(), arr)
    refused(tmp_path / "t.nii.gz", "truncated")
