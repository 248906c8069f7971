"""The settings of `brats score` and `brats predict`, torch-free: the command line takes its
defaults from these classes, and each check of a setting is made here, once, when the config is made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..device_names import check_device_name
from ..errors import ConfigError, OptionConflict
from ..inference_config import InferenceConfig, check_overlap
from ..lesionwise import CHALLENGES


@dataclass(frozen=True)
class ScoreConfig:
    """What `brats score` scores and how (saved as the report's provenance).

    Two modes, checked here and nowhere else: with `ckpt` it predicts the cases with those models
    and evaluates the predictions (`predict`, `overlap`, `tta`, `window`, `batch_windows`,
    `postprocess` and `save_predictions` belong to this mode); with `pred` it only evaluates the
    segmentations in that folder. The references come from `raw` or from a store (`store`, else
    the checkpoint's).
    """

    ckpt: tuple[str, ...] = ()  # several: an ensemble (mean probabilities), or folds with cases="oof"
    store: str | None = None  # default: the store recorded in the checkpoint
    cases: str = "val"  # val | all | oof (each fold's cases by its own model) | a file of case ids
    raw: str | None = None
    pred: str | None = None
    out: str = "final_scores.csv"
    overlap: float = InferenceConfig.overlap
    tta: bool = False
    device: str = "auto"
    save_predictions: str | None = None
    window: tuple[int, int, int] | None = None  # default: the checkpoint's training patch size
    batch_windows: int = 2
    postprocess: bool = True  # the checkpoints' postprocessing: small components removed, small ET relabelled
    challenge: str = "GLI"  # the lesion-wise rules: GLI, SSA, PED (dilation 3), MEN, MET (dilation 1)
    figures: str | None = None  # a folder for one PNG per scored case

    def __post_init__(self) -> None:
        if isinstance(self.ckpt, (str, Path)):  # one checkpoint given as a path
            object.__setattr__(self, "ckpt", (str(self.ckpt),))
        if self.challenge not in CHALLENGES:
            raise ConfigError(f"unknown challenge {self.challenge!r}; choose one of {', '.join(CHALLENGES)}")
        if bool(self.ckpt) == bool(self.pred):
            raise OptionConflict("give --ckpt to predict with a model, or --pred DIR to score existing segmentations"
                              if not self.ckpt else "give either --ckpt or --pred, not both")
        if self.pred and self.save_predictions:
            raise OptionConflict("--save-predictions needs --ckpt: with --pred the segmentations are already files")
        if self.cases == "oof" and (self.raw or not self.ckpt):
            raise OptionConflict("--cases oof scores the folds' own validation cases from the store: give the --ckpt of "
                              "every fold, and no --raw")
        if self.raw and self.store:
            raise OptionConflict("give either --raw or --store as the cases' source, not both")
        check_overlap(self.overlap)
        check_device_name(self.device)



@dataclass(frozen=True)
class PredictConfig:
    """What `brats predict` segments, with which models, and where the files go."""

    out: str
    ckpt: tuple[str, ...]
    inputs: str | None = None  # a folder of raw cases; or give `store`
    store: str | None = None
    cases: str = "all"  # store cases: all | val (the checkpoint's validation cases) | a file of case ids
    overlap: float = InferenceConfig.overlap
    tta: bool = False
    device: str = "auto"
    window: tuple[int, int, int] | None = None
    batch_windows: int = 2
    postprocess: bool = True
    overwrite: bool = False  # predict again cases whose output is up to date

    def __post_init__(self) -> None:
        if isinstance(self.ckpt, (str, Path)):
            object.__setattr__(self, "ckpt", (str(self.ckpt),))
        if (self.inputs is None) == (self.store is None):
            raise ConfigError("give a folder of raw cases or --store, not both and not neither")
        if not self.ckpt:
            raise ConfigError("give --ckpt: the model to predict with")
        check_overlap(self.overlap)
        check_device_name(self.device)
