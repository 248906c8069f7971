"""Checkpoints: the typed record a run writes (`Checkpoint`), written atomically, read without
executing anything, validated on load with one-line errors.

This is the one place that knows a checkpoint's entries: training writes `Checkpoint.to_state()`,
and training, scoring and prediction read `read_checkpoint()`; nothing else indexes the file by key.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import pickletools
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, OutputError, shortened
from ..faults import fault_point
from ..files import replaced_on_success
from ..inference_config import InferenceConfig
from ..regions import Postprocessing
from .config import MAX_REGIONS, ModelConfig, TrainConfig, option_name, saved_config, settings_by_path
from .split import Split

FORMAT = "brats-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`:
    a reader (or a crash) sees the old checkpoint or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    try:
        with replaced_on_success(path) as tmp, tmp.open("wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
            fault_point("checkpoint:tmp-written")
    except (OutputError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError
        reason = error.reason if isinstance(error, OutputError) else shortened(str(error), 100)
        raise CheckpointError(f"{path}: cannot write the checkpoint ({reason}); the previous {path.name} is "
                              "kept whole") from None


# What torch.save itself pickles (tensor rebuilding, ordered dicts).
SAFE_CALLABLES = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"}


def pickled_callables(path: Path) -> set[str]:
    """The `module.name` globals a pickle (or a torch zip checkpoint's data.pkl) would import,
    read opcode by opcode without executing anything; empty when the stream cannot be read."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        found, strings = set(), []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                found.add(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
        return found
    except Exception:  # noqa: BLE001 - a damaged stream fails in many ways; it then shows no code
        return set()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with `weights_only=True`: tensors and plain containers only. A checkpoint is
    untrusted input; one that carries pickled code is refused, not run."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        code = pickled_callables(path) - SAFE_CALLABLES
        if code:  # classes or functions to call on loading: never run
            raise CheckpointError(f"{path}: refused: carries pickled code, not only tensors and plain values "
                                  f"({', '.join(sorted(code)[:3])})") from None
        raise CheckpointError(f"{path}: damaged or not a brats checkpoint (torch cannot read it as tensors and "
                              "plain values)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as error:
        raise CheckpointError(f"{path}: damaged or not a brats checkpoint: cannot be read "
                              f"({shortened(str(error)) or type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a brats checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {state.get('version')}, this brats reads {VERSION}")
    check_state(state, str(path))
    return state


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# Entry -> (what it must be, the test); "model", "model_config" and "config" are required.
STATE_TYPES: dict[str, tuple[str, Any]] = {
    "config": ("a table of settings", lambda v: isinstance(v, dict)),
    "model_config": ("a table of settings", lambda v: isinstance(v, dict)),
    "model": ("a table of tensors", lambda v: isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values())),
    "split": ("{train: [ids], val: [ids]}",
              lambda v: isinstance(v, dict) and _is_ids(v.get("train", [])) and _is_ids(v.get("val", []))),
    "postprocess": ("a table of sizes or none", lambda v: v is None or (
        isinstance(v, dict) and isinstance(v.get("et_min_voxels", 0), int)
        and isinstance(v.get("min_component_voxels", []), list)
        and len(v.get("min_component_voxels", [])) <= MAX_REGIONS
        and all(isinstance(n, int) and n >= 0 for n in v.get("min_component_voxels", [])))),
    "store": ("a path or none", lambda v: v is None or isinstance(v, str)),
    "store_params": ("a table", lambda v: isinstance(v, dict)),
    "epoch": ("a whole number of at least 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "history": ("a list of rows", lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v)),
    "best": ("[score, epoch] or none", lambda v: v is None or (isinstance(v, list) and len(v) == 2)),
    "optimizer": ("a table", lambda v: isinstance(v, dict)),
    "scaler": ("a table", lambda v: isinstance(v, dict)),
    "augmenter": ("a table or a list of them", lambda v: isinstance(v, (dict, list))),
    "torch_rng": ("a tensor", lambda v: isinstance(v, torch.Tensor)),
}
REQUIRED = ("model", "model_config", "config")
TRAINING_ENTRIES = ("optimizer", "scaler", "augmenter", "torch_rng")  # the state of torch objects a resume restores
RESUME_ENTRIES = ("split", "store_params", "epoch", "history", "optimizer", "augmenter", "torch_rng")
# Settings that may differ between a checkpoint and the run resuming it, by field path
# (`config.settings_by_path`): they do not change the result (another store must hold the same
# cases preprocessed the same way, which is checked).
RESUMABLE = {"epochs", "out", "device", "deterministic", "val_every", "store", "trackers", "stream.workers",
             "stream.loader", "stream.prefetch_batches", "stream.collate_threads", "stream.reuse_memory"}


def check_state(state: dict[str, Any], path: str) -> None:
    """Refuse, with one line, a checkpoint whose entries are missing or of the wrong type, before
    anything is built from them."""
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a complete brats checkpoint: no {', '.join(missing)}")
    for key, (what, test) in STATE_TYPES.items():
        if key in state and not test(state[key]):
            raise CheckpointError(f"{path}: damaged checkpoint: {key!r} must be {what}, not "
                                  f"{type(state[key]).__name__}")


def implied_inference(config: TrainConfig, window: tuple[int, int, int] | None = None, overlap: float | None = None,
                      **options: Any) -> InferenceConfig:
    """How a model trained with `config` predicts whole volumes: its training patch as the window,
    at its resolution, with its validation overlap unless `window` or `overlap` say otherwise."""
    return InferenceConfig(window=window or config.patch_size, overlap=config.overlap if overlap is None else overlap,
                           downsample=config.downsample, task=config.task, regions=config.regions, **options)


@dataclass(frozen=True)
class Checkpoint:
    """A run's checkpoint as typed values: its network and weights, its settings, split, store and
    postprocessing, and (for `last.pt`/`best.pt` of a run) the training state a resume needs.

    `network` is the model the weights fit. It equals `config.model` except for brats 0.1
    checkpoints, whose softmax head (4 classes) no current config can express.
    """

    path: str
    network: ModelConfig
    weights: dict[str, torch.Tensor]
    config: TrainConfig
    split: Split = field(default_factory=lambda: Split([], []))
    store: str | None = None  # the absolute store path the run read
    store_params: dict[str, Any] | None = None  # the store's preprocessing (`StoreAttrs.to_attrs`)
    epoch: int = 0
    history: tuple[dict[str, Any], ...] = ()
    best: tuple[float, int] | None = None  # (score, epoch) of best.pt
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    world_size: int = 1
    version: str | None = None  # the brats version that wrote it
    training: dict[str, Any] | None = None  # TRAINING_ENTRIES: optimizer, scaler, augmenter(s), torch_rng
    resume_missing: tuple[str, ...] = ()  # the RESUME_ENTRIES it lacks (a checkpoint only for predicting)
    from_brats_0_1: bool = False  # class head and Dice loss: scored, never resumed

    @classmethod
    def from_state(cls, state: dict[str, Any], path: str) -> "Checkpoint":
        """The record of a state `load_checkpoint` read (its entries' types checked there); the
        model and training settings are checked here: CheckpointError, one line."""
        try:
            network = ModelConfig(**state["model_config"])  # its bounds are checked before anything is built
        except (TypeError, ConfigError) as error:
            raise CheckpointError(f"{path}: unusable model settings ({shortened(str(error))})") from None
        try:
            config = saved_config(state["config"], where=path)
        except ConfigError as error:
            raise CheckpointError(f"{path}: unusable settings ({error})") from None
        split = state.get("split") or {}
        missing = tuple(k for k in RESUME_ENTRIES if k not in state)
        training = None if missing else {k: state[k] for k in TRAINING_ENTRIES if k in state}
        return cls(path=path, network=network, weights=state["model"], config=config,
                   split=Split(list(split.get("train", [])), list(split.get("val", []))), store=state.get("store"),
                   store_params=state.get("store_params"), epoch=int(state.get("epoch", 0)),
                   history=tuple(state.get("history", ())),
                   best=(float(state["best"][0]), int(state["best"][1])) if state.get("best") else None,
                   postprocessing=Postprocessing.from_dict(state.get("postprocess")),
                   world_size=int(state.get("world_size", 1)), version=state.get("brats_version"), training=training,
                   resume_missing=missing, from_brats_0_1="loss" not in state["config"])

    def to_state(self) -> dict[str, Any]:
        """The entries written to the file (plain values and tensors only: `load_checkpoint` reads
        them with `weights_only=True`)."""
        state: dict[str, Any] = {
            "config": self.config.to_dict(), "model_config": asdict(self.network),
            "split": {"train": list(self.split.train), "val": list(self.split.val)},
            "store": self.store, "store_params": self.store_params, "epoch": self.epoch,
            "history": list(self.history), "best": list(self.best) if self.best else None,
            "postprocess": self.postprocessing.to_dict(), "model": self.weights,
            "world_size": self.world_size, "brats_version": self.version,
        }
        return {**state, **(self.training or {})}

    def without_training_state(self) -> "Checkpoint":
        """What predicting needs: no optimizer moments, no weights (they live in the built model)."""
        return dataclasses.replace(self, weights={}, training=None)

    def inference(self, **overrides: Any) -> InferenceConfig:
        """The sliding window this model implies (`implied_inference`)."""
        return implied_inference(self.config, **overrides)

    def check_resumable(self, config: TrainConfig) -> None:
        """Refuse to resume under settings that would change the run (`RESUMABLE` may differ)."""
        if self.from_brats_0_1:
            raise CheckpointError(f"{self.path}: was trained by brats 0.1 (class head, Dice loss) and cannot be "
                                  "resumed by this version; it can still be scored, or start a new run")
        if self.resume_missing:
            raise CheckpointError(f"{self.path}: holds no training state to resume ({', '.join(self.resume_missing)} "
                                  "missing); it can still be scored, or start a new run")
        saved = settings_by_path(self.config)
        conflicts = [option_name(k) for k, v in settings_by_path(config).items() if k not in RESUMABLE and saved[k] != v]
        if conflicts:
            raise CheckpointError(f"{self.path}: was trained with other settings ({', '.join(conflicts)}); "
                                  "resume with the checkpoint's settings or start a new run")


def read_checkpoint(path: str | Path) -> Checkpoint:
    """`load_checkpoint`, as the typed record."""
    return Checkpoint.from_state(load_checkpoint(path), str(path))
