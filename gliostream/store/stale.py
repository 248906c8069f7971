"""Cases kept at their previous version because their changed raw files were rejected.

A scheduled ingest must not silently serve an old version as if it were current, nor throw away
the last good one: the case stays, marked here with the rejected file and why, until an ingest
stores its raw files again (or finds them back as they were). `verify` reports the mark; `train`
and `score` name the cases they use at their old version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..files import replaced_on_success
from . import layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StaleMark:
    case_id: str
    file: str  # the rejected raw file
    problem: str
    marked_at: str

    def line(self) -> str:
        return (f"stale: the store keeps its previous version; its raw files changed and were rejected "
                f"({self.file}: {self.problem})")


def _mark_path(root: Path, case_id: str) -> Path:
    return layout.stale_dir(root) / (hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:32] + ".json")


def mark_stale(root: Path, case_id: str, file: str, problem: str) -> None:
    """Record that `case_id`'s new raw version was rejected (caller holds the case lock)."""
    mark = StaleMark(case_id, file, problem, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    path = _mark_path(root, case_id)
    path.parent.mkdir(exist_ok=True)
    with replaced_on_success(path) as tmp:
        tmp.write_text(json.dumps(asdict(mark)) + "\n")


def clear_stale(root: Path, case_id: str) -> None:
    """The case's stored version matches its raw files again (caller holds the case lock)."""
    _mark_path(root, case_id).unlink(missing_ok=True)


def stale_cases(root: str | Path) -> dict[str, StaleMark]:
    """Every marked case that is still in the store, by id."""
    folder = layout.stale_dir(Path(root))
    marks = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            mark = StaleMark(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as error:
            log.warning("%s: unreadable stale mark (%s)", path, error)
            continue
        if layout.case_dir(Path(root), mark.case_id).is_dir():
            marks[mark.case_id] = mark
    return marks


def warn_stale(root: str | Path, case_ids: list[str]) -> list[str]:
    """Log one warning naming the cases among `case_ids` used at their previous version; returns them."""
    marks = stale_cases(root)
    used = [c for c in case_ids if c in marks]
    if used:
        log.warning("%d case(s) are used at their previous version because their changed raw files were "
                    "rejected at ingest (see `brats verify %s`): %s", len(used), root, ", ".join(used[:5]))
    return used
