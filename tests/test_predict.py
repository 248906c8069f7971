"""brats predict: raw folders of both namings, stores, refused cases, skipping, and the same
segmentation as `brats score --save-predictions`."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from click.testing import CliRunner

from gliostream.cli.main import cli
from gliostream.scoring.run import ScoreConfig, run_scoring
from gliostream.store.reader import list_case_ids, read_case_record
from gliostream.trainer.checkpoint import save_checkpoint
from gliostream.trainer.config import config_from_dict
from gliostream.trainer.model import ModelConfig, ResUNet

from .helpers import brain_arrays, write_case


def enhancing_everywhere(path: Path, store: Path) -> Path:
    """A checkpoint whose network calls every voxel enhancing tumour (WT, TC and ET logits +20)."""
    model_config = ModelConfig(base_channels=4)
    model = ResUNet(model_config)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(20.0)
    config = config_from_dict(dict(store=str(store), out=str(path.parent), patch_size=(32, 32, 32), base_channels=4))
    save_checkpoint(path, {"config": config.to_dict(), "model_config": asdict(model_config), "model": model.state_dict(),
                           "split": {"train": [], "val": list_case_ids(store)[:2]}, "store": str(store)})
    return path


def predict(*args: str):
    return CliRunner().invoke(cli, ["predict", *args, "--no-progress", "--device", "cpu"])


def raw_folder(root: Path) -> Path:
    """Cases of both namings, with and without seg, plus one unreadable and one incomplete case."""
    mods, seg = brain_arrays()
    affine = np.array([[-1.0, 0, 0, 90], [0, -1.0, 0, 120], [0, 0, 1.0, -70], [0, 0, 0, 1]])
    write_case(root / "old", "old", mods, seg, naming="2021", affine=affine)
    write_case(root / "new", "new", brain_arrays(seed=3)[0], None, naming="2023")
    broken = write_case(root / "broken", "broken", brain_arrays(seed=5)[0], None)
    (broken / "broken_t2.nii.gz").write_bytes(b"not a nifti file")
    partial = write_case(root / "partial", "partial", brain_arrays(seed=6)[0], None)
    (partial / "partial_flair.nii.gz").unlink()
    return root


def test_raw_cases_of_both_namings_in_their_own_geometry_and_labels(tiny_store, tmp_path):
    raw = raw_folder(tmp_path / "raw")
    ckpt = enhancing_everywhere(tmp_path / "all.pt", tiny_store)
    out = tmp_path / "seg"
    result = predict(str(raw), str(out), "--ckpt", str(ckpt))
    assert result.exit_code == 1, result.output  # two cases refused, the others written
    assert "predict: 2 written, 0 up to date, 2 refused" in result.output
    assert "refused: " in result.output and "broken_t2.nii.gz" in result.output
    assert "partial" in result.output and "missing modality file(s) _flair" in result.output
    assert sorted(p.name for p in out.iterdir()) == [".brats-predict.lock", "new.nii.gz", "old.nii.gz",
                                                      "predictions.json"]  # nothing half-written left
    for case_id, naming, enhancing in (("old", "_t1", 4), ("new", "-t1n", 3)):
        source = nib.load(raw / case_id / f"{case_id}{naming}.nii.gz")
        saved = nib.load(out / f"{case_id}.nii.gz")
        labels = np.asarray(saved.dataobj)
        assert labels.shape == source.shape and np.allclose(saved.affine, source.affine)
        assert saved.get_data_dtype() == np.uint8
        brain = np.asarray(source.dataobj) != 0  # the crop is the bounding box of the brain
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(brain))
        assert (labels[box] == enhancing).all() and labels.sum() == enhancing * labels[box].size


def test_up_to_date_cases_are_skipped_until_an_input_changes(tiny_store, tmp_path):
    raw = tmp_path / "raw"
    for case_id in ("a", "b"):
        write_case(raw / case_id, case_id, brain_arrays(seed=len(case_id))[0], None)
    ckpt = enhancing_everywhere(tmp_path / "all.pt", tiny_store)
    out = tmp_path / "seg"
    assert predict(str(raw), str(out), "--ckpt", str(ckpt)).exit_code == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = predict(str(raw), str(out), "--ckpt", str(ckpt))
    assert "0 written, 2 up to date" in result.output and result.exit_code == 0
    future = (out / "a.nii.gz").stat().st_mtime + 10
    os.utime(raw / "a" / "a_t1ce.nii.gz", (future, future))  # a new scan of case a
    assert "1 written, 1 up to date" in predict(str(raw), str(out), "--ckpt", str(ckpt)).output
    assert (out / "b.nii.gz").stat().st_mtime_ns == first["b.nii.gz"]
    assert "2 written, 0 up to date" in predict(str(raw), str(out), "--ckpt", str(ckpt), "--overwrite").output


def test_store_cases_match_the_segmentations_score_saves(tiny_store, tmp_path):
    from gliostream.trainer.loop import run_training

    run_training(config_from_dict(dict(store=str(tiny_store), out=str(tmp_path / "run"), epochs=1, patches_per_epoch=4,
                             patch_size=(32, 32, 32), base_channels=4, batch_size=2, accum_steps=1, workers=0)),
                 progress=False)
    ckpt = str(tmp_path / "run" / "best.pt")
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(list_case_ids(tiny_store)[:2]) + "\n")
    result = predict("--store", str(tiny_store), "--cases", str(ids), str(tmp_path / "p"), "--ckpt", ckpt)
    assert result.exit_code == 0 and "2 written" in result.output, result.output
    run_scoring(ScoreConfig(ckpt=(ckpt,), store=str(tiny_store), cases=str(ids), out=str(tmp_path / "s.csv"),
                            save_predictions=str(tmp_path / "s"), device="cpu"), progress=False)
    for case_id in list_case_ids(tiny_store)[:2]:
        predicted = nib.load(tmp_path / "p" / f"{case_id}.nii.gz")
        saved_by_score = nib.load(tmp_path / "s" / f"{case_id}.nii.gz")
        assert np.array_equal(np.asarray(predicted.dataobj), np.asarray(saved_by_score.dataobj))
        assert predicted.shape == tuple(read_case_record(tiny_store, case_id).original_shape)


def test_command_line_errors(tiny_store, tmp_path):
    ckpt = enhancing_everywhere(tmp_path / "all.pt", tiny_store)
    assert predict(str(tmp_path / "seg"), "--ckpt", str(ckpt)).exit_code == 2  # IN missing
    assert predict("--store", str(tiny_store), "a", "b", "--ckpt", str(ckpt)).exit_code == 2
    result = predict(str(tmp_path / "nothing"), str(tmp_path / "seg"), "--ckpt", str(ckpt))
    assert result.exit_code == 3 and "does not exist" in result.output
    (tmp_path / "in").mkdir()
    result = predict(str(tmp_path / "in"), str(tmp_path / "seg"), "--ckpt", str(tmp_path / "none.pt"))
    assert result.exit_code == 3 and "no such checkpoint" in result.output
    (tmp_path / "file").write_text("")
    result = predict(str(tmp_path / "in"), str(tmp_path / "file"), "--ckpt", str(ckpt))
    assert result.exit_code == 3 and "must be a folder" in result.output
