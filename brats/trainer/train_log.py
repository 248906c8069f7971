"""The per-epoch training log: CSV and the PNG of the training curves."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..files import replaced_on_success

# Validation Dice (legacy and lesion-wise) is out of fit: each case postprocessed by the rule chosen
# on the other validation cases; the *_raw columns without postprocessing.
LOG_COLUMNS = ["epoch", "train_loss", "dice_wt", "dice_tc", "dice_et", "dice_mean",
               "dice_wt_raw", "dice_tc_raw", "dice_et_raw", "lw_dice_wt", "lw_dice_tc", "lw_dice_et",
               "min_voxels_wt", "min_voxels_tc", "min_voxels_et", "et_min_voxels", "postprocess_searched",
               "lr", "grad_norm_p50", "grad_norm_p99", "grad_norm_max", "clipped_share", "updates", "patches",
               "patches_per_s", "data_wait", "peak_gpu_mib", "peak_gpu_reserved_mib", "seconds"]


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole CSV (atomic rename) from the history kept in the checkpoint."""
    with replaced_on_success(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    """Training loss and validation Dice (WT, TC, ET, mean) against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in rows]
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker=".")
    ax_loss.set(xlabel="epoch", ylabel="training loss (deep-supervised region Dice)", title="Loss")
    validated = [r for r in rows if r.get("dice_mean") not in (None, "")]
    for key, name in (("dice_wt", "WT"), ("dice_tc", "TC"), ("dice_et", "ET"), ("dice_mean", "mean")):
        ax_dice.plot([r["epoch"] for r in validated], [r[key] for r in validated], marker=".", label=name)
    ax_dice.set(xlabel="epoch", ylabel="validation Dice", ylim=(0, 1), title="Validation Dice")
    ax_dice.legend(loc="lower right")
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with replaced_on_success(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
