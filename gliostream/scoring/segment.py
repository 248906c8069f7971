"""Segment one case held in memory (NumPy arrays) with trained models: prediction from Python.

The arrays go through the same crop and z-score as `brats ingest` and the same sliding window,
ensemble and postprocessing as `brats predict`, so a volume segmented here gets the labels the
command line would write for the same scan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..devices import configure_kernels, resolve_device
from ..errors import ConfigError, InvalidCaseError
from ..geometry import uncrop
from ..inference_config import InferenceConfig
from ..labels import CONVENTION_NAMES
from ..pipeline.naming import CONVENTIONS, MODALITIES
from ..pipeline.preprocess import normalised_image
from .exports import to_raw_labels
from .models import Member, inference_config, load_members, predict_case

Image = np.ndarray | Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Segmenter:
    """Checkpoints loaded once on a device, to segment many in-memory cases (`load_segmenter`)."""

    members: list[Member]
    inference: InferenceConfig
    device: torch.device
    postprocess: bool = True

    def __call__(self, image: Image, convention: str = "2023") -> np.ndarray:
        """The labels (x, y, z) uint8 of one case in its own geometry, in the checkpoint's task's
        labels; for glioma 1 necrosis, 2 edema, and enhancing tumour 3 (`convention="2023"`) or 4
        (`"2021"`).

        `image` is either an array (4, x, y, z) of the modalities in the order t1, t1ce, t2, flair
        (BraTS 2023+: t1n, t1c, t2w, t2f), or a mapping of those names to (x, y, z) arrays; raw
        scanner intensities, as read from the NIfTI files (normalisation is done here).
        """
        if convention not in CONVENTION_NAMES:
            raise ConfigError(f"convention must be one of {', '.join(CONVENTION_NAMES)}, not {convention!r}")
        task = self.members[0].task.name
        if convention == "2021" and task != "GLI":
            raise ConfigError(f"the {task} task has no BraTS 2018-2021 labels; use convention='2023'")
        modalities = _modalities(image)
        names = {role: f"image {role}" for role in MODALITIES}
        cropped, box, _ = normalised_image(modalities, None, names)
        labels = predict_case(self.members, torch.from_numpy(cropped), self.inference, self.device, self.postprocess)
        crop_box = tuple((s.start, s.stop) for s in box)
        return to_raw_labels(uncrop(labels, crop_box, modalities[0].shape), convention, task)


def load_segmenter(checkpoints: str | Path | Sequence[str | Path], device: str = "auto", tta: bool = False,
                   overlap: float = InferenceConfig.overlap, window: tuple[int, int, int] | None = None,
                   batch_windows: int = 2, postprocess: bool = True, engine: str = "auto",
                   threads: int | None = None) -> Segmenter:
    """Load one checkpoint or exported model, or several as an ensemble (mean probabilities), for
    `Segmenter`, run by `engine` (auto: ONNX Runtime on the CPU where installed, else torch)."""
    paths = (str(checkpoints),) if isinstance(checkpoints, (str, Path)) else tuple(str(p) for p in checkpoints)
    if not paths:
        raise ConfigError("give at least one checkpoint")
    resolved = resolve_device(device)
    configure_kernels(resolved)
    members = load_members(paths, resolved, engine, threads, window=window, batch_windows=batch_windows)
    return Segmenter(members, inference_config(members, window, overlap, tta, batch_windows), resolved, postprocess)


# The names of every convention's files (t1n, t1c, t2w, t2f in BraTS 2023+), accepted for the same modalities.
ALIASES = {suffix: role for c in CONVENTIONS.values() for role, suffix in c.suffixes.items() if role in MODALITIES}


def _modalities(image: Image) -> list[np.ndarray]:
    """The four modalities as (x, y, z) arrays of one shape, in `MODALITIES` order."""
    if isinstance(image, Mapping):
        given = {ALIASES.get(str(k).lower(), str(k).lower()): np.asarray(v) for k, v in image.items()}
        unknown = sorted(set(given) - set(MODALITIES))
        missing = [m for m in MODALITIES if m not in given]
        if unknown or missing:
            raise InvalidCaseError("image", f"needs the modalities {', '.join(MODALITIES)}"
                                   + (f"; missing {', '.join(missing)}" if missing else "")
                                   + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        arrays = [given[m] for m in MODALITIES]
    else:
        array = np.asarray(image)
        if array.ndim != 4 or array.shape[0] != len(MODALITIES):
            raise InvalidCaseError("image", f"must be an array (4, x, y, z) of {', '.join(MODALITIES)}, not of "
                                   f"shape {array.shape}")
        arrays = list(array)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 3:
        raise InvalidCaseError("image", f"the modalities must be 3-D arrays of one shape, not {sorted(shapes)}")
    for role, a in zip(MODALITIES, arrays, strict=True):
        if a.dtype.kind not in "iuf":
            raise InvalidCaseError(f"image {role}", f"must hold numbers, not {a.dtype}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise InvalidCaseError(f"image {role}", "holds NaN or infinite values")
    return arrays
