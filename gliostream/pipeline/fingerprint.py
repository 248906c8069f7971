"""Source fingerprints: how ingest tells unchanged cases from new or changed ones."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..store.schema import CaseRecord


def file_stat(path: Path) -> dict[str, int]:
    """Size and modification time: the cheap first test of whether a file changed."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def case_fingerprint(file_hashes: dict[str, str], params: dict[str, Any]) -> str:
    """SHA-256 over the files' content hashes (by role) and the preprocessing parameters."""
    payload = json.dumps({"files": dict(sorted(file_hashes.items())), "params": params}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def stats_unchanged(record: CaseRecord, files: dict[str, Path], params_fp: str) -> bool:
    """True when the stored record has the same roles, sizes, mtimes and parameters as the raw files."""
    if record.params_fingerprint != params_fp or set(record.source_files) != set(files):
        return False
    try:
        for role, path in files.items():
            stored = record.source_files[role]
            if file_stat(path) != {"size": stored.size, "mtime_ns": stored.mtime_ns}:
                return False
    except OSError:
        return False
    return True


def params_fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode("utf-8")).hexdigest()[:16]
