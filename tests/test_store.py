import json
from dataclasses import replace

import numpy as np
import pytest

from gliostream.errors import StoreError, StoreMismatchError
from gliostream.store import layout
from gliostream.store.index import INDEX_COLUMNS, read_index, write_index
from gliostream.store.locks import case_lock
from gliostream.store.reader import checksum, list_case_ids, open_case, read_case_record, read_store_attrs
from gliostream.store.schema import SCHEMA_VERSION, CaseRecord, SourceFile, StoreAttrs
from gliostream.store.writer import create_or_check_store, recover_case, write_case


def record(case_id):
    return CaseRecord(case_id=case_id, labelled=True, convention="2021", modalities=("t1", "t1ce", "t2", "flair"),
                      source_dir="/raw/x", source_files={"t1": SourceFile("x_t1.nii.gz", "0" * 64, 10, 1)},
                      fingerprint="f" * 64, params_fingerprint="p" * 16, original_shape=(8, 9, 10),
                      cropped_shape=(4, 5, 6), crop_box=((1, 5), (2, 7), (3, 9)), affine=tuple(map(tuple, np.eye(4))),
                      spacing=(1.0, 1.0, 1.0), normalization={}, voxels={"brain": 10, "wt": 3, "tc": 2, "et": 1},
                      ingested_at="now", brats_version="0",
                      checksums={name: "0" * 8 for name in ("image", "label", "loc_wt", "loc_tc", "loc_et")})


def test_the_case_record_round_trips_through_the_zarr_attributes(tmp_path):
    original = record("c1")
    assert CaseRecord.from_attrs(original.to_attrs(), "here") == original
    assert json.loads(json.dumps(original.to_attrs())) == original.to_attrs()  # plain JSON
    attrs = original.to_attrs()
    del attrs["crop_box"]
    with pytest.raises(StoreError, match="here: case record was edited or damaged since ingest"):
        CaseRecord.from_attrs(attrs, "here")
    np.testing.assert_array_equal(original.cropped_affine[:3, 3], [1, 2, 3])


def resealed(attrs):
    """Attributes edited by someone who also recomputed the record's own checksum."""
    from gliostream.store.schema import RECORD_CHECKSUM, record_digest

    attrs = {k: v for k, v in attrs.items() if k != RECORD_CHECKSUM}
    return {**attrs, RECORD_CHECKSUM: record_digest(attrs)}


@pytest.mark.parametrize("edit,problem", [
    ({"crop_box": [[1, 5], [2, 7], [3, 99]]}, "crop box .* lies outside the volume"),
    ({"original_shape": [2, 9, 10]}, "crop box .* lies outside the volume"),
    ({"cropped_shape": [4, 5, 7]}, "cropped size 7 of axis 2 differs"),
    ({"convention": "1999"}, "unknown label convention"),
    ({"spacing": [1.0, float("nan"), 1.0]}, "spacing"),
    ({"checksums": {}}, "no checksum for array"),
    ({"crop_box": None}, "damaged case record"),
])
def test_a_resealed_but_inconsistent_record_is_refused(edit, problem):
    with pytest.raises(StoreError, match=problem):
        CaseRecord.from_attrs(resealed({**record("c1").to_attrs(), **edit}), "here")


def test_a_record_without_its_own_checksum_is_refused():
    from gliostream.store.schema import RECORD_CHECKSUM

    attrs = record("c1").to_attrs()
    del attrs[RECORD_CHECKSUM]
    with pytest.raises(StoreError, match="no checksum of its own"):
        CaseRecord.from_attrs(attrs, "here")


def arrays():
    rng = np.random.default_rng(0)
    return {"image": rng.normal(size=(4, 4, 5, 6)).astype(np.float16),
            "label": rng.integers(0, 4, (4, 5, 6)).astype(np.uint8),
            "loc_wt": np.array([[1, 2, 3]], np.uint16), "loc_tc": np.array([[1, 2, 3]], np.uint16),
            "loc_et": np.zeros((0, 3), np.uint16)}


def test_create_check_and_mismatch(tmp_path):
    root = create_or_check_store(tmp_path / "s", {"a": 1})
    assert read_store_attrs(root) == StoreAttrs(SCHEMA_VERSION, {"a": 1})
    create_or_check_store(root, {"a": 1})  # same parameters: fine
    with pytest.raises(StoreMismatchError, match="other parameters"):
        create_or_check_store(root, {"a": 2})
    meta_path = layout.metadata_path(layout.cases_dir(root))
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["brats"]["schema_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreMismatchError, match="schema v99"):
        create_or_check_store(root, {"a": 1})


def test_refuses_foreign_folders(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "thesis.docx").write_text("precious")
    with pytest.raises(StoreError, match="not empty"):
        create_or_check_store(tmp_path / "full", {})
    assert (tmp_path / "full" / "thesis.docx").read_text() == "precious"
    with pytest.raises(StoreError, match="not a brats store"):
        read_store_attrs(tmp_path / "full")


def test_unwritable_store_folder(tmp_path):
    import os
    if os.geteuid() == 0:
        target = tmp_path / "file-in-the-way"
        target.write_text("x")
        with pytest.raises(StoreError, match="cannot create store folder"):
            create_or_check_store(target / "s", {})
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(StoreError):
            create_or_check_store(ro / "s", {})


def test_write_case_round_trip_layout_and_checksums(tmp_path):
    root = create_or_check_store(tmp_path / "s", {})
    data = arrays()
    write_case(root, "c1", data, record("c1"))
    case = open_case(root, "c1")
    np.testing.assert_array_equal(case.image[...], data["image"])
    np.testing.assert_array_equal(case.label[...], data["label"])
    np.testing.assert_array_equal(case.locations("wt"), data["loc_wt"])
    assert case.locations("et").shape == (0, 3)
    assert case.image.chunks == data["image"].shape  # one chunk per case array
    assert case.record.checksums["image"] == checksum(data["image"])
    assert list_case_ids(root) == ["c1"]


def test_incomplete_case_is_invisible_and_cleaned(tmp_path):
    root = create_or_check_store(tmp_path / "s", {})
    half = layout.staging_dir(root) / "c2.deadbeef"
    (half / "image").mkdir(parents=True)  # a writer killed before its rename
    assert list_case_ids(root) == [] and read_case_record(root, "c2") is None
    (layout.case_dir(root, "c3")).mkdir(parents=True)  # a folder without a record: damage, never skipped
    with pytest.raises(StoreError, match="c3: case folder without a readable record"):
        list_case_ids(root)
    with case_lock(root, "c2"):
        recover_case(root, "c2")
    assert not half.exists()


def test_interrupted_replacement_restores_previous_version(tmp_path):
    root = create_or_check_store(tmp_path / "s", {})
    write_case(root, "c1", arrays(), record("c1"))
    # Killed between "old -> trash" and "staging -> cases": the case is briefly absent.
    (layout.case_dir(root, "c1")).rename(layout.trash_dir(root) / "c1.0123")
    assert list_case_ids(root) == []
    with case_lock(root, "c1"):
        recover_case(root, "c1")
    assert list_case_ids(root) == ["c1"]
    np.testing.assert_array_equal(open_case(root, "c1").image[...], arrays()["image"])


@pytest.mark.parametrize("atomic_exchange", [True, False])
def test_replace_keeps_one_version(tmp_path, monkeypatch, atomic_exchange):
    """Replacement by renameat2 exchange (Linux), and by two renames where that is unsupported."""
    import gliostream.store.writer as writer

    if not atomic_exchange:
        monkeypatch.setattr(writer, "exchange", lambda a, b: False)
    root = create_or_check_store(tmp_path / "s", {})
    write_case(root, "c1", arrays(), record("c1"))
    new = arrays()
    new["image"] = new["image"] * 2
    write_case(root, "c1", new, replace(record("c1"), fingerprint="e" * 64))
    np.testing.assert_array_equal(open_case(root, "c1").image[...], new["image"])
    assert not any(layout.trash_dir(root).iterdir()) and not any(layout.staging_dir(root).iterdir())


def test_index_is_pandas_readable(tmp_path):
    root = create_or_check_store(tmp_path / "s", {})
    for cid in ("b", "a"):
        write_case(root, cid, arrays(), record(cid))
    write_index(root)
    df = read_index(root)
    assert list(df.columns) == INDEX_COLUMNS and list(df.case_id) == ["a", "b"]
    assert df.loc[0, "et_voxels"] == 1 and bool(df.loc[0, "has_et"])


def test_chunk_shape_splits_only_huge_arrays():
    assert layout.chunk_shape((4, 140, 170, 140), 2) == (4, 140, 170, 140)
    big = layout.chunk_shape((4, 1024, 1024, 512), 2)
    assert np.prod(big) * 2 <= layout.MAX_CHUNK_BYTES and big[0] == 4


def test_the_hierarchy_walks_and_opens_without_warnings(tiny_store):
    import warnings

    import dask.array as da
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zarr warns about every non-Zarr entry it meets
        group = zarr.open_group(str(layout.cases_dir(tiny_store)), mode="r")
        members = dict(group.members(max_depth=None))
        case_id = list_case_ids(tiny_store)[0]
        image = da.from_zarr(str(layout.case_dir(tiny_store, case_id) / layout.IMAGE))
        assert image.shape == open_case(tiny_store, case_id).image.shape and float(image[0].mean().compute()) != 0
    assert sorted(k for k in members if "/" not in k) == list_case_ids(tiny_store)
    assert group.attrs["brats"]["schema_version"] == SCHEMA_VERSION


def test_a_store_of_the_previous_schema_is_refused_with_what_to_do(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "brats": {"schema_version": 1, "ingest_config": {}}}}))
    (old / "cases").mkdir()
    for call in (lambda: read_store_attrs(old), lambda: create_or_check_store(old, {})):
        with pytest.raises(StoreMismatchError, match="schema v1 .* ingest the raw cases again into a new folder"):
            call()
