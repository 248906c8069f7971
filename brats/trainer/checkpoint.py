"""Checkpoints: written atomically, read without executing anything."""

from __future__ import annotations

import os
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, OutputError, shortened
from ..faults import fault_point
from ..files import replaced_on_success

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
        and isinstance(v.get("min_component_voxels", [0, 0, 0]), list)
        and len(v.get("min_component_voxels", [0, 0, 0])) == 3
        and all(isinstance(n, int) and n >= 0 for n in v.get("min_component_voxels", [0, 0, 0])))),
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
RESUME_ENTRIES = ("split", "store_params", "epoch", "history", "optimizer", "augmenter", "torch_rng")  # training state


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
