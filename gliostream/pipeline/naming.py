"""BraTS file naming (2018-2021 and 2023+), in one table; the labels of each task are in `tasks.py`."""

from __future__ import annotations

from dataclasses import dataclass

from ..tasks import TASKS, Task, raw_labels, store_labels

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
"""Channel order of every image in the store."""


@dataclass(frozen=True)
class Convention:
    """How one BraTS edition names its files (its labels depend on the task too, `tasks.store_labels`)."""

    name: str
    separator: str
    suffixes: dict[str, str]  # role (a modality or "seg") -> file-name suffix

    def labels(self, task: Task = TASKS["GLI"]) -> tuple[int, ...]:
        """The values a seg file of this naming may hold for `task`."""
        return tuple(sorted(store_labels(task, self.name)))

    def to_store_labels(self, task: Task = TASKS["GLI"]) -> dict[int, int]:
        """Raw label -> store label."""
        return store_labels(task, self.name)

    def from_store_labels(self, task: Task = TASKS["GLI"]) -> dict[int, int]:
        """Store label -> raw label of this naming (for exported predictions)."""
        return raw_labels(task, self.name)


BRATS_2021 = Convention(
    name="2021",
    separator="_",
    suffixes={"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"},
)
BRATS_2023 = Convention(
    name="2023",
    separator="-",
    suffixes={"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"},
)
CONVENTIONS: dict[str, Convention] = {c.name: c for c in (BRATS_2021, BRATS_2023)}

NIFTI_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")


def strip_nifti_extension(filename: str) -> str | None:
    """The file name without `.nii`/`.nii.gz` (any case), or None if it is not a NIfTI name."""
    lower = filename.lower()
    for ext in NIFTI_EXTENSIONS:
        if lower.endswith(ext):
            return filename[: -len(ext)]
    return None


def parse_filename(filename: str) -> tuple[str, Convention, str] | None:
    """Split a BraTS file name into (case id, convention, role), matching on suffixes only.

    Longer suffixes are tried first so that `_t1ce` is never read as `_t1`.
    """
    stem = strip_nifti_extension(filename)
    if stem is None:
        return None
    candidates = [
        (conv.separator + suffix, conv, role)
        for conv in CONVENTIONS.values()
        for role, suffix in conv.suffixes.items()
    ]
    candidates.sort(key=lambda c: len(c[0]), reverse=True)
    lower = stem.lower()
    for tail, conv, role in candidates:
        if lower.endswith(tail) and len(stem) > len(tail):
            return stem[: -len(tail)], conv, role
    return None
