"""Ingest of the real BraTS-space sample cases in ../shared/realdata (skipped where absent)."""

import nibabel as nib
import numpy as np

from gliostream.geometry import uncrop
from gliostream.pipeline.ingest import run_ingest
from gliostream.pipeline.naming import CONVENTIONS
from gliostream.pipeline.nifti import open_nifti
from gliostream.store.reader import open_case


def test_real_cases_ingest_and_round_trip(realdata, tmp_path):
    summary = run_ingest(realdata, tmp_path / "s", workers=2, progress=False)
    st = {r.case_id: r.status for r in summary.results}
    folders = {p.name for p in realdata.iterdir() if p.is_dir()}
    assert st == {c: "ingested" for c in folders}  # every case folder, however many are added
    assert {"BraTS-GLI-00000-000", "BraTS-GLI-00001-000", "Brats18_CBICA_ABM_1", "TCGA-DU-7294"} <= folders
    unlabelled = open_case(tmp_path / "s", "BraTS-GLI-00001-000")
    assert unlabelled.label is None and unlabelled.record.convention == "2023"
    no_et = open_case(tmp_path / "s", "TCGA-DU-7294")
    assert no_et.record.voxels["et"] == 0 and no_et.record.voxels["wt"] > 0
    for cid, conv in (("Brats18_CBICA_ABM_1", "2021"), ("BraTS-GLI-00000-000", "2023")):
        case = open_case(tmp_path / "s", cid)
        rec = case.record
        seg_file = realdata / cid / rec.source_files["seg"].name
        raw_seg = np.asanyarray(nib.load(seg_file).dataobj)
        back = uncrop(case.label[...], tuple(map(tuple, rec.crop_box)), tuple(rec.original_shape))
        lut = CONVENTIONS[conv].from_store_labels()
        np.testing.assert_array_equal(np.vectorize(lut.get)(back), raw_seg)  # labels round-trip exactly
        np.testing.assert_allclose(rec.affine, nib.load(seg_file).affine, atol=1e-5)
        assert rec.original_shape == (240, 240, 155)
        # Real scans hold small negative values inside the brain: they count as brain.
        t1 = open_nifti(realdata / cid / rec.source_files["t1"].name).load()
        box = tuple(slice(a, b) for a, b in rec.crop_box)
        assert np.count_nonzero(t1) == np.count_nonzero(t1[box])


def test_a_real_case_rewritten_big_endian_ingests_identically(realdata, tmp_path):
    case_id = "Brats18_CBICA_ABM_1"
    for endian, name in (("<", "little"), (">", "big")):
        folder = tmp_path / name / case_id
        folder.mkdir(parents=True)
        for source in sorted((realdata / case_id).glob("*.nii.gz")):
            image = nib.load(source)
            header = nib.Nifti1Header(endianness=endian)
            header.set_data_dtype(image.get_data_dtype())
            nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, header=header), folder / source.name)
        assert nib.load(next(folder.glob("*_t1.nii.gz"))).header.endianness == endian
        run_ingest(tmp_path / name, tmp_path / f"store-{name}", workers=0, progress=False)
    little, big = open_case(tmp_path / "store-little", case_id), open_case(tmp_path / "store-big", case_id)
    np.testing.assert_array_equal(little.image[...], big.image[...])
    np.testing.assert_array_equal(little.label[...], big.label[...])
    assert little.record.normalization == big.record.normalization
