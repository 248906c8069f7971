"""Cases to score, from the store or straight from raw NIfTI, read one ahead of their use."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BratsError, DiscoveryError, InvalidCaseError, StoreError
from ..geometry import uncrop
from ..pipeline.discovery import RawCase, discover_cases
from ..pipeline.preprocess import preprocess_case
from ..pipeline.validation import load_case
from ..readahead import prefetched
from ..store.reader import read_case, scan_cases
from ..store.schema import CaseRecord
from ..store.volumes import CaseVolume, iterate_volumes
from ..tasks import TASKS, Task


@dataclass
class ScoreCase:
    """One case: the cropped image (None when only a prediction file is scored), the reference
    in store labels over the crop (None without a seg), and what undoes the crop."""

    case_id: str
    image: torch.Tensor | None
    reference: np.ndarray | None
    crop_box: tuple[tuple[int, int], ...]
    original_shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    convention: str
    task: str = "GLI"  # whose labels the reference holds and predictions are written in

    def reference_original(self) -> np.ndarray | None:
        """The reference in the original (raw file) geometry."""
        if self.reference is None:
            return None
        return uncrop(self.reference, self.crop_box, self.original_shape)


def _from_record(case_id: str, image: torch.Tensor | None, reference: np.ndarray | None,
                 record: CaseRecord) -> ScoreCase:
    return ScoreCase(case_id, image, reference, record.crop_box, record.original_shape, record.affine_matrix,
                     record.spacing, record.convention, record.task)


def select_store_cases(store: str | Path, which: str, validation: list[str]) -> list[str]:
    """`val` (the checkpoint's validation cases), `all`, or a file of case ids (one per line)."""
    scan = scan_cases(store)  # damaged cases are named when read, each with its problem
    present = sorted({*scan.records, *scan.damaged})
    if not present:
        raise StoreError(f"{store}: not a brats store or holds no case")
    if which == "val":
        ids = list(validation)
        if not ids:
            raise StoreError("the checkpoint has no validation cases; use --cases all or a file of ids")
    elif which == "all":
        ids = present
    else:
        try:
            ids = [line.strip() for line in Path(which).read_text().splitlines() if line.strip()]
        except OSError as error:
            raise StoreError(f"{which}: cannot read the list of cases ({error.strerror})") from None
    missing = sorted(set(ids) - set(present))
    if missing:
        raise StoreError(f"{store}: lacks {len(missing)} of the cases to score: {', '.join(missing[:5])}")
    return ids


def store_cases(store: str | Path, case_ids: list[str], with_image: bool = True,
                keep_errors: bool = False) -> Iterator[ScoreCase | BratsError]:
    """Store cases in order, each checked against its record, the next one read by a thread while
    this one is used. With `keep_errors` a damaged case is yielded as its StoreError instead of
    ending the run."""
    if not with_image:
        volumes: Iterator[CaseVolume | BratsError] = (_reference(store, c) for c in case_ids)
    else:
        volumes = iterate_volumes(store, case_ids, workers=1, keep_errors=keep_errors)
    for volume in volumes:
        if isinstance(volume, BratsError):
            if not keep_errors:
                raise volume
            yield volume
            continue
        label = volume.label.numpy() if volume.label is not None else None
        yield _from_record(volume.case_id, volume.image, label, volume.record)


def _reference(store: str | Path, case_id: str) -> CaseVolume:
    case = read_case(store, case_id, with_image=False)
    label = torch.from_numpy(case.label) if case.label is not None else None
    return CaseVolume(case_id, None, label, case.record)  # type: ignore[arg-type]


def raw_case_list(raw_dir: str | Path) -> tuple[list[RawCase], list[tuple[str, InvalidCaseError]]]:
    """The usable raw cases, and (case id, refusal naming the file and its problem) for each other one."""
    usable, refused = [], []
    for case in discover_cases(raw_dir):
        if case.problem:
            refused.append((case.case_id, InvalidCaseError(case.problem_file or case.folder, case.problem)))
        else:
            usable.append(case)
    if not usable and not refused:
        raise DiscoveryError(f"{raw_dir}: no BraTS case found")
    return usable, refused


def load_raw_case(case: RawCase, task: Task = TASKS["GLI"]) -> ScoreCase:
    """A raw case of `task` validated and preprocessed by the ingest code (no seg in `case.files`:
    no reference)."""
    loaded = load_case(case, task=task)
    pre = preprocess_case(loaded)
    return ScoreCase(case.case_id, torch.from_numpy(pre.image), pre.label, pre.crop_box, pre.original_shape,
                     loaded.affine, loaded.spacing, loaded.convention.name, task.name)


class _RawCases:
    def __init__(self, cases: list[RawCase], keep_errors: bool, task: Task) -> None:
        self.cases, self.keep_errors, self.task = cases, keep_errors, task

    def __getitem__(self, index: int) -> ScoreCase | BratsError:
        try:
            return load_raw_case(self.cases[index], self.task)
        except BratsError as error:
            if not self.keep_errors:
                raise
            return error


def raw_cases(cases: list[RawCase], keep_errors: bool = False, task: Task = TASKS["GLI"]
              ) -> Iterator[ScoreCase | BratsError]:
    """Raw cases of `task` validated and preprocessed by the ingest code, one ahead, in order. With
    `keep_errors` a case that cannot be used is yielded as its error instead of ending the run."""
    with ThreadPoolExecutor(1, thread_name_prefix="brats-score-read") as pool:
        yield from prefetched(_RawCases(cases, keep_errors, task), range(len(cases)), pool, depth=1)
