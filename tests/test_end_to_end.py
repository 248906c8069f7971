"""The whole chain through the console script: synth -> ingest -> train -> score."""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd

from gliostream.scoring.report import FIRST_COLUMNS, SUMMARY_ROWS
from gliostream.trainer.checkpoint import load_checkpoint


def brats(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "gliostream", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"brats {' '.join(args)}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


def test_synth_ingest_train_score(tmp_path):
    brats("synth", "raw", "--cases", "5", "--shape", "48,48,40", "--seed", "3", cwd=tmp_path)
    brats("ingest", "raw", "--out", "store", "--workers", "1", cwd=tmp_path)
    brats("train", "--epochs", "2", "--patches-per-epoch", "32", "--patch-size", "32", "--base-channels", "4",
          "--batch-size", "2", "--accum-steps", "2", "--lr", "3e-3", "--val-every", "1", "--no-progress", cwd=tmp_path)
    (val_case,) = load_checkpoint(tmp_path / "best.pt")["split"]["val"]  # a seeded draw of the five
    proc = brats("score", "--ckpt", "best.pt", "--save-predictions", "preds", "--no-progress", cwd=tmp_path)
    assert "Mean" in proc.stdout and "wrote final_scores.csv" in proc.stdout
    table = pd.read_csv(tmp_path / "final_scores.csv")
    assert list(table.columns[:7]) == FIRST_COLUMNS
    assert list(table["case_id"]) == [val_case, *SUMMARY_ROWS]
    legacy_and_lesionwise = [c for c in table.columns[1:] if not c.startswith(("all_instance_", "global_", "lesionwise_"))]
    values = table[legacy_and_lesionwise].astype(float)
    assert np.isfinite(values.to_numpy()).all(), values.columns[~np.isfinite(values.to_numpy()).all(axis=0)].tolist()
    # The official columns follow: no 2021 case has a resection cavity, so its group is NaN (not 1).
    assert table["global_dsc_rc"].isna().all() and (table.loc[:0, "all_instance_tp_rc"] == 0).all()
    assert (tmp_path / "final_scores.png").is_file()
    exported = nib.load(tmp_path / "preds" / f"{val_case}.nii.gz")
    raw_seg = nib.load(tmp_path / "raw" / val_case / f"{val_case}_seg.nii.gz")
    assert exported.shape == raw_seg.shape and np.allclose(exported.affine, raw_seg.affine)
    assert set(np.unique(np.asarray(exported.dataobj))) <= {0, 1, 2, 4}
    # The same checkpoint on the raw files, preprocessed on the fly, gives the same scores.
    brats("score", "--ckpt", "best.pt", "--raw", "raw", "--out", "raw_scores.csv", "--no-progress", cwd=tmp_path)
    raw = pd.read_csv(tmp_path / "raw_scores.csv").set_index("case_id")
    assert np.allclose(raw.loc[val_case].to_numpy(), table.set_index("case_id").loc[val_case].to_numpy(), equal_nan=True)
    # And the exported files scored with --pred against the store reproduce the model's scores.
    brats("score", "--pred", "preds", "--store", "store", "--out", "pred_scores.csv",
          "--no-progress", cwd=tmp_path)
    pred = pd.read_csv(tmp_path / "pred_scores.csv").set_index("case_id")
    assert np.allclose(pred.loc[val_case].to_numpy(), table.set_index("case_id").loc[val_case].to_numpy(),
                       equal_nan=True)
