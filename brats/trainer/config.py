"""Every training setting in one torch-free module, each defined once: the training config with
its sections (model, loss, stream, augment), TOML and JSON files, command-line options, and the
conversion of the flat files and checkpoints of brats <= 0.3."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..inference_config import InferenceConfig
from ..labels import REGIONS

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
LOADERS = ("threads", "processes")


@dataclass(frozen=True)
class LossConfig:
    kind: str = "dice+bce"  # region soft Dice + binary cross-entropy; "dice": the Dice alone (brats 0.1)
    batch_dice: bool = True  # Dice over the whole batch per region, else per sample and region

    def __post_init__(self) -> None:
        if self.kind not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not {self.kind!r}")


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

    def __post_init__(self) -> None:
        _at_least_one(self, "base_channels", "levels")

    @property
    def divisor(self) -> int:
        """Patch and window sides must be multiples of this."""
        return 2**self.levels


@dataclass(frozen=True)
class StreamConfig:
    """How training patches are drawn and delivered. `patch_size` is the model's patch; the stream
    cuts it at the store's resolution (`TrainConfig.store_stream`)."""

    patch_size: tuple[int, int, int] = (96, 96, 96)
    tumour_fraction: float = 0.5
    tumour_regions: tuple[str, ...] = tuple(REGIONS)
    samples_per_volume: int = 8
    queue_length: int = 64
    batch_size: int = 4
    workers: int = 2
    loader: str = "threads"  # or "processes" (forkserver/spawn); workers=0 loads inline, for debugging
    prefetch_batches: int = 4
    collate_threads: int = 2
    reuse_memory: bool = True  # see files.keep_freed_memory

    def __post_init__(self) -> None:
        _at_least_one(self, "samples_per_volume", "queue_length", "batch_size")
        if self.workers < 0 or self.prefetch_batches < 0 or self.collate_threads < 0:
            raise ConfigError("workers, prefetch-batches and collate-threads must be 0 or more")
        if self.loader not in LOADERS:
            raise ConfigError(f"loader must be one of {', '.join(LOADERS)}, not {self.loader!r}")
        if not 0.0 <= self.tumour_fraction <= 1.0:
            raise ConfigError(f"tumour-fraction must lie in [0, 1], not {self.tumour_fraction}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved in every checkpoint.

    An epoch is `patches_per_epoch` training patches (rounded up to whole optimizer steps of
    stream.batch_size × accum_steps patches; split between DDP processes). Validation runs every
    `val_every` epochs and after the last one, with sliding windows of the training patch.
    """

    store: str = "store"
    out: str = "."
    epochs: int = 100
    patches_per_epoch: int = 4096
    accum_steps: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-5
    amp: bool | None = None  # None: mixed precision on CUDA, full precision on CPU
    device: str = "auto"
    seed: int = 0
    val_fraction: float = 0.2
    split_file: str | None = None
    folds: int = 0  # k-fold cross-validation: 0 off, else train on all folds but `fold`
    fold: int = 0
    val_every: int = 5
    overlap: float = InferenceConfig.overlap  # of the validation's sliding windows
    downsample: int = 1  # train and predict at 1/downsample resolution (2: 2 mm voxels)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _at_least_one(self, "epochs", "patches_per_epoch", "accum_steps", "val_every")
        divisor, patch = self.model.divisor, self.stream.patch_size
        if len(patch) != 3 or any(s % divisor or s < 2 * divisor for s in patch):
            raise ConfigError(f"patch-size must be three multiples of {divisor} of at least {2 * divisor} "
                              f"({self.model.levels} 2x downsamplings, and a bottleneck wider than one voxel), "
                              f"not {patch}")
        if self.downsample not in (1, 2, 3, 4):
            raise ConfigError(f"downsample must be 1, 2, 3 or 4, not {self.downsample}")
        if self.folds < 0 or self.folds == 1 or (self.folds and not 0 <= self.fold < self.folds):
            raise ConfigError(f"folds must be 0 (off) or at least 2, and fold in 0..folds-1, not folds {self.folds} "
                              f"fold {self.fold}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val-fraction must lie in [0, 1), not {self.val_fraction}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must lie in [0, 1), not {self.overlap}")

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """The model's patch, also its validation window."""
        return self.stream.patch_size

    @property
    def store_stream(self) -> StreamConfig:
        """The stream as it reads the store: patches of the model's patch times `downsample`."""
        return dataclasses.replace(self.stream, patch_size=tuple(s * self.downsample for s in self.patch_size))

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists for tuples, a dict per section), as saved in checkpoints and JSON."""
        return _plain(asdict(self))


SECTIONS = {"model": ModelConfig, "loss": LossConfig, "stream": StreamConfig, "augment": AugmentConfig}
# The command line's flat names for section settings; also how brats <= 0.3 wrote them in TOML
# files, train_config.json and checkpoints, which therefore still load.
FLAT_NAMES = {
    "base_channels": ("model", "base_channels"),
    "patch_size": ("stream", "patch_size"),
    "batch_size": ("stream", "batch_size"),
    "workers": ("stream", "workers"),
    "tumour_fraction": ("stream", "tumour_fraction"),
    "samples_per_volume": ("stream", "samples_per_volume"),
    "queue_length": ("stream", "queue_length"),
    "loss": ("loss", "kind"),
    "batch_dice": ("loss", "batch_dice"),
}


def _at_least_one(config: Any, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be at least 1, not {getattr(config, name)}")


def setting(config: TrainConfig, name: str) -> Any:
    """The value of a setting by its command-line name (`patch_size`) or its field (`lr`)."""
    section, key = FLAT_NAMES.get(name, (None, name))
    return getattr(getattr(config, section) if section else config, key)


def flat_settings(config: TrainConfig) -> dict[str, Any]:
    """Every setting by its command-line name, else as `name` or `section.name` -> plain value."""
    flat_name = {path: name for name, path in FLAT_NAMES.items()}
    out: dict[str, Any] = {}
    for key, value in config.to_dict().items():
        if key in SECTIONS:
            out.update({flat_name.get((key, k), f"{key}.{k}"): v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _changes(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """`values` of one dataclass by field name (TOML names may use - for _), typed."""
    known = {f.name for f in fields(cls)}
    out = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{where}: unknown option {key!r}")
        out[name] = _value(value)
    return out


def config_from_dict(values: dict[str, Any], base: TrainConfig | None = None, where: str = "config") -> TrainConfig:
    """A config with `values` replacing those of `base` (the defaults): top-level settings, section
    tables (`{"stream": {"workers": 4}}`, changing only the settings given), or the flat names of
    the command line and of brats <= 0.3 files (`{"workers": 4}`)."""
    config = base or TrainConfig()
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name in SECTIONS and isinstance(value, dict):
            where_section = f"{where} [{name}]"
            for field_name, field_value in _changes(SECTIONS[name], value, where_section).items():
                _put(sections[name], field_name, field_value, where)
        elif name in SECTIONS and name not in FLAT_NAMES:
            raise ConfigError(f"{where}: {key!r} must be a table of settings ([{name}] in TOML)")
        elif name in FLAT_NAMES:
            section, field_name = FLAT_NAMES[name]
            _put(sections[section], field_name, _value(value), where)
        else:
            top.update(_changes(TrainConfig, {name: value}, where))
    try:
        for name, changes in sections.items():
            if changes:
                top[name] = dataclasses.replace(getattr(config, name), **changes)
        return dataclasses.replace(config, **top)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def _put(section: dict[str, Any], name: str, value: Any, where: str) -> None:
    if name in section and section[name] != value:
        raise ConfigError(f"{where}: {name!r} is given twice, with different values")
    section[name] = value


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
