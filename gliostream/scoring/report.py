"""The BraTS-layout score table: one row per case, then Mean, StdDev, Median, 25quantile, 75quantile.

Columns: the legacy (whole-volume) Dice and HD95, the other legacy metrics, then the lesion-wise
Dice, HD95 and lesion counts of the BraTS 2023 rules, then the official evaluation's columns
(BraTS-evaluation's names, group by group), each family when it was asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..labels import REGIONS
from ..lesionwise import LESION_METRICS
from ..metrics import METRICS
from ..official import official_columns
from ..tasks import TASKS, Task

FIRST_COLUMNS = ["case_id"] + [f"{m}_{r}" for m in ("dice", "hd95") for r in REGIONS]
LEGACY_COLUMNS = FIRST_COLUMNS + [f"{m}_{r}" for m in METRICS if m not in ("dice", "hd95") for r in REGIONS]
LESION_COLUMNS = [f"{m}_{r}" for m in LESION_METRICS for r in REGIONS]
COLUMNS = LEGACY_COLUMNS + LESION_COLUMNS
SUMMARY_ROWS = ("Mean", "StdDev", "Median", "25quantile", "75quantile")
OFFICIAL_SUMMARY = ("global_dsc", "global_nsd", "global_hd95", "lesionwise_dsc_mean", "lesionwise_hd95_mean",
                    "all_instance_f1")


def table_columns(metrics: tuple[str, ...] | None = None, task: Task = TASKS["GLI"]) -> list[str]:
    """The report's columns for these metric families (`scoring.settings.METRIC_FAMILIES`) of a
    task: its scored regions' legacy and lesion-wise ones, then its official label groups'."""
    metrics = metrics or ("legacy", "lesionwise-2023")
    regions = task.scored
    columns = ["case_id"] + [f"{m}_{r}" for m in ("dice", "hd95") for r in regions]
    columns += [f"{m}_{r}" for m in METRICS if m not in ("dice", "hd95") for r in regions]
    if "lesionwise-2023" in metrics:
        columns += [f"{m}_{r}" for m in LESION_METRICS for r in regions]
    if "official" in metrics:
        columns += official_columns(task.evaluation)
    return columns


def table_regions(table: pd.DataFrame) -> list[str]:
    """The regions a score table scores (its legacy Dice columns)."""
    return [c.removeprefix("dice_") for c in table.columns if c.startswith("dice_")]


def score_table(rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> pd.DataFrame:
    """Per-case rows (sorted by case id) followed by the summary statistics of every column; NaN
    (the official evaluation's empty pairs) is left out of them, as the official parser does."""
    cases = pd.DataFrame(rows, columns=columns).sort_values("case_id", kind="stable").reset_index(drop=True)
    values = cases[columns[1:]].astype(float)
    with np.errstate(invalid="ignore"):  # the official lesion-wise HD95 of a case without a match is inf
        stats = [values.mean(), values.std(ddof=0), values.median(), values.quantile(0.25), values.quantile(0.75)]
    summary = pd.DataFrame(stats, columns=columns[1:])
    summary.insert(0, "case_id", SUMMARY_ROWS)
    return pd.concat([cases, summary], ignore_index=True)


def case_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The per-case rows of a score table (without the summary rows)."""
    return table[~table["case_id"].isin(SUMMARY_ROWS)]


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write the CSV (the caller renames it into place with its provenance and plot)."""
    table.to_csv(path, index=False, float_format="%.6g")


def summary_text(table: pd.DataFrame, challenge: str = "GLI", evaluation: str = "gli") -> str:
    """The summary rows of Dice and HD95, legacy and lesion-wise, as two printable tables."""
    summary = table[table["case_id"].isin(SUMMARY_ROWS)].set_index("case_id")
    summary.index.name = None
    blocks = []
    for title, prefix in (("legacy (whole volume)", ""), (f"lesion-wise (BraTS 2023 {challenge} rules)", "lw_")):
        columns = [f"{prefix}{m}_{r}" for m in ("dice", "hd95") for r in table_regions(table)]
        if columns[0] not in summary:
            continue
        block = summary[columns].rename(columns=lambda c: c.removeprefix("lw_"))
        blocks.append(f"{title}\n{block.to_string(float_format=lambda v: f'{v:.4f}')}")
    groups = [c.removeprefix("global_dsc_") for c in summary.columns if c.startswith("global_dsc_")]
    if groups:
        means = pd.DataFrame([[summary.at["Mean", f"{m}_{g}"] for m in OFFICIAL_SUMMARY] for g in groups],
                             index=groups, columns=list(OFFICIAL_SUMMARY))
        title = f"official (BraTS-evaluation, {evaluation} groups), mean over cases"
        blocks.append(f"{title}\n{means.to_string(float_format=lambda v: f'{v:.4f}')}")
    return "\n\n".join(blocks)


def worst_cases(table: pd.DataFrame, count: int = 5) -> pd.DataFrame:
    """The `count` cases of lowest mean legacy Dice over the regions, worst first, with that mean."""
    cases = case_rows(table).copy()
    cases["mean_dice"] = cases[[f"dice_{r}" for r in table_regions(table)]].astype(float).mean(axis=1)
    return cases.sort_values(["mean_dice", "case_id"], kind="stable").head(count)
