"""How whole volumes are predicted: the sliding-window settings, torch-free so that configs and
command-line help can name their defaults without loading torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InferenceConfig:
    window: tuple[int, int, int]  # the model's training patch, unless asked otherwise
    overlap: float = 0.5
    batch_windows: int = 2
    tta: bool = False  # average over the 8 mirrorings of the three axes
    amp: bool = True  # autocast on CUDA (ignored on CPU)
    downsample: int = 1  # the model works at 1/downsample resolution
