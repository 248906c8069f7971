"""The store's case index: one pandas-readable CSV row per case, rebuilt from case records."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..faults import fault_point
from ..files import replaced_on_success
from ..tasks import ALL_REGIONS
from . import layout
from .locks import store_lock
from .reader import scan_cases
from .schema import CaseRecord
from .stale import stale_cases

INDEX_COLUMNS = [
    "case_id", "labelled", "task", "convention", "size_x", "size_y", "size_z", "brain_voxels",
    *[f"{r}_voxels" for r in ALL_REGIONS], "has_et", "spacing", "source_dir", "fingerprint", "ingested_at", "stale",
]


def _row(record: CaseRecord, stale: bool) -> dict:
    """One index row; `brain_voxels` counts the non-zero voxels of the fullest modality."""
    shape = record.cropped_shape
    voxels = record.voxels
    return {
        "case_id": record.case_id, "labelled": record.labelled, "task": record.task, "convention": record.convention,
        "size_x": shape[0], "size_y": shape[1], "size_z": shape[2], "brain_voxels": voxels.get("brain", 0),
        **{f"{r}_voxels": voxels.get(r, 0) for r in ALL_REGIONS},
        "has_et": voxels.get("et", 0) > 0, "spacing": "x".join(f"{s:g}" for s in record.spacing),
        "source_dir": record.source_dir, "fingerprint": record.fingerprint, "ingested_at": record.ingested_at,
        "stale": stale,
    }


def build_index(root: str | Path) -> pd.DataFrame:
    """Index of the sound cases, from their records (the source of truth); damaged ones are left
    out (`brats verify` names them), stale ones flagged (`stale.py`)."""
    root = Path(root)
    stale = stale_cases(root)
    rows = [_row(r, cid in stale) for cid, r in scan_cases(root).records.items()]
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def write_index(root: str | Path) -> pd.DataFrame:
    """Rebuild `index.csv` atomically under the store lock; returns it."""
    root = Path(root)
    with store_lock(root):
        for stale in root.glob(f".{layout.INDEX_FILE}.*"):  # left by a killed writer; we hold the lock
            stale.unlink(missing_ok=True)
        df = build_index(root)
        with replaced_on_success(layout.index_path(root)) as tmp:
            df.to_csv(tmp, index=False)
            fault_point("index:tmp-written")
    return df


def read_index(root: str | Path) -> pd.DataFrame:
    """The index as written by the last ingest (falls back to a fresh build if absent)."""
    path = layout.index_path(Path(root))
    if not path.exists():
        return build_index(root)
    return pd.read_csv(path, dtype={"case_id": str, "fingerprint": str}, keep_default_na=False)
