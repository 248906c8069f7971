"""Small-integer voxels as unsigned codes, so lookups and histograms replace arithmetic."""

from __future__ import annotations

import numpy as np


def unsigned_view(arr: np.ndarray) -> np.ndarray | None:
    """A same-memory unsigned view of a native-order integer array of at most 16 bits, or None
    for other types (a byte-swapped array's codes would not be its values)."""
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize > 2 or not arr.dtype.isnative:
        return None
    return arr.view(np.dtype(f"u{arr.dtype.itemsize}"))


def table_size(codes: np.ndarray) -> int:
    """Entries of a lookup table indexed by every possible code of `codes`."""
    return 1 << (8 * codes.dtype.itemsize)
