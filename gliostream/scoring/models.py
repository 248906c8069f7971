"""The models that predict: checkpoints or exported models loaded as ensemble members, each run by
an engine (`engines.py`), their sliding window and postprocessing.

Shared by `brats score` and `brats predict`, so both predict a case the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, shortened
from ..inference import InferenceConfig, Network, ProbabilityModel, predict_labels
from ..labels import Region
from ..regions import Postprocessing
from ..tasks import Task, regions_of
from ..tasks import task as task_named
from ..trainer.checkpoint import Checkpoint, read_checkpoint
from ..trainer.config import TrainConfig
from ..trainer.registry import build_network
from .engines import configure_threads, onnx_network, resolve_engine
from .exported import ExportedFile, exported_paths, is_export, metadata, onnx_bytes, read_exported


@dataclass(frozen=True)
class Member:
    """One checkpoint (or exported member) of the models that predict: its network as the engine
    runs it, and its record (settings, split, postprocessing) without the training state."""

    path: str
    network: Network | None  # None: loaded as a record only (a Dask run's client; its workers build it)
    checkpoint: Checkpoint
    engine: str = "torch"
    source_sha256: str | None = None  # an exported member's: the checkpoint it was exported from

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
        record = {"path": str(Path(self.path).resolve()), "sha256": self.sha256, "store": self.checkpoint.store,
                  "epoch": self.checkpoint.epoch, "postprocess": self.postprocessing.to_dict(), "engine": self.engine}
        return record | ({"exported_from_sha256": self.source_sha256} if self.source_sha256 else {})


def load_model(checkpoint: Checkpoint, device: torch.device) -> torch.nn.Module:
    """Rebuild the network from the checkpoint's own model settings and weights."""
    try:
        model = build_network(checkpoint.network)
        model.load_state_dict(checkpoint.weights)
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{checkpoint.path}: does not hold a brats model ({shortened(str(error))})") from None
    return model.to(device).eval()


class TorchScriptNetwork(ProbabilityModel):
    """An exported TorchScript member (its graph ends in the region probabilities)."""

    def __init__(self, payload: bytes, device: torch.device) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still supported
            self.module = torch.jit.load(io.BytesIO(payload), map_location=device).eval()

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(batch).float()


def _exported_member(exported: ExportedFile, engine: str, device: torch.device, threads: int | None,
                     networks: bool) -> Member:
    network: Network | None = None
    if networks:
        network = (TorchScriptNetwork(exported.payload, device) if exported.kind == "torchscript"
                   else onnx_network(engine, exported.payload, threads))
    return Member(str(exported.path), network, exported.checkpoint(), engine, exported.meta["source"]["sha256"])


def _checkpoint_member(path: str, engine: str, device: torch.device, threads: int | None, networks: bool,
                       window: tuple[int, int, int] | None, batch_windows: int) -> Member:
    checkpoint = read_checkpoint(path)
    record = checkpoint.without_training_state()  # no optimizer kept
    if not networks:
        return Member(str(path), None, record, engine)
    if engine == "torch":
        return Member(str(path), load_model(checkpoint, device), record, engine)
    member = Member(str(path), None, record, engine)
    inference = checkpoint.inference(window=window, batch_windows=batch_windows)
    key = (member.sha256, inference.window, batch_windows)
    if key not in _EXPORTED:
        model = load_model(checkpoint, torch.device("cpu"))
        _EXPORTED[key] = onnx_bytes(model, len(member.regions), inference.window, batch_windows,
                                    metadata(record, member.sha256, inference))
        while len(_EXPORTED) > 4:
            _EXPORTED.pop(next(iter(_EXPORTED)))
    return dataclasses.replace(member, network=onnx_network(engine, _EXPORTED[key], threads))


# Checkpoints exported in memory by this process, by (SHA-256, window, batch): a checkpoint loaded
# again (the Python API, a test) is not exported again.
_EXPORTED: dict[tuple[str, tuple[int, int, int], int], bytes] = {}


def load_members(paths: tuple[str, ...], device: torch.device, engine: str = "torch", threads: int | None = None,
                 networks: bool = True, window: tuple[int, int, int] | None = None, batch_windows: int = 2
                 ) -> list[Member]:
    """Every checkpoint or export (a folder from `brats export`, or one of its member files) as
    members run by `engine` (`engines.resolve_engine`; settings checked now, not after hours of
    prediction), their networks built unless `networks` is False (a checkpoint exported in memory
    for `window` and `batch_windows`); they must share one patch size and resolution (one window)."""
    configure_threads(threads)
    members = []
    for path in paths:
        if is_export(path):
            kind = ("torchscript" if Path(path).suffix == ".ts" or (Path(path).is_dir() and engine == "torch")
                    else "onnx")
            chosen = resolve_engine(engine, device, kind)
            members += [_exported_member(read_exported(f), chosen, device, threads, networks)
                        for f in exported_paths(path, chosen)]
        else:
            members.append(_checkpoint_member(str(path), resolve_engine(engine, device), device, threads, networks,
                                              window, batch_windows))
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
    return predict_labels([m.network for m in members], image, inference, device,
                          postprocessing(members, postprocess)).numpy()
