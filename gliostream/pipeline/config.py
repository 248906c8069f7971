"""The ingest stage's configuration, saved in the store's root attributes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..geometry import AFFINE_ATOL
from ..tasks import task as task_named
from .nifti import NiftiLimits
from .preprocess import PreprocessConfig


@dataclass(frozen=True)
class IngestConfig:
    """Everything that decides what ingest accepts and writes.

    `store_params()` is what the store records and checks on every later run: a store is
    never filled with cases preprocessed in two different ways.
    """

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    limits: NiftiLimits = field(default_factory=NiftiLimits)
    affine_atol: float = AFFINE_ATOL
    task: str = "GLI"  # the BraTS task of the cases (`tasks.TASKS`): which labels a seg may hold

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", task_named(self.task).name)

    def store_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"preprocess": asdict(self.preprocess), "affine_atol": self.affine_atol}
        if self.task != "GLI":  # a GLI store of brats <= 0.4 records no task: GLI is the default
            params["task"] = self.task
        return params
