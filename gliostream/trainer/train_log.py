"""The per-epoch training log: CSV and the PNG of the training curves."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..files import replaced_on_success


# Validation Dice (legacy and lesion-wise) is out of fit: each case postprocessed by the rule chosen
# on the other validation cases; the *_raw columns without postprocessing.
def log_columns(regions: tuple[str, ...] = ("wt", "tc", "et")) -> list[str]:
    """The CSV's columns for a run training these regions."""
    def each(pattern: str) -> list[str]:
        return [pattern.format(r) for r in regions]
    return (["epoch", "train_loss", *each("dice_{}"), "dice_mean", *each("dice_{}_raw"), *each("lw_dice_{}"),
             *each("min_voxels_{}"), "et_min_voxels", "postprocess_searched", "lr", "grad_norm_p50", "grad_norm_p99",
             "grad_norm_max", "clipped_share", "updates", "patches", "patches_per_s", "data_wait", "peak_gpu_mib",
             "peak_gpu_reserved_mib", "seconds"])


LOG_COLUMNS = log_columns()
REGION_COLOURS = {"wt": "tab:green", "tc": "goldenrod", "et": "tab:red", "rc": "tab:blue", "cc": "tab:cyan",
                  "gtv": "tab:green"}


def write_log(path: Path, rows: list[dict[str, Any]], regions: tuple[str, ...] = ("wt", "tc", "et")) -> None:
    """Rewrite the whole CSV (atomic rename) from the history kept in the checkpoint."""
    with replaced_on_success(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=log_columns(regions), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(path: Path, rows: list[dict[str, Any]], loss_name: str = "region Dice + BCE",
                best_epoch: int | None = None, regions: tuple[str, ...] = ("wt", "tc", "et")) -> None:
    """Training loss with the lr, and validation Dice (each region, mean; lesion-wise mean dashed),
    on one epoch axis; the best epoch (best.pt) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4.6), sharex=True)
    epochs = [r["epoch"] for r in rows]
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker=".", color="tab:blue", label="training loss")
    ax_loss.set(xlabel="epoch", ylabel=f"training loss ({loss_name}, deep-supervised)", title="Loss and learning rate")
    ax_lr = ax_loss.twinx()
    ax_lr.plot(epochs, [r["lr"] for r in rows], color="tab:gray", linestyle=":", label="lr")
    ax_lr.set_ylabel("learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    validated = [r for r in rows if r.get("dice_mean") not in (None, "")]
    shown = [(f"dice_{r}", r.upper(), REGION_COLOURS.get(r, "tab:olive")) for r in regions]
    for key, name, color in [*shown, ("dice_mean", "mean", "black")]:
        ax_dice.plot([r["epoch"] for r in validated], [r[key] for r in validated], marker=".", label=name, color=color)
    lesionwise = [r for r in validated if all(r.get(f"lw_dice_{k}") not in (None, "") for k in regions)]
    if lesionwise:
        ax_dice.plot([r["epoch"] for r in lesionwise],
                     [sum(r[f"lw_dice_{k}"] for k in regions) / len(regions) for r in lesionwise],
                     marker=".", color="black", linestyle="--", label="lesion-wise mean")
    if best_epoch is not None:
        for ax in (ax_loss, ax_dice):
            ax.axvline(best_epoch, color="tab:purple", alpha=0.5, linewidth=1)
        ax_dice.annotate(f"best.pt (epoch {best_epoch})", (best_epoch, 0.02), color="tab:purple", fontsize=8,
                         ha="right", rotation=90, va="bottom")
    ax_dice.set(xlabel="epoch", ylabel="validation Dice", ylim=(0, 1), title="Validation Dice (held-out cases)")
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = ax_loss.get_legend_handles_labels()[0] + ax_lr.get_legend_handles_labels()[0]
    ax_loss.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax_dice.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=5, frameon=False, fontsize=8)
    fig.tight_layout()
    with replaced_on_success(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
