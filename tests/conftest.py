"""Fixtures: tiny synthetic raw datasets and stores, the real cases, and the reliability table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gliostream.synth import SynthConfig, synth_dataset

from .helpers import REALDATA, TINY


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
    from gliostream.pipeline.ingest import run_ingest

    store = tmp_path_factory.mktemp("tiny") / "store"
    run_ingest(synth_raw_session, store, workers=0, progress=False)
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
