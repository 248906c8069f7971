"""The scoring run: which cases, which predictions, which metrics, where the results go."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import __version__
from ..devices import configure_kernels, resolve_device
from ..errors import BratsError, ConfigError, InvalidCaseError, StoreError
from ..faults import fault_point
from ..files import check_not_inside, check_output, replaced_together
from ..geometry import crop_slices, uncrop
from ..inference_config import InferenceConfig
from ..labels import REGIONS
from ..lesionwise import CHALLENGES, lesionwise_metrics
from ..metrics import region_metrics
from ..store.stale import warn_stale
from .cases import ScoreCase, raw_case_list, raw_cases, select_store_cases, store_cases
from .exports import read_prediction, save_prediction
from .figures import case_figure, plot_scores
from .models import Member, inference_config, load_members, out_of_fold_owners, predict_case
from .report import case_rows, score_table, worst_cases, write_table

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
    overlap: float = InferenceConfig.overlap
    tta: bool = False
    device: str = "auto"
    save_predictions: str | None = None
    window: tuple[int, int, int] | None = None  # default: the checkpoint's training patch size
    batch_windows: int = 2
    postprocess: bool = True  # the checkpoints' postprocessing: small components removed, small ET relabelled
    challenge: str = "GLI"  # the lesion-wise rules: GLI, SSA, PED (dilation 3), MEN, MET (dilation 1)
    figures: str | None = None  # a folder for one PNG per scored case

    def __post_init__(self) -> None:
        if isinstance(self.ckpt, (str, Path)):  # one checkpoint given as a path
            object.__setattr__(self, "ckpt", (str(self.ckpt),))
        if self.challenge not in CHALLENGES:
            raise ConfigError(f"unknown challenge {self.challenge!r}; choose one of {', '.join(CHALLENGES)}")


@dataclass(frozen=True)
class WorstCase:
    case_id: str
    mean_dice: float
    dice: tuple[float, float, float]  # WT, TC, ET
    figure: Path | None

    def line(self) -> str:
        regions = " ".join(f"{r.upper()} {d:.3f}" for r, d in zip(REGIONS, self.dice))
        figure = f"  {self.figure}" if self.figure else ""
        return f"  {self.case_id}  mean Dice {self.mean_dice:.3f} ({regions}){figure}"


@dataclass
class ScoreResult:
    table: pd.DataFrame
    csv: Path | None  # None when no case had a reference to score against
    plot: Path | None
    scored: int
    predicted_only: list[str] = field(default_factory=list)
    exported: int = 0
    predicted: bool = True  # False when existing segmentations (--pred) were scored
    worst: list[WorstCase] = field(default_factory=list)
    figures: int = 0
    challenge: str = "GLI"
    skipped: list[str] = field(default_factory=list)  # "<file>: <problem>" of each unusable case

    def line(self) -> str:
        unscored = ""
        if self.predicted_only:
            verb = "predicted, not scored" if self.predicted else "not scored"
            unscored = f"; {len(self.predicted_only)} case(s) without a reference seg {verb}"
        saved = f"; {self.exported} prediction(s) saved" if self.exported else ""
        if self.skipped:
            saved += f"; {len(self.skipped)} unusable case(s) skipped"
        if self.csv is None:
            return f"scored no case: none has a reference seg{unscored}{saved}; no score table written"
        plot = f" and {self.plot}" if self.plot else ""
        figures = f"; {self.figures} case figure(s)" if self.figures else ""
        return f"scored {self.scored} case(s){unscored}{saved}{figures}; wrote {self.csv}{plot}"

    @property
    def exit_code(self) -> int:
        """0 when every case was scored (or predicted); 1 when some were skipped as unusable."""
        return 1 if self.skipped else 0

    def worst_text(self) -> str:
        if not self.worst:
            return ""
        return "worst cases by mean Dice:\n" + "\n".join(w.line() for w in self.worst)


def _prediction_ids(folder: str) -> list[str]:
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{folder}: no such folder of predictions")
    ids = sorted(f.name.removesuffix(".nii.gz") for f in path.glob("*.nii.gz") if not f.name.startswith("."))
    if not ids:
        raise ConfigError(f"{folder}: holds no <case_id>.nii.gz prediction")
    return ids


def write_provenance(path: Path, config: ScoreConfig, members: list[Member], skipped: list[str]) -> None:
    """Beside the CSV: what produced it (checkpoints and their SHA-256, options, version, date) and
    the cases skipped as unusable."""
    record = {"brats_version": __version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "checkpoints": [m.provenance() for m in members], "options": asdict(config), "skipped": skipped}
    path.write_text(json.dumps(record, indent=2) + "\n")


def _cases(config: ScoreConfig, state: dict[str, Any] | None, with_image: bool, skipped: list[str],
           validation: list[str] | None = None) -> tuple[list[str], Iterator[ScoreCase | BratsError]]:
    """The cases to score: with --pred, those that have a prediction file (each needs a reference).
    Raw cases that cannot be used are added to `skipped` (or yielded as their error), and the others
    go on; a damaged store case ends the run."""
    wanted = _prediction_ids(config.pred) if config.pred else None
    if config.raw:
        if config.cases == "oof":
            raise ConfigError("--cases oof scores the folds' own validation cases from the store, not --raw")
        cases, refused = raw_case_list(config.raw)
        skipped += [str(error) for _, error in refused]
        if wanted is not None:
            by_id = {c.case_id: c for c in cases}
            unusable = {case_id for case_id, _ in refused}
            missing = [i for i in wanted if i not in by_id and i not in unusable]
            if missing:
                raise ConfigError(f"{config.raw}: no raw case for the predictions {', '.join(missing[:5])}")
            cases = [by_id[i] for i in wanted if i in by_id]
        loaded = raw_cases(cases, keep_errors=True)
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
    warn_stale(store, ids)
    return ids, store_cases(store, ids, with_image=with_image)


def _reference_only(case: ScoreCase | BratsError) -> ScoreCase | BratsError:
    if isinstance(case, ScoreCase):
        case.image = None
    return case


def _score_case(case: ScoreCase, prediction: np.ndarray, reference: np.ndarray, cropped: bool,
                config: ScoreConfig) -> dict[str, Any]:
    """Legacy and lesion-wise metrics of one case. Lesion-wise ones see the whole raw grid, so
    that the reference's dilation is never cut by the crop."""
    total = int(np.prod(case.original_shape)) if cropped else None
    row = {"case_id": case.case_id, **region_metrics(prediction, reference, case.spacing, total)}
    if cropped:
        prediction = uncrop(prediction, case.crop_box, case.original_shape)
        reference = uncrop(reference, case.crop_box, case.original_shape)
    row.update(lesionwise_metrics(prediction, reference, case.spacing, CHALLENGES[config.challenge]))
    return row


def _worst(table: pd.DataFrame, figures: dict[str, Path]) -> list[WorstCase]:
    return [WorstCase(row.case_id, float(row.mean_dice), tuple(float(getattr(row, f"dice_{r}")) for r in REGIONS),
                      figures.get(row.case_id)) for row in worst_cases(table).itertuples()]


def run_scoring(config: ScoreConfig, progress: bool = True) -> ScoreResult:
    """Predict (or read `--pred` files), score against the references, write the CSV and plot."""
    if not config.ckpt and config.pred is None:
        raise ConfigError("give --ckpt to predict with a model, or --pred DIR to score existing segmentations")
    if config.ckpt and config.pred:
        raise ConfigError("give either --ckpt or --pred, not both")
    check_output(config.out, "--out", folder=False)  # before hours of prediction, not after
    out = Path(config.out)
    for folder, option in ((config.save_predictions, "--save-predictions"), (config.figures, "--figures")):
        if folder:
            check_output(folder, option)
            if config.raw:
                check_not_inside(folder, config.raw, option, "--raw")
    device = resolve_device(config.device)
    configure_kernels(device)
    members = load_members(tuple(config.ckpt), device)
    state = members[0].state if members else None
    owners = out_of_fold_owners(members) if config.cases == "oof" else None
    inference = None
    if members:
        inference = inference_config(members, config.window, config.overlap, config.tta, config.batch_windows)
    with_image = bool(members) or bool(config.figures)
    skipped: list[str] = []
    ids, cases = _cases(config, state, with_image, skipped, validation=sorted(owners) if owners else None)
    rows, predicted_only, exported, figures = [], [], 0, {}
    for case in tqdm(cases, total=len(ids), desc="score", unit="case", disable=not progress):
        if isinstance(case, BratsError):  # a raw case that cannot be used: the others go on
            skipped.append(str(case))
            log.info("skipped %s", case)
            continue
        if inference is not None:
            assert case.image is not None
            chosen = [owners[case.case_id]] if owners else members
            prediction = predict_case(chosen, case.image, inference, device, config.postprocess)
            if config.save_predictions:
                save_prediction(Path(config.save_predictions), case, prediction)
                exported += 1
            reference, cropped = case.reference, True
        else:
            try:
                prediction = read_prediction(Path(config.pred), case)  # type: ignore[arg-type]
            except InvalidCaseError as error:
                skipped.append(str(error))
                continue
            reference, cropped = case.reference_original(), False
        if reference is None:
            predicted_only.append(case.case_id)
            continue
        rows.append(_score_case(case, prediction, reference, cropped, config))
        if config.figures:
            assert case.image is not None
            figures[case.case_id] = case_figure(
                Path(config.figures) / f"{case.case_id}.png", case.case_id, case.image.numpy(),
                reference if cropped else reference[crop_slices(case.crop_box)],
                prediction if cropped else prediction[crop_slices(case.crop_box)],
                case.affine, case.spacing, rows[-1])
        fault_point("score:case")
    table = score_table(rows)
    if not rows:  # predictions only: an empty table would read as a result
        return ScoreResult(table, None, None, 0, predicted_only, exported, inference is not None, skipped=skipped)
    plot = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    with replaced_together([out, out.with_suffix(".json"), plot]) as (csv_tmp, json_tmp, plot_tmp):
        write_table(table, csv_tmp)
        write_provenance(json_tmp, config, members, skipped)
        plot_scores(case_rows(table), plot_tmp, config.challenge)
        fault_point("score:outputs-written")
    return ScoreResult(table, out, plot, len(rows), predicted_only, exported, inference is not None,
                       _worst(table, figures), len(figures), config.challenge, skipped)
