"""BraTS naming and label conventions (2018-2021 and 2023+), in one table."""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
"""Channel order of every image in the store."""


@dataclass(frozen=True)
class Convention:
    """How one BraTS edition names its files and labels its segmentations."""

    name: str
    separator: str
    suffixes: dict[str, str]  # role (a modality or "seg") -> file-name suffix
    labels: tuple[int, ...]  # values allowed in the seg file
    enhancing_label: int

    def to_store_labels(self) -> dict[int, int]:
        """Raw label -> store label (0 background, 1 necrosis, 2 edema, 3 enhancing)."""
        return {0: 0, 1: 1, 2: 2, self.enhancing_label: 3}

    def from_store_labels(self) -> dict[int, int]:
        """Store label -> raw label of this convention (for exported predictions)."""
        return {v: k for k, v in self.to_store_labels().items()}


BRATS_2021 = Convention(
    name="2021",
    separator="_",
    suffixes={"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"},
    labels=(0, 1, 2, 4),
    enhancing_label=4,
)
BRATS_2023 = Convention(
    name="2023",
    separator="-",
    suffixes={"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"},
    labels=(0, 1, 2, 3),
    enhancing_label=3,
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
