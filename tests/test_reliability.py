"""Faults survived and bad inputs refused, end to end through the console script.

Each test records its outcome with the `reliability` fixture; `BRATS_RELIABILITY_REPORT=FILE
pytest tests/test_reliability.py` writes the table that docs/reliability.md embeds.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from gliostream.pipeline.ingest import run_ingest
from gliostream.store.reader import list_case_ids, read_case_record
from gliostream.store.schema import CaseRecord
from gliostream.store.verify import verify_store
from gliostream.trainer.checkpoint import load_checkpoint

from .helpers import brain_arrays, write_case

TINY_TRAIN = ["--patches-per-epoch", "16", "--patch-size", "32", "--base-channels", "4", "--batch-size", "2",
              "--accum-steps", "2", "--val-every", "1", "--workers", "1", "--no-progress"]


def brats(*args: str, cwd=None, fault: str | None = None, once: Path | None = None, check: bool = True,
          timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("BRATS_FAULT", None)
    if fault:
        env["BRATS_FAULT"] = fault
    if once:
        env["BRATS_FAULT_ONCE"] = str(once)
    proc = subprocess.run([sys.executable, "-m", "gliostream", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, f"brats {' '.join(args)}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


def records(store: Path) -> dict[str, CaseRecord | None]:
    return {c: read_case_record(store, c) for c in list_case_ids(store)}


def content(store: Path) -> dict[str, tuple]:
    """What must be identical between two stores of the same raw data: fingerprint and checksums."""
    return {c: (r.fingerprint, r.checksums) for c, r in records(store).items() if r is not None}


# -- ingest killed at named points ------------------------------------------------------------

INGEST_POINTS = [
    ("ingest:case-locked", 1), ("write:staging-opened", 1), ("write:array-written", 1),
    ("write:array-written", 4), ("write:record-written", 1), ("write:exchanged", 1),
    ("write:exchanged", 2), ("write:renamed", 2), ("write:renamed", 3), ("index:tmp-written", 1),
    ("report:tmp-written", 1),
]


@pytest.fixture(scope="module")
def ingest_scenario(tmp_path_factory):
    """A store of 4 cases, then raw data where 2 of them changed and 2 are new; and the store a
    clean ingest of that final raw data gives (the reference)."""
    base = tmp_path_factory.mktemp("scenario")
    raw = base / "raw"
    for i in range(4):
        write_case(raw / f"c{i}", f"c{i}", *brain_arrays(seed=i))
    store = base / "store"
    run_ingest(raw, store, workers=0, progress=False)
    for i in (1, 2):  # changed content: re-ingest replaces them
        mods, seg = brain_arrays(seed=10 + i)
        write_case(raw / f"c{i}", f"c{i}", mods, seg)
    for i in (4, 5):
        write_case(raw / f"c{i}", f"c{i}", *brain_arrays(seed=i))
    reference = base / "reference"
    run_ingest(raw, reference, workers=0, progress=False)
    return raw, store, reference


@pytest.mark.parametrize("point,nth", INGEST_POINTS)
def test_ingest_killed_then_rerun(ingest_scenario, tmp_path, reliability, point, nth):
    raw, before, reference = ingest_scenario
    store = tmp_path / "store"
    shutil.copytree(before, store)
    complete_before = set(list_case_ids(store))
    killed = brats("ingest", str(raw), "--out", str(store), "--workers", "0", "--no-progress",
                   fault=f"{point}:{nth}", check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert complete_before <= set(list_case_ids(store)), "a case complete before the kill was lost"
    brats("ingest", str(raw), "--out", str(store), "--workers", "0", "--no-progress")
    assert verify_store(store) == []
    assert content(store) == content(reference)
    assert list(pd.read_csv(store / "index.csv")["case_id"]) == sorted(content(reference))
    reliability("fault", f"`brats ingest` SIGKILLed at `{point}` (occurrence {nth}) while replacing 2 cases "
                         "and adding 2, then re-run", 1,
                "survived: `brats verify` clean, all 6 cases once, identical to a clean ingest")


def test_ingest_killed_at_random_moments(ingest_scenario, tmp_path, reliability):
    raw, before, reference = ingest_scenario
    rng = np.random.default_rng(0)
    delays = sorted(rng.uniform(0.5, 3.0, size=4))
    for delay in delays:
        store = tmp_path / f"store{delay:.2f}"
        shutil.copytree(before, store)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.Popen([sys.executable, "-m", "gliostream", "ingest", str(raw), "--out", str(store),
                                 "--workers", "0", "--no-progress"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert set(before_ids := list_case_ids(before)) <= set(list_case_ids(store))
        brats("ingest", str(raw), "--out", str(store), "--workers", "0", "--no-progress")
        assert verify_store(store) == [] and content(store) == content(reference), before_ids
    reliability("fault", "`brats ingest` SIGKILLed after a random delay (0.5–3 s), then re-run", len(delays),
                "survived: `brats verify` clean, store identical to a clean ingest")


def test_dask_worker_killed_during_ingest(ingest_scenario, tmp_path, reliability):
    raw, _, reference = ingest_scenario
    store, marker = tmp_path / "store", tmp_path / "fired"
    proc = brats("ingest", str(raw), "--out", str(store), "--workers", "2", "--no-progress",
                 fault="write:array-written:2", once=marker, timeout=400)
    assert marker.exists(), "the fault never fired"
    assert "6 ingested" in proc.stdout
    assert verify_store(store) == [] and content(store) == content(reference)
    reliability("fault", "a Dask worker process SIGKILLed while writing a case (2-worker LocalCluster)", 1,
                "survived: task retried on a restarted worker, run exit 0, store verifies")


def test_two_concurrent_ingests(ingest_scenario, tmp_path, reliability):
    raw, _, reference = ingest_scenario
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "gliostream", "ingest", str(raw), "--out", str(store), "--workers", "0", "--no-progress"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    ingested = sum(int(o.split(" ingested")[0].split()[-1]) for o in outs)
    assert ingested == 6, outs
    assert verify_store(store) == [] and content(store) == content(reference)
    reliability("fault", "two `brats ingest` runs on the same store at the same time", 1,
                "survived: each case ingested exactly once (the other run finds it unchanged), store verifies")


# -- training and scoring -----------------------------------------------------------------------

def test_training_killed_mid_epoch_then_resumed(tiny_store, tmp_path, reliability):
    straight = tmp_path / "straight"
    brats("train", "--store", str(tiny_store), "--out", str(straight), "--epochs", "3", *TINY_TRAIN)
    run = tmp_path / "run"
    # 8 micro-batches per epoch: step 13 is in the middle of epoch 2.
    killed = brats("train", "--store", str(tiny_store), "--out", str(run), "--epochs", "3", *TINY_TRAIN,
                   fault="train:step:13", check=False)
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    brats("train", "--resume", str(run / "last.pt"), "--no-progress")
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(run / "last.pt")
    assert b["epoch"] == 3 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    reliability("fault", "`brats train` SIGKILLed mid-epoch, then `--resume last.pt`", 1,
                "survived: resumed from the last complete epoch; final weights bit-for-bit those of an "
                "uninterrupted run")


def test_training_killed_while_writing_a_checkpoint(tiny_store, tmp_path, reliability):
    run = tmp_path / "run"
    # Checkpoint writes: epoch 1 last.pt, best.pt; epoch 2 last.pt (3rd) is interrupted.
    killed = brats("train", "--store", str(tiny_store), "--out", str(run), "--epochs", "3", *TINY_TRAIN,
                   fault="checkpoint:tmp-written:3", check=False)
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and load_checkpoint(run / "best.pt")["epoch"] == 1
    brats("train", "--resume", str(run / "last.pt"), "--no-progress")
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    assert not list(run.glob(".*.tmp")), "the interrupted write's temporary file is cleaned up"
    reliability("fault", "`brats train` SIGKILLed between writing a checkpoint's temporary file and renaming it",
                1, "survived: last.pt and best.pt stay the previous complete ones; resume finishes the run")


def test_scoring_interrupted_then_rerun(tiny_store, tmp_path, reliability):
    brats("train", "--store", str(tiny_store), "--out", str(tmp_path), "--epochs", "1", *TINY_TRAIN)
    args = ["score", "--ckpt", str(tmp_path / "last.pt"), "--cases", "all", "--no-progress"]
    brats(*args, "--out", str(tmp_path / "expected.csv"))
    out = tmp_path / "final_scores.csv"
    killed = brats(*args, "--out", str(out), fault="score:case:2", check=False)
    assert killed.returncode == -signal.SIGKILL and not out.exists()
    brats(*args, "--out", str(out))
    assert out.read_text() == (tmp_path / "expected.csv").read_text()
    reliability("fault", "`brats score` SIGKILLed after 2 of 4 cases, then re-run", 1,
                "survived: no partial CSV was left; the re-run's CSV equals an uninterrupted run's")


# -- bad inputs --------------------------------------------------------------------------------

def _header_only(path: Path, shape) -> None:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    path.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 68))


def _bad(kind: str, raw: Path) -> Path:
    """Write case `bad` broken in one way; returns the file the refusal must name."""
    mods, seg = brain_arrays(seed=7)
    folder = raw / "bad"
    if kind == "mismatched shapes":
        mods[2] = mods[2][:, :, :-1]
    if kind == "mismatched affines":
        write_case(folder, "bad", mods, seg)
        nib.save(nib.Nifti1Image(mods[1], np.diag([-1.0, -1.0, 1.2, 1.0])), folder / "bad_t1ce.nii.gz")
        return folder / "bad_t1ce.nii.gz"
    if kind in ("NaN voxels", "Inf voxels"):
        mods[3] = mods[3].astype(np.float32)
        mods[3][10, 10, 10] = np.nan if kind == "NaN voxels" else np.inf
    if kind == "unknown label value":
        seg[seg == 2] = 5
    write_case(folder, "bad", mods, seg)
    target = folder / "bad_t2.nii.gz"
    if kind == "truncated .nii.gz":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "non-gzip .nii.gz":
        target.write_bytes(gzip.decompress(target.read_bytes()))
    elif kind == "zero-byte file":
        target.write_bytes(b"")
    elif kind == "non-NIfTI file named .nii.gz":
        target.write_bytes(gzip.compress(b"<html>not an image</html>" * 20))
    elif kind in ("4-D image", "2-D image"):
        shape = (*mods[2].shape, 2) if kind == "4-D image" else mods[2].shape[:2]
        nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.diag([-1.0, -1.0, 1.0, 1.0])), target)
    elif kind == "header claiming 30000^3 voxels":
        _header_only(target, (30000, 30000, 30000))
    elif kind == "mismatched shapes":
        return target
    elif kind in ("NaN voxels", "Inf voxels"):
        return folder / "bad_flair.nii.gz"
    elif kind == "unknown label value":
        return folder / "bad_seg.nii.gz"
    elif kind == "missing modality":
        (folder / "bad_t1.nii.gz").unlink()
        return folder / "bad"  # the case's file-name stem
    return target


BAD_INPUTS = ["truncated .nii.gz", "non-gzip .nii.gz", "zero-byte file", "non-NIfTI file named .nii.gz",
              "4-D image", "2-D image", "header claiming 30000^3 voxels", "mismatched shapes", "mismatched affines",
              "NaN voxels", "Inf voxels", "unknown label value", "missing modality"]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_refused_and_nothing_else_harmed(tmp_path, reliability, kind):
    raw, store = tmp_path / "raw", tmp_path / "store"
    write_case(raw / "good", "good", *brain_arrays(seed=1))
    named = _bad(kind, raw)
    proc = brats("ingest", str(raw), "--out", str(store), "--workers", "0", "--no-progress", check=False)
    assert proc.returncode == 1, proc.stderr
    refusals = [ln for ln in proc.stderr.splitlines() if ln.startswith("rejected:")]
    assert len(refusals) == 1 and str(named) in refusals[0], proc.stderr
    assert list_case_ids(store) == ["good"] and verify_store(store) == []
    message = refusals[0].split(f"{named}: ", 1)[-1]
    reliability("bad input", kind, 1, f"refused: `{message}`; the good case ingested, store verifies")


def test_special_case_names_and_layouts(tmp_path, reliability):
    raw = tmp_path / "raw"
    write_case(raw / "Fall ü 1", "Fall ü 1", *brain_arrays(seed=1))
    write_case(raw / "esc", "..", *brain_arrays(seed=2))
    write_case(raw / "a" / "dup", "dup", *brain_arrays(seed=3))
    write_case(raw / "b" / "dup", "dup", *brain_arrays(seed=4))
    mods, seg = brain_arrays(seed=5)
    write_case(raw / "tumour-free", "tumour-free", mods, seg * 0)
    store = tmp_path / "store"
    proc = brats("ingest", str(raw), "--out", str(store), "--workers", "0", "--no-progress", check=False)
    assert proc.returncode == 1
    assert list_case_ids(store) == ["Fall ü 1", "tumour-free"] and verify_store(store) == []
    assert not (tmp_path / "store" / "..").resolve().joinpath("_t1.nii.gz").exists()
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("rejected:")]
    assert len(errors) == 3 and sum("escape" in e for e in errors) == 1
    assert sum("found in several folders" in e for e in errors) == 2
    reliability("bad input", "case folder and id with spaces and unicode (`Fall ü 1`)", 1, "accepted and ingested")
    reason = lambda text: next(e for e in errors if text in e).split(": ", 2)[-1]
    reliability("bad input", "case id `..` (would escape the output folder)", 1, f"refused: `{reason('escape')}`")
    reliability("bad input", "two cases with the same id in different folders", 1,
                f"refused, both: `{reason('several folders')}`")
    reliability("bad input", "empty seg (a case without tumour)", 1,
                "accepted: ingested (and trains: `test_case_without_tumour_trains`)")


def test_unwritable_output_folder(tmp_path, reliability):
    if os.geteuid() == 0:
        out = Path("/proc/brats-store")  # even root cannot create folders here
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "store"
    raw = tmp_path / "raw"
    write_case(raw / "good", "good", *brain_arrays(seed=1))
    proc = brats("ingest", str(raw), "--out", str(out), "--workers", "0", "--no-progress", check=False)
    assert proc.returncode == 3 and proc.stderr.strip().count("\n") == 0 and str(out) in proc.stderr
    reliability("bad input", "output folder that cannot be written", 1,
                f"refused, exit 3: `{proc.stderr.strip().removeprefix('error: ')}`")


# -- untrusted files and network exposure ------------------------------------------------------

class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_checkpoint_is_refused_by_train_and_score(tmp_path, reliability):
    import pickle

    bad = tmp_path / "evil.pt"
    with bad.open("wb") as f:
        pickle.dump({"format": "brats-checkpoint", "version": 1, "model": _Payload()}, f)
    for args in (["score", "--ckpt", str(bad)], ["train", "--resume", str(bad)]):
        proc = brats(*args, "--no-progress", cwd=tmp_path, check=False)
        assert proc.returncode == 3 and "refused: carries pickled code" in proc.stderr
        assert not (tmp_path / "pwned").exists()
    reliability("untrusted", "checkpoint carrying a pickled `os.system` call (`score --ckpt`, `train --resume`)", 2,
                "refused, exit 3, nothing executed: `carries pickled code`")


def test_local_cluster_listens_on_localhost_only(reliability):
    from gliostream.pipeline.cluster import dask_client

    with dask_client(None, 1) as client:
        info = client.scheduler_info()
        addresses = [client.scheduler.address, *info["workers"]]
        dashboard = client.dashboard_link
    assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
    assert dashboard.startswith("http://127.0.0.1:"), dashboard
    reliability("untrusted", "network exposure of the Dask cluster and dashboard `brats ingest` starts", 1,
                "scheduler, workers and dashboard bound to 127.0.0.1 only")


# -- scale-out ---------------------------------------------------------------------------------

def test_ingest_on_a_real_multi_process_cluster(ingest_scenario, tmp_path, reliability):
    raw, _, reference = ingest_scenario
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("BRATS_FAULT", None)
    dask = [sys.executable, "-m", "distributed.cli"]
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([*dask[:2], "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(200):
            if scheduler_file.exists() and scheduler_file.stat().st_size:
                break
            time.sleep(0.1)
        import json

        address = json.loads(scheduler_file.read_text())["address"]
        for i in range(2):
            procs.append(subprocess.Popen([*dask[:2], "distributed.cli.dask_worker", address, "--nthreads", "1",
                                           "--host", "127.0.0.1", "--name", f"w{i}", "--no-dashboard"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        proc = brats("ingest", str(raw), "--out", str(tmp_path / "store"), "--scheduler", address, "--no-progress")
        assert "6 ingested" in proc.stdout
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert verify_store(tmp_path / "store") == [] and content(tmp_path / "store") == content(reference)
    reliability("scale-out", "`brats ingest --scheduler tcp://127.0.0.1:PORT` on a scheduler and 2 worker "
                             "processes started from the dask command line", 1,
                "store identical in content (fingerprints, CRC-32 of every array) to a local run")
