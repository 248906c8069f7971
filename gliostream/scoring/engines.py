"""Inference engines: what runs a member's network on the windows (PyTorch, ONNX Runtime, OpenVINO).

`auto` picks by measurement (docs/benchmarks.md, "Deploying"): on the CPU ONNX Runtime when the
`onnx` extra is installed (about 3x PyTorch eager on the CPU preset's network, same labels), else
PyTorch; on a GPU PyTorch. ONNX Runtime and OpenVINO run on the CPU; a checkpoint given to them
is exported to ONNX in memory when the models are loaded (seconds, once per run or Dask worker).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from ..errors import ConfigError
from ..inference import ProbabilityModel
from .exported import INPUT
from .settings import ENGINES

log = logging.getLogger(__name__)

# The engine -> the modules it needs, and the extra that installs them.
NEEDS = {"onnxruntime": (("onnx", "onnxscript", "onnxruntime"), "onnx"), "openvino": (("onnx", "onnxscript", "openvino"),
                                                                                      "openvino")}


def engine_available(engine: str) -> bool:
    modules, _ = NEEDS.get(engine, ((), ""))
    return all(importlib.util.find_spec(m) is not None for m in modules)


def resolve_engine(engine: str, device: torch.device, kind: str = "checkpoint") -> str:
    """The engine that runs a model of `kind` (checkpoint, onnx, torchscript) on `device`:
    `auto` as the module docstring says; an engine that cannot run it is refused in one line."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        if kind == "torchscript" or (kind == "checkpoint" and device.type != "cpu"):
            return "torch"
        choice = next((e for e in ("onnxruntime", "openvino") if engine_available(e)), None)
        if choice is None:
            if kind == "onnx":
                raise ConfigError("predicting with an ONNX model needs ONNX Runtime or OpenVINO: "
                                  "pip install 'gliostream[onnx]'")
            return "torch"
        engine = choice
    if engine == "torch":
        if kind == "onnx":
            raise ConfigError("an ONNX model runs with --engine onnxruntime or openvino; for --engine torch give the "
                              "checkpoint, or the TorchScript members of an export made with --torchscript")
        return engine
    if kind == "torchscript":
        raise ConfigError(f"a TorchScript model runs with --engine torch, not {engine}; give the .onnx members")
    if device.type != "cpu":
        raise ConfigError(f"--engine {engine} runs on the CPU; on {device} use --engine torch")
    if not engine_available(engine):
        modules, extra = NEEDS[engine]
        raise ConfigError(f"--engine {engine} needs {', '.join(modules)}: pip install 'gliostream[{extra}]'")
    return engine


def configure_threads(threads: int | None) -> None:
    """PyTorch's intra-op threads (the other engines take theirs per session); None keeps its default."""
    if threads:
        torch.set_num_threads(threads)


def onnxruntime_session(payload: bytes, threads: int | None) -> Any:
    """An ONNX Runtime CPU session of an ONNX model, with all graph optimisations."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: one per core
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Threads sleep between runs instead of spinning: the window accumulation and decoding run in
    # between on the same cores (measured 4.5 against 4.7 s per case).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


class FixedShapeNetwork(ProbabilityModel):
    """An ONNX model of fixed shape (B windows of one size): a batch of another size runs in chunks
    of B, the last padded with empty windows; a window of another size is refused."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)

    def run(self, windows: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if tuple(batch.shape[1:]) != self.shape[1:]:
            raise ConfigError(f"this exported model takes windows of {self.shape[2:]} voxels, not "
                              f"{tuple(batch.shape[2:])}: predict without --window, or export the checkpoint again")
        size = self.shape[0]
        windows = batch.detach().float().cpu()
        parts = []
        for start in range(0, len(windows), size):
            chunk = windows[start:start + size]
            count = len(chunk)
            if count < size:
                chunk = torch.cat([chunk, chunk.new_zeros((size - count, *chunk.shape[1:]))])
            parts.append(torch.from_numpy(self.run(chunk.contiguous().numpy()))[:count])
        return torch.cat(parts).to(batch.device)


class OnnxRuntimeNetwork(FixedShapeNetwork):
    """An ONNX model run by ONNX Runtime on the CPU."""

    def __init__(self, payload: bytes, threads: int | None = None) -> None:
        self.session = onnxruntime_session(payload, threads)
        super().__init__(tuple(self.session.get_inputs()[0].shape))

    def run(self, windows: Any) -> Any:
        return self.session.run(None, {INPUT: windows})[0]


class OpenVinoNetwork(FixedShapeNetwork):
    """An ONNX model compiled by OpenVINO for the CPU, in fp32."""

    def __init__(self, payload: bytes, threads: int | None = None) -> None:
        import openvino

        core = openvino.Core()
        model = core.read_model(model=payload, weights=b"")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, "CPU", config)
        super().__init__(tuple(model.inputs[0].get_shape()))

    def run(self, windows: Any) -> Any:
        return self.compiled(windows)[0]


def onnx_network(engine: str, payload: bytes, threads: int | None) -> ProbabilityModel:
    """An ONNX model ready to run on the windows with `engine` (onnxruntime or openvino)."""
    if engine == "onnxruntime":
        return OnnxRuntimeNetwork(payload, threads)
    return OpenVinoNetwork(payload, threads)
