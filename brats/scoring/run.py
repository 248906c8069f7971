"""The scoring run: which cases, which predictions, which metrics, where the results go."""

from __future__ import annotations

import logging
from collections.abc import Iterator
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import __version__
from ..errors import CheckpointError, ConfigError, StoreError, shortened
from ..faults import fault_point
from ..files import check_output, replaced_on_success
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

    ckpt: tuple[str, ...] = ()  # several: an ensemble (mean probabilities), or folds with cases="oof"
    store: str | None = None  # default: the store recorded in the checkpoint
    cases: str = "val"  # val | all | oof (each fold's cases by its own model) | a file of case ids
    raw: str | None = None
    pred: str | None = None
    out: str = "final_scores.csv"
    overlap: float = 0.5
    tta: bool = False
    device: str = "auto"
    save_predictions: str | None = None
    window: tuple[int, int, int] | None = None  # default: the checkpoint's training patch size
    batch_windows: int = 2
    postprocess: bool = True  # relabel small predicted ET as necrosis (the checkpoints' threshold)

    def __post_init__(self) -> None:
        if isinstance(self.ckpt, (str, Path)):  # one checkpoint given as a path
            object.__setattr__(self, "ckpt", (str(self.ckpt),))


@dataclass
class ScoreResult:
    table: pd.DataFrame
    csv: Path | None  # None when no case had a reference to score against
    plot: Path | None
    scored: int
    predicted_only: list[str] = field(default_factory=list)
    exported: int = 0
    predicted: bool = True  # False when existing segmentations (--pred) were scored

    def line(self) -> str:
        unscored = ""
        if self.predicted_only:
            verb = "predicted, not scored" if self.predicted else "not scored"
            unscored = f"; {len(self.predicted_only)} case(s) without a reference seg {verb}"
        saved = f"; {self.exported} prediction(s) saved" if self.exported else ""
        if self.csv is None:
            return f"scored no case: none has a reference seg{unscored}{saved}; no score table written"
        plot = f" and {self.plot}" if self.plot else ""
        return f"scored {self.scored} case(s){unscored}{saved}; wrote {self.csv}{plot}"


@dataclass(frozen=True)
class Member:
    """One checkpoint of the models that predict: network, its run's settings, its split and threshold."""

    path: str
    model: ResUNet
    state: dict[str, Any]

    @property
    def et_min_voxels(self) -> int:
        return int(self.state.get("postprocess", {}).get("et_min_voxels", 0))

    @property
    def inference_key(self) -> tuple[Any, ...]:
        config = self.state["config"]
        return tuple(config["patch_size"]), int(config.get("downsample", 1))


def load_model(state: dict[str, Any], path: str, device: torch.device) -> ResUNet:
    """Rebuild the network from the checkpoint's own config and weights."""
    try:
        model = ResUNet(ModelConfig(**state["model_config"]))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{path}: does not hold a brats model ({shortened(str(error))})") from None
    return model.to(device).eval()


def _prediction_ids(folder: str) -> list[str]:
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{folder}: no such folder of predictions")
    ids = sorted(f.name.removesuffix(".nii.gz") for f in path.glob("*.nii.gz") if not f.name.startswith("."))
    if not ids:
        raise ConfigError(f"{folder}: holds no <case_id>.nii.gz prediction")
    return ids


def write_provenance(path: Path, config: ScoreConfig, members: list[Member]) -> None:
    """Beside the CSV: what produced it (checkpoints and their SHA-256, options, version, date)."""
    checkpoints = []
    for member in members:
        digest = hashlib.sha256()
        with open(member.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        checkpoints.append({"path": str(Path(member.path).resolve()), "sha256": digest.hexdigest(),
                            "store": member.state.get("store"), "epoch": member.state.get("epoch"),
                            "et_min_voxels": member.et_min_voxels})
    record = {"brats_version": __version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "checkpoints": checkpoints, "options": asdict(config)}
    with replaced_on_success(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


# What a checkpoint holds only to resume training (the weights live in the rebuilt model).
TRAINING_STATE = ("model", "optimizer", "scaler", "augmenter", "torch_rng", "history")


def load_members(paths: tuple[str, ...], device: torch.device) -> list[Member]:
    members = []
    for path in paths:
        state = load_checkpoint(path)
        model = load_model(state, str(path), device)
        settings = {k: v for k, v in state.items() if k not in TRAINING_STATE}  # an ensemble keeps no optimizer
        members.append(Member(str(path), model, settings))
    if len({m.inference_key for m in members}) > 1:
        raise ConfigError("the checkpoints were trained with different patch sizes or resolutions; "
                          "an ensemble needs one sliding window")
    return members


def out_of_fold_owners(members: list[Member]) -> dict[str, Member]:
    """Case id -> the fold model that held it out, for out-of-fold scores of a cross-validation."""
    folds = {}
    for m in members:
        config = m.state["config"]
        if not config.get("folds"):
            raise ConfigError(f"{m.path}: not trained with --folds; out-of-fold scores need the fold checkpoints")
        folds[m.path] = (int(config["folds"]), int(config["fold"]), int(config["seed"]), m.state.get("store"))
    if len({(k, seed, store) for k, _, seed, store in folds.values()}) > 1:
        raise ConfigError("the checkpoints are folds of different cross-validations (folds, seed or store differ)")
    count = next(iter(folds.values()))[0]
    have = sorted(f for _, f, _, _ in folds.values())
    if have != list(range(count)):
        missing = sorted(set(range(count)) - set(have))
        raise ConfigError(f"out-of-fold scores need each of the {count} folds once; "
                          + (f"missing fold(s) {', '.join(map(str, missing))}" if missing else "a fold is given twice"))
    return {case_id: m for m in members for case_id in m.state["split"]["val"]}


def _threshold(members: list[Member], postprocess: bool) -> int:
    """The ET postprocessing threshold: the checkpoint's, or the median of an ensemble's members'."""
    return int(np.median([m.et_min_voxels for m in members])) if postprocess and members else 0


def _cases(config: ScoreConfig, state: dict[str, Any] | None, with_image: bool,
           validation: list[str] | None = None) -> tuple[list[str], Iterator[ScoreCase]]:
    """The cases to score: with --pred, those that have a prediction file (each needs a reference)."""
    wanted = _prediction_ids(config.pred) if config.pred else None
    if config.raw:
        if config.cases == "oof":
            raise ConfigError("--cases oof scores the folds' own validation cases from the store, not --raw")
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
        which = "val" if config.cases == "oof" else config.cases
        if validation is None:
            validation = list((state or {}).get("split", {}).get("val", []))
        ids = select_store_cases(store, which, validation)
    return ids, store_cases(store, ids, with_image=with_image)


def _reference_only(case: ScoreCase) -> ScoreCase:
    case.image = None
    return case


def run_scoring(config: ScoreConfig, progress: bool = True) -> ScoreResult:
    """Predict (or read `--pred` files), score against the references, write the CSV and plot."""
    if not config.ckpt and config.pred is None:
        raise ConfigError("give --ckpt to predict with a model, or --pred DIR to score existing segmentations")
    if config.ckpt and config.pred:
        raise ConfigError("give either --ckpt or --pred, not both")
    if not 0.0 <= config.overlap < 1.0:
        raise ConfigError(f"overlap must lie in [0, 1), not {config.overlap}")
    check_output(config.out, "--out", folder=False)  # before hours of prediction, not after
    if config.save_predictions:
        check_output(config.save_predictions, "--save-predictions")
    device = resolve_device(config.device)
    members = load_members(tuple(config.ckpt), device)
    state = members[0].state if members else None
    owners = out_of_fold_owners(members) if config.cases == "oof" else None
    inference = None
    if members:
        patch_size, downsample = members[0].inference_key
        inference = InferenceConfig(window=config.window or patch_size, overlap=config.overlap, tta=config.tta,
                                    batch_windows=config.batch_windows, downsample=downsample)
    ids, cases = _cases(config, state, with_image=bool(members), validation=sorted(owners) if owners else None)
    rows, predicted_only, exported = [], [], 0
    for case in tqdm(cases, total=len(ids), desc="score", unit="case", disable=not progress):
        if inference is not None:
            assert case.image is not None
            chosen = [owners[case.case_id]] if owners else members
            prediction = predict_labels([m.model for m in chosen], case.image, inference, device,
                                        _threshold(chosen, config.postprocess)).numpy()
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
    table = score_table(rows)
    if not rows:  # predictions only: an empty table would read as a result
        return ScoreResult(table, None, None, 0, predicted_only, exported, inference is not None)
    out = Path(config.out)
    write_table(table, out)
    write_provenance(out.with_suffix(".json"), config, members)
    plot = out.with_suffix(".png")
    plot_dice(table, plot)
    return ScoreResult(table, out, plot, len(rows), predicted_only, exported, inference is not None)
