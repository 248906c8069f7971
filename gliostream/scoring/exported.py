"""Exported models: the format of a checkpoint's network as ONNX (and TorchScript), with what predicting needs.

An export folder holds `model.json` (the manifest: members, format, brats version) and per
ensemble member `member-<i>.onnx` (optionally `member-<i>.ts`, TorchScript). Each file is
self-contained: its graph maps (N, 4, x, y, z) float32 windows of z-scored modalities to
(N, R, x, y, z) region probabilities (the sigmoid is inside), and its metadata (ONNX
`metadata_props` key "brats", TorchScript extra file `brats.json`) holds the input channels and
their order, the normalisation, window and resolution, the regions and how they decode, the
postprocessing, the label convention, the brats version, the checkpoint's SHA-256 and its record
without weights. `brats predict --ckpt FOLDER` (or a member file) predicts with it through
`--engine onnxruntime|openvino` (ONNX) or `torch` (TorchScript).
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import CheckpointError, ConfigError, shortened
from ..inference_config import InferenceConfig
from ..pipeline.naming import MODALITIES
from ..regions import THRESHOLD, region_probabilities
from ..trainer.checkpoint import Checkpoint

log = logging.getLogger(__name__)

FORMAT = "brats-export"
VERSION = 1
MANIFEST = "model.json"
METADATA_KEY = "brats"
TORCHSCRIPT_EXTRA = "brats.json"
INPUT, OUTPUT = "image", "probabilities"
OPSET = 18
# The checkpoint entries an export keeps: its record without weights, history or training state.
KEPT_ENTRIES = ("config", "model_config", "split", "store", "store_params", "epoch", "best", "postprocess",
                "brats_version", "world_size")
NORMALISATION = ("each modality cropped to the brain's bounding box (non-zero voxels of any modality), then "
                 "z-scored over its non-zero voxels, as `brats ingest` does; voxels outside the brain are 0")


class ExportError(CheckpointError):
    """An exported model that cannot be read or made."""


class RegionProbabilities(nn.Module):
    """What is exported: the network followed by its region probabilities (a sigmoid per region)."""

    def __init__(self, network: nn.Module, regions: int) -> None:
        super().__init__()
        self.network = network
        self.regions = regions

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return region_probabilities(self.network(image), self.regions)


def metadata(checkpoint: Checkpoint, sha256: str, inference: InferenceConfig) -> dict[str, Any]:
    """Everything predicting with the exported network needs, in plain JSON values."""
    state = checkpoint.to_state()
    regions = inference.region_specs
    return {
        "format": FORMAT, "version": VERSION, "brats_version": __version__,
        "source": {"checkpoint": Path(checkpoint.path).name, "sha256": sha256},
        "input": {"name": INPUT, "layout": "N, C, x, y, z float32", "channels": list(MODALITIES),
                  "normalisation": NORMALISATION, "window": list(inference.window), "batch": inference.batch_windows,
                  "downsample": inference.downsample,
                  "overlap": inference.overlap},
        "output": {"name": OUTPUT, "layout": "N, R, x, y, z float32 region probabilities",
                   "regions": [asdict(r) for r in regions], "threshold": THRESHOLD,
                   "decoding": "each region in order paints its label where its probability exceeds the threshold, "
                               "a region with a parent only inside the parent's voxels"},
        "task": inference.task, "postprocessing": checkpoint.postprocessing.to_dict(),
        "labels": "store labels of the task (glioma 1 NETC, 2 SNFH, 3 ET, 4 RC); written files use each case's "
                  "own convention (glioma ET 4 in BraTS 2018-2021 naming)",
        "checkpoint": {k: state[k] for k in KEPT_ENTRIES if k in state},
    }


def onnx_bytes(network: nn.Module, regions: int, window: tuple[int, int, int], batch: int,
               meta: dict[str, Any]) -> bytes:
    """The network as an ONNX model of fixed shape (`batch` windows of `window`; the engines split
    or pad other batches) with `meta` in its metadata. Fixed shapes export in a quarter of the time
    of dynamic ones and run as fast."""
    import onnx

    module = RegionProbabilities(network, regions).eval()
    example = torch.zeros(batch, len(MODALITIES), *window)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for name in ("torch.onnx", "torch.export", "onnxscript"):
            logging.getLogger(name).setLevel(logging.ERROR)
        program = torch.onnx.export(module, (example,), None, input_names=[INPUT], output_names=[OUTPUT], dynamo=True,
                                    opset_version=OPSET, verbose=False)
    model = program.model_proto
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    return model.SerializeToString()


def torchscript_bytes(network: nn.Module, regions: int, window: tuple[int, int, int], meta: dict[str, Any]) -> bytes:
    """The network traced to TorchScript, `meta` as its extra file `brats.json`."""
    module = RegionProbabilities(network, regions).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, torch.zeros(1, len(MODALITIES), *window))
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(meta)})
    return buffer.getvalue()


@dataclass(frozen=True)
class ExportedFile:
    """One member file of an export, read: its kind, its bytes and its metadata."""

    path: Path
    kind: str  # "onnx" | "torchscript"
    payload: bytes
    meta: dict[str, Any]

    def checkpoint(self) -> Checkpoint:
        """The member's checkpoint record (no weights: they are in the graph)."""
        return Checkpoint.from_state({**self.meta["checkpoint"], "model": {}}, str(self.path))


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return (path.is_dir() and (path / MANIFEST).is_file()) or path.suffix in (".onnx", ".ts")


def exported_paths(path: str | Path, engine: str) -> list[Path]:
    """The member files an export path names: a folder's members (ONNX, or TorchScript for the
    torch engine), or the one file given."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    try:
        listing = json.loads((path / MANIFEST).read_text())
        members = listing["members"]
        key = "torchscript" if engine == "torch" else "onnx"
        names = [m[key] for m in members]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{path / MANIFEST}: damaged export manifest ({type(error).__name__})") from None
    if listing.get("format") != FORMAT or listing.get("version") != VERSION:
        raise ExportError(f"{path / MANIFEST}: not a brats export of format version {VERSION}")
    if any(n is None for n in names):
        raise ExportError(f"{path}: holds no TorchScript members for --engine torch (export with --torchscript), "
                          "or predict with --engine onnxruntime")
    return [path / n for n in names]


def read_exported(path: Path) -> ExportedFile:
    """An exported member file with its metadata checked; ExportError, one line, otherwise."""
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise ExportError(f"{path}: cannot be read ({error.strerror or error})") from None
    kind = "torchscript" if path.suffix == ".ts" else "onnx"
    try:
        raw = _onnx_metadata(payload) if kind == "onnx" else _torchscript_metadata(payload)
        meta = json.loads(raw)
    except ImportError as error:
        raise ConfigError(f"reading ONNX models needs the onnx extra: pip install 'gliostream[onnx]' ({error.name} "
                          "missing)") from None
    except Exception as error:  # noqa: BLE001 - a damaged file fails in many ways
        raise ExportError(f"{path}: damaged or not a brats export ({shortened(str(error)) or type(error).__name__})"
                          ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{path}: not a brats export (no brats metadata)")
    if meta.get("version") != VERSION:
        raise ExportError(f"{path}: export format version {meta.get('version')}, this brats reads {VERSION}")
    return ExportedFile(path, kind, payload, meta)


def _onnx_metadata(payload: bytes) -> str:
    import onnx

    model = onnx.load_model_from_string(payload)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError("no brats metadata")
    return props[METADATA_KEY]


def _torchscript_metadata(payload: bytes) -> str:
    extra = {TORCHSCRIPT_EXTRA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.load(io.BytesIO(payload), map_location="cpu", _extra_files=extra)
    if not extra[TORCHSCRIPT_EXTRA]:
        raise ValueError("no brats metadata")
    return extra[TORCHSCRIPT_EXTRA]
