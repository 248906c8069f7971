"""The settings of `brats score` and `brats predict`, torch-free: the command line takes its
defaults from these classes, and each check of a setting is made here, once, when the config is made."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..device_names import check_device_name
from ..errors import ConfigError, OptionConflict
from ..inference_config import InferenceConfig, check_overlap
from ..lesionwise import CHALLENGES
from ..tasks import TASKS

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
"""Who runs the networks (`engines.py`): auto is ONNX Runtime on the CPU where installed, else PyTorch."""


def check_running(engine: str, threads: int | None, workers: int | None, scheduler: str | None) -> None:
    """The one check of how a score or predict run computes: engine, threads, Dask workers."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, not {threads}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}")
    if workers and scheduler:
        raise OptionConflict("give --workers (a local Dask cluster) or --scheduler (an existing one), not both")

METRIC_FAMILIES = ("legacy", "lesionwise-2023", "official")
"""What `brats score --metrics` may list: the BraTS 2018-2021 whole-volume metrics, the BraTS 2023
lesion-wise ones, and the official evaluation since 2024 (BraTS-evaluation)."""


def metric_families(given: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """The families to compute, in report order: legacy always (the report's first columns, worst
    cases and plot are its Dice), then those given; by default all three."""
    if given is None:
        return METRIC_FAMILIES
    names = [n.strip().lower() for n in (given.split(",") if isinstance(given, str) else given) if n.strip()]
    unknown = sorted(set(names) - set(METRIC_FAMILIES))
    if unknown:
        raise OptionConflict(f"unknown --metrics {', '.join(unknown)}; choose from {', '.join(METRIC_FAMILIES)}")
    return tuple(f for f in METRIC_FAMILIES if f == "legacy" or f in names)


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
    challenge: str | None = None  # the lesion-wise rules (GLI, SSA, PED, MEN, MET); default: the task's
    figures: str | None = None  # a folder for one PNG per scored case
    metrics: tuple[str, ...] | None = None  # METRIC_FAMILIES (a comma-separated string too); default: all three
    task: str | None = None  # the cases' BraTS task; default: the checkpoint's, else the store's, else GLI
    engine: str = "auto"  # ENGINES
    threads: int | None = None  # per process (Dask worker); default: the engine's (every core), 1 with --workers
    workers: int | None = None  # a local Dask cluster of this many single-threaded workers; None: this process
    scheduler: str | None = None  # an existing Dask cluster (address or scheduler file)

    def __post_init__(self) -> None:
        if isinstance(self.ckpt, (str, Path)):  # one checkpoint given as a path
            object.__setattr__(self, "ckpt", (str(self.ckpt),))
        if self.challenge is not None:
            object.__setattr__(self, "challenge", self.challenge.upper())
            if self.challenge not in CHALLENGES:
                raise ConfigError(f"unknown challenge {self.challenge!r}; choose one of {', '.join(CHALLENGES)}")
        if self.task is not None:
            object.__setattr__(self, "task", self.task.upper())
            if self.task not in TASKS:
                raise ConfigError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        object.__setattr__(self, "metrics", metric_families(self.metrics))
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
        if (self.workers or self.scheduler) and not self.ckpt:
            raise OptionConflict("--workers and --scheduler spread prediction: they need --ckpt")
        check_overlap(self.overlap)
        check_device_name(self.device)
        check_running(self.engine, self.threads, self.workers, self.scheduler)


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
    task: str | None = None  # must be the checkpoint's task when given (the checkpoint decides)
    engine: str = "auto"
    threads: int | None = None
    workers: int | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ckpt, (str, Path)):
            object.__setattr__(self, "ckpt", (str(self.ckpt),))
        if (self.inputs is None) == (self.store is None):
            raise ConfigError("give a folder of raw cases or --store, not both and not neither")
        if not self.ckpt:
            raise ConfigError("give --ckpt: the model to predict with")
        check_overlap(self.overlap)
        check_device_name(self.device)
        check_running(self.engine, self.threads, self.workers, self.scheduler)
