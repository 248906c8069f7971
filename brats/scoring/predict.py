"""`brats predict`: segment new patients, one `<case_id>.nii.gz` per case in the BraTS submission layout.

Raw case folders (either naming, seg ignored) are validated and preprocessed as ingest does; a
store's cases are read as stored. Each segmentation is written atomically in the raw geometry and
the case's own label convention. A case whose output is newer than its inputs is skipped, so an
interrupted or scheduled run picks up where it stopped; a case that cannot be read is reported and
the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from ..devices import resolve_device
from ..errors import BratsError, ConfigError
from ..faults import fault_point
from ..files import check_output
from ..inference_config import InferenceConfig
from ..pipeline.discovery import RawCase, discover_cases
from ..store.reader import case_modified
from .cases import ScoreCase, raw_cases, select_store_cases, store_cases
from .exports import save_prediction
from .models import inference_config, load_members, predict_case

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictConfig:
    """What `brats predict` segments, with which models, and where the files go."""

    out: str
    ckpt: tuple[str, ...]
    inputs: str | None = None  # a folder of raw cases; or give `store`
    store: str | None = None
    cases: str = "all"  # store cases: all | val (the checkpoint's validation cases) | a file of case ids
    overlap: float = InferenceConfig.overlap
    tta: bool = False
    device: str = "auto"
    window: tuple[int, int, int] | None = None
    batch_windows: int = 2
    postprocess: bool = True
    overwrite: bool = False  # predict again cases whose output is up to date

    def __post_init__(self) -> None:
        if isinstance(self.ckpt, (str, Path)):
            object.__setattr__(self, "ckpt", (str(self.ckpt),))


@dataclass(frozen=True)
class Refusal:
    case_id: str
    problem: str  # "<file>: <what is wrong>"


@dataclass
class PredictSummary:
    out: Path
    written: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.refused else 0

    def line(self) -> str:
        return (f"predict: {len(self.written)} written, {len(self.up_to_date)} up to date, "
                f"{len(self.refused)} refused in {self.seconds:.1f} s -> {self.out}")


@dataclass(frozen=True)
class _Job:
    """One case to predict: a raw case to read, or a store case id."""

    case_id: str
    raw: RawCase | None = None


def output_path(out: Path, case_id: str) -> Path:
    return out / f"{case_id}.nii.gz"


def _newer_than(path: Path, modified: float) -> bool:
    try:
        return path.stat().st_mtime > modified
    except FileNotFoundError:
        return False


def _raw_jobs(inputs: str, summary: PredictSummary) -> list[_Job]:
    """Every raw case, its seg dropped (never read); unusable ones are refused."""
    jobs = []
    for case in discover_cases(inputs):
        if case.problem:
            summary.refused.append(Refusal(case.case_id, f"{case.problem_file or case.folder}: {case.problem}"))
        else:
            files = {role: path for role, path in case.files.items() if role != "seg"}
            jobs.append(_Job(case.case_id, replace(case, files=files)))
    return jobs


def _inputs_modified(job: _Job, store: str | None) -> float:
    if job.raw is not None:
        return max(path.stat().st_mtime for path in job.raw.files.values())
    return case_modified(store, job.case_id)  # type: ignore[arg-type]


def _loaded(jobs: list[_Job], config: PredictConfig) -> Iterator[tuple[_Job, ScoreCase | BratsError]]:
    """Each job with its case read (the next one read by a thread meanwhile), or why it cannot be."""
    if config.store is not None:
        return zip(jobs, store_cases(config.store, [j.case_id for j in jobs]))
    return zip(jobs, raw_cases([j.raw for j in jobs], keep_errors=True))  # type: ignore[misc]


def run_prediction(config: PredictConfig, progress: bool = True) -> PredictSummary:
    """Predict every case of `inputs` (or of `store`) into `out`; see the module docstring."""
    if (config.inputs is None) == (config.store is None):
        raise ConfigError("give a folder of raw cases or --store, not both and not neither")
    if not config.ckpt:
        raise ConfigError("give --ckpt: the model to predict with")
    out = check_output(config.out, "OUT")
    start = time.perf_counter()
    summary = PredictSummary(out)
    device = resolve_device(config.device)
    members = load_members(tuple(config.ckpt), device)
    inference = inference_config(members, config.window, config.overlap, config.tta, config.batch_windows)
    if config.inputs is not None:
        jobs = _raw_jobs(config.inputs, summary)
    else:
        validation = list(members[0].state.get("split", {}).get("val", []))
        jobs = [_Job(i) for i in select_store_cases(config.store, config.cases, validation)]  # type: ignore[arg-type]
    todo = []
    for job in jobs:
        if not config.overwrite and _newer_than(output_path(out, job.case_id), _inputs_modified(job, config.store)):
            summary.up_to_date.append(job.case_id)
        else:
            todo.append(job)
    for refusal in summary.refused:
        log.info("refused %s", refusal.problem)
    out.mkdir(parents=True, exist_ok=True)
    for job, case in tqdm(_loaded(todo, config), total=len(todo), desc="predict", unit="case", disable=not progress):
        if isinstance(case, BratsError):
            summary.refused.append(Refusal(job.case_id, str(case)))
            log.info("refused %s", case)
            continue
        assert case.image is not None
        labels = predict_case(members, case.image, inference, device, config.postprocess)
        save_prediction(out, case, labels)
        summary.written.append(job.case_id)
        fault_point("predict:case")
    summary.seconds = time.perf_counter() - start
    return summary
