"""The ingest job on a real Dask LocalCluster and in-process: incremental, atomic, concurrent-safe."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from gliostream.pipeline.ingest import run_ingest
from gliostream.store import layout
from gliostream.store.reader import list_case_ids, open_case
from gliostream.store.writer import checksum

from .helpers import brain_arrays, write_case


def statuses(summary):
    return {r.case_id: r.status for r in summary.results}


def test_dask_ingest_then_incremental_rerun(synth_raw, tmp_path):
    store = tmp_path / "store"
    first = run_ingest(synth_raw, store, workers=2, progress=False)
    assert set(statuses(first).values()) == {"ingested"} and first.exit_code == 0
    ids = list_case_ids(store)
    assert len(ids) == 4
    index = pd.read_csv(store / "index.csv")
    assert list(index.case_id) == ids and index.has_et.tolist() == [True, True, True, False]
    before = {cid: open_case(store, cid).record for cid in ids}

    # Unchanged files, then the same content with a new mtime: both skipped.
    assert set(statuses(run_ingest(synth_raw, store, workers=0, progress=False)).values()) == {"unchanged"}
    t1 = next((synth_raw / ids[0]).glob("*_t1.nii.gz"))
    os.utime(t1, ns=(time.time_ns(), time.time_ns()))
    assert statuses(run_ingest(synth_raw, store, workers=1, progress=False))[ids[0]] == "unchanged"

    # Changed content: redone, and only that case.
    mods, seg = brain_arrays()
    write_case(synth_raw / ids[1], ids[1], mods, seg)
    third = run_ingest(synth_raw, store, workers=2, progress=False)
    assert statuses(third) == {ids[0]: "unchanged", ids[1]: "ingested", ids[2]: "unchanged", ids[3]: "unchanged"}
    assert open_case(store, ids[1]).record.fingerprint != before[ids[1]].fingerprint
    assert open_case(store, ids[2]).record == before[ids[2]]
    report = pd.read_csv(store / "ingest_report.csv")
    assert report.set_index("case_id").loc[ids[1], "status"] == "ingested"


def test_stored_case_content(synth_raw, tmp_path):
    run_ingest(synth_raw, tmp_path / "s", workers=0, progress=False)
    case = open_case(tmp_path / "s", "BraTS2021_00000")
    rec = case.record
    image, label = case.image[...], case.label[...]
    assert image.dtype == np.float16 and image.shape[0] == 4 and label.dtype == np.uint8
    assert set(np.unique(label)) <= {0, 1, 2, 3}
    assert rec.checksums["image"] == checksum(image) and rec.checksums["label"] == checksum(label)
    assert rec.convention == "2021" and rec.original_shape == (40, 40, 32)
    assert len(rec.affine) == 4 and rec.spacing == (6.0, 6.0, 6.0)
    assert set(rec.source_files) == {"t1", "t1ce", "t2", "flair", "seg"}
    for c, m in enumerate(rec.modalities):
        nz = image[c][image[c] != 0].astype(np.float64)
        assert abs(nz.mean()) < 0.02 and abs(nz.std() - 1) < 0.02, m
    locs = case.locations("wt")
    assert len(locs) == rec.voxels["wt"] and (label[tuple(locs.T.astype(int))] > 0).all()


def test_bad_cases_are_reported_and_others_ingested(synth_raw, tmp_path):
    next((synth_raw / "BraTS2021_00002").glob("*_flair.nii.gz")).write_bytes(b"")
    mods, seg = brain_arrays()
    seg[0, 0, 0] = 5
    write_case(synth_raw / "badlabel", "badlabel", mods, seg)
    summary = run_ingest(synth_raw, tmp_path / "s", workers=0, progress=False)
    st = statuses(summary)
    assert st["BraTS2021_00002"] == "rejected" and st["badlabel"] == "rejected"
    assert summary.count("ingested") == 3 and summary.exit_code == 1
    report = pd.read_csv(tmp_path / "s" / "ingest_report.csv").set_index("case_id")
    assert report.loc["BraTS2021_00002", "problem"] == "empty file (0 bytes)"
    assert report.loc["BraTS2021_00002", "file"].endswith("BraTS2021_00002_flair.nii.gz")
    assert "unknown label value(s) [5]" in report.loc["badlabel", "problem"]
    assert sorted(list_case_ids(tmp_path / "s")) == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00003"]


def test_a_case_that_turns_bad_keeps_its_stored_version(synth_raw, tmp_path):
    run_ingest(synth_raw, tmp_path / "s", workers=0, progress=False)
    before = open_case(tmp_path / "s", "BraTS2021_00000").image[...]
    path = next((synth_raw / "BraTS2021_00000").glob("*_t2.nii.gz"))
    path.write_bytes(path.read_bytes()[:200])
    summary = run_ingest(synth_raw, tmp_path / "s", workers=0, progress=False)
    assert statuses(summary)["BraTS2021_00000"] == "rejected"
    np.testing.assert_array_equal(open_case(tmp_path / "s", "BraTS2021_00000").image[...], before)


def test_empty_seg_and_unlabelled_and_2023_cases(tmp_path):
    raw = tmp_path / "raw"
    mods, seg = brain_arrays()
    write_case(raw / "healthy", "healthy", mods, np.zeros_like(seg))
    write_case(raw / "nolabel", "nolabel", mods, None, naming="2023")
    write_case(raw / "new", "new", mods, np.where(seg == 4, 3, seg).astype(np.uint8), naming="2023")
    summary = run_ingest(raw, tmp_path / "s", workers=0, progress=False)
    assert set(statuses(summary).values()) == {"ingested"}
    healthy, nolabel, new = (open_case(tmp_path / "s", c) for c in ("healthy", "nolabel", "new"))
    assert healthy.record.voxels["wt"] == 0 and healthy.locations("wt").shape == (0, 3)
    assert nolabel.label is None and not nolabel.record.labelled
    assert new.record.convention == "2023" and new.record.voxels["et"] == int((seg == 4).sum())


def brats_cmd(*args):
    return [sys.executable, "-m", "gliostream", *args]


def test_two_concurrent_runs_ingest_each_case_once(synth_raw, tmp_path):
    store = tmp_path / "s"
    procs = [subprocess.Popen(brats_cmd("ingest", str(synth_raw), "--out", str(store), "--workers", "1",
                                        "--no-progress"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ingested = sum(int(out.split(" ingested")[0].split()[-1]) for out, _ in outs)
    assert ingested == 4, outs  # every case written by exactly one of the two runs
    assert len(list_case_ids(store)) == 4
    assert not any(layout.staging_dir(store).iterdir()) and not any(layout.trash_dir(store).iterdir())
    for cid in list_case_ids(store):
        case = open_case(store, cid)
        assert case.record.checksums["image"] == checksum(case.image[...])


@pytest.mark.parametrize("delay", [0.8, 1.6])
def test_sigkill_mid_run_then_rerun_completes(synth_raw, tmp_path, delay):
    store = tmp_path / "s"
    proc = subprocess.Popen(brats_cmd("ingest", str(synth_raw), "--out", str(store), "--workers", "0",
                                      "--no-progress"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survived = {cid: open_case(store, cid).record.fingerprint for cid in list_case_ids(store)}
    summary = run_ingest(synth_raw, store, workers=0, progress=False)
    assert summary.exit_code == 0
    assert len(list_case_ids(store)) == 4
    for cid, fp in survived.items():  # what was complete before the kill is kept, not redone
        assert statuses(summary)[cid] == "unchanged" and open_case(store, cid).record.fingerprint == fp
    for cid in list_case_ids(store):
        case = open_case(store, cid)
        assert case.record.checksums["image"] == checksum(case.image[...])


def test_existing_scheduler_by_address_and_by_scheduler_file(synth_raw, tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        by_address = run_ingest(synth_raw, tmp_path / "a", scheduler=cluster.scheduler_address, progress=False)
        # What `dask scheduler --scheduler-file` writes, less its volatile identity fields.
        (tmp_path / "scheduler.json").write_text(json.dumps({"type": "Scheduler",
                                                            "address": cluster.scheduler_address}))
        by_file = run_ingest(synth_raw, tmp_path / "b", scheduler=str(tmp_path / "scheduler.json"), progress=False)
    assert by_address.count("ingested") == 4 and by_file.count("ingested") == 4
    for cid in list_case_ids(tmp_path / "a"):  # same bytes whichever cluster wrote them
        a, b = open_case(tmp_path / "a", cid), open_case(tmp_path / "b", cid)
        assert a.record.checksums == b.record.checksums
        np.testing.assert_array_equal(a.locations("wt"), b.locations("wt"))


def test_big_endian_files_ingest_to_the_same_values(tmp_path):
    """nibabel writes big-endian NIfTI on request; the voxels are values, not byte-swapped codes."""
    import nibabel as nib

    mods, seg = brain_arrays(seed=4)
    mods = [(m.astype(np.int32) * 37 - 900).astype(np.int16) for m in mods]  # real-scan-like int16, negatives too
    write_case(tmp_path / "raw" / "little", "little", mods, seg)
    write_case(tmp_path / "raw" / "big", "big", mods, seg, endianness=">")
    big_file = next((tmp_path / "raw" / "big").glob("*_t1.nii.gz"))
    assert nib.load(big_file).header.endianness == ">" and nib.load(big_file).get_data_dtype() == ">i2"
    summary = run_ingest(tmp_path / "raw", tmp_path / "store", workers=0, progress=False)
    assert set(statuses(summary).values()) == {"ingested"}, summary.results
    little, big = open_case(tmp_path / "store", "little"), open_case(tmp_path / "store", "big")
    np.testing.assert_array_equal(little.image[...], big.image[...])
    np.testing.assert_array_equal(little.label[...], big.label[...])
    assert little.record.normalization == big.record.normalization
