"""Experiment trackers: the per-epoch figures of `train_log.csv` sent elsewhere as they happen.

A tracker is anything with `log_epoch(row, epoch)` and `close()`; the loop calls every tracker
the config names (`TrainConfig.trackers`) on the main process only, after each epoch's
checkpoint is written. TensorBoard is built in (the optional extra `gliostream[tensorboard]`);
MLflow, Weights & Biases or others are added with `register_tracker(name, factory)`, where
`factory(out_folder, config)` returns the tracker, without touching the loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError
from .config import TRACKERS, TrainConfig

TENSORBOARD_DIR = "tensorboard"


class Tracker(Protocol):
    def log_epoch(self, row: dict[str, Any], epoch: int) -> None: ...

    def close(self) -> None: ...


TrackerFactory = Callable[[Path, TrainConfig], Tracker]

# The groups the figures are shown in, by the prefix of their train_log.csv column.
GROUPS = (("lw_dice_", "lesionwise_dice/"), ("dice_", "dice/"), ("step_s_", "step_seconds/"),
          ("grad_norm_", "gradient_norm/"), ("peak_gpu_", "gpu_memory_mib/"))


def tag(column: str) -> str:
    """The TensorBoard tag of a log column: `dice_wt` -> `dice/wt`, `train_loss` -> `train/train_loss`."""
    for prefix, group in GROUPS:
        if column.startswith(prefix):
            return group + column.removeprefix(prefix)
    return f"train/{column}"


def figures(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of an epoch's row (the epoch itself is the step, not a figure)."""
    return {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardTracker:
    """Scalars per epoch under OUT/tensorboard (`tensorboard --logdir OUT`), the config as text."""

    def __init__(self, out: Path, config: TrainConfig) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("trackers = tensorboard (--tensorboard) needs the tensorboard package: "
                              "pip install 'gliostream[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(out / TENSORBOARD_DIR))
        self.writer.add_text("config", "```\n" + json.dumps(config.to_dict(), indent=2) + "\n```")

    def log_epoch(self, row: dict[str, Any], epoch: int) -> None:
        for column, value in figures(row).items():
            self.writer.add_scalar(tag(column), value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


_factories: dict[str, TrackerFactory] = {"tensorboard": TensorBoardTracker}


def register_tracker(name: str, factory: TrackerFactory) -> None:
    """Make `TrainConfig(trackers=(name,))` log every epoch to `factory(out, config)`."""
    if not isinstance(name, str) or not name or name in _factories:
        raise ConfigError(f"tracker name {name!r} is empty or taken ({', '.join(_factories)})")
    _factories[name] = factory
    TRACKERS.append(name)


def open_trackers(config: TrainConfig) -> list[Tracker]:
    """The config's trackers, each started (a missing optional package is a ConfigError now, not after an epoch)."""
    return [_factories[name](Path(config.out), config) for name in config.trackers]
