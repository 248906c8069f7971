"""The ingest job: discover raw cases, skip unchanged ones, process the rest as one Dask task each."""

from __future__ import annotations

import csv
import datetime as dt
import logging
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import __version__
from ..errors import InvalidCaseError, StoreError, shortened
from ..faults import fault_point
from ..files import keep_freed_memory, replaced_on_success
from ..store import layout
from ..store.index import write_index
from ..store.locks import case_lock
from ..store.reader import read_case_record
from ..store.schema import CaseRecord, SourceFile
from ..store.stale import clear_stale, mark_stale, stale_cases
from ..store.verify import verify_case
from ..store.writer import create_or_check_store, recover_case, sweep_debris, write_case
from ..tasks import TASKS
from .cluster import dask_client
from .config import IngestConfig
from .discovery import RawCase, discover_cases
from .fingerprint import case_fingerprint, file_stat, params_fingerprint, stats_unchanged
from .naming import MODALITIES
from .preprocess import PreprocessedCase, preprocess_case
from .validation import LoadedCase, decode_case, open_sources

log = logging.getLogger(__name__)

STATUSES = ("ingested", "unchanged", "rejected", "failed")


@dataclass(frozen=True)
class CaseResult:
    """What happened to one case in one run."""

    case_id: str
    status: str  # one of STATUSES
    file: str = ""
    problem: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class IngestResult:
    """The outcome of a run; `exit_code` is 0 only if no case was rejected or failed."""

    store: Path
    results: tuple[CaseResult, ...]
    seconds: float

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("rejected") or self.count("failed") else 0

    def line(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATUSES)
        return f"ingest: {counts} in {self.seconds:.1f} s -> {self.store}"


def _case_arrays(pre: PreprocessedCase) -> dict[str, Any]:
    arrays: dict[str, Any] = {layout.IMAGE: pre.image}
    if pre.label is not None:
        arrays[layout.LABEL] = pre.label
        arrays.update({layout.LOCATION_PREFIX + r: loc for r, loc in pre.locations.items()})
    return arrays


def _case_record(loaded: LoadedCase, pre: PreprocessedCase, fingerprint: str, params_fp: str) -> CaseRecord:
    raw, sources = loaded.raw, loaded.sources
    return CaseRecord(
        case_id=raw.case_id,
        labelled=raw.labelled,
        convention=raw.convention.name,  # type: ignore[union-attr]
        modalities=MODALITIES,
        source_dir=str(raw.folder.resolve()),
        source_files={role: SourceFile(src.path.name, src.sha256, **file_stat(src.path)) for role, src in sources.items()},
        fingerprint=fingerprint,
        params_fingerprint=params_fp,
        original_shape=pre.original_shape,
        cropped_shape=tuple(int(s) for s in pre.image.shape[1:]),  # type: ignore[arg-type]
        crop_box=tuple((int(a), int(b)) for a, b in pre.crop_box),
        affine=tuple(tuple(float(v) for v in row) for row in loaded.affine),
        spacing=loaded.spacing,
        normalization=pre.normalization,
        voxels=pre.voxel_counts,
        ingested_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        brats_version=__version__,
        task=loaded.task.name,
    )


def previous_record(root: Path, case_id: str) -> CaseRecord | None:
    """The stored record of a case, or None when absent or damaged (a damaged case is ingested again)."""
    try:
        return read_case_record(root, case_id)
    except StoreError as error:
        log.info("%s: ingested again", error)
        return None


def _refused(root: Path, raw: RawCase, previous: CaseRecord | None, file: str, problem: str) -> None:
    """A case whose raw files changed and were rejected keeps its previous version, marked stale
    (caller holds the case lock)."""
    if previous is not None:
        mark_stale(root, raw.case_id, file, problem)


def ingest_case(raw: RawCase, store: str, config: IngestConfig, force: bool = False) -> CaseResult:
    """Validate, preprocess and atomically store one case (the body of each Dask task).

    Holds the case's lock throughout, so two runs never write the same case; after taking
    it, a case that another run just stored is seen as unchanged (unless `force`: a case whose
    stored arrays are damaged). A case that fails in a way no check foresaw is reported as
    failed, and the other cases go on.
    """
    start = time.perf_counter()
    keep_freed_memory()  # in a Dask worker too, whose nanny sets MALLOC_TRIM_THRESHOLD_
    root = Path(store)

    def result(status: str, file: str = "", problem: str = "") -> CaseResult:
        return CaseResult(raw.case_id, status, file, problem, round(time.perf_counter() - start, 3))

    params = config.store_params()
    params_fp = params_fingerprint(params)
    with case_lock(root, raw.case_id):
        fault_point("ingest:case-locked")
        recover_case(root, raw.case_id)
        previous = previous_record(root, raw.case_id)
        if raw.problem:
            file = str(raw.problem_file or raw.folder)
            _refused(root, raw, previous, file, raw.problem)
            return result("rejected", file, raw.problem)
        if previous and not force and stats_unchanged(previous, raw.files, params_fp):
            clear_stale(root, raw.case_id)
            return result("unchanged")
        try:
            sources = open_sources(raw, config.limits, config.affine_atol)
            fingerprint = case_fingerprint({r: s.sha256 for r, s in sources.items()}, params)
            if previous and not force and previous.fingerprint == fingerprint:
                clear_stale(root, raw.case_id)
                return result("unchanged")
            loaded = decode_case(raw, sources, TASKS[config.task])
            pre = preprocess_case(loaded, config.preprocess)
            record = _case_record(loaded, pre, fingerprint, params_fp)
            write_case(root, raw.case_id, _case_arrays(pre), record)
        except InvalidCaseError as exc:
            _refused(root, raw, previous, exc.file, exc.problem)
            return result("rejected", exc.file, exc.problem)
        except StoreError as exc:
            return result("failed", str(layout.case_dir(root, raw.case_id)), str(exc))
        except Exception as exc:  # noqa: BLE001 - a case no check foresaw must not end the run
            log.debug("%s failed", raw.case_id, exc_info=True)
            return result("failed", str(raw.folder), f"unexpected {type(exc).__name__}: {shortened(str(exc), 120)}")
        clear_stale(root, raw.case_id)
    return result("ingested")


progress_log = logging.getLogger(__name__ + ".progress")


class _Progress:
    """A bar on a terminal; otherwise a log line each tenth of the cases (for scheduled jobs' logs)."""

    def __init__(self, total: int, bar: bool) -> None:
        self.bar = tqdm(total=total, desc="ingest", unit="case", disable=not bar)
        self.total, self.done, self.every = total, 0, max(1, total // 10)

    def update(self) -> None:
        self.bar.update()
        self.done += 1
        if self.bar.disable and (self.done % self.every == 0 or self.done == self.total):
            progress_log.info("ingest: %d/%d cases processed", self.done, self.total)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _run_local(todo: list[tuple[RawCase, bool]], root: Path, config: IngestConfig, bar: _Progress) -> list[CaseResult]:
    results = []
    for raw, force in todo:
        results.append(ingest_case(raw, str(root), config, force))
        bar.update()
    return results


def _run_dask(todo: list[tuple[RawCase, bool]], root: Path, config: IngestConfig, bar: _Progress,
              client: Any) -> list[CaseResult]:
    from distributed import as_completed

    results = []
    futures = {client.submit(ingest_case, raw, str(root), config, force, key=f"ingest-{uuid.uuid4().hex}",
                             retries=2, pure=False): raw for raw, force in todo}
    for future in as_completed(futures):
        raw = futures[future]
        try:
            results.append(future.result())
        except Exception as exc:  # a worker died repeatedly: record it, go on
            results.append(CaseResult(raw.case_id, "failed", str(raw.folder),
                                      f"{type(exc).__name__}: {shortened(str(exc), 120)}"))
        bar.update()
    return results


def write_report(root: Path, results: list[CaseResult]) -> Path:
    """Write `ingest_report.csv` (one row per case, atomically) and return its path."""
    path = layout.report_path(root)
    with replaced_on_success(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "status", "file", "problem", "seconds"])
        for r in results:
            writer.writerow([r.case_id, r.status, r.file, r.problem, r.seconds])
        fault_point("report:tmp-written")
    return path


def run_ingest(raw_dir: str | Path, store: str | Path, config: IngestConfig = IngestConfig(), *,
               workers: int | None = None, scheduler: str | None = None, progress: bool = True,
               redo_damaged: bool = False) -> IngestResult:
    """Ingest every new or changed case of `raw_dir` into `store`; idempotent and incremental.

    `workers=0` runs in this process without Dask (debugging); otherwise one task per case
    runs on a LocalCluster of `workers` processes, or on the cluster at `scheduler` (reached
    before anything is created). Damaged case records are always rewritten from the raw files;
    `redo_damaged` also checks every stored array as `brats verify` does and rewrites the cases
    it finds damaged.
    """
    start = time.perf_counter()
    cases = discover_cases(raw_dir)
    with ExitStack() as stack:
        client = stack.enter_context(dask_client(scheduler, workers)) if scheduler else None
        root = create_or_check_store(store, config.store_params()).resolve()
        if swept := sweep_debris(root):
            log.info("cleaned what interrupted writes of %d case(s) left", swept)
        params_fp = params_fingerprint(config.store_params())
        results: list[CaseResult] = []
        todo: list[tuple[RawCase, bool]] = []
        stale = stale_cases(root)
        for raw in cases:
            previous = previous_record(root, raw.case_id) if not layout.case_id_problem(raw.case_id) else None
            if raw.problem and previous is None:
                results.append(CaseResult(raw.case_id, "rejected", str(raw.problem_file or raw.folder), raw.problem))
            elif raw.problem or raw.case_id in stale or not previous or not stats_unchanged(previous, raw.files,
                                                                                          params_fp):
                todo.append((raw, False))  # a rejected new version of a stored case is marked there
            elif redo_damaged and any(verify_case(root, raw.case_id)):
                todo.append((raw, True))
            else:
                results.append(CaseResult(raw.case_id, "unchanged"))
        log.info("%d cases found, %d to process", len(cases), len(todo))
        if todo:
            with _Progress(len(todo), progress) as bar:
                if workers == 0:
                    results += _run_local(todo, root, config, bar)
                elif client is not None:
                    results += _run_dask(todo, root, config, bar, client)
                else:
                    with dask_client(None, workers) as local:
                        results += _run_dask(todo, root, config, bar, local)
    results.sort(key=lambda r: r.case_id)
    for r in results:
        if r.status in ("rejected", "failed"):
            log.info("%s %s: %s", r.status, r.file, r.problem)  # the CLI prints one line each
    write_index(root)
    write_report(root, results)
    summary = IngestResult(root, tuple(results), time.perf_counter() - start)
    log.info("%s", summary.line())
    return summary
