"""The promises an adversarial run broke (issue 21), each kept: no data lost, nothing silently
wrong, one line per problem. Every test here failed before its fix; each records its row of
docs/reliability.md with the `reliability` fixture."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from gliostream.cli.main import cli
from gliostream.pipeline.ingest import run_ingest
from gliostream.store import layout
from gliostream.store.reader import read_case_record
from gliostream.store.verify import verify_store
from gliostream.trainer.checkpoint import load_checkpoint, save_checkpoint

from .helpers import brain_arrays, write_case
from .test_predict import enhancing_everywhere
from .test_reliability import TINY_TRAIN, brats

PY = [sys.executable, "-m", "gliostream"]


def run(*args: str) -> object:
    """A verb in this process (click's runner): exit code and the output it printed."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_line(result, code: int, *needles: str) -> str:
    """The result exited `code` with exactly one `error:` line holding every needle; returns it."""
    output = result.output if hasattr(result, "output") else result.stdout + result.stderr
    exit_code = getattr(result, "exit_code", getattr(result, "returncode", None))
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert exit_code == code and len(errors) == 1 and "Traceback" not in output, output[-3000:]
    assert all(n in errors[0] for n in needles), errors[0]
    return errors[0].removeprefix("error: ")


def shown(message: str) -> str:
    """A message as the reliability table shows it: without the path it names first, the remedy
    every store refusal repeats, or temporary folders."""
    message = message.split("; run `brats verify`")[0]
    message = re.sub(r"/tmp/\S*?/(pytest-\d+/)?[^/\s]*?\d/", "TMP/", message)
    return message.split(": ", 1)[1] if message.startswith(("/", "TMP/")) and ": " in message else message


def copy_store(tiny_store: Path, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    return store


def edit_array(store: Path, case_id: str, name: str, change) -> None:
    """Rewrite one stored array through zarr (same shape and dtype), as a bit flip would leave it."""
    array = zarr.open_array(str(layout.case_dir(store, case_id) / name), mode="r+")
    data = array[...]
    change(data)
    array[...] = data


def edit_record(store: Path, case_id: str, change) -> None:
    meta = layout.metadata_path(layout.case_dir(store, case_id))
    data = json.loads(meta.read_text())
    change(data["attributes"]["brats"])
    meta.write_text(json.dumps(data))


# -- 1. case ids that would address the store's own files ----------------------------------------

def test_case_ids_naming_store_files_are_refused(tmp_path, reliability):
    raw, store = tmp_path / "raw", tmp_path / "store"
    write_case(raw / "good", "good", *brain_arrays(seed=1))
    write_case(raw / "evil", "zarr.json", *brain_arrays(seed=2))
    write_case(raw / "evil2", "ZARR.JSON", *brain_arrays(seed=3))
    summary = run_ingest(raw, store, workers=0, progress=False)
    refused = {r.case_id: r.problem for r in summary.results if r.status == "rejected"}
    assert set(refused) == {"zarr.json", "ZARR.JSON"} and "store's own metadata file" in refused["zarr.json"]
    assert verify_store(store) == [] and run_ingest(raw, store, workers=0, progress=False).count("unchanged") == 1
    reliability("bad input", "case id `zarr.json` (would replace the store's own metadata), also `ZARR.JSON`", 2,
                f"refused: `{refused['zarr.json']}`; the store verifies and re-ingests")


def test_cleaning_one_case_never_touches_another_whose_id_extends_it(tmp_path, reliability):
    from gliostream.store.locks import case_lock
    from gliostream.store.writer import create_or_check_store, recover_case

    root = create_or_check_store(tmp_path / "s", {})
    live = layout.staging_dir(root) / "a.b.0123abcd"  # case `a.b` being written right now
    live.mkdir()
    with case_lock(root, "a"):
        recover_case(root, "a")
    assert live.is_dir()
    reliability("bad input", "case ids `a` and `a.b`: cleaning `a`'s debris while `a.b` is written", 1,
                "survived: only `a`'s own staging folders are removed")


# -- 2, 3. predict never overwrites inputs; stale predictions are never reported up to date ----

def test_predict_never_writes_where_it_reads(tiny_store, tmp_path, reliability):
    flat = tmp_path / "flat"
    mods, _ = brain_arrays(seed=1)
    write_case(flat, "B", mods)
    write_case(flat, "B_t1", brain_arrays(seed=2)[0])
    before = {p.name: p.read_bytes() for p in flat.iterdir()}
    ckpt = enhancing_everywhere(tmp_path / "m.pt", tiny_store)
    for out in (flat, flat / "seg"):
        line = one_line(run("predict", str(flat), str(out), "--ckpt", str(ckpt), "--no-progress"), 3,
                        "lies inside IN")
    one_line(run("score", "--ckpt", str(ckpt), "--raw", str(flat), "--save-predictions", str(flat), "--no-progress"),
             3, "--save-predictions lies inside --raw")
    assert {p.name: p.read_bytes() for p in flat.iterdir() if p.is_file()} == before
    reliability("bad input", "`brats predict flat flat` (case `B_t1`'s output `B_t1.nii.gz` is case `B`'s T1), "
                             "`flat flat/seg`, `score --raw flat --save-predictions flat`", 3,
                f"refused, exit 3, every input unchanged: `{shown(line)}`")


def test_predictions_of_another_model_or_options_are_never_up_to_date(tiny_store, tmp_path, reliability):
    ids = tmp_path / "ids.txt"
    ids.write_text("BraTS2021_00000\n")
    out = tmp_path / "seg"
    a = enhancing_everywhere(tmp_path / "a.pt", tiny_store)
    b = tmp_path / "b.pt"
    state = load_checkpoint(a)
    state["model"]["head.bias"] = state["model"]["head.bias"] - 40.0  # another model: nothing predicted
    save_checkpoint(b, state)
    base = ["predict", "--store", str(tiny_store), "--cases", str(ids), str(out), "--no-progress", "--device", "cpu"]
    assert "1 written" in run(*base, "--ckpt", str(a)).output
    assert "0 written, 1 up to date" in run(*base, "--ckpt", str(a)).output
    lines = [one_line(run(*base, "--ckpt", str(a), "--tta"), 3, "made by another model"),
             one_line(run(*base, "--ckpt", str(b)), 3, "--overwrite")]
    assert "1 written" in run(*base, "--ckpt", str(b), "--overwrite").output
    assert "0 written, 1 up to date" in run(*base, "--ckpt", str(b)).output
    labels = np.asarray(nib.load(out / "BraTS2021_00000.nii.gz").dataobj)
    assert labels.max() == 0  # model b's prediction, not a's
    assert json.loads((out / "predictions.json").read_text())["producer"]["checkpoints"][0]["sha256"]
    reliability("fault", "`brats predict` into a folder filled by another checkpoint, or again with `--tta`", 2,
                f"refused, exit 3: `{shown(lines[0])}`; redone with --overwrite, "
                "then up to date")


# -- 4. two trainings into one folder ------------------------------------------------------------

def test_second_training_into_a_busy_folder_is_refused(tiny_store, tmp_path, reliability):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    first = subprocess.Popen([*PY, "train", "--store", str(tiny_store), "--out", str(out), "--epochs", "200",
                              *TINY_TRAIN], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # the first run holds the lock once it has written its config
            if (out / "train_config.json").exists():
                break
            time.sleep(0.1)
        second = brats("train", "--store", str(tiny_store), "--out", str(out), "--epochs", "1", "--overwrite",
                       *TINY_TRAIN, check=False)
        assert first.poll() is None, "the first run must still be training"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    line = one_line(second, 3, "another `brats train`")
    reliability("fault", "two `brats train` into one `--out` at once", 1,
                f"the second refused, exit 3: `{shown(line)}`")


# -- 5. overflow and divergence -------------------------------------------------------------------

def test_finite_voxels_that_overflow_float32_are_normalised_or_refused(tmp_path, reliability):
    raw, store = tmp_path / "raw", tmp_path / "store"
    mods, seg = brain_arrays(seed=1)
    big = mods[0].astype(np.float64)
    big[20, 20, 16] = 1e39  # finite, beyond float32
    write_case(raw / "big", "big", [big, *mods[1:]], seg)
    worse = mods[0].astype(np.float64)
    worse[20, 20, 16] = worse[21, 20, 16] = 1e300  # its square overflows even float64
    write_case(raw / "worse", "worse", [worse, *mods[1:]], seg)
    summary = run_ingest(raw, store, workers=0, progress=False)
    status = {r.case_id: r for r in summary.results}
    assert status["big"].status == "ingested" and status["worse"].status == "rejected"
    assert "overflow" in status["worse"].problem
    image = zarr.open_array(str(layout.case_dir(store, "big") / "image"), mode="r")[...]
    assert np.isfinite(image).all() and verify_store(store) == []
    reliability("bad input", "a float64 T1 voxel of 1e39 (finite, beyond float32); two of 1e300", 2,
                f"1e39: normalised in float64, finite; 1e300: refused: `{status['worse'].problem}`")


def test_a_diverging_run_stops_and_keeps_its_checkpoints(tiny_store, tmp_path, reliability):
    out = tmp_path / "run"
    brats("train", "--store", str(tiny_store), "--out", str(out), "--epochs", "1", *TINY_TRAIN)
    state = load_checkpoint(out / "last.pt")
    state["model"]["head.weight"][0] = float("nan")  # as a too-high learning rate leaves it
    save_checkpoint(out / "last.pt", state)
    before = (out / "last.pt").read_bytes()
    proc = brats("train", "--resume", str(out / "last.pt"), "--epochs", "2", "--no-progress", check=False)
    line = one_line(proc, 3, "training diverged in epoch 2", "keeps epoch 1")
    assert (out / "last.pt").read_bytes() == before
    reliability("fault", "training whose loss becomes NaN", 1,
                f"stopped, exit 3, checkpoints kept: `{shown(line)}`")


# -- 6, 14. damaged stores are refused on read ---------------------------------------------------

def _flip_image(store):
    edit_array(store, "BraTS2021_00000", "image", lambda d: d.__setitem__((0, 10, 10, 10), d[0, 10, 10, 10] + 1))


def _flip_label(store):
    edit_array(store, "BraTS2021_00000", "label", lambda d: d.__setitem__((10, 10, 10), (d[10, 10, 10] + 1) % 4))


def _delete_chunk(store):
    shutil.rmtree(layout.case_dir(store, "BraTS2021_00000") / "image" / "c")  # read back as zeros


def _foreign_chunk(store):
    for part in ("c",):
        target = layout.case_dir(store, "BraTS2021_00000") / "label" / part
        shutil.rmtree(target)
        shutil.copytree(layout.case_dir(store, "BraTS2021_00002") / "label" / part, target)


def _array_meta(store, change):
    meta = layout.case_dir(store, "BraTS2021_00000") / "image" / "zarr.json"
    data = json.loads(meta.read_text())
    change(data)
    meta.write_text(json.dumps(data))


def _locations_out_of_range(store):
    edit_array(store, "BraTS2021_00000", "loc_wt", lambda d: d.__setitem__(slice(None), 65000))


def _crop_box(store):
    edit_record(store, "BraTS2021_00000", lambda r: r.__setitem__("crop_box", [[0, 10**9]] * 3))


DAMAGE = {
    "a byte of an image chunk changed": (_flip_image, "content differs from the checksum"),
    "a byte of a label chunk changed": (_flip_label, "content differs from the checksum"),
    "an image chunk deleted (read as zeros)": (_delete_chunk, "content differs from the checksum"),
    "a label chunk copied from another case": (_foreign_chunk, "BraTS2021_00000"),
    "array dtype edited": (lambda s: _array_meta(s, lambda d: d.__setitem__("data_type", "float32")), "dtype"),
    "array shape edited": (lambda s: _array_meta(s, lambda d: d.__setitem__("shape", [4, 10**6, 10**6, 10**6])),
                           "shape"),
    "tumour locations out of range": (_locations_out_of_range, "BraTS2021_00000"),
    "crop box edited outside the volume": (_crop_box, "case record was edited"),
    "label convention edited": (lambda s: edit_record(s, "BraTS2021_00000", lambda r: r.__setitem__(
        "convention", "1999")), "case record was edited"),
    "image array deleted": (lambda s: shutil.rmtree(layout.case_dir(s, "BraTS2021_00000") / "image"), "unreadable"),
}


@pytest.mark.parametrize("kind", [k for k in DAMAGE if "locations" not in k])  # scoring reads no locations
def test_score_refuses_a_damaged_store(tiny_store, tmp_path, reliability, kind):
    store = copy_store(tiny_store, tmp_path)
    damage, needle = DAMAGE[kind]
    damage(store)
    assert any("BraTS2021_00000" in p.where for p in verify_store(store))
    ckpt = enhancing_everywhere(tmp_path / "m.pt", tiny_store)
    result = run("score", "--ckpt", str(ckpt), "--store", str(store), "--cases", "all", "--out",
                 str(tmp_path / "s.csv"), "--no-progress", "--device", "cpu")
    line = one_line(result, 3, needle, "--redo-damaged")
    assert not (tmp_path / "s.csv").exists()
    reliability("store damage", f"{kind}, then `brats score`", 1, f"refused, exit 3: `{shown(line)}`")


@pytest.mark.parametrize("kind", ["a byte of an image chunk changed", "tumour locations out of range",
                                  "crop box edited outside the volume"])
def test_train_refuses_a_damaged_store(tiny_store, tmp_path, reliability, kind):
    store = copy_store(tiny_store, tmp_path)
    DAMAGE[kind][0](store)
    proc = brats("train", "--store", str(store), "--out", str(tmp_path / "run"), "--epochs", "1", "--val-fraction",
                 "0", *TINY_TRAIN, check=False)
    line = one_line(proc, 3, "BraTS2021_00000", "--redo-damaged")
    reliability("store damage", f"{kind}, then `brats train`", 1, f"refused, exit 3: `{shown(line)}`")


# -- 7. case records are sealed ------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("crop_box", [[1, 30], [2, 30], [3, 25]]), ("spacing", [2.0, 2.0, 2.0]),
                                         ("labelled", False), ("checksums", {})])
def test_edited_records_are_verify_errors_and_predict_refuses_them(tiny_store, tmp_path, reliability, field, value):
    store = copy_store(tiny_store, tmp_path)
    edit_record(store, "BraTS2021_00001", lambda r: r.__setitem__(field, value))
    problems = [p.line() for p in verify_store(store)]
    assert len(problems) == 1 and "BraTS2021_00001: case record was edited or damaged" in problems[0]
    ckpt = enhancing_everywhere(tmp_path / "m.pt", tiny_store)
    result = run("predict", "--store", str(store), str(tmp_path / "seg"), "--ckpt", str(ckpt), "--no-progress",
                 "--device", "cpu")
    assert result.exit_code == 1 and "refused: " in result.output and "BraTS2021_00001" in result.output
    assert not (tmp_path / "seg" / "BraTS2021_00001.nii.gz").exists()
    reliability("store damage", f"a case record's `{field}` edited", 1,
                "verify error; predict refuses the case, the others written")


# -- 8. spacing ----------------------------------------------------------------------------------

def test_spacing_is_that_of_the_affine_the_geometry_uses(tmp_path, reliability):
    raw = tmp_path / "raw"
    mods, seg = brain_arrays(seed=1)
    write_case(raw / "c", "c", mods, seg, affine=np.diag([-5.0, -5.0, 5.0, 1.0]))
    for path in (raw / "c").iterdir():  # pixdim says 1 mm, the sform 5 mm
        image = nib.load(path)
        header = image.header.copy()
        header["pixdim"][1:4] = [1.0, 1.0, float("nan") if "seg" in path.name else 1.0]
        header.set_qform(None, code=0)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine, header=header), path)
    run_ingest(raw, tmp_path / "store", workers=0, progress=False)
    assert read_case_record(tmp_path / "store", "c").spacing == (5.0, 5.0, 5.0)
    reliability("bad input", "header whose pixdim says 1 mm (or NaN) and whose sform says 5 mm", 1,
                "ingested at 5 mm, the spacing of the affine the geometry uses")


# -- 9. a rejected new version -------------------------------------------------------------------

def test_a_rejected_new_version_keeps_the_old_one_marked_stale(tmp_path, reliability):
    raw, store = tmp_path / "raw", tmp_path / "store"
    write_case(raw / "c", "c", *brain_arrays(seed=1))
    write_case(raw / "d", "d", *brain_arrays(seed=2))
    run_ingest(raw, store, workers=0, progress=False)
    t2 = raw / "c" / "c_t2.nii.gz"
    good = t2.read_bytes()
    t2.write_bytes(good[: len(good) // 2])  # the new version arrives truncated
    assert run_ingest(raw, store, workers=0, progress=False).exit_code == 1
    problems = [p.line() for p in verify_store(store)]
    assert len(problems) == 1 and "stale: the store keeps its previous version" in problems[0] and "truncated" in problems[0]
    proc = brats("train", "--store", str(store), "--out", str(tmp_path / "run"), "--epochs", "1", "--val-fraction", "0",
                 *TINY_TRAIN)
    assert "used at their previous version" in proc.stderr and "c" in proc.stderr
    t2.write_bytes(good)
    assert run_ingest(raw, store, workers=0, progress=False).count("unchanged") == 2 and verify_store(store) == []
    reliability("fault", "a stored case whose new raw version is rejected", 1,
                "old version kept, marked stale: verify reports it (exit 1), train and score warn; cleared once "
                "the raw files are good again")


# -- 10, 16, 23. settings -------------------------------------------------------------------------

BAD_SETTINGS = {
    "gamma-range = [-1, -0.5]": "[augment]\ngamma-range = [-1, -0.5]",
    'batch-dice = "no"': 'batch-dice = "no"',
    'amp = "yes"': 'amp = "yes"',
    "epochs = 1.5": "epochs = 1.5",
    'tumour-regions = ["wt", "wt"]': '[stream]\ntumour-regions = ["wt", "wt"]',
    'tumour-regions = ["xx"]': '[stream]\ntumour-regions = ["xx"]',
    "flip-prob = 2": "[augment]\nflip-prob = 2",
    'flip-prob = "x"': '[augment]\nflip-prob = "x"',
    'lr = "fast"': 'lr = "fast"',
    "lr = -1": "lr = -1",
    "lr = nan": "lr = nan",
    "weight-decay = -0.5": "weight-decay = -0.5",
    "seed = -1": "seed = -1",
    'device = "tpu"': 'device = "tpu"',
    "in-channels = 3": "[model]\nin-channels = 3",
    "classes = 4": "[model]\nclasses = 4",
    "classes = 0": "[model]\nclasses = 0",
    "levels = 1": "[model]\nlevels = 1",
    "patch-size = [32.0, 32, 32]": "patch-size = [32.0, 32, 32]",
    "patch-size = 32": "patch-size = 32",
    'downsample = "2"': 'downsample = "2"',
}


def test_every_setting_is_checked_in_one_line(tmp_path, reliability):
    lines = {}
    for setting, toml in BAD_SETTINGS.items():
        path = tmp_path / "bad.toml"
        path.write_text(toml + "\n")
        result = run("train", "--config", str(path), "--store", str(tmp_path / "no-store"), "--out", str(tmp_path))
        lines[setting] = one_line(result, 3, str(path), setting.split(" = ")[0])
    example = lines['downsample = "2"']
    assert "must be a whole number, not '2' (text)" in example
    one_line(run("train", "--device", "gpu", "--store", str(tmp_path)), 3, "device must be auto, cpu, cuda")
    one_line(run("score", "--pred", str(tmp_path), "--device", "gpu"), 3, "device must be auto, cpu, cuda")
    reliability("bad input", f"{len(BAD_SETTINGS)} nonsensical config values ({', '.join(list(BAD_SETTINGS)[:4])}, ...) "
                             "and `--device gpu`", len(BAD_SETTINGS) + 2,
                f"refused before any work, exit 3, one line naming file and setting, e.g. "
                f"`{shown(example)}`")


# -- 12, 15, 24. checkpoints ------------------------------------------------------------------------

def test_unusable_checkpoints_are_refused_in_one_line(tiny_store, tmp_path, reliability):
    good = load_checkpoint(enhancing_everywhere(tmp_path / "good.pt", tiny_store))
    variants = {
        "no config": {k: v for k, v in good.items() if k != "config"},
        "postprocess of the wrong type": {**good, "postprocess": "big"},
        "split of the wrong type": {**good, "split": ["a", "b"]},
        "config of the wrong type": {**good, "config": [1, 2]},
        "model_config asking for 40 levels": {**good, "model_config": {**good["model_config"], "levels": 40}},
    }
    for name, state in variants.items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save(state, path)
        for args in (["score", "--ckpt", str(path), "--store", str(tiny_store), "--cases", "all", "--device", "cpu"],
                     ["train", "--resume", str(path)]):
            one_line(run(*args, "--no-progress"), 3, path.name)
    (tmp_path / "notes.pt").write_text("not a checkpoint at all\n")
    line = one_line(run("score", "--ckpt", str(tmp_path / "notes.pt"), "--no-progress"), 3, "notes.pt")
    assert "Weights only" not in line
    reliability("bad input", "checkpoints without `config`, with `postprocess`, `split` or `config` of the wrong type, "
                             "or 40 levels (`score`, `train --resume`), and a text file as `--ckpt`", 11,
                f"refused before anything is built, exit 3, one line: `{shown(line)}`")


def test_a_forty_level_checkpoint_allocates_nothing(tiny_store, tmp_path):
    import resource

    state = load_checkpoint(enhancing_everywhere(tmp_path / "good.pt", tiny_store))
    state["model_config"]["levels"] = 40
    torch.save(state, tmp_path / "deep.pt")
    proc = brats("score", "--ckpt", str(tmp_path / "deep.pt"), "--store", str(tiny_store), "--cases", "all",
                 "--device", "cpu", check=False)
    one_line(proc, 3, "levels")
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 1_500_000  # KiB: no 3.6 GB network


# -- 11, 13, 21, 22. raw files -------------------------------------------------------------------

def test_special_files_are_refused_without_being_read(tmp_path, reliability):
    raw, store = tmp_path / "raw", tmp_path / "store"
    write_case(raw / "good", "good", *brain_arrays(seed=1))
    fifo = write_case(raw / "fifo", "fifo", *brain_arrays(seed=2))
    (fifo / "fifo_t2.nii.gz").unlink()
    os.mkfifo(fifo / "fifo_t2.nii.gz")
    dev = write_case(raw / "dev", "dev", *brain_arrays(seed=3))
    (dev / "dev_t2.nii.gz").unlink()
    (dev / "dev_t2.nii.gz").symlink_to("/dev/zero")
    sparse = write_case(raw / "sparse", "sparse", *brain_arrays(seed=4))
    image = nib.load(sparse / "sparse_t2.nii.gz")
    image = nib.Nifti1Image(np.asarray(image.dataobj), image.affine, header=image.header)
    (sparse / "sparse_t2.nii.gz").unlink()
    nib.save(image, sparse / "sparse_t2.nii")
    with open(sparse / "sparse_t2.nii", "r+b") as f:
        f.truncate(4 << 30)  # 4 GiB, sparse: a header for 40x40x32 voxels
    proc = subprocess.run([*PY, "ingest", str(raw), "--out", str(store), "--workers", "0", "--no-progress"],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: __import__("resource").setrlimit(
                              __import__("resource").RLIMIT_AS, (3 << 30, 3 << 30)))
    rejected = [ln for ln in proc.stderr.splitlines() if ln.startswith("rejected:")]
    assert proc.returncode == 1 and len(rejected) == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert sum("not a regular file" in ln for ln in rejected) == 2 and any("far more than" in ln for ln in rejected)
    assert verify_store(store) == [] and read_case_record(store, "good") is not None
    reliability("bad input", "a FIFO named `_t2.nii.gz`, a link to `/dev/zero`, a 4 GiB sparse `.nii` (under a 3 GB "
                             "memory limit)", 3,
                "refused before reading, no hang: `not a regular file ...`, `file is 4294967296 bytes, far more than "
                "...`; the good case ingested")


def _header_case(raw: Path, name: str, edit) -> Path:
    folder = write_case(raw / name, name, *brain_arrays(seed=5))
    path = folder / f"{name}_t1.nii.gz"
    image = nib.load(path)
    header = image.header.copy()
    edit(header)
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(header.binaryblock + data[348:]))
    return path


def test_bad_scaling_and_offsets_are_refused_everywhere(tiny_store, tmp_path, reliability):
    raw = tmp_path / "raw"
    write_case(raw / "good", "good", *brain_arrays(seed=1))
    for name, value in (("nan_inter", np.nan), ("inf_inter", np.inf)):
        _header_case(raw, name, lambda h, v=value: (h.__setitem__("scl_slope", 2.0), h.__setitem__("scl_inter", v)))
    _header_case(raw, "nan_offset", lambda h: h.__setitem__("vox_offset", np.nan))
    summary = run_ingest(raw, tmp_path / "store", workers=0, progress=False)
    problems = {r.case_id: r.problem for r in summary.results if r.status == "rejected"}
    assert set(problems) == {"nan_inter", "inf_inter", "nan_offset"} and summary.count("ingested") == 1
    assert "scaling is not finite" in problems["nan_inter"] and "vox_offset" in problems["nan_offset"]
    ckpt = enhancing_everywhere(tmp_path / "m.pt", tiny_store)
    result = run("predict", str(raw), str(tmp_path / "seg"), "--ckpt", str(ckpt), "--no-progress", "--device", "cpu")
    assert result.exit_code == 1 and result.output.count("refused: ") == 3 and "1 written" in result.output
    result = run("score", "--ckpt", str(ckpt), "--raw", str(raw), "--out", str(tmp_path / "s.csv"), "--no-progress",
                 "--device", "cpu")
    assert result.exit_code == 1 and result.output.count("skipped: ") == 3 and "scored 1 case" in result.output
    reliability("bad input", "NaN or Inf `scl_inter` with `scl_slope` 2, NaN `vox_offset` (ingest, predict, score --raw)",
                3, f"refused, one line each, the good case processed: `{problems['nan_inter']}`")


def test_gzip_members_and_damage(tmp_path, reliability):
    from gliostream.errors import InvalidCaseError
    from gliostream.pipeline.nifti import open_nifti

    mods, _ = brain_arrays(seed=1)
    nib.save(nib.Nifti1Image(mods[0], np.eye(4)), tmp_path / "one.nii.gz")
    body = gzip.decompress((tmp_path / "one.nii.gz").read_bytes())
    half = len(body) // 2
    (tmp_path / "multi.nii.gz").write_bytes(gzip.compress(body[:half]) + gzip.compress(body[half:]))
    np.testing.assert_array_equal(open_nifti(tmp_path / "multi.nii.gz").load(), mods[0])
    data = bytearray(gzip.compress(body))
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.nii.gz").write_bytes(bytes(data))
    with pytest.raises(InvalidCaseError, match="corrupt gzip data") as error:
        open_nifti(tmp_path / "flipped.nii.gz").load()
    reliability("bad input", "a multi-member gzip (valid, nibabel reads it); a byte flipped mid-stream", 2,
                f"the first read exactly; the second refused: `{error.value.problem}`")


def test_a_newline_in_a_folder_name_cannot_forge_a_line(tmp_path, reliability):
    raw = tmp_path / "raw"
    write_case(raw / "good", "good", *brain_arrays(seed=1))
    evil = write_case(raw / "x\nrejected: good: forged", "evil", *brain_arrays(seed=2))
    (evil / "evil_t2.nii.gz").write_bytes(b"")
    result = run("ingest", str(raw), "--out", str(tmp_path / "store"), "--workers", "0", "--no-progress")
    lines = [ln for ln in result.output.splitlines() if ln.startswith("rejected:")]
    assert result.exit_code == 1 and len(lines) == 1 and "x\\nrejected: good: forged" in lines[0]
    reliability("bad input", "a case folder named `x<newline>rejected: good: forged`", 1,
                "one line, the newline shown as `\\n`: no forged second line")


# -- 17, 19. full disks --------------------------------------------------------------------------

def full_disk(*args: str, point: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "BRATS_FAULT": point,
           "BRATS_FAULT_ERROR": "ENOSPC"}
    return subprocess.run([*PY, *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_full_disk_names_the_file_and_keeps_what_was_written(tiny_store, tmp_path, reliability):
    run_dir = tmp_path / "run"
    proc = full_disk("train", "--store", str(tiny_store), "--out", str(run_dir), "--epochs", "3", *TINY_TRAIN,
                     point="checkpoint:tmp-written:3")
    train_line = one_line(proc, 3, "last.pt: cannot write the checkpoint", "No space left on device")
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1 and load_checkpoint(run_dir / "best.pt")["epoch"] == 1
    assert not list(run_dir.glob(".*.tmp"))
    ckpt = run_dir / "last.pt"
    out = tmp_path / "s.csv"
    proc = full_disk("score", "--ckpt", str(ckpt), "--cases", "all", "--out", str(out), "--no-progress",
                     point="score:outputs-written")
    score_line = one_line(proc, 3, "s.csv: cannot be written", "No space left on device")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("s.") or p.name.startswith(".s.")]
    proc = full_disk("predict", "--store", str(tiny_store), str(tmp_path / "seg"), "--ckpt", str(ckpt),
                     "--no-progress", point="output:written:2")
    predict_line = one_line(proc, 3, "seg/", "No space left on device")
    assert not [p for p in (tmp_path / "seg").iterdir() if p.name.endswith(".tmp") or p.name.endswith(".tmp.nii.gz")]
    raw = tmp_path / "raw"
    write_case(raw / "c", "c", *brain_arrays(seed=1))
    proc = full_disk("ingest", str(raw), "--out", str(tmp_path / "store"), "--workers", "0", "--no-progress",
                     point="write:array-written")
    assert proc.returncode == 1 and "failed: " in proc.stderr and "No space left on device" in proc.stderr
    assert verify_store(tmp_path / "store") == []
    reliability("fault", "a full disk while saving a checkpoint, writing the score report, a prediction, a case", 4,
                f"one line naming the file, exit 3 (ingest: that case failed, exit 1), nothing half-written: "
                f"`{shown(train_line)}`; `{shown(score_line)}`; predict names "
                f"`{Path(predict_line.split(': ')[0]).name}`")


# -- 18. schedulers ------------------------------------------------------------------------------

def test_a_bad_scheduler_is_refused_before_anything_is_created(tmp_path, reliability):
    raw = tmp_path / "raw"
    write_case(raw / "c", "c", *brain_arrays(seed=1))
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    lines = []
    for scheduler in ("bogus://x", str(tmp_path / "notes.json"), str(raw / "c" / "c_t1.nii.gz")):
        store = tmp_path / "store"
        lines.append(one_line(run("ingest", str(raw), "--out", str(store), "--scheduler", scheduler), 3))
        assert not store.exists()
    reliability("bad input", "`--scheduler bogus://x`, a JSON file that is not a scheduler file, a NIfTI file", 3,
                f"refused, exit 3, no store folder created: `{shown(lines[0])}`")


# -- 25. recovery ----------------------------------------------------------------------------------

def test_ingest_repairs_what_verify_flags(tmp_path, reliability):
    raw, store = tmp_path / "raw", tmp_path / "store"
    for i in range(2):
        write_case(raw / f"c{i}", f"c{i}", *brain_arrays(seed=i))
    run_ingest(raw, store, workers=0, progress=False)
    edit_array(store, "c0", "image", lambda d: d.__setitem__((0, 10, 10, 10), d[0, 10, 10, 10] + 1))
    edit_record(store, "c1", lambda r: r.__setitem__("spacing", [9.0, 9.0, 9.0]))
    assert len(verify_store(store)) == 2
    plain = run_ingest(raw, store, workers=0, progress=False)  # an edited record is always redone
    assert plain.count("ingested") == 1 and [p.where for p in verify_store(store)] == [
        str(layout.case_dir(store, "c0") / "image")]
    result = run("ingest", str(raw), "--out", str(store), "--workers", "0", "--redo-damaged", "--no-progress")
    assert result.exit_code == 0 and "1 ingested, 1 unchanged" in result.output and verify_store(store) == []
    reliability("fault", "a stored case damaged after ingest (array byte changed; record edited), then ingest", 2,
                "a damaged record is rewritten by every ingest; damaged arrays by `ingest --redo-damaged` (the "
                "remedy verify names); store verifies")
