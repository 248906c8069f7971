"""Fixtures: tiny synthetic raw datasets and a helper to write hand-made cases."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats.pipeline.naming import CONVENTIONS, MODALITIES
from brats.synth import SynthConfig, synth_dataset

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
TINY = (40, 40, 32)


def brain_arrays(shape=TINY, seed=0, et=True):
    """Four int16 modalities of a box-shaped brain with a small nested tumour, plus a 2021 seg."""
    rng = np.random.default_rng(seed)
    mods = []
    brain = np.zeros(shape, bool)
    brain[5:-5, 6:-6, 4:-4] = True
    for c in range(len(MODALITIES)):
        m = (rng.normal(500 + 100 * c, 50, shape) * brain).astype(np.int16)
        mods.append(m)
    seg = np.zeros(shape, np.uint8)
    seg[15:25, 15:25, 12:20] = 2
    seg[17:23, 17:23, 14:18] = 4 if et else 1
    seg[19:21, 19:21, 15:17] = 1
    return mods, seg


def write_case(folder: Path, case_id: str, mods, seg=None, naming: str = "2021", affine=None,
               endianness: str = "<") -> Path:
    """Write arrays as a raw case in `naming` layout (`endianness` ">" for big-endian files);
    returns the case folder."""
    conv = CONVENTIONS[naming]
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) if affine is None else affine
    roles = list(zip(MODALITIES, mods))
    if seg is not None:
        roles.append(("seg", seg))
    for role, arr in roles:
        header = nib.Nifti1Header(endianness=endianness)
        header.set_data_dtype(arr.dtype)
        nib.save(nib.Nifti1Image(arr, affine, header=header),
                 folder / f"{case_id}{conv.separator}{conv.suffixes[role]}.nii.gz")
    return folder


@pytest.fixture(scope="session")
def synth_raw_session(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "raw"
    synth_dataset(out, SynthConfig(cases=4, shape=TINY, seed=1), progress=False)
    return out


@pytest.fixture
def synth_raw(synth_raw_session, tmp_path) -> Path:
    """A private copy of 4 tiny synthetic 2021-named cases (case 3 has no enhancing tumour)."""
    dst = tmp_path / "raw"
    shutil.copytree(synth_raw_session, dst)
    return dst


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is absent")
    return REALDATA


@pytest.fixture(scope="session")
def tiny_store(synth_raw_session, tmp_path_factory) -> Path:
    """A store ingested in-process from the 4 tiny synthetic cases (read-only for tests)."""
    from brats.pipeline.ingest import run_ingest

    store = tmp_path_factory.mktemp("tiny") / "store"
    run_ingest(synth_raw_session, store, workers=0, progress=False)
    return store


def ingest_cases(tmp_path: Path, cases: dict[str, tuple[list, np.ndarray | None]]) -> Path:
    """Write hand-made cases {id: (modalities, seg)} and ingest them in-process; returns the store."""
    from brats.pipeline.ingest import run_ingest

    raw = tmp_path / "raw"
    for case_id, (mods, seg) in cases.items():
        write_case(raw / case_id, case_id, mods, seg)
    store = tmp_path / "store"
    run_ingest(raw, store, workers=0, progress=False)
    return store


_RELIABILITY: list[dict] = []


@pytest.fixture(scope="session")
def reliability():
    """Record one row of docs/reliability.md: (kind, what was tried, trials, outcome, data lost)."""
    def record(kind: str, what: str, trials: int, outcome: str, lost: str = "none") -> None:
        _RELIABILITY.append({"kind": kind, "what": what, "trials": trials, "outcome": outcome, "lost": lost})
    return record


def pytest_sessionfinish(session, exitstatus):
    """With BRATS_RELIABILITY_REPORT=path, write the table of every fault and bad input tried."""
    import os

    path = os.environ.get("BRATS_RELIABILITY_REPORT")
    if not path or not _RELIABILITY:
        return
    lines = ["| kind | tried | times | outcome | data lost |", "|---|---|---|---|---|"]
    for row in _RELIABILITY:
        outcome = row["outcome"].replace("|", "\\|")
        lines.append(f"| {row['kind']} | {row['what']} | {row['trials']} | {outcome} | {row['lost']} |")
    Path(path).write_text("\n".join(lines) + "\n")
