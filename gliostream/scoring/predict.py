"""`brats predict`: segment new patients, one `<case_id>.nii.gz` per case in the BraTS submission layout.

Raw case folders (either naming, seg ignored) are validated and preprocessed as ingest does; a
store's cases are read as stored. Each segmentation is written atomically in the raw geometry and
the case's own label convention. `OUT/predictions.json` records who made the folder's
segmentations (checkpoint hashes, options, brats version) and from which inputs each was made: a
case made by this producer from the same inputs is skipped, so an interrupted or scheduled run
picks up where it stopped; segmentations of another producer are replaced only with --overwrite.
OUT may not lie inside IN (an output must never replace or become an input), and two runs never
write one OUT at once. A case that cannot be read is reported and the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import __version__
from ..devices import configure_kernels, resolve_device
from ..errors import BratsError, ConfigError, StoreError, printable
from ..faults import fault_point
from ..files import check_not_inside, check_output, folder_lock, replaced_on_success
from ..inference_config import InferenceConfig
from ..pipeline.cluster import dask_client
from ..pipeline.discovery import RawCase, discover_cases
from ..store.reader import existing_record
from ..store.stale import warn_stale
from ..tasks import Task
from .cases import ScoreCase, raw_cases, select_store_cases, store_cases
from .cluster import ClusterReport, ModelSpec, failure_text, model_spec, run_on_cluster, worker_members
from .exports import save_prediction
from .models import Member, inference_config, load_members, predict_case
from .settings import PredictConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    case_id: str
    problem: str  # "<file>: <what is wrong>"


@dataclass
class PredictResult:
    out: Path
    written: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    seconds: float = 0.0
    cluster: ClusterReport | None = None  # a Dask run's retried cases

    @property
    def exit_code(self) -> int:
        return 1 if self.refused else 0

    def line(self) -> str:
        retried = f", {len(self.cluster.retried)} retried" if self.cluster and self.cluster.retried else ""
        workers = f" on {self.cluster.workers} Dask worker(s)" if self.cluster else ""
        return (f"predict: {len(self.written)} written, {len(self.up_to_date)} up to date, "
                f"{len(self.refused)} refused{retried} in {self.seconds:.1f} s{workers} -> {self.out}")


@dataclass(frozen=True)
class _Job:
    """One case to predict: a raw case to read, or a store case id."""

    case_id: str
    raw: RawCase | None = None


def output_path(out: Path, case_id: str) -> Path:
    return out / f"{case_id}.nii.gz"


PROVENANCE = "predictions.json"


def _producer(members: list[Member], config: PredictConfig) -> dict[str, Any]:
    """What decides the predicted labels: the checkpoints' contents, the options, the brats version."""
    return {"brats_version": __version__, "checkpoints": [m.provenance() | {"path": None} for m in members],
            "options": {"tta": config.tta, "overlap": config.overlap, "postprocess": config.postprocess,
                        "window": list(config.window) if config.window else None,
                        "engine": sorted({m.engine for m in members})}}


def _inputs_key(job: _Job, store: str | None) -> Any:
    """What the prediction of a case was made from: its files' sizes and times, or its stored record."""
    if job.raw is not None:
        return {role: [(st := path.stat()).st_size, st.st_mtime_ns] for role, path in sorted(job.raw.files.items())}
    record = existing_record(store, job.case_id)  # type: ignore[arg-type]
    return {"fingerprint": record.fingerprint, "ingested_at": record.ingested_at}


def _output_key(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


class Provenance:
    """`OUT/predictions.json`: who made the folder's segmentations, and from what each one was made.

    A segmentation is up to date only if this same producer (checkpoint hashes, options, brats
    version) made it from the same inputs and the file is the one it wrote.
    """

    def __init__(self, out: Path, producer: dict[str, Any]) -> None:
        self.path = out / PROVENANCE
        self.producer = producer
        self.saved = self._read()
        self.same_producer = self.saved.get("producer") == producer
        self.cases: dict[str, Any] = dict(self.saved.get("cases", {})) if self.same_producer else {}

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("%s: unreadable; its segmentations are treated as made by another producer", self.path)
            return {}

    def up_to_date(self, case_id: str, inputs: Any, output: Path) -> bool:
        entry = self.cases.get(case_id)
        return bool(entry) and entry.get("inputs") == inputs and entry.get("output") == _output_key(output)

    def record(self, case_id: str, inputs: Any, output: Path) -> None:
        self.cases[case_id] = {"inputs": inputs, "output": _output_key(output)}
        self.save()

    def save(self) -> None:
        with replaced_on_success(self.path) as tmp:
            tmp.write_text(json.dumps({"producer": self.producer, "cases": self.cases}, indent=1) + "\n")


def _raw_jobs(inputs: str, summary: PredictResult) -> list[_Job]:
    """Every raw case, its seg dropped (never read); unusable ones are refused."""
    jobs = []
    for case in discover_cases(inputs):
        if case.problem:
            summary.refused.append(Refusal(case.case_id, f"{case.problem_file or case.folder}: {case.problem}"))
        else:
            files = {role: path for role, path in case.files.items() if role != "seg"}
            jobs.append(_Job(case.case_id, replace(case, files=files)))
    return jobs


def _loaded(jobs: list[_Job], config: PredictConfig, task: Task) -> Iterator[tuple[_Job, ScoreCase | BratsError]]:
    """Each job with its case read (the next one read by a thread meanwhile), or why it cannot be."""
    if config.store is not None:
        return zip(jobs, store_cases(config.store, [j.case_id for j in jobs], keep_errors=True), strict=True)
    return zip(jobs, raw_cases([j.raw for j in jobs], keep_errors=True, task=task), strict=True)  # type: ignore[misc]


def run_prediction(config: PredictConfig, progress: bool = True) -> PredictResult:
    """Predict every case of `inputs` (or of `store`) into `out`, in this process or spread over a
    Dask cluster (`workers`, `scheduler`); see the module docstring."""
    out = check_output(config.out, "OUT")
    check_not_inside(out, config.inputs or config.store, "OUT", "IN" if config.inputs else "--store")  # type: ignore[arg-type]
    start = time.perf_counter()
    summary = PredictResult(out)
    distributed = bool(config.workers or config.scheduler)
    device = resolve_device("cpu" if distributed and config.device == "auto" else config.device)
    configure_kernels(device)
    members = load_members(tuple(config.ckpt), device, config.engine, config.threads, networks=not distributed,
                             window=config.window, batch_windows=config.batch_windows)
    task = members[0].task
    if config.task and config.task.upper() != task.name:
        raise ConfigError(f"--task {config.task}: the checkpoint predicts the {task.name} task")
    inference = inference_config(members, config.window, config.overlap, config.tta, config.batch_windows)
    if config.inputs is not None:
        jobs = _raw_jobs(config.inputs, summary)
    else:
        validation = list(members[0].checkpoint.split.val)
        jobs = [_Job(i) for i in select_store_cases(config.store, config.cases, validation)]  # type: ignore[arg-type]
        warn_stale(config.store, [j.case_id for j in jobs])  # type: ignore[arg-type]
    with folder_lock(out, "predict"):
        provenance = Provenance(out, _producer(members, config))
        pending = _to_predict(jobs, config, out, provenance, summary)
        todo, inputs = [job for job, _ in pending], {job.case_id: key for job, key in pending}
        for refusal in summary.refused:
            log.info("refused %s", refusal.problem)
        provenance.save()  # the folder's producer is now this one
        if distributed and todo:  # nothing to predict: no cluster started
            summary.cluster = ClusterReport()
            outcomes = _predicted_on_cluster(todo, config, str(out), summary.cluster)
        else:
            outcomes = ((job, _predict_one(job, case, members, inference, device, config, out))
                        for job, case in _loaded(todo, config, task))
        for job, (status, detail) in tqdm(outcomes, total=len(todo), desc="predict", unit="case", disable=not progress):
            if status == "written":
                provenance.record(job.case_id, inputs[job.case_id], Path(detail))
                summary.written.append(job.case_id)
            else:
                summary.refused.append(Refusal(job.case_id, detail))
                log.info("refused %s", detail)
    summary.seconds = time.perf_counter() - start
    return summary


def _predict_one(job: _Job, case: ScoreCase | BratsError, members: list[Member], inference: InferenceConfig,
                 device: Any, config: PredictConfig, out: Path) -> tuple[str, str]:
    """("written", the output's path) or ("refused", why): one case predicted and written atomically."""
    task = members[0].task
    if not isinstance(case, BratsError) and case.task != task.name:
        case = StoreError(f"{job.case_id}: holds {case.task} labels; the checkpoint predicts the {task.name} task")
    if isinstance(case, BratsError):
        return "refused", str(case)
    assert case.image is not None
    labels = predict_case(members, case.image, inference, device, config.postprocess)
    fault_point("predict:before-write")
    path = save_prediction(out, case, labels)
    fault_point("predict:case")
    return "written", str(path)


def predict_on_worker(job: _Job, spec: ModelSpec, config: PredictConfig, out: str) -> tuple[str, str]:
    """A Dask task: one case read, predicted and written by the worker that runs it."""
    members, device = worker_members(spec)
    inference = inference_config(members, config.window, config.overlap, config.tta, config.batch_windows)
    _, case = next(iter(_loaded([job], config, members[0].task)))
    return _predict_one(job, case, members, inference, device, config, Path(out))


def _predicted_on_cluster(todo: list[_Job], config: PredictConfig, out: str,
                          report: ClusterReport) -> Iterator[tuple[_Job, tuple[str, str]]]:
    """Each job with its outcome, predicted on the Dask cluster of `config` (cases stream to workers)."""
    spec = model_spec(config)
    gpu = spec.device.startswith("cuda")
    with dask_client(config.scheduler, config.workers) as client:
        for job, result in run_on_cluster(client, predict_on_worker, todo, lambda j: j.case_id,
                                          (spec, config, out), gpu, report):
            yield job, (("refused", failure_text(result)) if isinstance(result, BaseException) else result)


def _to_predict(jobs: list[_Job], config: PredictConfig, out: Path, provenance: Provenance,
                summary: PredictResult) -> list[tuple[_Job, Any]]:
    """The jobs whose segmentation is not up to date, each with the key of its inputs (taken before
    they are read, so a file changed meanwhile is predicted again next time). Segmentations in OUT made by another producer
    (another checkpoint, other options, another brats, an unknown tool) are never silently kept
    nor silently replaced: the run is refused unless `overwrite`."""
    todo: list[tuple[_Job, Any]] = []
    foreign = []
    for job in jobs:
        path = output_path(out, job.case_id)
        try:
            inputs = _inputs_key(job, config.store)
        except (BratsError, OSError) as error:
            summary.refused.append(Refusal(job.case_id, str(error)))
            continue
        if config.overwrite or not path.exists():
            todo.append((job, inputs))
        elif provenance.up_to_date(job.case_id, inputs, path):
            summary.up_to_date.append(job.case_id)
        elif provenance.same_producer:
            todo.append((job, inputs))  # its inputs changed, or the file was: predicted again
        else:
            foreign.append(job.case_id)
    if foreign:
        made_by = ("another model, other options or another brats version" if provenance.saved
                   else "an unknown producer (no predictions.json)")
        raise ConfigError(f"{printable(str(out))}: holds {len(foreign)} segmentation(s) made by {made_by} "
                          f"({', '.join(foreign[:3])}); give --overwrite to predict them again, or another OUT")
    return todo
