"""`brats verify`: is every case of a store complete, readable and unchanged since ingest?"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from ..errors import StoreError
from ..labels import REGIONS
from . import layout
from .reader import read_case_record, read_store_attrs
from .schema import CaseRecord
from .writer import checksum


@dataclass(frozen=True)
class Problem:
    where: str
    problem: str

    def line(self) -> str:
        return f"{self.where}: {self.problem}"


def _expected(record: CaseRecord) -> dict[str, tuple[tuple[int, ...] | None, np.dtype]]:
    shape = record.cropped_shape
    out: dict[str, tuple[tuple[int, ...] | None, np.dtype]] = {
        layout.IMAGE: ((len(record.modalities), *shape), np.dtype(np.float16))}
    if record.labelled:
        out[layout.LABEL] = (shape, np.dtype(np.uint8))
        for region in REGIONS:
            out[layout.LOCATION_PREFIX + region] = (None, np.dtype(np.uint16))
    return out


def verify_case(root: Path, case_id: str) -> Iterator[Problem]:
    """Problems of one case: missing record, arrays of the wrong shape or dtype, unreadable
    chunks, or contents whose CRC-32 differs from the one recorded at ingest."""
    where = str(layout.case_dir(root, case_id))
    record = read_case_record(root, case_id)
    if record is None:
        yield Problem(where, "incomplete case (no record): a write was interrupted; re-run ingest")
        return
    checksums = record.checksums
    for name, (shape, dtype) in _expected(record).items():
        try:
            array = zarr.open_array(str(layout.case_dir(root, case_id) / name), mode="r")
            data = array[...]
        except Exception as error:  # zarr raises many types for missing or corrupt chunks
            yield Problem(f"{where}/{name}", f"unreadable ({type(error).__name__}: {str(error)[:100]})")
            continue
        if data.dtype != dtype:
            yield Problem(f"{where}/{name}", f"dtype {data.dtype}, the schema says {dtype}")
        elif shape is not None and data.shape != shape:
            yield Problem(f"{where}/{name}", f"shape {data.shape}, the record says {shape}")
        elif shape is None and (data.ndim != 2 or data.shape[1] != 3):
            yield Problem(f"{where}/{name}", f"shape {data.shape}, expected (n, 3)")
        elif name in checksums and checksum(data) != checksums[name]:
            yield Problem(f"{where}/{name}", "content differs from the checksum recorded at ingest (corrupted)")


def verify_store(root: str | Path) -> list[Problem]:
    """Every problem of a store (empty list: clean)."""
    root = Path(root)
    try:
        read_store_attrs(root)
    except StoreError as error:  # not a store, or another schema version
        return [Problem(str(root), str(error).removeprefix(f"{root}: "))]
    problems = []
    cases_dir = layout.cases_dir(root)
    on_disk = sorted(p.name for p in cases_dir.iterdir() if p.is_dir()) if cases_dir.is_dir() else []
    index_path = layout.index_path(root)
    if index_path.exists():
        try:
            listed = list(pd.read_csv(index_path, dtype={"case_id": str})["case_id"])
        except (ValueError, KeyError, pd.errors.ParserError) as error:
            problems.append(Problem(str(index_path), f"unreadable index ({error})"))
            listed = []
    else:
        listed = []
        if on_disk:
            problems.append(Problem(str(index_path), "missing (re-run ingest to rebuild it)"))
    for case_id in sorted(set(listed) - set(on_disk)):
        problems.append(Problem(str(layout.case_dir(root, case_id)), "listed in the index but absent"))
    for case_id in on_disk:
        found = list(verify_case(root, case_id))
        problems += found
        if not found and index_path.exists() and case_id not in listed:
            problems.append(Problem(str(layout.case_dir(root, case_id)), "complete but not in the index "
                                                                        "(re-run ingest to rebuild it)"))
    for private in (layout.staging_dir(root), layout.trash_dir(root)):
        if private.is_dir():
            for leftover in sorted(private.iterdir()):
                problems.append(Problem(str(leftover), "left by an interrupted ingest of this case "
                                                       "(the next ingest removes it)"))
    return problems
