"""Where everything lives in a store, and how arrays are chunked and compressed.

Layout (schema v2; the typed attributes are in `schema.py`)::

    store/cases.zarr/               the Zarr v3 hierarchy: root group, attributes["brats"] = StoreAttrs
    store/cases.zarr/<case_id>/     one group per case, attributes["brats"] = CaseRecord
        image   (4, x, y, z) float16    z-scored t1, t1ce, t2, flair, cropped to the brain
        label   (x, y, z)    uint8      0 background, 1 necrosis, 2 edema, 3 enhancing (labelled cases)
        loc_wt, loc_tc, loc_et (n, 3) uint16   sampled tumour voxel coordinates per region
    store/index.csv                 one row per case (pandas-readable)
    store/ingest_report.csv         the last ingest run, one row per case
    store/.staging/ .trash/ .locks/ private to writers

Only Zarr lives in `cases.zarr/`, so zarr, Dask and xarray open and walk it without warnings;
the bookkeeping stays beside it. (Schema v1 kept the hierarchy at the store's top level.)

Chunking and codec were chosen by `bench/store_layout.py` (docs/benchmarks.md): zarr-python 3
costs ~0.5-1 ms per chunk touched, while LZ4 decodes a whole 26 MB cropped BraTS case in
~3 ms. So each case array is one chunk up to `MAX_CHUNK_BYTES` (a whole-case read then takes
~10 ms, against ~25 ms with 64^3 chunks, and a random 96^3 patch ~8 ms against ~13 ms), and
Blosc-LZ4 without shuffle compresses z-scored float16 with zero background better and faster
than with byte shuffle (ratio 2.3 vs 2.2, 11 vs 25 ms). No sharding: one chunk needs none,
and it rules out the known Dask/shard corruption.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from zarr.codecs import BloscCodec

from ..errors import StoreError

HIERARCHY = "cases.zarr"
METADATA = "zarr.json"
IMAGE = "image"
LABEL = "label"
LOCATION_PREFIX = "loc_"
LOCATION_DTYPE = np.uint16  # voxel coordinates in the cropped case (every side < 65,536)
INDEX_FILE = "index.csv"
REPORT_FILE = "ingest_report.csv"
MAX_CHUNK_BYTES = 128 * 1024 * 1024


def no_locations() -> np.ndarray:
    """The (0, 3) coordinates of a region a case does not have (or of an unlabelled case)."""
    return np.zeros((0, 3), dtype=LOCATION_DTYPE)
MAX_CASE_ID_BYTES = 200
RESERVED_CASE_IDS = {METADATA}  # a case named so would replace the store's own metadata file
WRITE_CONFIG = {"write_empty_chunks": True}  # skip zarr's all-fill scan: brain crops are never empty


def codec() -> BloscCodec:
    """The compressor of every array (see module docstring for the measurement)."""
    return BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")


def chunk_shape(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Whole array as one chunk, halving the longest spatial axis until under MAX_CHUNK_BYTES."""
    chunks = list(shape)
    spatial = range(len(shape) - 3, len(shape)) if len(shape) >= 3 else range(len(shape))
    while math.prod(chunks) * itemsize > MAX_CHUNK_BYTES:
        axis = max(spatial, key=lambda a: chunks[a])
        if chunks[axis] == 1:
            break
        chunks[axis] = math.ceil(chunks[axis] / 2)
    return tuple(max(1, c) for c in chunks)


def cases_dir(root: Path) -> Path:
    """The Zarr root group, whose children are the cases."""
    return root / HIERARCHY


def metadata_path(group_dir: Path) -> Path:
    """The Zarr metadata file of a group (the store's root group or a case)."""
    return group_dir / METADATA


def v1_metadata_path(root: Path) -> Path:
    """Where a schema v1 store kept its root group metadata."""
    return root / METADATA


def case_id_problem(case_id: str) -> str | None:
    """Why `case_id` cannot name a case, or None when it can.

    A case id names exactly one folder in `cases.zarr/` and nothing else: not a parent or a
    hidden folder, not a name Zarr gives meaning to (`zarr.json`, `__`-prefixed keys, in any
    letter case, for case-insensitive file systems), and no separator or control character.
    """
    if not case_id:
        return "case id is empty"
    if case_id.startswith("."):
        return "case id starts with '.', which could escape or hide in the store"
    if case_id.startswith("__"):
        return "case id starts with '__', which Zarr reserves"
    if case_id.lower() in RESERVED_CASE_IDS:
        return f"case id {case_id!r} is the name of the store's own metadata file"
    if any(ch in case_id for ch in ("/", "\\")) or any(not ch.isprintable() for ch in case_id):
        return "case id holds a path separator or a control character"
    if case_id != case_id.strip():
        return "case id starts or ends with white space"
    if len(case_id.encode("utf-8")) > MAX_CASE_ID_BYTES:
        return f"case id is longer than {MAX_CASE_ID_BYTES} bytes"
    return None


def case_dir(root: Path, case_id: str) -> Path:
    """The folder of one case; a case id that could address anything else is refused (StoreError)."""
    problem = case_id_problem(case_id)
    if problem:
        raise StoreError(f"{cases_dir(root)}: {problem} ({case_id!r})")
    return cases_dir(root) / case_id


def staging_dir(root: Path) -> Path:
    return root / ".staging"


def trash_dir(root: Path) -> Path:
    return root / ".trash"


def locks_dir(root: Path) -> Path:
    return root / ".locks"


def stale_dir(root: Path) -> Path:
    """Markers of cases whose raw files changed and whose new version was rejected."""
    return root / ".stale"


def index_path(root: Path) -> Path:
    return root / INDEX_FILE


def report_path(root: Path) -> Path:
    return root / REPORT_FILE
