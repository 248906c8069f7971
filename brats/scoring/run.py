"""The scoring run: which cases, which predictions, which metrics, where the results go."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..errors import CheckpointError, ConfigError, StoreError
from ..faults import fault_point
from ..inference import InferenceConfig, predict_labels
from ..metrics import region_metrics
from ..trainer.checkpoint import load_checkpoint
from ..trainer.distributed import resolve_device
from ..trainer.model import ModelConfig, ResUNet
from .cases import ScoreCase, raw_case_list, raw_cases, select_store_cases, store_cases
from .exports import read_prediction, save_prediction
from .report import plot_dice, score_table, write_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreConfig:
    """What `brats score` scores and how (saved as the report's provenance)."""

    ckpt: str | None = None
    store: str | None = None  # default: the store recorded in the checkpoint
    cases: str = "val"  # val | all | a file of case ids (store cases only)
    raw: str | None = None
    pred: str | None = None
    out: str = "final_scores.csv"
    overlap: float = 0.5
    tta: bool = False
    device: str = "auto"
    save_predictions: str | None = None
    window: tuple[int, int, int] | None = None  # default: the checkpoint's training patch size
    batch_windows: int = 2


@dataclass
class ScoreResult:
    table: pd.DataFrame
    csv: Path
    plot: Path | None
    scored: int
    predicted_only: list[str] = field(default_factory=list)
    exported: int = 0

    def line(self) -> str:
        extra = f"; {len(self.predicted_only)} case(s) without a seg predicted, not scored" if self.predicted_only else ""
        saved = f"; {self.exported} prediction(s) saved" if self.exported else ""
        plot = f" and {self.plot}" if self.plot else ""
        return f"scored {self.scored} case(s){extra}{saved}; wrote {self.csv}{plot}"


def load_model(state: dict[str, Any], path: str, device: torch.device) -> ResUNet:
    """Rebuild the network from the checkpoint's own config and weights."""
    try:
        model = ResUNet(ModelConfig(**state["model_config"]))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{path}: does not hold a brats model ({str(error).splitlines()[0][:160]})") from None
    return model.to(device).eval()


def _prediction_ids(folder: str) -> list[str]:
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{folder}: no such folder of predictions")
    ids = sorted(f.name.removesuffix(".nii.gz") for f in path.glob("*.nii.gz") if not f.name.startswith("."))
    if not ids:
        raise ConfigError(f"{folder}: holds no <case_id>.nii.gz prediction")
    return ids


def _cases(config: ScoreConfig, state: dict[str, Any] | None, with_image: bool) -> tuple[list[str], Iterator[ScoreCase]]:
    """The cases to score: with --pred, those that have a prediction file (each needs a reference)."""
    wanted = _prediction_ids(config.pred) if config.pred else None
    if config.raw:
        cases = raw_case_list(config.raw)
        if wanted is not None:
            by_id = {c.case_id: c for c in cases}
            missing = [i for i in wanted if i not in by_id]
            if missing:
                raise ConfigError(f"{config.raw}: no raw case for the predictions {', '.join(missing[:5])}")
            cases = [by_id[i] for i in wanted]
        loaded = raw_cases(cases)
        return [c.case_id for c in cases], loaded if with_image else (_reference_only(c) for c in loaded)
    store = config.store or (state or {}).get("store")
    if not store:
        raise ConfigError("which cases? give --store or --raw (a checkpoint names its store)")
    if wanted is not None:
        ids = select_store_cases(store, "all", [])
        missing = [i for i in wanted if i not in set(ids)]
        if missing:
            raise StoreError(f"{store}: no reference case for the predictions {', '.join(missing[:5])}")
        ids = wanted
    else:
        ids = select_store_cases(store, config.cases, list((state or {}).get("split", {}).get("val", [])))
    return ids, store_cases(store, ids, with_image=with_image)


def _reference_only(case: ScoreCase) -> ScoreCase:
    case.image = None
    return case


def run_scoring(config: ScoreConfig, progress: bool = True) -> ScoreResult:
    """Predict (or read `--pred` files), score against the references, write the CSV and plot."""
    if config.ckpt is None and config.pred is None:
        raise ConfigError("give --ckpt to predict with a model, or --pred DIR to score existing segmentations")
    if config.ckpt and config.pred:
        raise ConfigError("give either --ckpt or --pred, not both")
    if not 0.0 <= config.overlap < 1.0:
        raise ConfigError(f"overlap must lie in [0, 1), not {config.overlap}")
    state = load_checkpoint(config.ckpt) if config.ckpt else None
    device = resolve_device(config.device)
    model = load_model(state, str(config.ckpt), device) if state is not None else None
    window = config.window or (tuple(state["config"]["patch_size"]) if state is not None else None)
    inference = InferenceConfig(window=window or (96, 96, 96), overlap=config.overlap, tta=config.tta,
                                batch_windows=config.batch_windows)
    ids, cases = _cases(config, state, with_image=model is not None)
    rows, predicted_only, exported = [], [], 0
    for case in tqdm(cases, total=len(ids), desc="score", unit="case", disable=not progress):
        if model is not None:
            assert case.image is not None
            prediction = predict_labels(model, case.image, inference, device).numpy()
            if config.save_predictions:
                save_prediction(Path(config.save_predictions), case, prediction)
                exported += 1
            reference = case.reference
            total = int(np.prod(case.original_shape))
        else:
            prediction = read_prediction(Path(config.pred), case)  # type: ignore[arg-type]
            reference = case.reference_original()
            total = None
        if reference is None:
            predicted_only.append(case.case_id)
            continue
        rows.append({"case_id": case.case_id, **region_metrics(prediction, reference, case.spacing, total)})
        fault_point("score:case")
    out = Path(config.out)
    table = score_table(rows)
    write_table(table, out)
    plot = None
    if rows:
        plot = out.with_suffix(".png")
        plot_dice(table, plot)
    return ScoreResult(table, out, plot, len(rows), predicted_only, exported)
