"""The BraTS tasks, one table: each task's labels and their names, the regions a model predicts
and how they decode to labels, and the parameters of its evaluations.

Store labels are the task's own labels as its 2023+ files write them (no lossy remap); the one
exception is the adult glioma of BraTS 2018-2021, whose enhancing tumour 4 is stored as 3 (2024+
glioma files use 4 for the resection cavity). Regions are sets of labels, each predicted by one
sigmoid channel; a region with a `parent` is decoded only inside its parent (nested, as WT > TC > ET),
one without is decoded on its own (the resection cavity is no part of the tumour). Decoding paints
the regions in order, each with its `paint` label, a later region over an earlier one (nnU-Net's
`regions_class_order`), so the innermost region decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .labels import LEGACY_REGIONS, Region
from .lesionwise import CHALLENGES, LesionRules


@dataclass(frozen=True)
class Task:
    """One BraTS task: its labels, regions, and evaluation parameters."""

    name: str
    title: str
    labels: dict[int, str]  # store label -> its name in the task (0, background, not listed)
    regions: tuple[Region, ...]
    evaluation: str  # the BraTS-evaluation config of its official metrics (`official.GROUPS`)
    lesion_rules: LesionRules  # the BraTS 2023 lesion-wise rules
    scored: tuple[str, ...] = ("wt", "tc", "et")  # the regions of the legacy and 2023 lesion-wise metrics

    @property
    def scored_regions(self) -> tuple[Region, ...]:
        """The regions the legacy and lesion-wise 2023 families score (WT, TC, ET as those
        evaluations defined them); the official family scores every label group."""
        return self.select(self.scored)

    def select(self, names: tuple[str, ...]) -> tuple[Region, ...]:
        """The task's regions of these names, in the task's order."""
        unknown = sorted(set(names) - {r.name for r in self.regions})
        if unknown:
            raise ConfigError(f"task {self.name} has no region {', '.join(unknown)}; its regions are "
                              f"{', '.join(r.name for r in self.regions)}")
        return tuple(r for r in self.regions if r.name in names)


_WT, _TC, _ET = LEGACY_REGIONS
_RC = Region("rc", (4,), 4, None, "resection cavity")
_GLIOMA_LABELS = {1: "NETC", 2: "SNFH", 3: "ET"}

TASKS: dict[str, Task] = {t.name: t for t in (
    Task("GLI", "adult glioma (2018-2021 and 2023 pre-operative, 2024+ post-treatment)",
         {**_GLIOMA_LABELS, 4: "RC"}, (_WT, _TC, _ET, _RC), "gli", CHALLENGES["GLI"]),
    Task("MET", "brain metastases", {**_GLIOMA_LABELS, 4: "RC"}, (_WT, _TC, _ET, _RC), "mets", CHALLENGES["MET"]),
    Task("PED", "paediatric tumours (2024+ labels)", {1: "ET", 2: "NETC", 3: "CC", 4: "ED"},
         (Region("wt", (1, 2, 3, 4), 4, None, "whole tumour"), Region("tc", (1, 2, 3), 2, "wt", "tumour core"),
          Region("cc", (3,), 3, "tc", "cystic component"), Region("et", (1,), 1, "tc", "enhancing tumour")),
         "ped", CHALLENGES["PED"]),
    Task("MEN", "meningioma, pre-operative", dict(_GLIOMA_LABELS), (_WT, _TC, _ET), "MenPre", CHALLENGES["MEN"]),
    Task("MEN-RT", "meningioma radiotherapy (gross tumour volume)", {1: "GTV"},
         (Region("gtv", (1,), 1, None, "gross tumour volume"),), "MenRT", CHALLENGES["MEN"],
         scored=("gtv",)),
    Task("SSA", "glioma, sub-Saharan Africa", dict(_GLIOMA_LABELS), (_WT, _TC, _ET), "gli", CHALLENGES["SSA"]),
    Task("GOAT", "generalisability across tumours", dict(_GLIOMA_LABELS), (_WT, _TC, _ET), "GoAT", CHALLENGES["GLI"]),
)}

ALL_REGIONS: tuple[str, ...] = tuple(dict.fromkeys(r.name for t in TASKS.values() for r in t.regions))
"""Every region name of any task."""



def regions_of(task_name: str, names: tuple[str, ...]) -> tuple[Region, ...]:
    """The regions a model predicts: `names` of the task (a config's `regions`), or WT, TC, ET for
    the configs of brats <= 0.4, which name none."""
    return task(task_name).select(names) if names else LEGACY_REGIONS


def task(name: str | None) -> Task:
    """The task of this name (case-insensitive; None: GLI); ConfigError naming the choices otherwise."""
    key = (name or "GLI").upper()
    if key not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[key]


def store_labels(chosen: Task, naming: str) -> dict[int, int]:
    """Raw label -> store label for files of this naming ("2021" or "2023"): the identity on the
    task's labels, except 2018-2021 glioma's 4 (enhancing), stored as 3."""
    if naming == "2021":
        return {0: 0, 1: 1, 2: 2, 4: 3}
    return {0: 0, **{label: label for label in chosen.labels}}


def raw_labels(chosen: Task, naming: str) -> dict[int, int]:
    """Store label -> raw label of this naming (for exported predictions)."""
    return {stored: raw for raw, stored in store_labels(chosen, naming).items()}
