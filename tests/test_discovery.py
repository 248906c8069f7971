from pathlib import Path

import pytest

from gliostream.errors import DiscoveryError
from gliostream.pipeline.discovery import discover_cases
from gliostream.pipeline.naming import BRATS_2021, BRATS_2023, parse_filename


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")


@pytest.mark.parametrize("name,expected", [
    ("BraTS2021_00001_t1ce.nii.gz", ("BraTS2021_00001", BRATS_2021, "t1ce")),
    ("BraTS2021_00001_t1.nii.gz", ("BraTS2021_00001", BRATS_2021, "t1")),
    ("Brats18_2013_3_1_flair.nii", ("Brats18_2013_3_1", BRATS_2021, "flair")),
    ("TCGA-DU-7294_seg.nii.gz", ("TCGA-DU-7294", BRATS_2021, "seg")),
    ("BraTS-GLI-00000-000-t2f.nii.gz", ("BraTS-GLI-00000-000", BRATS_2023, "flair")),
    ("BraTS-GLI-00000-000-t1c.nii.gz", ("BraTS-GLI-00000-000", BRATS_2023, "t1ce")),
    ("BraTS-GLI-00000-000-seg.nii.gz", ("BraTS-GLI-00000-000", BRATS_2023, "seg")),
    ("case_T1CE.NII.GZ", ("case", BRATS_2021, "t1ce")),
])
def test_parse_filename_matches_suffixes(name, expected):
    assert parse_filename(name) == expected


@pytest.mark.parametrize("name", ["notes.txt", "x_mask.nii.gz", "_t1.nii.gz", "t1.nii.gz"])
def test_parse_filename_ignores_other_files(name):
    assert parse_filename(name) is None


def test_discovers_both_namings_flat_and_nested(tmp_path):
    touch(tmp_path / "a", *(f"a_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair", "seg")))
    touch(tmp_path / "deep" / "b", *(f"b-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f")))
    touch(tmp_path / "flat", *(f"{c}_{s}.nii" for c in ("c", "d") for s in ("t1", "t1ce", "t2", "flair")))
    cases = {c.case_id: c for c in discover_cases(tmp_path)}
    assert sorted(cases) == ["a", "b", "c", "d"]
    assert all(c.problem is None for c in cases.values())
    assert cases["a"].labelled and cases["a"].convention is BRATS_2021
    assert not cases["b"].labelled and cases["b"].convention is BRATS_2023
    assert cases["b"].files["flair"].name == "b-t2f.nii.gz"


def test_missing_modality_and_duplicates_are_problems(tmp_path):
    touch(tmp_path / "a", "a_t1.nii.gz", "a_t2.nii.gz", "a_flair.nii.gz")
    touch(tmp_path / "x1" / "dup", *(f"dup_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair")))
    touch(tmp_path / "x2" / "dup", *(f"dup_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair")))
    touch(tmp_path / "two", *(f"two_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair")), "two_t1.nii")
    touch(tmp_path / "mix", "mix_t1.nii.gz", "mix_t1ce.nii.gz", "mix-t2w.nii.gz", "mix_flair.nii.gz")
    cases = discover_cases(tmp_path)
    problems = {(c.case_id, c.folder.name): c.problem for c in cases}
    assert "missing modality file(s) _t1ce" in problems[("a", "a")]
    assert "found in several folders" in problems[("dup", "dup")]
    assert sum(c.case_id == "dup" and c.problem is not None for c in cases) == 2
    assert "two files for t1" in problems[("two", "two")]
    assert "mixes BraTS 2021 and 2023" in problems[("mix", "mix")]


def test_unsafe_ids_are_refused_but_unicode_and_spaces_are_fine(tmp_path):
    touch(tmp_path / "esc", *(f".._{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair")))
    touch(tmp_path / "fine", *(f"Fall ü 1_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair")))
    cases = {c.case_id: c for c in discover_cases(tmp_path)}
    assert "escape" in cases[".."].problem
    assert cases["Fall ü 1"].problem is None


def test_missing_or_empty_raw_folder(tmp_path):
    with pytest.raises(DiscoveryError, match="does not exist"):
        discover_cases(tmp_path / "nope")
    with pytest.raises(DiscoveryError, match="no BraTS case found"):
        discover_cases(tmp_path)
