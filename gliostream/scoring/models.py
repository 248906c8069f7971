"""The models that predict: checkpoints loaded as ensemble members, their sliding window and ET threshold.

Shared by `brats score` and `brats predict`, so both predict a case the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, shortened
from ..inference import InferenceConfig, predict_labels
from ..labels import Region
from ..regions import Postprocessing
from ..tasks import Task, regions_of
from ..tasks import task as task_named
from ..trainer.checkpoint import Checkpoint, read_checkpoint
from ..trainer.config import TrainConfig
from ..trainer.registry import build_network


@dataclass(frozen=True)
class Member:
    """One checkpoint of the models that predict: the network built from it, and its record
    (settings, split, postprocessing) without the training state."""

    path: str
    model: torch.nn.Module
    checkpoint: Checkpoint

    @property
    def postprocessing(self) -> Postprocessing:
        return self.checkpoint.postprocessing

    @property
    def config(self) -> TrainConfig:
        """The settings it was trained with (flat brats <= 0.3 ones converted)."""
        return self.checkpoint.config

    @property
    def inference_key(self) -> tuple[Any, ...]:
        return self.config.patch_size, self.config.downsample

    @property
    def task(self) -> Task:
        return task_named(self.config.task)

    @property
    def regions(self) -> tuple[Region, ...]:
        """The regions it predicts, in its output order."""
        return regions_of(self.config.task, self.config.regions)

    @cached_property
    def sha256(self) -> str:
        """The checkpoint file's SHA-256: what names the model in provenance records."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def provenance(self) -> dict[str, Any]:
        return {"path": str(Path(self.path).resolve()), "sha256": self.sha256, "store": self.checkpoint.store,
                "epoch": self.checkpoint.epoch, "postprocess": self.postprocessing.to_dict()}


def load_model(checkpoint: Checkpoint, device: torch.device) -> torch.nn.Module:
    """Rebuild the network from the checkpoint's own model settings and weights."""
    try:
        model = build_network(checkpoint.network)
        model.load_state_dict(checkpoint.weights)
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{checkpoint.path}: does not hold a brats model ({shortened(str(error))})") from None
    return model.to(device).eval()


def load_members(paths: tuple[str, ...], device: torch.device) -> list[Member]:
    """Every checkpoint as a member (its settings checked now, not after hours of prediction);
    they must share one patch size and resolution (one window)."""
    members = []
    for path in paths:
        checkpoint = read_checkpoint(path)
        model = load_model(checkpoint, device)
        members.append(Member(str(path), model, checkpoint.without_training_state()))  # no optimizer kept
    if len({m.inference_key for m in members}) > 1:
        raise ConfigError("the checkpoints were trained with different patch sizes or resolutions; "
                          "an ensemble needs one sliding window")
    if len({(m.task.name, m.regions) for m in members}) > 1:
        raise ConfigError("the checkpoints predict different tasks or regions; an ensemble averages one set of regions")
    return members


def inference_config(members: list[Member], window: tuple[int, int, int] | None, overlap: float, tta: bool,
                     batch_windows: int) -> InferenceConfig:
    """The sliding window of the members (`Checkpoint.inference`): their training patch and
    resolution unless `window` is given."""
    return members[0].checkpoint.inference(window=window, overlap=overlap, tta=tta, batch_windows=batch_windows)


def postprocessing(members: list[Member], enabled: bool) -> Postprocessing:
    """The checkpoint's postprocessing; an ensemble's takes the median of its members' sizes."""
    if not enabled or not members:
        return Postprocessing()
    chosen = [m.postprocessing for m in members]
    sizes = np.median([p.sizes(len(members[0].regions)) for p in chosen], axis=0)
    return Postprocessing(tuple(int(v) for v in sizes), int(np.median([p.et_min_voxels for p in chosen])))  # type: ignore[arg-type]


def out_of_fold_owners(members: list[Member]) -> dict[str, Member]:
    """Case id -> the fold model that held it out, for out-of-fold scores of a cross-validation."""
    folds = {}
    for m in members:
        config = m.config
        if not config.folds:
            raise ConfigError(f"{m.path}: not trained with --folds; out-of-fold scores need the fold checkpoints")
        folds[m.path] = (config.folds, config.fold, config.seed, m.checkpoint.store)
    if len({(k, seed, store) for k, _, seed, store in folds.values()}) > 1:
        raise ConfigError("the checkpoints are folds of different cross-validations (folds, seed or store differ)")
    count = next(iter(folds.values()))[0]
    have = sorted(f for _, f, _, _ in folds.values())
    if have != list(range(count)):
        missing = sorted(set(range(count)) - set(have))
        raise ConfigError(f"out-of-fold scores need each of the {count} folds once; "
                          + (f"missing fold(s) {', '.join(map(str, missing))}" if missing else "a fold is given twice"))
    return {case_id: m for m in members for case_id in m.checkpoint.split.val}


def predict_case(members: list[Member], image: torch.Tensor, inference: InferenceConfig, device: torch.device,
                 postprocess: bool = True) -> np.ndarray:
    """Store labels (x, y, z) uint8 of one cropped case: the members' mean probabilities decoded,
    then their postprocessing (`brats score` and `brats predict` both predict through here)."""
    return predict_labels([m.model for m in members], image, inference, device,
                          postprocessing(members, postprocess)).numpy()
