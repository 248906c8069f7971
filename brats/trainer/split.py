"""The deterministic train/validation split of a store's labelled cases."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, StoreError
from ..store.reader import labelled_case_ids, list_case_ids


@dataclass(frozen=True)
class Split:
    train: list[str]
    val: list[str]


def split_cases(store: str | Path, val_fraction: float, split_file: str | None = None) -> Split:
    """Sorted labelled ids, the last `val_fraction` held out (or the lists of a JSON split file)."""
    all_ids = list_case_ids(Path(store))
    if not all_ids:
        raise StoreError(f"{store}: the store holds no case (run `brats ingest RAW --out {store}` first)")
    ids = labelled_case_ids(store)
    if not ids:
        raise StoreError(f"{store}: none of its {len(all_ids)} cases has a segmentation to train on")
    if split_file:
        return _read_split_file(split_file, set(ids))
    n_val = round(len(ids) * val_fraction)
    if val_fraction > 0:
        n_val = max(n_val, 1)
        if n_val >= len(ids):
            raise StoreError(f"{store}: {len(ids)} labelled case(s) cannot be split for validation; "
                             "ingest more or use --val-fraction 0")
    return Split(train=ids[:len(ids) - n_val], val=ids[len(ids) - n_val:])


def _read_split_file(path: str, labelled: set[str]) -> Split:
    try:
        data = json.loads(Path(path).read_text())
        train, val = list(data["train"]), list(data.get("val", []))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: not a split file {{\"train\": [ids], \"val\": [ids]}} ({error})") from None
    unknown = sorted(set(train + val) - labelled)
    if unknown:
        raise ConfigError(f"{path}: not labelled cases of the store: {', '.join(unknown[:5])}")
    if set(train) & set(val):
        raise ConfigError(f"{path}: cases in both train and val: {', '.join(sorted(set(train) & set(val))[:5])}")
    if not train:
        raise ConfigError(f"{path}: no training case")
    return Split(train=train, val=val)
