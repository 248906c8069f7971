"""Every training setting in one torch-free module: the model, loss and augmentation configs, the
training config that holds them with the reference design's defaults, TOML files, CLI overrides."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities are per sample (flips: per sample and axis; scale/shift/gamma: per channel)."""

    flip_prob: float = 0.5
    scale_prob: float = 0.5
    scale_range: tuple[float, float] = (0.9, 1.1)
    shift_prob: float = 0.5
    shift_range: tuple[float, float] = (-0.1, 0.1)
    gamma_prob: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.15
    noise_std: tuple[float, float] = (0.0, 0.1)
    affine_prob: float = 0.0
    rotation_degrees: float = 15.0
    zoom_range: tuple[float, float] = (0.9, 1.1)


LOSSES = ("dice+bce", "dice")


@dataclass(frozen=True)
class LossConfig:
    kind: str = "dice+bce"  # or "dice": the region soft Dice alone (brats 0.1)
    batch_dice: bool = True  # Dice over the whole batch per region, else per sample and region


@dataclass(frozen=True)
class ModelConfig:
    """Encoder widths are base × (1, 2, 4, 8), the bottleneck base × 16 (32-64-128-256 / 512)."""

    in_channels: int = 4
    classes: int = 3  # one logit per region (WT, TC, ET); 4 softmax classes in brats 0.1 checkpoints
    base_channels: int = 32
    levels: int = 4
    deep_supervision: int = 2  # heads at 1/2 and 1/4 resolution

    @property
    def widths(self) -> list[int]:
        return [self.base_channels * 2**i for i in range(self.levels + 1)]

    @property
    def divisor(self) -> int:
        """Patch and window sides must be multiples of this."""
        return 2**self.levels


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved in every checkpoint.

    An epoch is `patches_per_epoch` training patches (rounded up to whole optimizer steps of
    batch_size × accum_steps patches; split between DDP processes). Validation runs every
    `val_every` epochs and after the last one.
    """

    store: str = "store"
    out: str = "."
    epochs: int = 100
    patches_per_epoch: int = 4096
    patch_size: tuple[int, int, int] = (96, 96, 96)
    base_channels: int = 32
    batch_size: int = 4
    accum_steps: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-5
    amp: bool | None = None  # None: mixed precision on CUDA, full precision on CPU
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.2
    split_file: str | None = None
    folds: int = 0  # k-fold cross-validation: 0 off, else train on all folds but `fold`
    fold: int = 0
    val_every: int = 5
    overlap: float = 0.5
    tumour_fraction: float = 0.5
    samples_per_volume: int = 8
    queue_length: int = 64
    loss: str = "dice+bce"  # region soft Dice + binary cross-entropy; "dice" for the Dice alone
    batch_dice: bool = True  # Dice over each (micro-)batch per region, not per sample
    downsample: int = 1  # train and predict at 1/downsample resolution (2: 2 mm voxels)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        positive = ("epochs", "patches_per_epoch", "base_channels", "batch_size", "accum_steps", "val_every",
                    "samples_per_volume", "queue_length")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        divisor = ModelConfig().divisor
        if len(self.patch_size) != 3 or any(s % divisor or s < 2 * divisor for s in self.patch_size):
            raise ConfigError(f"patch-size must be three multiples of {divisor} of at least {2 * divisor} "
                              f"(four 2x downsamplings, and a bottleneck wider than one voxel), not {self.patch_size}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.downsample not in (1, 2, 3, 4):
            raise ConfigError(f"downsample must be 1, 2, 3 or 4, not {self.downsample}")
        if self.folds < 0 or self.folds == 1 or (self.folds and not 0 <= self.fold < self.folds):
            raise ConfigError(f"folds must be 0 (off) or at least 2, and fold in 0..folds-1, not folds {self.folds} "
                              f"fold {self.fold}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val-fraction must lie in [0, 1), not {self.val_fraction}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must lie in [0, 1), not {self.overlap}")
        if self.workers < 0:
            raise ConfigError(f"workers must be 0 or more, not {self.workers}")

    @property
    def loss_config(self) -> LossConfig:
        return LossConfig(kind=self.loss, batch_dice=self.batch_dice)

    @property
    def stream_patch_size(self) -> tuple[int, int, int]:
        """The patch cut from the store (at its resolution): the model's patch times `downsample`."""
        return tuple(s * self.downsample for s in self.patch_size)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists for tuples), as saved in checkpoints and JSON."""
        return _plain(asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _typed(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{where}: unknown option {key!r}")
        if name == "augment":
            out[name] = AugmentConfig(**_typed(AugmentConfig, dict(value), f"{where} [augment]"))
        elif isinstance(value, list):
            out[name] = tuple(value)
        else:
            out[name] = value
    return out


def config_from_dict(values: dict[str, Any], base: TrainConfig | None = None, where: str = "config") -> TrainConfig:
    """A config with `values` (names with - or _) replacing those of `base` (the defaults)."""
    try:
        return dataclasses.replace(base or TrainConfig(), **_typed(TrainConfig, values, where))
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def load_config(path: str | Path | None, overrides: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """`base` (the defaults), then the config file (if any: TOML, or the JSON `train_config.json` a
    run writes), then the options given on the command line."""
    config = base or TrainConfig()
    if path is not None:
        try:
            text = Path(path).read_text()
            data = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read config file ({error.strerror})") from None
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{path}: not valid {'JSON' if str(path).endswith('.json') else 'TOML'} ({error})") from None
        config = config_from_dict(data, config, str(path))
    return config_from_dict({k: v for k, v in overrides.items() if v is not None}, config, "options")
