"""Find BraTS cases under a raw folder by file-name suffix, one case per (folder, id)."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DiscoveryError
from ..store.layout import case_id_problem
from .naming import MODALITIES, Convention, parse_filename

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawCase:
    """The files of one raw case, or why the case cannot be used (`problem`)."""

    case_id: str
    folder: Path
    convention: Convention | None
    files: dict[str, Path] = field(default_factory=dict)  # role -> path
    problem: str | None = None
    problem_file: Path | None = None

    @property
    def labelled(self) -> bool:
        return "seg" in self.files

    @property
    def roles(self) -> tuple[str, ...]:
        """Roles in load order: the four modalities, then the seg if present."""
        return MODALITIES + (("seg",) if self.labelled else ())


def _group_files(raw_dir: Path) -> dict[tuple[Path, str], list[tuple[Convention, str, Path]]]:
    groups: dict[tuple[Path, str], list[tuple[Convention, str, Path]]] = defaultdict(list)
    seen: set[tuple[int, int]] = set()
    for folder, dirnames, filenames in os.walk(raw_dir, followlinks=True):  # links to cases: the usual subsets
        identity = os.stat(folder)
        if (identity.st_dev, identity.st_ino) in seen:  # a link loop, or a folder linked twice
            dirnames[:] = []
            continue
        seen.add((identity.st_dev, identity.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            parsed = parse_filename(name)
            if parsed is None:
                continue
            case_id, conv, role = parsed
            groups[(Path(folder), case_id)].append((conv, role, Path(folder) / name))
    return groups


def _make_case(folder: Path, case_id: str, entries: list[tuple[Convention, str, Path]]) -> RawCase:
    conventions = {conv.name: conv for conv, _, _ in entries}
    first = entries[0][2]
    if len(conventions) > 1:
        return RawCase(case_id, folder, None, problem="mixes BraTS 2021 and 2023 file naming", problem_file=first)
    conv = next(iter(conventions.values()))
    files: dict[str, Path] = {}
    for _, role, path in entries:
        if role in files:
            return RawCase(case_id, folder, conv, problem=f"two files for {role}: {files[role].name}, {path.name}",
                           problem_file=path)
        files[role] = path
    missing = [m for m in MODALITIES if m not in files]
    if missing:
        wanted = ", ".join(conv.separator + conv.suffixes[m] for m in missing)
        return RawCase(case_id, folder, conv, files, problem=f"missing modality file(s) {wanted}",
                       problem_file=folder / case_id)
    reason = case_id_problem(case_id)
    if reason:
        return RawCase(case_id, folder, conv, files, problem=reason, problem_file=first)
    return RawCase(case_id, folder, conv, files)


def discover_cases(raw_dir: str | Path) -> list[RawCase]:
    """Every case under `raw_dir`, sorted by id; unusable ones carry a `problem`.

    Files are matched on their suffix (`_t1ce`, `-t2f`, ...), never on a `BraTS` prefix,
    so one folder per case and flat folders both work. An id found in two folders is a
    problem for both, since the store keys cases by id.
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise DiscoveryError(f"{raw}: raw folder does not exist or is not a folder")
    cases = [_make_case(folder, cid, entries) for (folder, cid), entries in _group_files(raw).items()]
    by_id: dict[str, list[RawCase]] = defaultdict(list)
    for case in cases:
        by_id[case.case_id].append(case)
    result: list[RawCase] = []
    for case_id, same in sorted(by_id.items()):
        if len(same) == 1:
            result.append(same[0])
            continue
        folders = ", ".join(str(c.folder) for c in same)
        for c in same:
            result.append(RawCase(case_id, c.folder, c.convention, c.files,
                                  problem=f"case id {case_id!r} found in several folders: {folders}",
                                  problem_file=c.folder))
    if not result:
        raise DiscoveryError(f"{raw}: no BraTS case found (expected files like <id>_t1.nii.gz or <id>-t1n.nii.gz)")
    log.debug("discovered %d cases under %s", len(result), raw)
    return result
