"""brats train: the model, the loss, accumulation, resume, learning, errors, DDP on CPU."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gliostream.errors import CheckpointError, ConfigError, StoreError
from gliostream.regions import region_targets
from gliostream.scoring.report import SUMMARY_ROWS
from gliostream.scoring.run import ScoreConfig, run_scoring
from gliostream.trainer import ddp
from gliostream.trainer.augment import BatchAugmenter
from gliostream.trainer.checkpoint import load_checkpoint, save_checkpoint
from gliostream.trainer.config import TrainConfig, config_from_dict, load_config, saved_config
from gliostream.trainer.loop import cosine_lr, precision, run_training
from gliostream.trainer.loss import LossConfig, deep_supervision_loss, region_loss, soft_dice_loss
from gliostream.trainer.model import ModelConfig, ResUNet, parameter_count
from gliostream.trainer.seeds import INIT, derive_seed
from gliostream.trainer.step_timing import PHASES

from .helpers import brain_arrays, brats_03_config, ingest_cases


def tiny(store, out, **changes) -> TrainConfig:
    """A configuration small enough for CPU tests; everything else is the real path."""
    base = dict(store=str(store), out=str(out), epochs=2, patches_per_epoch=16, patch_size=(32, 32, 32),
                base_channels=4, batch_size=2, accum_steps=2, lr=3e-3, val_every=1, workers=1)
    return config_from_dict({**base, **changes})


def test_model_shapes_and_deep_supervision():
    model = ResUNet(ModelConfig(base_channels=4))
    outputs = model(torch.randn(2, 4, 32, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 32, 32, 32), (2, 3, 16, 16, 16), (2, 3, 8, 8, 8)]  # WT, TC, ET
    model.eval()
    assert model(torch.randn(1, 4, 32, 48, 16)).shape == (1, 3, 32, 48, 16)
    full = ResUNet()
    assert full.config.widths == [32, 64, 128, 256, 512]
    assert 22e6 < parameter_count(full) < 24e6  # the reference design's ~23 M


def test_loss_is_zero_for_a_perfect_prediction_and_behaves_on_empty_regions():
    label = torch.zeros((2, 8, 8, 8), dtype=torch.long)
    label[0, 2:6, 2:6, 2:6] = 2
    label[0, 3:5, 3:5, 3:5] = 3  # sample 1 has no tumour at all
    targets = region_targets(label)
    assert float(soft_dice_loss(targets, targets)) == 0.0
    assert float(soft_dice_loss(torch.zeros_like(targets), torch.zeros_like(targets))) == 0.0
    false_positive = targets.clone()
    false_positive[1, :, 0, 0, 0] = 1.0  # one voxel predicted where sample 1 has nothing
    assert 0.0 < float(soft_dice_loss(false_positive, targets)) < 0.5
    assert float(soft_dice_loss(1 - targets, targets)) > 0.5
    logits = (targets * 2 - 1) * 50  # region logits that are sure and right
    outputs = [logits, logits[..., ::2, ::2, ::2], logits[..., ::4, ::4, ::4]]
    assert float(deep_supervision_loss(outputs, label)) < 1e-6
    assert float(deep_supervision_loss([torch.zeros_like(o) for o in outputs], label)) > 0.5


def test_every_deep_supervision_head_is_trained():
    """The design's 1/0.5/0.25 for two heads; a third head (levels 4 allow it) gets 0.125, not silently nothing."""
    torch.manual_seed(0)
    label = torch.randint(0, 4, (2, 32, 32, 32))
    model = ResUNet(ModelConfig(base_channels=4, deep_supervision=3))
    outputs = model(torch.randn(2, 4, 32, 32, 32))
    assert len(outputs) == 4
    deep_supervision_loss(outputs, label).backward()
    assert all(head.weight.grad is not None and head.weight.grad.abs().sum() > 0 for head in model.ds_heads)
    two = [o.detach() for o in outputs[:3]]
    targets = region_targets(label)
    by_hand = sum(w * region_loss(o, targets[..., ::2**i, ::2**i, ::2**i]) for i, (o, w) in
                  enumerate(zip(two, (1.0, 0.5, 0.25), strict=True)))
    torch.testing.assert_close(deep_supervision_loss(two, label), by_hand)


def test_gradient_accumulation_equals_the_large_batch():
    """Exact for per-sample Dice + BCE; batch Dice (the default) is over each micro-batch instead."""
    torch.manual_seed(0)
    model = ResUNet(ModelConfig(base_channels=4))
    image = torch.randn(8, 4, 32, 32, 32)
    label = torch.randint(0, 4, (8, 32, 32, 32))
    per_sample = LossConfig(batch_dice=False)
    deep_supervision_loss(model(image), label, per_sample).backward()
    big = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for chunk in range(4):
        part = slice(2 * chunk, 2 * chunk + 2)
        (deep_supervision_loss(model(image[part]), label[part], per_sample) / 4).backward()
    for g_big, p in zip(big, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g_big, rtol=1e-4, atol=1e-6)


def test_resume_continues_bit_for_bit(tiny_store, tmp_path):
    straight = run_training(tiny(tiny_store, tmp_path / "a", epochs=2), progress=False)
    assert straight.last_epoch == 2
    run_training(tiny(tiny_store, tmp_path / "b", epochs=2), progress=False, stop_after=1)
    # resumed with another number of loading threads: the data depends on (seed, epoch) only
    # and timing each phase of the step, which synchronises but must not change anything
    resumed = run_training(tiny(tiny_store, tmp_path / "b", epochs=2, workers=0), resume=tmp_path / "b" / "last.pt",
                           progress=False, step_times=True)
    assert resumed.epochs_run == 1 and resumed.last_epoch == 2
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    timed = b["history"][1]
    phases = [timed[f"step_s_{p}"] for p in PHASES]
    assert all(t > 0 for t in phases) and "step_s_data" not in b["history"][0]
    micro_batches = 16 // 2  # patches per epoch / batch size
    assert sum(phases) * micro_batches <= timed["seconds"]


def test_outputs_log_and_checkpoint_contents(tiny_store, tmp_path):
    result = run_training(tiny(tiny_store, tmp_path, epochs=2, val_every=2), progress=False)
    assert result.best_epoch == 2 and 0.0 <= result.best_dice <= 1.0
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert list(log["epoch"]) == [1, 2]
    assert pd.isna(log.loc[0, "dice_mean"]) and not pd.isna(log.loc[1, "dice_wt"])
    assert (log["patches_per_s"] > 0).all() and log["data_wait"].between(0, 1).all()
    assert (tmp_path / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = load_checkpoint(tmp_path / "best.pt")
    assert state["config"]["stream"]["patch_size"] == [32, 32, 32] and state["model_config"]["base_channels"] == 4
    assert state["split"]["val"] == ["BraTS2021_00002"] and len(state["split"]["train"]) == 3  # seeded draw
    assert json.loads((tmp_path / "train_config.json").read_text())["epochs"] == 2
    assert not list(tmp_path.glob(".*.tmp")), "no temporary checkpoint left behind"


def test_tiny_model_learns_the_synthetic_data(tiny_store, tmp_path):
    """Every region is learnt on whole validation volumes, under the default cosine schedule."""
    config = tiny(tiny_store, tmp_path, epochs=6, patches_per_epoch=64, base_channels=8, accum_steps=1, lr=1e-2,
                  val_every=3)
    run_training(config, progress=False)
    log = pd.read_csv(tmp_path / "train_log.csv")
    last = log.iloc[-1]
    assert last.dice_wt >= 0.85 and last.dice_tc >= 0.7 and last.dice_et >= 0.6, log.to_string()
    assert log["train_loss"].iloc[-1] < 0.5 * log["train_loss"].iloc[0]
    assert log.lr.iloc[0] == pytest.approx(1e-2) and log.lr.iloc[-1] < 0.1 * 1e-2  # cosine towards 0
    # The ET threshold chosen at validation is kept in the checkpoint and applied by the scorer.
    state = load_checkpoint(tmp_path / "best.pt")
    best = log.loc[log.dice_mean.idxmax()]
    assert state["postprocess"]["et_min_voxels"] == best.et_min_voxels
    assert state["postprocess"]["min_component_voxels"] == [best.min_voxels_wt, best.min_voxels_tc, best.min_voxels_et]
    assert 0 <= best.lw_dice_wt <= 1 and not np.isnan(best.lw_dice_et)
    state["postprocess"]["et_min_voxels"] = 10**9
    save_checkpoint(tmp_path / "strict.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    tables = {}
    for post in (True, False):
        config = ScoreConfig(ckpt=str(tmp_path / "strict.pt"), cases="all", out=str(tmp_path / f"{post}.csv"),
                             postprocess=post, device="cpu")
        table = run_scoring(config, progress=False).table
        tables[post] = table[~table.case_id.isin(SUMMARY_ROWS)]
    assert tables[False].pred_vol_et.sum() > 0 and tables[True].pred_vol_et.sum() == 0
    assert tables[True].pred_vol_tc.tolist() == tables[False].pred_vol_tc.tolist()  # ET became necrosis


def test_gradient_clipping_bounds_each_update_and_its_norms_are_logged(tiny_store, tmp_path):
    """Clipped far below the real norm, AdamW's steps shrink to its epsilon; off, the norms are only logged."""
    config = tiny(tiny_store, tmp_path, epochs=1, val_fraction=0.0)
    torch.manual_seed(derive_seed(INIT, config.seed))  # the run's own initialisation
    start = ResUNet(config.model).state_dict()
    moved = {}
    for name, clip in (("off", 0.0), ("tight", 1e-9)):
        run_training(replace(config, out=str(tmp_path / name), grad_clip=clip), progress=False)
        state = load_checkpoint(tmp_path / name / "last.pt")
        row = state["history"][0]
        assert 0 < row["grad_norm_p50"] <= row["grad_norm_p99"] <= row["grad_norm_max"]
        assert row["clipped_share"] == (None if clip == 0 else 1.0)
        moved[name] = sum(float((state["model"][k] - start[k]).double().norm()) for k in start
                          if k.endswith(".weight"))
    assert 0 < moved["tight"] < 0.01 * moved["off"], moved
    log = pd.read_csv(tmp_path / "off" / "train_log.csv")
    assert {"grad_norm_p50", "grad_norm_max", "clipped_share"} <= set(log.columns) and log.grad_norm_max[0] > 0


def test_grad_clip_is_checked():
    assert config_from_dict({"grad_clip": 12}).grad_clip == 12.0
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="grad-clip"):
            config_from_dict({"grad_clip": bad})
    with pytest.raises(ConfigError, match="grad-clip must be a finite number, not 'high'"):
        config_from_dict({"grad_clip": "high"})


def test_case_without_tumour_trains(tmp_path):
    mods, seg = brain_arrays(seed=1)
    empty = seg * 0
    store = ingest_cases(tmp_path, {"a": (mods, seg), "b": (brain_arrays(seed=2)[0], empty),
                                    "c": (brain_arrays(seed=3)[0], seg)})
    result = run_training(tiny(store, tmp_path / "out", epochs=1, val_fraction=0.34), progress=False)
    assert result.last_epoch == 1


def test_clear_errors(tiny_store, tmp_path):
    with pytest.raises(StoreError, match="no case|not a brats store"):
        run_training(tiny(tmp_path / "nothing", tmp_path / "o"), progress=False)
    mods, _ = brain_arrays()
    unlabelled = ingest_cases(tmp_path / "u", {"x": (mods, None)})
    with pytest.raises(StoreError, match="none of its 1 cases has a segmentation"):
        run_training(tiny(unlabelled, tmp_path / "o"), progress=False)
    with pytest.raises(ConfigError, match="multiples of 16"):
        tiny(tiny_store, tmp_path, patch_size=(20, 20, 20))
    run_training(tiny(tiny_store, tmp_path / "r", epochs=1, val_fraction=0.0), progress=False)
    with pytest.raises(CheckpointError, match="other settings \\(base_channels\\)"):
        run_training(tiny(tiny_store, tmp_path / "r", base_channels=8, val_fraction=0.0),
                     resume=tmp_path / "r" / "last.pt", progress=False)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        run_training(tiny(tiny_store, tmp_path / "r"), resume=tmp_path / "missing.pt", progress=False)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    with bad.open("wb") as f:
        pickle.dump({"format": "brats-checkpoint", "version": 1, "x": Payload()}, f)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(bad)
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint" * 8)
    torch.save({"format": "brats-checkpoint", "version": 1, "model": {"w": torch.zeros(1000)}}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    for damaged in ("junk.pt", "truncated.pt"):  # damage is not reported as a security refusal
        with pytest.raises(CheckpointError, match="damaged or not a brats checkpoint") as error:
            load_checkpoint(tmp_path / damaged)
        message = str(error.value)
        assert "refused" not in message and "\n" not in message
        assert message.endswith(")") and (message.endswith("...)") or len(message) < 300)  # never cut mid-word


def test_the_cpu_preset_for_real_data_loads():
    config = load_config("configs/real-cpu.toml", {"store": "s"})
    assert (config.downsample, config.patch_size, config.model.base_channels) == (1, (96, 96, 96), 8)
    assert config.loss.kind == "dice+bce" and config.loss.batch_dice and config.store == "s"
    assert config.grad_clip == 0.0 and config.patches_per_epoch == 128  # as measured across institutions


def test_toml_config_and_cli_overrides(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text('epochs = 3\npatch-size = [32, 32, 32]\nbase_channels = 8\n[augment]\nflip_prob = 0.0\n')
    config = load_config(toml, {"epochs": 5, "lr": None})
    assert (config.epochs, config.patch_size, config.model.base_channels, config.augment.flip_prob) == \
        (5, (32, 32, 32), 8, 0.0)
    toml.write_text("epoch = 3\n")
    with pytest.raises(ConfigError, match="unknown option 'epoch'"):
        load_config(toml, {})


def test_toml_sections_change_only_the_settings_they_name(tmp_path):
    toml = tmp_path / "train.toml"
    toml.write_text("lr = 0.002\n[model]\nbase-channels = 8\n[stream]\npatch_size = [64, 64, 64]\n"
                    "samples-per-volume = 4\n[loss]\nkind = 'dice'\n")
    base = config_from_dict({"workers": 3, "queue_length": 16})  # e.g. a resumed run's settings
    config = load_config(toml, {"batch_size": 2}, base)
    assert (config.lr, config.model.base_channels, config.loss.kind) == (0.002, 8, "dice")
    assert (config.stream.patch_size, config.stream.samples_per_volume, config.stream.batch_size) == ((64,) * 3, 4, 2)
    assert (config.stream.workers, config.stream.queue_length) == (3, 16)  # kept from the base
    assert config.model.levels == ModelConfig().levels and config.loss.batch_dice


def test_flat_configs_of_brats_0_3_load_as_the_same_settings(tmp_path):
    config = config_from_dict({"patch_size": (32, 48, 32), "base_channels": 4, "batch_size": 2, "workers": 0,
                               "tumour_fraction": 0.25, "samples_per_volume": 2, "queue_length": 8, "loss": "dice",
                               "batch_dice": False, "lr": 0.01, "grad_clip": 0.0})  # brats 0.3 never clipped
    assert saved_config(brats_03_config(config)) == config
    (tmp_path / "train_config.json").write_text(json.dumps(brats_03_config(config)))
    assert load_config(tmp_path / "train_config.json", {}) == config  # a run's saved settings rerun that run
    assert config_from_dict(brats_03_config(config)).grad_clip == TrainConfig().grad_clip == 12.0  # a new run's
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config  # this version's own JSON


def test_a_setting_given_twice_or_a_bad_section_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'patch_size' is given twice"):
        config_from_dict({"patch_size": [32] * 3, "stream": {"patch-size": [64] * 3}})
    with pytest.raises(ConfigError, match=r"\[stream\]: unknown option 'patches'"):
        config_from_dict({"stream": {"patches": 3}})
    with pytest.raises(ConfigError, match="'model' must be a table"):
        config_from_dict({"model": 3})
    with pytest.raises(ConfigError, match="loader must be one of threads, processes"):
        config_from_dict({"stream": {"loader": "fork"}})
    with pytest.raises(ConfigError, match="multiples of 8 of at least 16"):  # the divisor follows the model's depth
        config_from_dict({"model": {"levels": 3}, "patch_size": [12] * 3})
    assert config_from_dict({"model": {"levels": 3}, "patch_size": [16] * 3}).patch_size == (16, 16, 16)


def test_cli_defaults_to_store_and_working_directory(tiny_store, tmp_path):
    shutil.copytree(tiny_store, tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "gliostream", "train", "--epochs", "1", "--patches-per-epoch", "8",
                           "--patch-size", "32", "--base-channels", "4", "--batch-size", "2", "--accum-steps", "2",
                           "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1: loss" in proc.stderr and "wrote best.pt, last.pt" in proc.stdout
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    proc = subprocess.run([sys.executable, "-m", "gliostream", "train", "--store", "nowhere", "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and proc.stderr.strip().count("\n") == 0 and "nowhere" in proc.stderr


def test_ddp_on_cpu_with_gloo(tiny_store, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun not installed next to this python")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "gliostream", "train",
                           "--store", str(tiny_store), "--out", str(tmp_path), "--epochs", "2",
                           "--patches-per-epoch", "16", "--patch-size", "32", "--base-channels", "4",
                           "--batch-size", "2", "--accum-steps", "2", "--val-every", "1", "--device", "cpu",
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["world_size"] == 2 and state["epoch"] == 2
    assert "x 2 processes" in proc.stderr
    # One process with the same config makes as many optimiser updates of as many patches in total.
    single = tmp_path / "single"
    run_training(config_from_dict(dict(store=str(tiny_store), out=str(single), epochs=2, patches_per_epoch=16,
                                       patch_size=(32, 32, 32), base_channels=4, batch_size=2, accum_steps=2,
                                       val_every=1, device="cpu")), progress=False)
    alone = load_checkpoint(single / "last.pt")
    steps = [int(s["optimizer"]["state"][0]["step"]) for s in (state, alone)]
    assert steps[0] == steps[1] == 2 * 4  # 2 epochs x 16 patches / 4 per update
    assert [(r["updates"], r["patches"]) for r in state["history"]] == [(r["updates"], r["patches"])
                                                                       for r in alone["history"]] == [(4, 16)] * 2
    assert "plan: 2 epochs x 4 updates of 4 patches (2 processes x 2 x 1 accumulated) = 8 updates, 32 patches" \
        in proc.stderr
    augmenters = state["augmenter"]  # each rank's own augmentation stream, saved by rank 0
    assert len(augmenters) == 2 and not torch.equal(augmenters[0]["params"], augmenters[1]["params"])
    resumed = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "gliostream", "train",
                              "--resume", str(tmp_path / "last.pt"), "--epochs", "3", "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_resume_with_more_epochs_follows_the_longer_cosine(tiny_store, tmp_path):
    run_training(tiny(tiny_store, tmp_path, epochs=2, val_every=5), progress=False)
    before = load_checkpoint(tmp_path / "last.pt")
    run_training(tiny(tiny_store, tmp_path, epochs=4, val_every=5), resume=tmp_path / "last.pt", progress=False)
    after = load_checkpoint(tmp_path / "last.pt")
    lrs = [row["lr"] for row in after["history"]]
    assert lrs == pytest.approx([3e-3, 1.5e-3, cosine_lr(3e-3, 2, 4), cosine_lr(3e-3, 3, 4)])
    assert lrs[2] == pytest.approx(1.5e-3) and lrs[3] > 0.1 * 3e-3  # not the finished run's lr 0
    assert any(not torch.equal(before["model"][k], after["model"][k]) for k in before["model"])


def test_resume_of_a_checkpoint_written_on_another_device_type(tiny_store, tmp_path, caplog):
    """A GPU run's noise-generator and loss-scaler states cannot be loaded on a CPU: re-seeded, said once.
    The checkpoint's config is in brats 0.3's flat form, which resumes as the same settings."""
    run_training(tiny(tiny_store, tmp_path, epochs=1, val_every=5), progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    cpu_params = state["augmenter"][0]["params"]
    state["augmenter"] = [{"params": cpu_params, "noise": torch.zeros(16, dtype=torch.uint8), "device_type": "cuda"}]
    state["scaler"] = torch.amp.GradScaler("cpu", enabled=True).state_dict()  # as an fp16 GPU run writes it
    state["config"] = brats_03_config(config_from_dict(state["config"]))  # and a flat brats 0.3 config
    save_checkpoint(tmp_path / "gpu.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    caplog.set_level("INFO", logger="gliostream.trainer")
    with pytest.raises(CheckpointError, match=r"other settings \(grad_clip\)"):  # brats 0.3 never clipped
        run_training(tiny(tiny_store, tmp_path, epochs=2, val_every=5), resume=tmp_path / "gpu.pt", progress=False)
    result = run_training(tiny(tiny_store, tmp_path, epochs=2, val_every=5, grad_clip=0.0), resume=tmp_path / "gpu.pt",
                          progress=False)
    assert result.last_epoch == 2
    assert "augmentation noise re-seeded" in caplog.text and "loss scaler starts afresh" in caplog.text


def test_precision_uses_native_bf16_only(monkeypatch):
    config, cuda, cpu = TrainConfig(), torch.device("cuda", 0), torch.device("cpu")
    emulated = lambda including_emulation=True: including_emulation  # noqa: E731  (V100, T4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulated)
    assert precision(config, cuda) == (torch.float16, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # A100, H100
    assert precision(config, cuda) == (torch.bfloat16, False)
    assert precision(replace(config, amp=False), cuda) == (None, False)
    assert precision(config, cpu) == (None, False)
    assert precision(replace(config, amp=True), cpu) == (torch.bfloat16, False)


def test_an_explicit_gpu_index_is_refused_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        ddp.start("cuda:1")


def test_patch_too_small_for_the_bottleneck_is_refused():
    with pytest.raises(ConfigError, match="at least 32"):
        config_from_dict(dict(patch_size=(16, 16, 16)))
    assert config_from_dict(dict(patch_size=(32, 48, 32))).patch_size == (32, 48, 32)


def test_an_error_inside_an_epoch_stops_the_data_threads(tiny_store, tmp_path, monkeypatch):
    calls = []

    def fail_on_third(self, image, label):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return image, label

    monkeypatch.setattr(BatchAugmenter, "__call__", fail_on_third)
    with pytest.raises(RuntimeError, match="simulated") as failure:
        run_training(tiny(tiny_store, tmp_path, epochs=1, patches_per_epoch=64, workers=2), progress=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [t for t in threading.enumerate() if t.name.startswith("brats-")]:
        time.sleep(0.1)
    assert failure.value is not None  # the traceback (and its frames) are still held here
    assert [t.name for t in threading.enumerate() if t.name.startswith("brats-")] == []


def test_the_full_design_on_a_cpu_is_announced_with_its_time(tiny_store, tmp_path, monkeypatch, caplog):
    from gliostream.trainer import loop

    assert 20 < loop.cpu_hours_per_epoch(TrainConfig(), cores=2) < 60  # the reference design: over a day an epoch
    assert loop.cpu_hours_per_epoch(load_config("configs/real-cpu.toml", {}), cores=2) < 0.1
    caplog.set_level("WARNING", logger="gliostream.trainer")
    run_training(tiny(tiny_store, tmp_path / "quiet", epochs=1, val_every=5), progress=False)
    assert "no GPU" not in caplog.text
    monkeypatch.setattr(loop, "cpu_hours_per_epoch", lambda config, cores: 18.0)
    run_training(tiny(tiny_store, tmp_path / "loud", epochs=1, val_every=5), progress=False)
    (line,) = [r.getMessage() for r in caplog.records if "no GPU" in r.getMessage()]
    assert "roughly 18 h per epoch" in line and "configs/real-cpu.toml" in line


def test_the_gpu_check_runs_end_to_end_as_a_dry_run(tmp_path):
    """bench/gpu_check.py is the one shot a lent GPU gets: every check must run (here at toy size on
    the CPU, with generated cases) and land in its results file, none of them FAILED."""
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    results = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    proc = subprocess.run([sys.executable, str(script), "--dry-run", "--raw", str(tmp_path / "absent"),
                           "--results", str(results)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(results.read_text())["rows"]
    numbers = {int(re.match(r"\d+", row["check"]).group()) for row in rows}
    assert numbers == set(range(1, 11)), rows
    assert not [row for row in rows if row["result"].startswith("FAILED")], rows
    assert not [row for row in rows if re.search(r"\bnan\b", row["result"].lower())], rows


def test_the_memory_plan_extrapolates_what_autograd_saves():
    """The planner's line through two small patches predicts the bytes autograd really saves at a
    third, larger one, and 16-bit autocast saves about half of what fp32 does."""
    from gliostream.trainer.memory_plan import _saved_bytes, step_profile

    config = config_from_dict(dict(base_channels=4, patch_size=(64, 64, 64), batch_size=1))
    profile = step_profile(config, amp=False)
    real, _ = _saved_bytes(config, 64, amp=False)
    assert profile.estimate(1, (64, 64, 64)).activations == pytest.approx(real, rel=0.02)
    half = step_profile(config, amp=True).estimate(1, (64, 64, 64)).activations
    assert 0.4 < half / profile.estimate(1, (64, 64, 64)).activations < 0.75


def test_plan_finds_the_largest_batch_that_fits():
    from click.testing import CliRunner

    from gliostream.cli.main import cli
    from gliostream.trainer.memory_plan import GIB, step_profile

    fits = CliRunner().invoke(cli, ["plan", "--gpu-memory", "8"])
    assert fits.exit_code == 0 and "fits in 8.0 GiB" in fits.output and fits.output.count("\n") == 1
    small = CliRunner().invoke(cli, ["plan", "--gpu-memory", "3", "--batch-size", "4"])
    assert small.exit_code == 1 and "does NOT fit in 3.0 GiB" in small.output
    largest = int(re.search(r"largest batch at this patch: (\d+)", small.output).group(1))
    profile = step_profile(TrainConfig(), amp=True)
    assert profile.estimate(largest, (96,) * 3).total <= 3 * GIB < profile.estimate(largest + 1, (96,) * 3).total


def test_training_says_its_plan_before_it_starts(tiny_store, tmp_path, caplog):
    caplog.set_level("INFO", logger="gliostream.trainer.loop")
    run_training(tiny(tiny_store, tmp_path, epochs=1, val_every=5), progress=False)
    assert "plan: 1 epoch x 4 updates of 4 patches (2 x 2 accumulated) = 4 updates, 16 patches" in caplog.text
    assert "memory: one step needs about" in caplog.text and "on a GPU with 16-bit AMP" in caplog.text
