"""Source fingerprints: how ingest tells unchanged cases from new or changed ones."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def file_stat(path: Path) -> dict[str, int]:
    """Size and modification time: the cheap first test of whether a file changed."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def case_fingerprint(file_hashes: dict[str, str], params: dict[str, Any]) -> str:
    """SHA-256 over the files' content hashes (by role) and the preprocessing parameters."""
    payload = json.dumps({"files": dict(sorted(file_hashes.items())), "params": params}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def stats_unchanged(record: dict[str, Any], files: dict[str, Path], params_fp: str) -> bool:
    """True when the stored record has the same roles, sizes, mtimes and parameters as the raw files."""
    if record.get("params_fingerprint") != params_fp:
        return False
    stored = record.get("source", {}).get("files", {})
    if set(stored) != set(files):
        return False
    try:
        return all(file_stat(p) == {k: stored[r][k] for k in ("size", "mtime_ns")} for r, p in files.items())
    except (OSError, KeyError):
        return False


def params_fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode("utf-8")).hexdigest()[:16]
