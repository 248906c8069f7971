"""Derived seeds: one master seed, independent streams per (purpose, epoch, ...)."""

from __future__ import annotations

import numpy as np

PATCHES, ORDER, SHUFFLE, AUGMENT, SPLIT, INIT = range(6)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (stable across processes, unlike `hash` of a str)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)
