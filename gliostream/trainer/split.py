"""The deterministic train/validation split of a store's labelled cases."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, StoreError
from ..store.reader import labelled_case_ids, list_case_ids


@dataclass(frozen=True)
class Split:
    train: list[str]
    val: list[str]


def shuffled(ids: list[str], seed: int) -> list[str]:
    """The sorted ids in a seeded random order: BraTS ids cluster by site, so no tail of the sorted
    list represents the data."""
    order = sorted(ids)
    random.Random(f"brats-split-{seed}").shuffle(order)
    return order


def fold_of(ids: list[str], folds: int, seed: int) -> dict[str, int]:
    """Each case's fold: the seeded order dealt round-robin, so folds are disjoint, cover the
    cases and differ in size by at most one."""
    return {case_id: i % folds for i, case_id in enumerate(shuffled(ids, seed))}


def split_cases(store: str | Path, val_fraction: float, split_file: str | None = None, seed: int = 0,
                folds: int = 0, fold: int = 0) -> Split:
    """The labelled ids split for training: fold `fold` of `folds` held out, or a seeded
    `val_fraction` of them, or the lists of a JSON split file."""
    all_ids = list_case_ids(Path(store))
    if not all_ids:
        raise StoreError(f"{store}: the store holds no case (run `brats ingest RAW --out {store}` first)")
    ids = labelled_case_ids(store)
    if not ids:
        raise StoreError(f"{store}: none of its {len(all_ids)} cases has a segmentation to train on")
    if split_file:
        return _read_split_file(split_file, set(ids))
    if folds:
        if len(ids) < folds:
            raise StoreError(f"{store}: {len(ids)} labelled case(s) cannot make {folds} folds")
        assignment = fold_of(ids, folds, seed)
        return Split(train=sorted(i for i in ids if assignment[i] != fold),
                     val=sorted(i for i in ids if assignment[i] == fold))
    n_val = round(len(ids) * val_fraction)
    if val_fraction > 0:
        n_val = max(n_val, 1)
        if n_val >= len(ids):
            raise StoreError(f"{store}: {len(ids)} labelled case(s) cannot be split for validation; "
                             "ingest more or use --val-fraction 0")
    order = shuffled(ids, seed)
    return Split(train=sorted(order[:len(ids) - n_val]), val=sorted(order[len(ids) - n_val:]))


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
