import nibabel as nib
import numpy as np

from gliostream.pipeline.discovery import discover_cases
from gliostream.synth import SynthConfig, synth_dataset, synth_volume


def test_synth_volume_has_nested_tumour_and_contrast():
    mods, seg = synth_volume(np.random.default_rng(0), (48, 48, 40), with_et=True)
    assert set(np.unique(seg)) == {0, 1, 2, 4}
    brain = mods["t1"] != 0
    assert (seg[~brain] == 0).all()
    assert all(m.dtype == np.int16 for m in mods.values())
    # Edema is bright on FLAIR relative to normal brain; enhancing is bright on T1ce.
    normal = brain & (seg == 0)
    assert mods["flair"][seg == 2].mean() > mods["flair"][normal].mean()
    assert mods["t1ce"][seg == 4].mean() > mods["t1ce"][normal].mean()
    _, seg_no_et = synth_volume(np.random.default_rng(0), (48, 48, 40), with_et=False)
    assert 4 not in np.unique(seg_no_et)


def test_synth_dataset_naming_and_determinism(tmp_path):
    a = synth_dataset(tmp_path / "a", SynthConfig(cases=4, shape=(32, 32, 24), naming="2023"), progress=False)
    b = synth_dataset(tmp_path / "b", SynthConfig(cases=4, shape=(32, 32, 24), naming="2023"), progress=False)
    cases = discover_cases(tmp_path / "a")
    assert [c.case_id for c in cases] == [f"BraTS-GLI-{i:05d}-000" for i in range(4)]
    assert all(c.convention.name == "2023" and c.labelled and c.problem is None for c in cases)
    seg3 = np.asanyarray(nib.load(a[3] / "BraTS-GLI-00003-000-seg.nii.gz").dataobj)
    seg0 = np.asanyarray(nib.load(a[0] / "BraTS-GLI-00000-000-seg.nii.gz").dataobj)
    assert 3 in np.unique(seg0) and 3 not in np.unique(seg3)  # every 4th case has no enhancing tumour
    same = np.asanyarray(nib.load(b[0] / "BraTS-GLI-00000-000-seg.nii.gz").dataobj)
    np.testing.assert_array_equal(seg0, same)
