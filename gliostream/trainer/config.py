"""Every training setting in one torch-free module, each defined once: the training config with
its sections (model, loss, stream, augment, postprocess), TOML and JSON files, command-line options, and the
conversion of the flat files and checkpoints of brats <= 0.3."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..device_names import check_device_name
from ..errors import ConfigError
from ..inference_config import InferenceConfig, check_overlap
from ..tasks import ALL_REGIONS, regions_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

def _kind(value: Any) -> str:
    """How a value was given, in a user's words."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _wanted(hint: Any) -> str:
    """What a field's type asks for, in a user's words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _wanted(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_wanted(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} {_wanted(args[0]).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "true or false", int: "a whole number", float: "a finite number", str: "a text"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
    return isinstance(value, hint) if isinstance(hint, type) else True


def check_types(config: Any, section: str = "") -> None:
    """Every field of a config dataclass holds a value of its declared type (`"no"` is not false,
    1.5 not a number of epochs, NaN not a learning rate): ConfigError naming the setting otherwise."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if not _fits(value, hints[f.name]):
            shown = list(value) if isinstance(value, tuple) else value
            name = (f"{section} " if section else "") + f.name.replace("_", "-")
            raise ConfigError(f"{name} must be {_wanted(hints[f.name])}, not {shown!r} ({_kind(value)})")


@dataclass(frozen=True)
class AugmentConfig:
    """The augmentation of every training batch, on the training device (`augment.BatchAugmenter`).

    Probabilities are per sample (flips: per sample and axis; the intensity transforms: per sample
    and channel). Intensities change inside the brain only (voxels non-zero in some channel): the
    zero background stays zero, as it is in every scan at test time. Defaults follow nnU-Net's
    augmentation, plus a smooth bias field (the way scanners differ most).
    """

    flip_prob: float = 0.5
    affine_prob: float = 0.2  # rotation and zoom together
    rotation_degrees: float = 15.0
    zoom_range: tuple[float, float] = (0.85, 1.25)
    scale_prob: float = 0.15  # brightness: intensity times a factor
    scale_range: tuple[float, float] = (0.75, 1.25)
    contrast_prob: float = 0.15  # stretched about the brain mean, clipped to the channel's range
    contrast_range: tuple[float, float] = (0.75, 1.25)
    shift_prob: float = 0.15
    shift_range: tuple[float, float] = (-0.1, 0.1)
    gamma_prob: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    gamma_invert_prob: float = 0.1  # of a gamma: applied to the inverted intensities (nnU-Net's)
    bias_prob: float = 0.3  # a smooth multiplicative field over the patch, in raw-intensity terms
    bias_strength: float = 0.3  # the log of the field lies in [-strength, strength]
    bias_nodes: int = 3  # control points of the field per axis (fewer: smoother)
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # voxels
    lowres_prob: float = 0.25  # simulated low resolution: down-sampled, then up again
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    noise_prob: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.1)
    keep_background: bool = True  # False only for runs of brats <= 0.3, whose shift and gamma moved it

    def __post_init__(self) -> None:
        check_types(self, "augment")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob") and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ConfigError(f"augment {f.name.replace('_', '-')} must lie in [0, 1], not {value!r}")
            if isinstance(value, tuple) and not (len(value) == 2 and value[0] <= value[1]):
                raise ConfigError(f"augment {f.name.replace('_', '-')} must be [low, high], not {list(value)}")
        if self.gamma_range[0] <= 0 or self.zoom_range[0] <= 0 or self.lowres_zoom[0] <= 0 or self.lowres_zoom[1] > 1:
            raise ConfigError("augment gamma-range and zoom-range must be positive, lowres-zoom within (0, 1]")
        if self.bias_nodes < 2 or self.bias_strength < 0 or self.blur_sigma[0] < 0 or self.noise_std[0] < 0:
            raise ConfigError("augment bias-nodes must be at least 2; bias-strength, blur-sigma and noise-std "
                              "at least 0")
        if self.scale_range[0] <= 0 or self.contrast_range[0] <= 0 or not 0 <= self.rotation_degrees <= 180:
            raise ConfigError("augment scale-range and contrast-range must be positive, rotation-degrees within "
                              "[0, 180]")
        if self.bias_nodes > 16 or self.bias_strength > 3 or self.blur_sigma[1] > 10 or self.noise_std[1] > 10:
            raise ConfigError("augment bias-nodes must be at most 16, bias-strength at most 3, blur-sigma and "
                              "noise-std at most 10")


# What the augmentation of brats <= 0.3 was, for the settings added since: a checkpoint or config
# file written then (its [augment] lacks them) resumes with exactly the augmentation it had.
AUGMENT_BEFORE_0_4 = {"affine_prob": 0.0, "zoom_range": (0.9, 1.1), "scale_prob": 0.5, "scale_range": (0.9, 1.1),
                      "contrast_prob": 0.0, "shift_prob": 0.5, "gamma_invert_prob": 0.0, "bias_prob": 0.0,
                      "blur_prob": 0.0, "lowres_prob": 0.0, "noise_prob": 0.15, "keep_background": False}


@dataclass(frozen=True)
class PostprocessConfig:
    """The postprocessing of predicted labels (`regions.Postprocessing`), and when a run may change it.

    `min_component_voxels` (WT, TC, ET) and `et_min_voxels` are the rule a run starts from and keeps
    unless its validation cases show better: with at least `min_cases` of them, a size is changed
    only when it raises the mean of legacy and lesion-wise Dice over all three regions by at least
    `margin` and helps more cases than it hurts. The default sizes were chosen across institutions
    (docs/benchmarks.md, "Across institutions"); the largest component of a region inside each
    component of the region around it is never removed, whatever the size.
    """

    min_component_voxels: tuple[int, int, int] = (2000, 500, 250)
    et_min_voxels: int = 50
    search: bool = True
    min_cases: int = 8
    margin: float = 0.005

    def __post_init__(self) -> None:
        check_types(self, "postprocess")
        if len(self.min_component_voxels) != 3 or any(int(v) != v or v < 0 for v in self.min_component_voxels):
            raise ConfigError(f"postprocess min-component-voxels must be three sizes (WT, TC, ET) of 0 or more, "
                              f"not {list(self.min_component_voxels)}")
        if self.et_min_voxels < 0 or self.min_cases < 2 or self.margin < 0:
            raise ConfigError("postprocess et-min-voxels and margin must be 0 or more, min-cases at least 2")


# The names a config may give for the network and the loss: the built-in ones, and any a user adds
# with `trainer.registry.register_network` / `register_loss` (which also keep the callables).
NETWORKS: list[str] = ["resunet"]
LOSSES: list[str] = ["dice+bce", "dice"]
TRACKERS: list[str] = ["tensorboard"]  # experiment trackers (`trainer.tracking.register_tracker` adds more)
LOADERS = ("threads", "processes")


@dataclass(frozen=True)
class LossConfig:
    kind: str = "dice+bce"  # region soft Dice + binary cross-entropy; "dice": the Dice alone (brats 0.1)
    batch_dice: bool = True  # Dice over the whole batch per region, else per sample and region

    def __post_init__(self) -> None:
        check_types(self, "loss")
        if self.kind not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not {self.kind!r} (a loss of your own is "
                              "added with gliostream.register_loss before the config is made)")


IMAGE_CHANNELS = 4  # t1, t1ce, t2, flair (pipeline.naming.MODALITIES)
MAX_BASE_CHANNELS, MAX_LEVELS = 256, 6  # bounds checked before a network is built (a checkpoint is input)
MAX_REGIONS = 8


@dataclass(frozen=True)
class ModelConfig:
    """The network: by default the reference Res-UNet, whose encoder widths are base × (1, 2, 4, 8)
    and bottleneck base × 16 (32-64-128-256 / 512). Patch sides must be multiples of 2**levels."""

    network: str = "resunet"  # a name of `trainer.registry` (built in: the Res-UNet below)
    in_channels: int = 4
    classes: int = 3  # one logit per region (set from TrainConfig.regions); 4 softmax classes in brats 0.1 checkpoints
    base_channels: int = 32
    levels: int = 4
    deep_supervision: int = 2  # heads at 1/2 and 1/4 resolution

    @property
    def widths(self) -> list[int]:
        return [self.base_channels * 2**i for i in range(self.levels + 1)]

    def __post_init__(self) -> None:
        check_types(self, "model")
        if self.network not in NETWORKS:
            raise ConfigError(f"model network must be one of {', '.join(NETWORKS)}, not {self.network!r} (a network "
                              "of your own is added with gliostream.register_network before the config is made)")
        if self.in_channels != IMAGE_CHANNELS:
            raise ConfigError(f"model in-channels must be {IMAGE_CHANNELS} (the store's modalities), not {self.in_channels}")
        if not 1 <= self.classes <= MAX_REGIONS:
            raise ConfigError(f"model classes must be one per region, 1 to {MAX_REGIONS}, not {self.classes}")
        if not 1 <= self.base_channels <= MAX_BASE_CHANNELS or not 2 <= self.levels <= MAX_LEVELS:
            raise ConfigError(f"model base-channels must lie in 1..{MAX_BASE_CHANNELS} and levels in 2..{MAX_LEVELS}, "
                              f"not {self.base_channels} and {self.levels}")
        if not 0 <= self.deep_supervision < self.levels:
            raise ConfigError(f"model deep-supervision must lie in 0..{self.levels - 1} (heads below the top level), "
                              f"not {self.deep_supervision}")

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
    tumour_regions: tuple[str, ...] = ()  # the regions tumour patches centre on; () every region trained
    samples_per_volume: int = 8
    queue_length: int = 64
    batch_size: int = 4
    workers: int = 2
    loader: str = "threads"  # or "processes" (forkserver/spawn); workers=0 loads inline, for debugging
    prefetch_batches: int = 4
    collate_threads: int = 2
    reuse_memory: bool = True  # see files.keep_freed_memory

    def __post_init__(self) -> None:
        check_types(self, "stream")
        _at_least_one(self, "samples_per_volume", "queue_length", "batch_size")
        if len(set(self.tumour_regions)) != len(self.tumour_regions) or not set(self.tumour_regions) <= set(ALL_REGIONS):
            raise ConfigError(f"stream tumour-regions must be regions of the task ({', '.join(ALL_REGIONS)}), each "
                              f"once, not {list(self.tumour_regions)}")
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
    patches_per_epoch: int = 8192
    accum_steps: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-5
    grad_clip: float = 12.0  # the largest global gradient norm of an update (clipped above it); 0 off
    amp: bool | None = None  # None: mixed precision on CUDA, full precision on CPU
    device: str = "auto"
    deterministic: bool = False  # CUDA: deterministic kernels instead of cuDNN autotuning (slower)
    seed: int = 0
    val_fraction: float = 0.2
    split_file: str | None = None
    folds: int = 0  # k-fold cross-validation: 0 off, else train on all folds but `fold`
    fold: int = 0
    val_every: int = 5
    overlap: float = InferenceConfig.overlap  # of the validation's sliding windows
    downsample: int = 1  # train and predict at 1/downsample resolution (2: 2 mm voxels)
    trackers: tuple[str, ...] = ()  # where each epoch's figures also go: "tensorboard", or a registered tracker
    task: str = "GLI"  # the store's BraTS task (`tasks.TASKS`), recorded when training starts
    regions: tuple[str, ...] = ()  # the regions trained: the task's that the store's labels hold (set at start)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    def __post_init__(self) -> None:
        check_types(self)
        _at_least_one(self, "epochs", "patches_per_epoch", "accum_steps", "val_every")
        if self.lr <= 0 or self.lr > 1 or self.weight_decay < 0:
            raise ConfigError(f"lr must lie in (0, 1] and weight-decay be 0 or more, not {self.lr} and {self.weight_decay}")
        if not self.grad_clip >= 0 or math.isinf(self.grad_clip):
            raise ConfigError(f"grad-clip must be a finite norm, or 0 (off), not {self.grad_clip}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be a whole number of 0 or more, not {self.seed}")
        check_device_name(self.device)
        trained = regions_of(self.task, self.regions)  # ConfigError for a region the task lacks
        if self.model.classes != len(trained):
            raise ConfigError(f"model classes must be {len(trained)}, one per region trained "
                              f"({', '.join(r.name for r in trained)}), not {self.model.classes}")
        if self.regions and not set(self.stream.tumour_regions) <= {r.name for r in trained}:
            raise ConfigError(f"stream tumour-regions {list(self.stream.tumour_regions)} must be regions trained "
                              f"({', '.join(r.name for r in trained)})")
        if not self.store or not self.out:
            raise ConfigError("store and out must name folders")
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
        unknown = [t for t in self.trackers if t not in TRACKERS]
        if unknown or len(set(self.trackers)) != len(self.trackers):
            raise ConfigError(f"trackers must be some of {', '.join(TRACKERS)}, each once, not {list(self.trackers)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val-fraction must lie in [0, 1), not {self.val_fraction}")
        check_overlap(self.overlap)

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


SECTIONS = {"model": ModelConfig, "loss": LossConfig, "stream": StreamConfig, "augment": AugmentConfig,
            "postprocess": PostprocessConfig}
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


def settings_by_path(config: TrainConfig) -> dict[str, Any]:
    """Every setting by its field path (`lr`, `stream.workers`) -> plain value."""
    out: dict[str, Any] = {}
    for key, value in config.to_dict().items():
        if key in SECTIONS:
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def option_name(path: str) -> str:
    """How a user names the setting at `path`: its command-line name (`stream.workers` -> `workers`)
    where it has one, else the path."""
    section, _, key = path.rpartition(".")
    return next((name for name, where in FLAT_NAMES.items() if where == (section, key)), path)


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
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: settings must be a table, not {_kind(values)}")
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    values = _with_augment_before_0_4(values)
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
    except (TypeError, ConfigError) as error:
        raise ConfigError(f"{where}: {error}") from None


# Settings added since runs were first saved, with the value that reproduces a run saved before them.
ADDED_SINCE = {"grad_clip": 0.0}  # brats < 0.4 never clipped


def saved_config(values: dict[str, Any], where: str = "config") -> TrainConfig:
    """The settings a run saved (checkpoint, train_config.json): a setting added since it was
    written takes the value that reproduces that run, not today's default."""
    return config_from_dict(_as_saved(values), where=where)


def _as_saved(values: Any) -> Any:
    if not isinstance(values, dict):
        return values
    added = {k: v for k, v in ADDED_SINCE.items() if k not in values and k.replace("_", "-") not in values}
    return {**added, **values}


_AUGMENT_0_3_KEYS = {"flip_prob", "scale_prob", "scale_range", "shift_prob", "shift_range", "gamma_prob", "gamma_range",
                     "noise_prob", "noise_std", "affine_prob", "rotation_degrees", "zoom_range"}


def _with_augment_before_0_4(values: dict[str, Any]) -> dict[str, Any]:
    """A whole [augment] section as brats <= 0.3 saved it (every setting of then, none added since)
    gets the values that reproduce its augmentation for the settings added since."""
    augment = values.get("augment")
    if not isinstance(augment, dict) or set(augment) != _AUGMENT_0_3_KEYS:
        return values
    return {**values, "augment": {**AUGMENT_BEFORE_0_4, **augment}}


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
        if str(path).endswith(".json"):  # a run's train_config.json: reruns that run
            data = _as_saved(data)
        config = config_from_dict(data, config, str(path))
    return config_from_dict({k: v for k, v in overrides.items() if v is not None}, config, "options")
