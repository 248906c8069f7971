"""Every BraTS task's labels through ingest, training, scoring and prediction, exactly."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from gliostream.errors import ConfigError, StoreMismatchError
from gliostream.official import GROUPS, official_columns
from gliostream.pipeline.config import IngestConfig
from gliostream.pipeline.ingest import run_ingest
from gliostream.regions import decode_regions
from gliostream.scoring.predict import run_prediction
from gliostream.scoring.report import table_columns
from gliostream.scoring.run import run_scoring
from gliostream.scoring.settings import PredictConfig, ScoreConfig
from gliostream.store.reader import list_case_ids, read_case, read_case_record, store_task
from gliostream.synth import SynthConfig, synth_dataset
from gliostream.tasks import TASKS
from gliostream.trainer.checkpoint import read_checkpoint
from gliostream.trainer.config import ModelConfig, StreamConfig, TrainConfig
from gliostream.trainer.loop import run_training

# The regions each synthetic dataset holds, so the regions its model is trained on.
TRAINED = {"GLI": ("wt", "tc", "et", "rc"), "MET": ("wt", "tc", "et", "rc"), "PED": ("wt", "tc", "cc", "et"),
           "MEN-RT": ("gtv",), "MEN": ("wt", "tc", "et"), "SSA": ("wt", "tc", "et"), "GOAT": ("wt", "tc", "et")}


def _raw_seg(raw, case_id):
    return np.asarray(nib.load(next((raw / case_id).glob("*seg.nii.gz"))).dataobj)


@pytest.mark.parametrize("task", list(TRAINED))
def test_every_task_goes_through_ingest_train_score_and_predict_in_its_own_labels(tmp_path, task):
    raw, store = tmp_path / "raw", tmp_path / "store"
    synth_dataset(raw, SynthConfig(cases=4, shape=(40, 40, 32), naming="2023", task=task, seed=2), progress=False)
    assert run_ingest(raw, store, IngestConfig(task=task), workers=0, progress=False).exit_code == 0
    labels = set(TASKS[task].labels)
    assert store_task(store) == task
    held = set()
    for case_id in list_case_ids(store):
        case, record = read_case(store, case_id), read_case_record(store, case_id)
        box = tuple(slice(a, b) for a, b in record.crop_box)
        assert np.array_equal(case.label, _raw_seg(raw, case_id)[box])  # the task's own labels, no remap
        assert record.task == task and record.regions == tuple(r.name for r in TASKS[task].regions)
        held |= set(np.unique(case.label).tolist())
    assert held == {0} | labels  # the synthetic cases hold every label of the task (cavity, cyst, ...)

    config = TrainConfig(store=str(store), out=str(tmp_path / "run"), epochs=1, patches_per_epoch=8, accum_steps=1,
                         val_every=1, model=ModelConfig(base_channels=2, levels=2, deep_supervision=1),
                         stream=StreamConfig(patch_size=(16, 16, 16), batch_size=2, workers=0))
    run_training(config, progress=False)
    checkpoint = read_checkpoint(tmp_path / "run" / "best.pt")
    assert (checkpoint.config.task, checkpoint.config.regions) == (task, TRAINED[task])
    assert checkpoint.weights["head.weight"].shape[0] == len(TRAINED[task])  # one output per region

    scored = run_scoring(ScoreConfig(ckpt=str(tmp_path / "run" / "best.pt"), cases="all", out=str(tmp_path / "s.csv"),
                                     save_predictions=str(tmp_path / "exported"), device="cpu"), progress=False)
    assert list(scored.table.columns) == table_columns(("legacy", "lesionwise-2023", "official"), TASKS[task])
    assert set(official_columns(TASKS[task].evaluation)) <= set(scored.table.columns)
    predicted = run_prediction(PredictConfig(out=str(tmp_path / "pred"), ckpt=(str(tmp_path / "run" / "best.pt"),),
                                             inputs=str(raw), device="cpu"), progress=False)
    assert len(predicted.written) == 4
    for path in (tmp_path / "pred").glob("*.nii.gz"):
        assert set(np.unique(np.asarray(nib.load(path).dataobj)).tolist()) <= {0} | labels
        assert np.array_equal(np.asarray(nib.load(path).dataobj),
                              np.asarray(nib.load(tmp_path / "exported" / path.name).dataobj))  # score = predict

    # The exported segmentations read back in the task's labels score as the model did, and the
    # references themselves, read as predictions, score Dice 1 in every region and label group.
    again = run_scoring(ScoreConfig(pred=str(tmp_path / "exported"), store=str(store), out=str(tmp_path / "e.csv")),
                        progress=False).table.set_index("case_id")
    model = scored.table.set_index("case_id")
    assert np.allclose(again.loc["Mean"].to_numpy(float), model.loc["Mean"].to_numpy(float), equal_nan=True)
    truth = tmp_path / "truth"
    truth.mkdir()
    for case_id in list_case_ids(store):
        nib.save(nib.load(next((raw / case_id).glob("*seg.nii.gz"))), truth / f"{case_id}.nii.gz")
    perfect = run_scoring(ScoreConfig(pred=str(truth), raw=str(raw), task=task, out=str(tmp_path / "t.csv")),
                          progress=False).table.set_index("case_id")
    dice = perfect.loc["Mean", [c for c in perfect.columns if c.startswith(("dice_", "global_dsc_"))]]
    absent = {f"global_dsc_{g}" for g, group in GROUPS[TASKS[task].evaluation].items() if not set(group) & labels}
    assert (dice.drop(sorted(absent)) == 1).all() and dice[sorted(absent)].isna().all(), dice  # SSA has no cavity


def test_decoding_paints_each_tasks_labels():
    """PED: ED (4) in WT outside TC, NETC (2) in TC, a cyst (3) and ET (1) inside TC, ET over the
    cyst; glioma's resection cavity (4) is no part of the tumour and is decoded on its own."""
    ped = TASKS["PED"].regions  # wt, tc, cc, et
    p = torch.zeros(4, 5)
    p[:, 0] = torch.tensor([0.9, 0.1, 0.1, 0.1])  # edema
    p[:, 1] = torch.tensor([0.9, 0.9, 0.1, 0.1])  # non-enhancing core
    p[:, 2] = torch.tensor([0.9, 0.9, 0.9, 0.1])  # cyst
    p[:, 3] = torch.tensor([0.9, 0.9, 0.9, 0.9])  # enhancing, also cyst-like: ET wins
    p[:, 4] = torch.tensor([0.1, 0.9, 0.9, 0.9])  # no WT: no tumour whatever the inner channels say
    assert decode_regions(p, ped).tolist() == [4, 2, 3, 1, 0]
    gli = TASKS["GLI"].regions  # wt, tc, et, rc
    q = torch.tensor([[0.9, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.9]])
    assert decode_regions(q, gli).tolist() == [2, 4]


def test_a_store_keeps_one_task_and_2021_files_are_glioma(tmp_path):
    raw = tmp_path / "raw"
    synth_dataset(raw, SynthConfig(cases=1, shape=(32, 32, 24), naming="2023", task="PED"), progress=False)
    run_ingest(raw, tmp_path / "store", IngestConfig(task="PED"), workers=0, progress=False)
    with pytest.raises(StoreMismatchError, match="holds PED cases, not GLI: ingest with --task PED"):
        run_ingest(raw, tmp_path / "store", IngestConfig(task="GLI"), workers=0, progress=False)
    old = tmp_path / "old"
    synth_dataset(old, SynthConfig(cases=1, shape=(32, 32, 24), naming="2021"), progress=False)
    result = run_ingest(old, tmp_path / "glioma", IngestConfig(), workers=0, progress=False)
    assert result.exit_code == 0 and store_task(tmp_path / "glioma") == "GLI"  # GLI stores record no task
    (case_id,) = list_case_ids(tmp_path / "glioma")
    assert 3 in np.unique(read_case(tmp_path / "glioma", case_id).label)  # 2021's enhancing 4 is stored as 3
    refused = run_ingest(old, tmp_path / "ped2021", IngestConfig(task="PED"), workers=0, progress=False)
    assert refused.count("rejected") == 1 and "ingest it with --task GLI" in refused.results[0].problem
    with pytest.raises(ConfigError, match="no BraTS 2018-2021 files"):
        SynthConfig(task="PED", naming="2021")
