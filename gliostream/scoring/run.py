"""The scoring run: which cases, which predictions, which metrics, where the results go."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import __version__
from ..devices import configure_kernels, resolve_device
from ..errors import BratsError, ConfigError, InvalidCaseError, OptionConflict, StoreError
from ..faults import fault_point
from ..files import check_not_inside, check_output, replaced_together
from ..geometry import crop_slices, uncrop
from ..lesionwise import CHALLENGES, lesionwise_metrics
from ..metrics import region_metrics
from ..official import official_metrics
from ..pipeline.cluster import dask_client
from ..pipeline.discovery import RawCase
from ..store.reader import store_task
from ..store.stale import warn_stale
from ..tasks import TASKS, Task
from ..tasks import task as task_named
from ..trainer.checkpoint import Checkpoint
from .cases import ScoreCase, raw_case_list, raw_cases, select_store_cases, store_cases
from .cluster import ClusterReport, ModelSpec, failure_text, model_spec, run_on_cluster, worker_members
from .exports import read_prediction, save_prediction
from .figures import case_figure, plot_scores
from .models import Member, inference_config, load_members, out_of_fold_owners, predict_case
from .report import case_rows, score_table, table_columns, table_regions, worst_cases, write_table
from .settings import ScoreConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorstCase:
    case_id: str
    mean_dice: float
    dice: tuple[float, ...]  # per region scored
    figure: Path | None
    regions: tuple[str, ...] = ("wt", "tc", "et")

    def line(self) -> str:
        regions = " ".join(f"{r.upper()} {d:.3f}" for r, d in zip(self.regions, self.dice, strict=True))
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
    evaluation: str = "gli"  # the official evaluation's config (the task's)
    retried: list[str] = field(default_factory=list)  # a Dask run's cases run again after a worker was lost

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
        if self.retried:
            figures += f"; {len(self.retried)} case(s) retried after a Dask worker was lost"
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


@dataclass(frozen=True)
class CaseSource:
    """The cases to score, as ids with where to read them: raw case folders, or a store."""

    ids: list[str]
    raw: list[RawCase] | None  # raw cases (in `ids` order), else the cases are `store`'s
    store: str | None
    task: Task

    def load(self, with_image: bool) -> Iterator[ScoreCase | BratsError]:
        """Every case in order, read one ahead (a raw case that cannot be used as its error)."""
        if self.raw is not None:
            loaded = raw_cases(self.raw, keep_errors=True, task=self.task)
            return loaded if with_image else (_reference_only(c) for c in loaded)
        assert self.store is not None
        return store_cases(self.store, self.ids, with_image=with_image)

    def load_one(self, index: int, with_image: bool) -> ScoreCase | BratsError:
        """One case (a Dask task's): a raw case that cannot be used as its error; a damaged store case raises."""
        if self.raw is not None:
            case = next(raw_cases([self.raw[index]], keep_errors=True, task=self.task))
            return case if with_image else _reference_only(case)
        assert self.store is not None
        return next(store_cases(self.store, [self.ids[index]], with_image=with_image))


def _cases(config: ScoreConfig, checkpoint: Checkpoint | None, skipped: list[str],
           validation: list[str] | None = None, task: Task = TASKS["GLI"]) -> CaseSource:
    """The cases to score: with --pred, those that have a prediction file (each needs a reference).
    Raw cases that cannot be used are added to `skipped` (or read as their error), and the others
    go on; a damaged store case ends the run."""
    wanted = _prediction_ids(config.pred) if config.pred else None
    if config.raw:
        cases, refused = raw_case_list(config.raw)
        skipped += [str(error) for _, error in refused]
        if wanted is not None:
            by_id = {c.case_id: c for c in cases}
            unusable = {case_id for case_id, _ in refused}
            missing = [i for i in wanted if i not in by_id and i not in unusable]
            if missing:
                raise ConfigError(f"{config.raw}: no raw case for the predictions {', '.join(missing[:5])}")
            cases = [by_id[i] for i in wanted if i in by_id]
        return CaseSource([c.case_id for c in cases], cases, None, task)
    store = config.store or (checkpoint.store if checkpoint else None)
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
            validation = list(checkpoint.split.val) if checkpoint else []
        ids = select_store_cases(store, which, validation)
    warn_stale(store, ids)  # once, here, wherever the cases are then read
    return CaseSource(ids, None, store, task)


def _reference_only(case: ScoreCase | BratsError) -> ScoreCase | BratsError:
    if isinstance(case, ScoreCase):
        case.image = None
    return case


def _score_case(case: ScoreCase, prediction: np.ndarray, reference: np.ndarray, cropped: bool,
                config: ScoreConfig, task: Task) -> dict[str, Any]:
    """The metric families of `config.metrics` for one case. Lesion-wise and official ones see the
    whole raw grid, so that neither the reference's dilation nor a border is cut by the crop."""
    total = int(np.prod(case.original_shape)) if cropped else None
    regions = task.scored_regions
    row = {"case_id": case.case_id, **region_metrics(prediction, reference, case.spacing, total, regions)}
    assert config.metrics is not None
    if cropped and len(config.metrics) > 1:
        prediction = uncrop(prediction, case.crop_box, case.original_shape)
        reference = uncrop(reference, case.crop_box, case.original_shape)
    if "lesionwise-2023" in config.metrics:
        rules = CHALLENGES[config.challenge] if config.challenge else task.lesion_rules
        row.update(lesionwise_metrics(prediction, reference, case.spacing, rules, regions))
    if "official" in config.metrics:
        row.update(official_metrics(prediction, reference, case.spacing, task.evaluation))
    return row


def score_task(config: ScoreConfig, members: list[Member]) -> Task:
    """The cases' task: the checkpoints' (a --task that differs is refused), else --task, else the
    store's, else GLI."""
    if members:
        predicted = members[0].task
        if config.task and config.task != predicted.name:
            raise OptionConflict(f"--task {config.task}: the checkpoint predicts the {predicted.name} task")
        return predicted
    if config.task:
        return task_named(config.task)
    return task_named(store_task(config.store) if config.store else "GLI")


def _worst(table: pd.DataFrame, figures: dict[str, Path]) -> list[WorstCase]:
    regions = tuple(table_regions(table))
    return [WorstCase(row.case_id, float(row.mean_dice), tuple(float(getattr(row, f"dice_{r}")) for r in regions),
                      figures.get(row.case_id), regions) for row in worst_cases(table).itertuples()]


# A source of predictions: a case -> (prediction, its reference, both in the cropped frame?), or
# the InvalidCaseError of an unusable prediction file.
Predictions = Callable[[ScoreCase], tuple[np.ndarray, np.ndarray | None, bool]]


def model_predictions(members: list[Member], config: ScoreConfig, device: torch.device,
                      owners: dict[str, Member] | None = None) -> Predictions:
    """Predict each case with the checkpoints (or, given `owners`, case id -> the fold model that
    held it out, with that fold), saving each segmentation when asked: the "predict" half of
    `brats score --ckpt`."""
    inference = inference_config(members, config.window, config.overlap, config.tta, config.batch_windows)

    def predict(case: ScoreCase) -> tuple[np.ndarray, np.ndarray | None, bool]:
        assert case.image is not None
        chosen = [owners[case.case_id]] if owners else members
        prediction = predict_case(chosen, case.image, inference, device, config.postprocess)
        if config.save_predictions:
            save_prediction(Path(config.save_predictions), case, prediction)
        return prediction, case.reference, True

    return predict


def file_predictions(folder: str) -> Predictions:
    """Read each case's `<case_id>.nii.gz` from `folder`: `brats score --pred`, no model."""
    def read(case: ScoreCase) -> tuple[np.ndarray, np.ndarray | None, bool]:
        return read_prediction(Path(folder), case), case.reference_original(), False

    return read


# What scoring one case gave: ("row", its metrics, its figure or None), ("predicted_only", case id,
# None) for a case without a reference, or ("skipped", why, None) for an unusable case or prediction.
Outcome = tuple[str, Any, Path | None]


def evaluate_case(case: ScoreCase | BratsError, source: Predictions, config: ScoreConfig, task: Task) -> Outcome:
    """One case predicted (or read) and scored, its figure drawn when asked."""
    if isinstance(case, BratsError):  # a raw case that cannot be used: the others go on
        return "skipped", str(case), None
    try:
        prediction, reference, cropped = source(case)
    except InvalidCaseError as error:  # an unusable prediction file: the others go on
        return "skipped", str(error), None
    if reference is None:
        return "predicted_only", case.case_id, None
    if case.task != task.name:
        raise StoreError(f"{case.case_id}: holds {case.task} labels, but the {task.name} task is scored "
                         "(the checkpoint's, or --task)")
    row = _score_case(case, prediction, reference, cropped, config, task)
    figure = None
    if config.figures:
        assert case.image is not None
        figure = case_figure(Path(config.figures) / f"{case.case_id}.png", case.case_id, case.image.numpy(),
                             reference if cropped else reference[crop_slices(case.crop_box)],
                             prediction if cropped else prediction[crop_slices(case.crop_box)],
                             case.affine, case.spacing, row, task.scored_regions)
    fault_point("score:case")
    return "row", row, figure


def _model_source(members: list[Member], config: ScoreConfig, device: torch.device) -> Predictions:
    owners = out_of_fold_owners(members) if config.cases == "oof" else None
    return model_predictions(members, config, device, owners)


def score_on_worker(index: int, spec: ModelSpec, config: ScoreConfig, cases: CaseSource) -> Outcome:
    """A Dask task: one case read, predicted by the worker's models (loaded once) and scored."""
    members, device = worker_members(spec)
    return evaluate_case(cases.load_one(index, with_image=True), _model_source(members, config, device), config,
                         cases.task)


def _evaluated_on_cluster(config: ScoreConfig, cases: CaseSource, report: ClusterReport) -> Iterator[Outcome]:
    spec = model_spec(config)
    with dask_client(config.scheduler, config.workers) as client:
        for index, result in run_on_cluster(client, score_on_worker, list(range(len(cases.ids))),
                                            lambda i: cases.ids[i], (spec, config, cases),
                                            spec.device.startswith("cuda"), report):
            if isinstance(result, BratsError):  # a damaged store case ends the run, as in this process
                raise result
            yield ("skipped", f"{cases.ids[index]}: {failure_text(result)}", None) if isinstance(result, BaseException) \
                else result


def run_scoring(config: ScoreConfig, progress: bool = True) -> ScoreResult:
    """Predict with the checkpoints (or read the `pred` files), evaluate against the references,
    write the CSV, its provenance and the plot together; the cases are predicted in this process
    or spread over a Dask cluster (`workers`, `scheduler`)."""
    check_output(config.out, "--out", folder=False)  # before hours of prediction, not after
    out = Path(config.out)
    for folder, option in ((config.save_predictions, "--save-predictions"), (config.figures, "--figures")):
        if folder:
            check_output(folder, option)
            if config.raw:
                check_not_inside(folder, config.raw, option, "--raw")
    members: list[Member] = []
    distributed = bool(config.workers or config.scheduler)
    validation = None
    if config.ckpt:
        device = resolve_device("cpu" if distributed and config.device == "auto" else config.device)
        configure_kernels(device)
        members = load_members(tuple(config.ckpt), device, config.engine, config.threads, networks=not distributed,
                             window=config.window, batch_windows=config.batch_windows)
        owners = out_of_fold_owners(members) if config.cases == "oof" else None
        source = None if distributed else model_predictions(members, config, device, owners)
        validation = sorted(owners) if owners else None
    else:
        source = file_predictions(config.pred)  # type: ignore[arg-type]
    skipped: list[str] = []
    task = score_task(config, members)
    cases = _cases(config, members[0].checkpoint if members else None, skipped, validation=validation, task=task)
    report = ClusterReport() if distributed else None
    if report is not None:
        outcomes = _evaluated_on_cluster(config, cases, report)
    else:
        assert source is not None
        outcomes = (evaluate_case(c, source, config, task) for c in cases.load(bool(members) or bool(config.figures)))
    rows, predicted_only, figures = [], [], {}
    for kind, value, figure in tqdm(outcomes, total=len(cases.ids), desc="score", unit="case", disable=not progress):
        if kind == "skipped":
            skipped.append(value)
            log.info("skipped %s", value)
        elif kind == "predicted_only":
            predicted_only.append(value)
        else:
            rows.append(value)
            if figure is not None:
                figures[value["case_id"]] = figure
    exported = len(rows) + len(predicted_only) if config.save_predictions else 0
    table = score_table(rows, table_columns(config.metrics, task))
    rules = config.challenge or task.name
    retried = report.lines() if report else []
    if not rows:  # predictions only: an empty table would read as a result
        return ScoreResult(table, None, None, 0, predicted_only, exported, bool(members), skipped=skipped,
                           retried=retried)
    plot = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    with replaced_together([out, out.with_suffix(".json"), plot]) as (csv_tmp, json_tmp, plot_tmp):
        write_table(table, csv_tmp)
        write_provenance(json_tmp, config, members, skipped)
        plot_scores(case_rows(table), plot_tmp, rules, checkpoint_names(members))
        fault_point("score:outputs-written")
    return ScoreResult(table, out, plot, len(rows), predicted_only, exported, bool(members),
                       _worst(table, figures), len(figures), rules, skipped, task.evaluation, retried)


def checkpoint_names(members: list[Member]) -> str | None:
    """How the score plot names the models: the checkpoints' paths (relative where possible)."""
    if not members:
        return None
    names = []
    for m in members:
        path = Path(m.path)
        try:
            path = path.resolve().relative_to(Path.cwd())
        except ValueError:
            pass
        names.append(str(path))
    return " + ".join(names) if len(names) <= 3 else f"{names[0]} + {len(names) - 1} more"
