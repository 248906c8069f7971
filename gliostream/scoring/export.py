"""`brats export`: checkpoints as an export folder (`exported.py` has the format), each member
checked against PyTorch before anything is written, the files written together."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import ConfigError, OutputError, shortened
from ..files import check_output, replaced_together
from ..inference_config import InferenceConfig
from ..pipeline.naming import MODALITIES
from ..regions import region_probabilities
from .engines import onnxruntime_session
from .exported import FORMAT, INPUT, MANIFEST, VERSION, ExportError, metadata, onnx_bytes, torchscript_bytes
from .models import load_members

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    """What `brats export` writes: the checkpoints (one member each) into the folder `out`."""

    ckpt: tuple[str, ...]
    out: str
    torchscript: bool = False
    overwrite: bool = False
    batch_windows: int = InferenceConfig.batch_windows  # the ONNX graph's fixed batch (engines split or pad others)

    def __post_init__(self) -> None:
        if isinstance(self.ckpt, (str, Path)):
            object.__setattr__(self, "ckpt", (str(self.ckpt),))
        if not self.ckpt:
            raise ConfigError("give at least one checkpoint to export")
        if self.batch_windows < 1:
            raise ConfigError(f"batch-windows must be at least 1, not {self.batch_windows}")


@dataclass(frozen=True)
class ExportedMember:
    source: str
    files: tuple[Path, ...]
    max_abs_difference: float  # of the exported ONNX against PyTorch, on one window of the checkpoint's


@dataclass(frozen=True)
class ExportResult:
    out: Path
    members: tuple[ExportedMember, ...]

    def line(self) -> str:
        worst = max(m.max_abs_difference for m in self.members)
        files = sum(len(m.files) for m in self.members)
        return (f"export: {len(self.members)} member(s), {files} file(s) -> {self.out} (ONNX Runtime against "
                f"PyTorch on a test window: max abs difference {worst:.1e})")


def member_files(index: int, torchscript: bool) -> tuple[str, ...]:
    return (f"member-{index}.onnx",) + ((f"member-{index}.ts",) if torchscript else ())


def check_against_torch(model: bytes, network: nn.Module, regions: int, window: tuple[int, int, int],
                        batch: int) -> float:
    """The largest difference between the ONNX model (ONNX Runtime) and PyTorch on one random
    window: an export that does not compute what the checkpoint computes is never written."""
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(batch, len(MODALITIES), *window, generator=generator)
    with torch.no_grad():
        expected = region_probabilities(network(example), regions)
    got = onnxruntime_session(model, threads=None).run(None, {INPUT: example.numpy()})[0]
    return float((torch.from_numpy(got) - expected).abs().max())


EXPORT_TOLERANCE = 1e-4  # probabilities; fp32 kernels of two libraries agree to about 1e-6


def run_export(config: ExportConfig, progress: bool = True) -> ExportResult:
    """Export every checkpoint as one member of `out`, checked against PyTorch; files written together."""
    out = check_output(config.out, "OUT")
    manifest = out / MANIFEST
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        what = "an exported model" if manifest.exists() else "other files"
        raise OutputError(str(out), f"holds {what}; give --overwrite to replace it, or another OUT")
    members = load_members(tuple(config.ckpt), torch.device("cpu"), engine="torch")
    payloads: list[bytes] = []
    exported = []
    for index, member in enumerate(members):
        inference = member.checkpoint.inference(batch_windows=config.batch_windows)
        meta = metadata(member.checkpoint, member.sha256, inference)
        regions = len(member.regions)
        assert isinstance(member.network, nn.Module)
        try:
            model = onnx_bytes(member.network, regions, inference.window, config.batch_windows, meta)
        except ImportError as error:
            raise ConfigError(f"exporting to ONNX needs the onnx extra: pip install 'gliostream[onnx]' ({error.name} "
                              "missing)") from None
        except Exception as error:  # noqa: BLE001 - the exporter fails in many ways; one line names it
            raise ExportError(f"{member.path}: cannot be exported to ONNX ({shortened(str(error))})") from None
        difference = check_against_torch(model, member.network, regions, inference.window, config.batch_windows)
        if not difference <= EXPORT_TOLERANCE:
            raise ExportError(f"{member.path}: the ONNX export differs from PyTorch by {difference:.1e} on a test "
                              f"window (more than {EXPORT_TOLERANCE:g}); nothing was written")
        payloads.append(model)
        if config.torchscript:
            payloads.append(torchscript_bytes(member.network, regions, inference.window, meta))
        names = member_files(index, config.torchscript)
        exported.append(ExportedMember(member.path, tuple(out / n for n in names), difference))
        log.info("%s: exported (max abs difference %.1e)", member.path, difference)
    listing = {"format": FORMAT, "version": VERSION, "brats_version": __version__,
               "members": [{"onnx": f"member-{i}.onnx", "torchscript": f"member-{i}.ts" if config.torchscript else None,
                            "source": Path(m.path).name, "sha256": m.sha256,
                            "max_abs_difference": e.max_abs_difference}
                           for i, (m, e) in enumerate(zip(members, exported, strict=True))]}
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("member-*.*"):  # an --overwrite of a larger ensemble
        if stale not in {f for e in exported for f in e.files}:
            stale.unlink()
    paths = [f for e in exported for f in e.files] + [manifest]
    with replaced_together(paths) as temporary:
        for tmp, payload in zip(temporary[:-1], payloads, strict=True):
            tmp.write_bytes(payload)
        temporary[-1].write_text(json.dumps(listing, indent=1) + "\n")
    return ExportResult(out, tuple(exported))
