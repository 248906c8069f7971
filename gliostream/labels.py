"""The tumour labels as the store keeps them, and the nested BraTS regions made of them.

Every edition's labels are mapped to these at ingest (`pipeline.naming.Convention`): 1 necrosis
(with non-enhancing core), 2 edema, 3 enhancing tumour (4 in BraTS 2018-2021 files).
"""

from __future__ import annotations

NECROSIS, EDEMA, ENHANCING = 1, 2, 3

REGIONS: dict[str, tuple[int, ...]] = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}
"""Whole tumour, tumour core, enhancing tumour: region name -> store labels, in nesting order."""

CONVENTION_NAMES: tuple[str, ...] = ("2021", "2023")
"""The label conventions a stored case may be exported in (`pipeline.naming.CONVENTIONS`)."""
