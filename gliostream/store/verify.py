"""`brats verify`: is every case of a store complete, readable and unchanged since ingest?"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import StoreError
from . import layout
from .reader import expected_arrays, read_array, read_case_record, read_store_attrs
from .stale import stale_cases


@dataclass(frozen=True)
class Problem:
    where: str
    problem: str

    def line(self) -> str:
        return f"{self.where}: {self.problem}"


def _without_where(error: StoreError, where: str) -> str:
    return str(error).removeprefix(f"{where}: ")


def verify_case(root: Path, case_id: str) -> Iterator[Problem]:
    """Problems of one case: a record missing, edited or inconsistent, arrays of the wrong shape
    or dtype, unreadable chunks, or contents whose CRC-32 differs from the one recorded at ingest
    (the checks every stage makes on read, `reader.read_array`, here always made afresh)."""
    case_path = layout.case_dir(root, case_id)
    where = str(case_path)
    try:
        record = read_case_record(root, case_id)
    except StoreError as error:
        yield Problem(where, _without_where(error, where))
        return
    if record is None:
        return
    for name in expected_arrays(record):
        try:
            read_array(case_path, record, name, recheck=True)
        except StoreError as error:
            yield Problem(f"{where}/{name}", _without_where(error, f"{where}/{name}"))


def read_index_ids(path: Path) -> list[str]:
    """The case ids an index lists (ids such as `NA` kept as written, not read as missing)."""
    return list(pd.read_csv(path, dtype={"case_id": str}, keep_default_na=False)["case_id"])


def verify_store(root: str | Path) -> list[Problem]:
    """Every problem of a store (empty list: clean); StoreError when `root` is not a brats store
    of this schema (nothing to verify)."""
    root = Path(root)
    read_store_attrs(root)
    problems = []
    cases_dir = layout.cases_dir(root)
    on_disk = sorted(p.name for p in cases_dir.iterdir() if p.is_dir()) if cases_dir.is_dir() else []
    index_path = layout.index_path(root)
    if index_path.exists():
        try:
            listed = read_index_ids(index_path)
        except (ValueError, KeyError, pd.errors.ParserError) as error:
            problems.append(Problem(str(index_path), f"unreadable index ({error})"))
            listed = []
    else:
        listed = []
        if on_disk:
            problems.append(Problem(str(index_path), "missing (re-run ingest to rebuild it)"))
    for case_id in sorted(set(listed) - set(on_disk)):
        problems.append(Problem(str(cases_dir / case_id), "listed in the index but absent"))
    for case_id in on_disk:
        if unusable := layout.case_id_problem(case_id):
            problems.append(Problem(str(cases_dir / case_id), f"not a case folder: {unusable}"))
            continue
        found = list(verify_case(root, case_id))
        problems += found
        if not found and index_path.exists() and case_id not in listed:
            problems.append(Problem(str(layout.case_dir(root, case_id)), "complete but not in the index "
                                                                        "(re-run ingest to rebuild it)"))
    for case_id, mark in stale_cases(root).items():
        problems.append(Problem(str(layout.case_dir(root, case_id)), mark.line()))
    for private in (layout.staging_dir(root), layout.trash_dir(root)):
        if private.is_dir():
            for leftover in sorted(private.iterdir()):
                problems.append(Problem(str(leftover), "left by an interrupted ingest of this case "
                                                       "(the next ingest removes it)"))
    return problems
