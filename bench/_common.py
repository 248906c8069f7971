"""Helpers shared by the benchmark scripts: where the data comes from, and timing."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def best_of(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls (seconds): the least disturbed measurement."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def raw_dataset(raw: str | None, tmp: Path, cases: int = 6) -> Path:
    """The real BraTS-space samples if present, else full-size synthetic cases."""
    if raw:
        return Path(raw)
    if REALDATA.is_dir():
        return REALDATA
    from brats.synth import SynthConfig, synth_dataset

    out = tmp / "raw"
    synth_dataset(out, SynthConfig(cases=cases, shape=(240, 240, 155)), progress=False)
    return out
