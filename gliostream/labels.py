"""The regions a model predicts (each a set of store labels), and the adult-glioma labels and
regions of the stores and checkpoints made before tasks existed; every task's are in `tasks.py`.

Glioma labels as the store keeps them: 1 necrosis / non-enhancing core, 2 edema / surrounding FLAIR
hyperintensity, 3 enhancing tumour (4 in BraTS 2018-2021 files), 4 resection cavity (2024+).
"""

from __future__ import annotations

from dataclasses import dataclass

NECROSIS, EDEMA, ENHANCING = 1, 2, 3


@dataclass(frozen=True)
class Region:
    """One predicted region: its name, the store labels in it, the label its own voxels decode to,
    and the region it lies inside (None: decoded on its own)."""

    name: str
    labels: tuple[int, ...]
    paint: int
    parent: str | None = None
    title: str = ""


LEGACY_REGIONS: tuple[Region, ...] = (Region("wt", (1, 2, 3), 2, None, "whole tumour"),
                                      Region("tc", (1, 3), 1, "wt", "tumour core"),
                                      Region("et", (3,), 3, "tc", "enhancing tumour"))
"""Adult glioma's WT, TC, ET: the regions of stores and checkpoints of brats <= 0.4."""

REGIONS: dict[str, tuple[int, ...]] = {r.name: r.labels for r in LEGACY_REGIONS}
"""Whole tumour, tumour core, enhancing tumour: region name -> store labels, in nesting order."""


def removed_becomes(region: Region, regions: tuple[Region, ...]) -> int:
    """What a removed component of `region` turns into: its parent's paint label (the regions stay
    nested), or background."""
    return 0 if region.parent is None else next(r.paint for r in regions if r.name == region.parent)


CONVENTION_NAMES: tuple[str, ...] = ("2021", "2023")
"""The label conventions a stored case may be exported in (`pipeline.naming.CONVENTIONS`)."""
