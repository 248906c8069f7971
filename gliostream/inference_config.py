"""How whole volumes are predicted: the sliding-window settings, torch-free so that configs and
command-line help can name their defaults without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .labels import Region
from .tasks import regions_of


def check_overlap(overlap: float) -> None:
    """The one rule for a sliding-window overlap (training's validation, score, predict)."""
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must lie in [0, 1), not {overlap}")


@dataclass(frozen=True)
class InferenceConfig:
    window: tuple[int, int, int]  # the model's training patch, unless asked otherwise
    overlap: float = 0.5
    batch_windows: int = 2
    tta: bool = False  # average over the 8 mirrorings of the three axes
    amp: bool = True  # autocast on CUDA (ignored on CPU)
    downsample: int = 1  # the model works at 1/downsample resolution
    task: str = "GLI"  # the task and regions the model predicts (its TrainConfig's): how outputs decode
    regions: tuple[str, ...] = ()  # () : WT, TC, ET (checkpoints of brats <= 0.4)

    @property
    def region_specs(self) -> tuple[Region, ...]:
        return regions_of(self.task, self.regions)

    def __post_init__(self) -> None:
        check_overlap(self.overlap)
        regions_of(self.task, self.regions)  # ConfigError for an unknown task or region
        if self.batch_windows < 1:
            raise ConfigError(f"batch-windows must be at least 1, not {self.batch_windows}")
