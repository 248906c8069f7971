"""brats score: metrics and their empty-mask rules, MONAI agreement, exports, --pred, --raw, errors."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from gliostream.errors import CheckpointError, ConfigError, OptionConflict, StoreError
from gliostream.inference import InferenceConfig, gaussian_weights, sliding_window_probabilities
from gliostream.metrics import EMPTY_HD95, dice, hd95, region_metrics
from gliostream.pipeline.discovery import discover_cases
from gliostream.regions import region_probabilities
from gliostream.scoring.cases import raw_case_list, raw_cases, store_cases
from gliostream.scoring.exports import save_prediction
from gliostream.scoring.report import FIRST_COLUMNS, SUMMARY_ROWS
from gliostream.scoring.run import ScoreConfig, run_scoring
from gliostream.store.reader import list_case_ids
from gliostream.trainer.checkpoint import load_checkpoint
from gliostream.trainer.config import TrainConfig, config_from_dict
from gliostream.trainer.loop import run_training
from gliostream.trainer.model import ModelConfig, ResUNet

from .helpers import brain_arrays, brats_03_config, write_case


def cube(shape=(20, 20, 20), lo=5, hi=10, shift=(0, 0, 0)):
    m = np.zeros(shape, bool)
    m[lo + shift[0]:hi + shift[0], lo + shift[1]:hi + shift[1], lo + shift[2]:hi + shift[2]] = True
    return m


def test_metrics_on_hand_made_masks():
    a, b = cube(), cube(shift=(2, 0, 0))
    assert dice(a, a) == 1.0 and hd95(a, a) == 0.0
    assert dice(a, b) == pytest.approx(2 * 75 / 250)
    assert hd95(a, b) == pytest.approx(2.0)
    assert hd95(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(4.0)
    empty = np.zeros_like(a)
    assert (dice(empty, empty), hd95(empty, empty)) == (1.0, 0.0)
    assert (dice(a, empty), hd95(a, empty)) == (0.0, EMPTY_HD95)
    assert (dice(empty, a), hd95(empty, a)) == (0.0, EMPTY_HD95)


def test_region_metrics_follow_nested_regions_and_empty_rules():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = 2
    ref[3:5, 3:5, 3:5] = 1  # no enhancing tumour in the reference
    pred = ref.copy()
    m = region_metrics(pred, ref, (1.0, 1.0, 1.0), total_voxels=2000)
    assert (m["dice_wt"], m["dice_tc"], m["dice_et"], m["hd95_et"]) == (1.0, 1.0, 1.0, 0.0)
    assert m["sens_et"] == 1.0 and m["spec_wt"] == 1.0 and m["ref_vol_wt"] == 64.0
    pred[3, 3, 3] = 3  # one enhancing voxel predicted where the reference has none: TC still right
    m = region_metrics(pred, ref, (1.0, 1.0, 1.0), total_voxels=2000)
    assert (m["dice_et"], m["hd95_et"]) == (0.0, EMPTY_HD95)
    assert m["dice_tc"] == 1.0 and m["spec_et"] == pytest.approx(1 - 1 / 2000)
    pred[pred > 0] = 0
    m = region_metrics(pred, ref, (1.0, 1.0, 1.0))
    assert (m["dice_wt"], m["sens_wt"], m["pred_vol_wt"]) == (0.0, 0.0, 0.0)


def blobs(seed, shape=(32, 28, 24), threshold=0.6):
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape), 2.5)
    return smooth > np.quantile(smooth, threshold)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_dice_agrees_with_monai_and_hd95_with_the_official_brats_code():
    """Dice is MONAI's; HD95 is the official BraTS 2023 code's (DeepMind's surface-distance), which
    differs from MONAI's border-voxel HD95 on these masks: a test of the definition, not a tolerance."""
    monai = pytest.importorskip("monai.metrics")
    import surface_distance

    differs = 0
    for seed in range(6):
        p, r = blobs(seed), blobs(seed + 100, threshold=0.55 + 0.05 * (seed % 3))
        spacing = (1.0, 1.5, 2.0) if seed % 2 else (1.0, 1.0, 1.0)
        as_tensor = lambda m: torch.from_numpy(m[None, None].astype(np.float32))
        monai_dice = monai.DiceMetric(include_background=True)(as_tensor(p), as_tensor(r)).item()
        monai_hd = monai.HausdorffDistanceMetric(percentile=95)(as_tensor(p), as_tensor(r), spacing=spacing).item()
        official = surface_distance.compute_robust_hausdorff(surface_distance.compute_surface_distances(r, p, spacing), 95)
        assert dice(p, r) == pytest.approx(monai_dice, abs=1e-6)
        assert hd95(p, r, spacing) == pytest.approx(official, abs=1e-9)
        differs += abs(official - monai_hd) > 0.1
    assert differs >= 3  # the two definitions really are different on most of these pairs


def test_sliding_window_matches_monai():
    inferers = pytest.importorskip("monai.inferers")
    torch.manual_seed(0)
    model = ResUNet(ModelConfig(base_channels=4)).eval()
    image = torch.randn(4, 40, 37, 20)  # one axis smaller than the window: padded
    config = InferenceConfig(window=(32, 32, 32), overlap=0.5, batch_windows=3, amp=False)
    ours = sliding_window_probabilities(model, image, config, "cpu")
    with torch.no_grad():
        theirs = inferers.sliding_window_inference(image[None], (32, 32, 32), 3, lambda x: region_probabilities(model(x)),
                                                   overlap=0.5, mode="gaussian", sigma_scale=0.125)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert torch.equal(ours > 0.5, theirs > 0.5)
    assert float(gaussian_weights((33, 33, 33)).max()) == 1.0  # 1 at the centre voxel of an odd window


def test_test_time_augmentation_flips_back():
    """One window over the whole volume: TTA must equal the mean of the 8 mirrored predictions
    flipped back, which differs from the plain prediction (the model is not mirror-symmetric)."""
    torch.manual_seed(1)
    model = ResUNet(ModelConfig(base_channels=4)).eval()
    image = torch.randn(4, 32, 32, 32)
    config = InferenceConfig(window=(32, 32, 32), amp=False)
    tta = sliding_window_probabilities(model, image, dataclasses.replace(config, tta=True), "cpu")
    with torch.no_grad():
        flips = [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
        expected = sum(region_probabilities(model(image[None].flip([a + 1 for a in f]))).flip([a + 1 for a in f])[0]
                       if f else region_probabilities(model(image[None]))[0] for f in flips) / 8
    torch.testing.assert_close(tta, expected, rtol=1e-4, atol=1e-5)
    plain = sliding_window_probabilities(model, image, config, "cpu")
    assert (tta - plain).abs().max() > 1e-3


@pytest.mark.parametrize("naming", ["2021", "2023"])
def test_exported_predictions_round_trip_to_the_raw_geometry(tmp_path, naming):
    mods, seg = brain_arrays()
    if naming == "2023":
        seg[seg == 4] = 3
    affine = np.array([[-1.0, 0, 0, 90], [0, -1.0, 0, 120], [0, 0, 1.0, -70], [0, 0, 0, 1]])
    write_case(tmp_path / "raw" / "c1", "c1", mods, seg, naming=naming, affine=affine)
    case = next(raw_cases(raw_case_list(tmp_path / "raw")[0]))
    path = save_prediction(tmp_path / "pred", case, case.reference)
    saved = nib.load(path)
    raw_seg = nib.load(discover_cases(tmp_path / "raw")[0].files["seg"])
    assert np.array_equal(np.asarray(saved.dataobj), np.asarray(raw_seg.dataobj))
    assert np.allclose(saved.affine, raw_seg.affine) and saved.get_data_dtype() == np.uint8


def test_realdata_exports_round_trip(realdata, tmp_path):
    labelled = [c for c in raw_case_list(realdata)[0] if c.labelled][:2]
    for case in raw_cases(labelled):
        path = save_prediction(tmp_path, case, case.reference)
        raw = next(c for c in labelled if c.case_id == case.case_id)
        assert np.array_equal(np.asarray(nib.load(path).dataobj), np.asarray(nib.load(raw.files["seg"]).dataobj))


def test_pred_scores_a_known_pair(tmp_path):
    mods, seg = brain_arrays()
    write_case(tmp_path / "raw" / "c1", "c1", mods, seg)
    write_case(tmp_path / "raw" / "c2", "c2", brain_arrays(seed=4)[0], seg)
    pred = tmp_path / "pred"
    pred.mkdir()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(seg, affine), pred / "c1.nii.gz")  # perfect
    no_et = seg.copy()
    no_et[no_et == 4] = 1  # enhancing called necrosis: ET missed, TC and WT right
    nib.save(nib.Nifti1Image(no_et, affine), pred / "c2.nii.gz")
    result = run_scoring(ScoreConfig(pred=str(pred), raw=str(tmp_path / "raw"), out=str(tmp_path / "s.csv")),
                         progress=False)
    table = pd.read_csv(tmp_path / "s.csv")
    assert list(table.columns[:7]) == FIRST_COLUMNS and list(table["case_id"][2:]) == list(SUMMARY_ROWS)
    c1, c2 = table.iloc[0], table.iloc[1]
    assert (c1["dice_wt"], c1["dice_et"], c1["hd95_et"]) == (1.0, 1.0, 0.0)
    assert (c2["dice_wt"], c2["dice_tc"], c2["dice_et"], c2["hd95_et"]) == (1.0, 1.0, 0.0, EMPTY_HD95)
    assert table.iloc[2]["dice_et"] == 0.5 and result.scored == 2 and result.plot.is_file()
    nib.save(nib.Nifti1Image(seg[:-1], affine), pred / "c2.nii.gz")  # unusable: skipped, named, exit 1
    result = run_scoring(ScoreConfig(pred=str(pred), raw=str(tmp_path / "raw"), out=str(tmp_path / "t.csv")),
                         progress=False)
    assert result.scored == 1 and result.exit_code == 1 and len(result.skipped) == 1
    assert "c2.nii.gz: shape" in result.skipped[0]
    assert list(pd.read_csv(tmp_path / "t.csv")["case_id"][:1]) == ["c1"]


def test_errors(tiny_store, tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        run_scoring(ScoreConfig(ckpt=str(tmp_path / "none.pt")), progress=False)
    ids = tmp_path / "ids.txt"
    ids.write_text("BraTS2021_00000\nnot_a_case\n")
    run_training(config_from_dict(dict(store=str(tiny_store), out=str(tmp_path), epochs=1, patches_per_epoch=4,
                             patch_size=(32, 32, 32), base_channels=4, batch_size=2, accum_steps=1)), progress=False)
    with pytest.raises(StoreError, match="lacks 1 of the cases to score: not_a_case"):
        run_scoring(ScoreConfig(ckpt=str(tmp_path / "last.pt"), cases=str(ids)), progress=False)
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "stranger.nii.gz").write_bytes(b"")
    with pytest.raises(StoreError, match="no reference case for the predictions stranger"):
        run_scoring(ScoreConfig(pred=str(pred), store=str(tiny_store)), progress=False)
    with pytest.raises(ConfigError, match="no such folder of predictions"):
        run_scoring(ScoreConfig(pred=str(tmp_path / "preds-none"), store=str(tiny_store)), progress=False)


def test_store_cases_keep_their_order_and_geometry(tiny_store):
    ids = list_case_ids(tiny_store)[::-1]
    cases = list(store_cases(tiny_store, ids))
    assert [c.case_id for c in cases] == ids
    assert all(c.reference_original().shape == c.original_shape for c in cases)


def test_folds_score_out_of_fold_and_as_an_ensemble(tiny_store, tmp_path):
    from click.testing import CliRunner

    from gliostream.cli.main import cli

    for fold in (0, 1):
        run_training(config_from_dict(dict(store=str(tiny_store), out=str(tmp_path / f"f{fold}"), epochs=1,
                                           patches_per_epoch=4, patch_size=(32, 32, 32), base_channels=4, batch_size=2,
                                           accum_steps=1, workers=0, folds=2, fold=fold, downsample=2)),
                     progress=False)
    ckpts = [str(tmp_path / f"f{k}" / "best.pt") for k in (0, 1)]
    states = [load_checkpoint(c) for c in ckpts]
    assert states[0]["config"]["folds"] == 2 and states[1]["config"]["fold"] == 1
    assert not set(states[0]["split"]["val"]) & set(states[1]["split"]["val"])
    run = lambda *args: CliRunner().invoke(cli, ["score", *args, "--no-progress", "--device", "cpu"])
    result = run("--ckpt", ckpts[0], "--ckpt", ckpts[1], "--cases", "oof", "--out", str(tmp_path / "oof.csv"))
    assert result.exit_code == 0, result.output
    oof = pd.read_csv(tmp_path / "oof.csv")
    assert sorted(oof.case_id[:-5]) == sorted(states[0]["split"]["train"] + states[0]["split"]["val"])
    result = run("--ckpt", ckpts[0], "--cases", "oof", "--out", str(tmp_path / "x.csv"))
    assert result.exit_code == 3 and "missing fold(s) 1" in result.output
    result = run("--ckpt", ckpts[0], "--ckpt", ckpts[1], "--cases", "all", "--out", str(tmp_path / "ens.csv"))
    assert result.exit_code == 0 and len(pd.read_csv(tmp_path / "ens.csv")) == len(oof)


def test_checkpoints_of_brats_0_1_still_score_but_do_not_resume(tiny_store, tmp_path):
    """0.1 checkpoints hold a four-class softmax head and no loss setting."""
    from dataclasses import asdict

    from gliostream.trainer.checkpoint import save_checkpoint

    config = brats_03_config(config_from_dict(dict(store=str(tiny_store), out=str(tmp_path), patch_size=(32, 32, 32),
                                                    base_channels=4)))
    for new in ("loss", "batch_dice", "downsample", "folds", "fold"):
        config.pop(new)
    model_config = ModelConfig(base_channels=4, classes=4)
    save_checkpoint(tmp_path / "old.pt", {
        "config": config, "model_config": asdict(model_config), "model": ResUNet(model_config).state_dict(),
        "split": {"train": [], "val": list_case_ids(tiny_store)[:1]}, "store": str(tiny_store)})
    result = run_scoring(ScoreConfig(ckpt=str(tmp_path / "old.pt"), out=str(tmp_path / "s.csv"), device="cpu"),
                         progress=False)
    assert result.scored == 1
    with pytest.raises(CheckpointError, match="brats 0.1"):
        run_training(TrainConfig(store=str(tiny_store)), resume=tmp_path / "old.pt")


def test_lesion_wise_and_official_columns_follow_the_legacy_ones(tmp_path):
    from gliostream.official import official_columns
    from gliostream.scoring.report import LEGACY_COLUMNS, LESION_COLUMNS

    mods, seg = brain_arrays()  # WT 800 voxels, TC 144, ET 136: each one counted lesion
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    pred = tmp_path / "pred"
    pred.mkdir()
    predictions = {"c1": seg.copy(), "c2": seg.copy(), "c3": seg.copy()}
    predictions["c2"][predictions["c2"] == 4] = 1  # ET missed: one false negative
    predictions["c3"][7, 8, 6] = 2  # one edema voxel far from the tumour: one WT false positive
    for case_id, labels in predictions.items():
        write_case(tmp_path / "raw" / case_id, case_id, mods, seg)
        nib.save(nib.Nifti1Image(labels, affine), pred / f"{case_id}.nii.gz")
    run_scoring(ScoreConfig(pred=str(pred), raw=str(tmp_path / "raw"), out=str(tmp_path / "s.csv")), progress=False)
    table = pd.read_csv(tmp_path / "s.csv").set_index("case_id")
    assert list(table.columns) == (LEGACY_COLUMNS + LESION_COLUMNS + official_columns("gli"))[1:]
    c1, c2, c3 = table.loc["c1"], table.loc["c2"], table.loc["c3"]
    assert [c1[f"lw_{m}_{r}"] for m in ("dice", "hd95", "tp", "fn", "fp") for r in ("wt", "tc", "et")] == \
        [1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert (c2.lw_dice_et, c2.lw_hd95_et, c2.lw_tp_et, c2.lw_fn_et, c2.lw_dice_tc) == (0, 374, 0, 1, 1)
    assert (c3.lw_dice_wt, c3.lw_hd95_wt, c3.lw_fp_wt, c3.lw_dice_tc) == (0.5, 187, 1, 1)
    assert c3.dice_wt == pytest.approx(2 * 800 / 1601)  # the legacy Dice barely sees it
    assert table.loc["Mean", "lw_dice_et"] == pytest.approx(2 / 3) and table.loc["Mean", "lw_fp_wt"] == pytest.approx(1 / 3)
    # The official evaluation: the missed ET is a false negative with global Dice 0 and HD95 373; the
    # far voxel an unmatched instance of WT and SNFH that the global Dice barely sees; no RC anywhere: NaN.
    assert (c2.all_instance_fn_et, c2.global_dsc_et, c2.global_hd95_et, c2.lesionwise_dsc_mean_et) == (1, 0, 373, 0)
    assert (c2.all_instance_f1_et, c2.global_dsc_tc, c2.all_instance_tp_tc) == (0, 1, 1)
    assert (c3.all_instance_fp_wt, c3.all_instance_fp_snfh, c3.all_instance_prec_wt, c3.lesionwise_dsc_mean_wt) == \
        (1, 1, 0.5, 1)
    assert c3.global_dsc_wt == pytest.approx(2 * 800 / 1601)
    assert c1[[c for c in table.columns if c.endswith("_rc") and "instance" not in c]].isna().all()
    assert (c1.all_instance_tp_rc, c1.all_instance_fp_rc, c1.all_instance_fn_rc) == (0, 0, 0)
    only_legacy = run_scoring(ScoreConfig(pred=str(pred), raw=str(tmp_path / "raw"), out=str(tmp_path / "l.csv"),
                                          metrics="official"), progress=False)
    assert list(only_legacy.table.columns) == LEGACY_COLUMNS + official_columns("gli")
    met = run_scoring(ScoreConfig(pred=str(pred), raw=str(tmp_path / "raw"), out=str(tmp_path / "m.csv"),
                                  challenge="MET"), progress=False)
    assert met.table.set_index("case_id").loc["c3", "lw_fp_wt"] == 1
    with pytest.raises(ConfigError, match="unknown challenge 'XYZ'"):
        ScoreConfig(challenge="XYZ")
    with pytest.raises(OptionConflict, match="unknown --metrics lesionwise"):
        ScoreConfig(pred="p", metrics="legacy,lesionwise")
    assert ScoreConfig(pred="p", challenge="PED").metrics == ("legacy", "lesionwise-2023", "official")


def test_figures_and_the_worst_cases(tiny_store, tmp_path):
    from click.testing import CliRunner
    from matplotlib.image import imread

    from gliostream.cli.main import cli
    from gliostream.scoring.figures import REGION_COLOURS

    from .test_predict import enhancing_everywhere

    ckpt = enhancing_everywhere(tmp_path / "all.pt", tiny_store)  # every voxel of the crop called ET
    figures = tmp_path / "figs"
    result = CliRunner().invoke(cli, ["score", "--ckpt", str(ckpt), "--cases", "all", "--out", str(tmp_path / "s.csv"),
                                      "--figures", str(figures), "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    ids = list_case_ids(tiny_store)
    assert sorted(p.name for p in figures.iterdir()) == sorted(f"{i}.png" for i in ids)
    picture = imread(figures / f"{ids[0]}.png")[..., :3]
    assert picture.std() > 0.05  # not blank
    for colour in (REGION_COLOURS[r] for r in ("wt", "tc", "et")):  # every region of the task outlined
        rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        assert (np.abs(picture - rgb).max(axis=-1) < 0.08).sum() > 20, colour
    table = pd.read_csv(tmp_path / "s.csv")
    cases = table[~table.case_id.isin(SUMMARY_ROWS)]
    worst = cases.assign(mean=cases[["dice_wt", "dice_tc", "dice_et"]].mean(axis=1)).sort_values(["mean", "case_id"])
    lines = result.output.split("worst cases by mean Dice:\n")[1].splitlines()[:4]
    assert [line.split()[0] for line in lines] == list(worst.case_id[:4])  # 4 cases: all of them, worst first
    assert all(line.endswith(f"{figures / case_id}.png") for line, case_id in zip(lines, worst.case_id[:4], strict=True))
    assert "lesion-wise (BraTS 2023 GLI rules)" in result.output and "legacy (whole volume)" in result.output
