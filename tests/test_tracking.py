"""Experiment tracking: each epoch's figures in TensorBoard, and a tracker of one's own through the same interface."""

from __future__ import annotations

import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gliostream import ConfigError, read_checkpoint, run_training
from gliostream.trainer.config import TRACKERS, config_from_dict
from gliostream.trainer.tracking import TENSORBOARD_DIR, register_tracker, tag


def tiny(store, out, **changes):
    return config_from_dict({**dict(store=str(store), out=str(out), epochs=2, patches_per_epoch=8,
                                    patch_size=(32, 32, 32), base_channels=4, batch_size=2, accum_steps=1, lr=3e-3,
                                    val_every=1, workers=0), **changes})


class Recorder:
    rows: list = []

    def __init__(self, out, config):
        self.closed = False
        Recorder.instance = self

    def log_epoch(self, row, epoch):
        Recorder.rows.append((epoch, dict(row)))

    def close(self):
        self.closed = True


def test_tensorboard_and_a_registered_tracker_get_every_epoch_of_the_log(tiny_store, tmp_path):
    if "recorder" not in TRACKERS:
        register_tracker("recorder", Recorder)
    Recorder.rows = []
    run_training(tiny(tiny_store, tmp_path, trackers=("tensorboard", "recorder")), progress=False)
    history = read_checkpoint(tmp_path / "last.pt").history
    assert [(epoch, row) for epoch, row in Recorder.rows] == [(i + 1, row) for i, row in enumerate(history)]
    assert Recorder.instance.closed
    events = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/train_loss", "train/lr", "train/data_wait", "train/patches_per_s", "dice/wt", "dice/mean",
            "lesionwise_dice/wt"} <= tags
    for column in ("train_loss", "lr", "dice_tc", "lw_dice_et"):
        logged = [(e.step, e.value) for e in events.Scalars(tag(column))]
        assert logged == [(i + 1, pytest.approx(row[column], rel=1e-6)) for i, row in enumerate(history)], column
    assert "config" in events.Tags()["tensors"] or "config/text_summary" in events.Tags()["tensors"]


def test_an_unknown_tracker_or_a_missing_package_is_one_line_before_training(tiny_store, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="trackers must be some of tensorboard"):
        tiny(tiny_store, tmp_path, trackers=("mlflow",))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as where tensorboard is not installed
    with pytest.raises(ConfigError, match=r"needs the tensorboard package: pip install 'gliostream\[tensorboard\]'"):
        run_training(tiny(tiny_store, tmp_path, trackers=("tensorboard",)), progress=False)
    assert not (tmp_path / "last.pt").exists()
