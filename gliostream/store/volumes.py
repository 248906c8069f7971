"""Whole cropped cases for sliding-window evaluation, the next one read while this one is used."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import StoreError
from ..readahead import prefetched
from .reader import read_case
from .schema import CaseRecord


@dataclass
class CaseVolume:
    """One stored case: image float16 (4, x, y, z), label uint8 (x, y, z) or None, and its record."""

    case_id: str
    image: torch.Tensor
    label: torch.Tensor | None
    record: CaseRecord


class StoreVolumes(Dataset[CaseVolume]):
    """Map-style dataset of whole store cases (opened in the reading process)."""

    def __init__(self, root: str | Path, case_ids: list[str], keep_errors: bool = False) -> None:
        self.root = Path(root)
        self.case_ids = list(case_ids)
        self.keep_errors = keep_errors

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> CaseVolume:
        try:
            case = read_case(self.root, self.case_ids[index])  # checked against its record
        except StoreError as error:
            if not self.keep_errors:
                raise
            return error  # type: ignore[return-value]
        label = torch.from_numpy(case.label) if case.label is not None else None
        return CaseVolume(self.case_ids[index], torch.from_numpy(case.image), label, case.record)


def iterate_volumes(root: str | Path, case_ids: list[str], workers: int = 1,
                    keep_errors: bool = False) -> Iterator[CaseVolume | StoreError]:
    """Cases in the given order; with `workers` > 0 the next ones are read by threads meanwhile
    (decoding releases the GIL; a thread needs no process start-up nor shared-memory copy). A
    damaged case raises its StoreError, or with `keep_errors` is yielded as it."""
    volumes = StoreVolumes(root, case_ids, keep_errors)
    if workers <= 0:
        yield from (volumes[i] for i in range(len(volumes)))
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="brats-volumes") as pool:
        yield from prefetched(volumes, range(len(volumes)), pool, depth=workers)
