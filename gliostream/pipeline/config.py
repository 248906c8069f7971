"""The ingest stage's configuration, saved in the store's root attributes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..geometry import AFFINE_ATOL
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

    def store_params(self) -> dict[str, Any]:
        return {"preprocess": asdict(self.preprocess), "affine_atol": self.affine_atol}
