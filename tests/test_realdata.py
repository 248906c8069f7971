"""Ingest of the real BraTS-space sample cases in ../shared/realdata (skipped where absent)."""

import nibabel as nib
import numpy as np

from brats.pipeline.ingest import run_ingest
from brats.pipeline.naming import CONVENTIONS
from brats.pipeline.nifti import open_nifti
from brats.pipeline.preprocess import uncrop
from brats.store.reader import open_case


def test_real_cases_ingest_and_round_trip(realdata, tmp_path):
    summary = run_ingest(realdata, tmp_path / "s", workers=2, progress=False)
    st = {r.case_id: r.status for r in summary.results}
    assert st == {c: "ingested" for c in ("BraTS-GLI-00000-000", "BraTS-GLI-00001-000", "Brats18_2013_3_1",
                                          "Brats18_CBICA_ABM_1", "Brats18_TCIA01_201_1", "TCGA-DU-7294")}
    unlabelled = open_case(tmp_path / "s", "BraTS-GLI-00001-000")
    assert unlabelled.label is None and unlabelled.record["convention"] == "2023"
    no_et = open_case(tmp_path / "s", "TCGA-DU-7294")
    assert no_et.record["voxels"]["et"] == 0 and no_et.record["voxels"]["wt"] > 0
    for cid, conv in (("Brats18_CBICA_ABM_1", "2021"), ("BraTS-GLI-00000-000", "2023")):
        case = open_case(tmp_path / "s", cid)
        rec = case.record
        seg_file = realdata / cid / rec["source"]["files"]["seg"]["name"]
        raw_seg = np.asanyarray(nib.load(seg_file).dataobj)
        back = uncrop(case.label[...], tuple(map(tuple, rec["crop_box"])), tuple(rec["original_shape"]))
        lut = CONVENTIONS[conv].from_store_labels()
        np.testing.assert_array_equal(np.vectorize(lut.get)(back), raw_seg)  # labels round-trip exactly
        np.testing.assert_allclose(rec["affine"], nib.load(seg_file).affine, atol=1e-5)
        assert rec["original_shape"] == [240, 240, 155]
        # Real scans hold small negative values inside the brain: they count as brain.
        t1 = open_nifti(realdata / cid / rec["source"]["files"]["t1"]["name"]).load()
        box = tuple(slice(a, b) for a, b in rec["crop_box"])
        assert np.count_nonzero(t1) == np.count_nonzero(t1[box])
