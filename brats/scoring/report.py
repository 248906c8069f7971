"""The BraTS-layout score table: one row per case, then Mean, StdDev, Median, 25quantile, 75quantile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..files import replaced_on_success
from ..metrics import METRICS, REGIONS

FIRST_COLUMNS = ["case_id"] + [f"{m}_{r}" for m in ("dice", "hd95") for r in REGIONS]
COLUMNS = FIRST_COLUMNS + [f"{m}_{r}" for m in METRICS if m not in ("dice", "hd95") for r in REGIONS]
SUMMARY_ROWS = ("Mean", "StdDev", "Median", "25quantile", "75quantile")


def score_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per-case rows (sorted by case id) followed by the summary statistics of every column."""
    cases = pd.DataFrame(rows, columns=COLUMNS).sort_values("case_id", kind="stable").reset_index(drop=True)
    values = cases[COLUMNS[1:]].astype(float)
    stats = [values.mean(), values.std(ddof=0), values.median(), values.quantile(0.25), values.quantile(0.75)]
    summary = pd.DataFrame(stats, columns=COLUMNS[1:])
    summary.insert(0, "case_id", SUMMARY_ROWS)
    return pd.concat([cases, summary], ignore_index=True)


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write the CSV at once (temporary file, then rename): never a partial report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_on_success(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def summary_text(table: pd.DataFrame) -> str:
    """The summary rows of Dice and HD95, as a printable table."""
    summary = table[table["case_id"].isin(SUMMARY_ROWS)][FIRST_COLUMNS].set_index("case_id")
    summary.index.name = None
    return summary.to_string(float_format=lambda v: f"{v:.4f}")


def plot_dice(table: pd.DataFrame, path: Path) -> None:
    """Box plot (with the cases as points) of the Dice of each region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = table[~table["case_id"].isin(SUMMARY_ROWS)]
    data = [cases[f"dice_{r}"].astype(float).to_numpy() for r in REGIONS]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.boxplot(data, showmeans=True)
    for i, values in enumerate(data, start=1):
        ax.scatter([i] * len(values), values, s=8, alpha=0.5, color="black")
    ax.set_xticks(range(1, len(REGIONS) + 1), [r.upper() for r in REGIONS])
    ax.set(ylabel="Dice", ylim=(0, 1.02), title=f"Dice per region ({len(cases)} cases)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with replaced_on_success(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
