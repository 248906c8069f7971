"""gliostream: fast 3D brain-tumour segmentation on BraTS (ingest, train, score, predict, export); its command is `brats`.

The public Python API is what `__all__` names: each stage's entry point, its config and its
result, the store's readers, the training patch stream, checkpoints, and segmenting a volume
held in memory. Names are imported on first use, so `import gliostream` stays light (no torch
until a name that needs it is used). Anything else is internal and may change between versions.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.6.0"

# Public name -> the module that defines it.
_EXPORTS = {
    # generated data
    "SynthConfig": "synth", "synth_dataset": "synth",
    # ingest: raw NIfTI -> the Zarr store
    "IngestConfig": "pipeline.config", "IngestResult": "pipeline.ingest", "run_ingest": "pipeline.ingest",
    # the store
    "read_case": "store.reader", "list_case_ids": "store.reader", "labelled_case_ids": "store.reader",
    "iterate_volumes": "store.volumes",
    # training
    "TrainConfig": "trainer.config", "ModelConfig": "trainer.config", "LossConfig": "trainer.config",
    "StreamConfig": "trainer.config", "AugmentConfig": "trainer.config", "PostprocessConfig": "trainer.config",
    "load_config": "trainer.config", "PatchStream": "trainer.stream", "run_training": "trainer.loop",
    "TrainResult": "trainer.loop", "Checkpoint": "trainer.checkpoint", "read_checkpoint": "trainer.checkpoint",
    "register_network": "trainer.registry", "register_loss": "trainer.registry",
    # scoring and prediction
    "ScoreConfig": "scoring.run", "ScoreResult": "scoring.run", "run_scoring": "scoring.run",
    "PredictConfig": "scoring.predict", "PredictResult": "scoring.predict", "run_prediction": "scoring.predict",
    "InferenceConfig": "inference_config", "Segmenter": "scoring.segment", "load_segmenter": "scoring.segment",
    # deploying: exported models (ONNX, TorchScript)
    "ExportConfig": "scoring.export", "ExportResult": "scoring.export", "run_export": "scoring.export",
    # errors (every one a BratsError with a one-line message)
    "BratsError": "errors", "ConfigError": "errors", "InvalidCaseError": "errors", "StoreError": "errors",
    "CheckpointError": "errors", "OutputError": "errors", "TrainingDiverged": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gliostream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
