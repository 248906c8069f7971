"""A network and a loss of one's own, registered by name, used by training, validation, scoring and prediction."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from gliostream import (
    CheckpointError,
    ConfigError,
    ModelConfig,
    ScoreConfig,
    load_segmenter,
    read_checkpoint,
    register_loss,
    register_network,
    run_scoring,
    run_training,
)
from gliostream.store.reader import read_case
from gliostream.trainer.config import NETWORKS, config_from_dict
from gliostream.trainer.loss import dice_bce_loss


class PlainUNet(nn.Module):
    """Another architecture than the Res-UNet: one plain down/up level pair, no residuals, no deep supervision."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config.base_channels
        self.down = nn.Sequential(nn.Conv3d(config.in_channels, c, 3, padding=1), nn.ReLU(),
                                  nn.Conv3d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose3d(2 * c, c, 2, stride=2)
        self.head = nn.Conv3d(c, config.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.up(self.down(x))))


CALLS = {"loss": 0}


def counted_loss(logits, targets, config):
    CALLS["loss"] += 1
    return dice_bce_loss(logits, targets, config)


@pytest.fixture(scope="module", autouse=True)
def registered():
    if "plain-unet" not in NETWORKS:
        register_network("plain-unet", PlainUNet)
        register_loss("counted", counted_loss, "Dice + BCE, counted")


def test_a_registered_network_and_loss_train_score_and_predict(tiny_store, tmp_path):
    config = config_from_dict(dict(store=str(tiny_store), out=str(tmp_path), epochs=1, patches_per_epoch=8,
                                   patch_size=(32, 32, 32), base_channels=4, batch_size=2, accum_steps=1, lr=3e-3,
                                   val_every=1, workers=0, model={"network": "plain-unet", "deep_supervision": 0},
                                   loss="counted"))
    CALLS["loss"] = 0
    run_training(config, progress=False)
    assert CALLS["loss"] == 2 + 4  # the memory plan's two sizes of the network, then one per micro-batch (8 / 2)
    checkpoint = read_checkpoint(tmp_path / "best.pt")
    assert checkpoint.network.network == "plain-unet" and checkpoint.config.loss.kind == "counted"
    assert set(checkpoint.weights) == set(PlainUNet(checkpoint.network).state_dict())
    scored = run_scoring(ScoreConfig(ckpt=str(tmp_path / "best.pt"), out=str(tmp_path / "scores.csv")), progress=False)
    assert scored.scored == len(checkpoint.split.val) > 0
    segment = load_segmenter(tmp_path / "best.pt", device="cpu", engine="torch")
    assert isinstance(segment.members[0].network, PlainUNet)
    case = read_case(tiny_store, checkpoint.split.val[0])
    labels = segment(case.image.astype(np.float32))
    assert labels.shape == case.image.shape[1:]
    exported = load_segmenter(tmp_path / "best.pt", device="cpu", engine="onnxruntime")  # any registered network exports
    assert exported.members[0].engine == "onnxruntime"
    assert np.array_equal(exported(case.image.astype(np.float32)), labels)


def test_unknown_names_are_refused_in_one_line_that_says_how_to_add_them(tiny_store, tmp_path):
    with pytest.raises(ConfigError, match="model network must be one of resunet, .*register_network"):
        ModelConfig(network="vnet")
    with pytest.raises(ConfigError, match="network name 'resunet' is empty or taken"):
        register_network("resunet", PlainUNet)
    config = config_from_dict(dict(store=str(tiny_store), out=str(tmp_path), epochs=1, patches_per_epoch=4,
                                   patch_size=(32, 32, 32), base_channels=4, batch_size=2, accum_steps=1,
                                   val_every=1, workers=0, model={"network": "plain-unet", "deep_supervision": 0}))
    run_training(config, progress=False)
    code = f"from gliostream import read_checkpoint; read_checkpoint({str(tmp_path / 'last.pt')!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "CheckpointError" in last and "unusable model settings" in last and "plain-unet" in last
    with pytest.raises(CheckpointError, match="unusable model settings"):
        NETWORKS.remove("plain-unet")
        try:
            read_checkpoint(tmp_path / "last.pt")
        finally:
            NETWORKS.append("plain-unet")
