"""Pictures people look at before the numbers: one case's orthogonal slices with the outlines of
the reference and the prediction, and the summary plot of a score table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ..files import replaced_on_success
from ..labels import LEGACY_REGIONS, Region
from ..metrics import region_mask
from ..pipeline.naming import MODALITIES

REGION_COLOURS = {"wt": "#2ecc40", "tc": "#ffdc00", "et": "#ff4136", "rc": "#39cccc", "cc": "#b10dc9",
                  "gtv": "#2ecc40"}
REGION_NAMES = {"wt": "whole tumour", "tc": "tumour core", "et": "enhancing", "rc": "resection cavity",
                "cc": "cystic component", "gtv": "gross tumour volume"}
# TC is drawn wider than ET on top of it: where their borders coincide (an enhancing rim) both show.
REGION_LINES = {"wt": 1.3, "tc": 2.6, "et": 1.1, "rc": 1.3, "cc": 1.6, "gtv": 1.3}
SHOWN_MODALITIES = ("flair", "t1ce")
VIEWS = ("axial", "coronal", "sagittal")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The voxel axes reordered and flipped to R-A-S, so that every view is drawn upright."""
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                nib.orientations.axcodes2ornt("RAS"))
    return nib.orientations.apply_orientation(array, transform)


def _ras_spacing(spacing: tuple[float, ...], affine: np.ndarray) -> tuple[float, float, float]:
    order = nib.orientations.io_orientation(affine)[:, 0].astype(int)  # voxel axis -> RAS axis
    out = [1.0, 1.0, 1.0]
    for voxel_axis, ras_axis in enumerate(order):
        out[ras_axis] = float(spacing[voxel_axis])
    return out[0], out[1], out[2]


def _centre(*labels: np.ndarray | None) -> tuple[int, int, int]:
    """The centre of the first non-empty tumour among `labels`, else the volume's centre."""
    for label in labels:
        if label is not None and label.any():
            return tuple(int(round(c)) for c in np.argwhere(label > 0).mean(axis=0))  # type: ignore[return-value]
    shape = next(label.shape for label in labels if label is not None)
    return tuple(s // 2 for s in shape)  # type: ignore[return-value]


def _section(volume: np.ndarray, view: str, centre: tuple[int, int, int]) -> np.ndarray:
    """The slice of a RAS volume through `centre`, as rows (upward) x columns for `imshow`."""
    x, y, z = centre
    section = {"axial": volume[:, :, z], "coronal": volume[:, y, :], "sagittal": volume[x, :, :]}[view]
    return section.T


def _aspect(view: str, spacing: tuple[float, float, float]) -> float:
    sx, sy, sz = spacing
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[view]


def _panels(reference: np.ndarray | None) -> list[tuple[str, str]]:
    """(modality, outline) per column: each modality with the reference, then with the prediction."""
    outlines = ("reference", "prediction") if reference is not None else ("prediction",)
    return [(m, o) for m in SHOWN_MODALITIES for o in outlines]


def case_figure(path: Path, case_id: str, image: np.ndarray, reference: np.ndarray | None,
                prediction: np.ndarray, affine: np.ndarray, spacing: tuple[float, ...],
                scores: Mapping[str, float] | None = None, regions: tuple[Region, ...] = LEGACY_REGIONS) -> Path:
    """Write a PNG: the axial, coronal and sagittal slices through the tumour's centre (rows) of
    FLAIR and T1ce, each outlined once with the reference and once with the prediction (columns),
    each region (WT, TC, ET, ...) in its colour. Arrays share one grid (image (4, x, y, z))."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    volumes = {}
    for modality in SHOWN_MODALITIES:
        volume = _to_ras(np.asarray(image[MODALITIES.index(modality)], dtype=np.float32), affine)
        inside = volume[volume != 0]
        window = np.percentile(inside, (0.5, 99.5)) if inside.size else (0.0, 1.0)
        volumes[modality] = (np.ma.masked_equal(volume, 0), window)  # outside the brain: black
    ras_labels = {"reference": _to_ras(reference, affine) if reference is not None else None,
                  "prediction": _to_ras(prediction, affine)}
    outlines = {name: {r.name: region_mask(labels, r) for r in regions}
                for name, labels in ras_labels.items() if labels is not None}
    ras_spacing = _ras_spacing(spacing, affine)
    centre = _centre(ras_labels["reference"], ras_labels["prediction"])
    panels = _panels(reference)
    fig, axes = plt.subplots(len(VIEWS), len(panels), figsize=(3.1 * len(panels), 9.6), facecolor="black",
                             squeeze=False)
    cmap = plt.get_cmap("gray").with_extremes(bad="black")
    for row, view in enumerate(VIEWS):
        for col, (modality, outline) in enumerate(panels):
            ax = axes[row, col]
            volume, (low, high) = volumes[modality]
            ax.imshow(_section(volume, view, centre), cmap=cmap, vmin=low, vmax=high, origin="lower",
                      aspect=_aspect(view, ras_spacing), interpolation="nearest")
            for region, volume_mask in outlines[outline].items():
                mask = _section(volume_mask, view, centre)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=REGION_COLOURS[region], linewidths=REGION_LINES[region])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("black")
            if row == 0:
                ax.set_title(f"{'FLAIR' if modality == 'flair' else 'T1ce'} + {outline}", color="white", fontsize=11)
            if col == 0:
                ax.set_ylabel(view, color="white", fontsize=11)
    title = case_id
    if scores:
        scored = [r.name for r in regions if f"dice_{r.name}" in scores]
        title += "\nDice " + "  ".join(f"{r.upper()} {scores[f'dice_{r}']:.3f}" for r in scored)
        if scored and f"lw_dice_{scored[0]}" in scores:
            title += "     lesion-wise " + "  ".join(f"{r.upper()} {scores[f'lw_dice_{r}']:.3f}" for r in scored)
    fig.suptitle(title, color="white", fontsize=12)
    handles = [Line2D([], [], color=REGION_COLOURS[r.name], lw=2, label=f"{r.name.upper()} ({REGION_NAMES[r.name]})")
               for r in regions]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_on_success(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, facecolor="black")
    plt.close(fig)
    return path


FAMILIES = (("legacy (whole volume)", "#4c78a8", "dice_{}", "hd95_{}"),
            ("lesion-wise 2023", "#f58518", "lw_dice_{}", "lw_hd95_{}"),
            ("official, global (BraTS-evaluation)", "#54a24b", "global_dsc_{}", "global_hd95_{}"))
"""Each metric family of the plot: its name, colour, and its Dice and HD95 columns per region."""


def plot_scores(cases: pd.DataFrame, path: Path, challenge: str, model: str | None = None) -> None:
    """Dice and HD95 of each region, each metric family in the table side by side: boxes, the cases
    as points and the mean written above each box; `model` (the checkpoints) named in the title."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    regions = [c.removeprefix("dice_") for c in cases.columns if c.startswith("dice_")]
    families = [f for f in FAMILIES if f[2].format(regions[0]) in cases.columns]
    width = 0.8 / len(families)
    offsets = [(i - (len(families) - 1) / 2) * width for i in range(len(families))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes, ("dice", "hd95"), strict=True):
        for offset, (_, colour, dice_column, hd95_column) in zip(offsets, families, strict=True):
            column = dice_column if metric == "dice" else hd95_column
            data = [cases[column.format(r)].astype(float).dropna().to_numpy() for r in regions]  # NaN: empty pairs
            positions = [i + offset for i in range(len(regions))]
            boxes = ax.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True, showfliers=False,
                               medianprops={"color": "black"})
            for patch in boxes["boxes"]:
                patch.set(facecolor=colour, alpha=0.45, edgecolor=colour)
            for x, values in zip(positions, data, strict=True):
                ax.scatter(x + rng.uniform(-width / 5, width / 5, values.size), values, s=9, color=colour, zorder=3,
                           edgecolors="none")
                mean = float(np.mean(values)) if values.size else float("nan")
                text = f"{mean:.3f}" if metric == "dice" else f"{mean:.1f}"
                ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"), ha="center", va="bottom",
                            fontsize=7 if len(families) > 2 else 8, color=colour)
        ax.set_xticks(range(len(regions)), [f"{r.upper()}\n{REGION_NAMES[r]}" for r in regions])
        ax.grid(axis="y", alpha=0.3)
        if metric == "dice":
            ax.set(ylabel="Dice (higher is better)", ylim=(0, 1.02))
        else:
            ax.set_yscale("symlog", linthresh=1.0)
            ax.set(ylabel="HD95, mm, log scale (lower is better)", ylim=(0, 1500))
        if metric == "hd95":
            ax.axhline(374.0, color="grey", ls=":", lw=1)
            # Above the line, where no case can lie (374 mm is the largest distance a case scores).
            ax.annotate("374: a missed lesion or a false positive", (0.98, 374.0), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", ha="right", va="bottom", fontsize=8, color="grey")
        ax.set_title("Dice" if metric == "dice" else "95% Hausdorff distance", pad=16)
    handles = [Patch(facecolor=c, alpha=0.6, label=f"{name}, mean above") for name, c, _, _ in families]
    fig.legend(handles=handles, loc="lower center", ncol=len(families), frameon=False)
    source = f"model {model}" if model else "segmentations read from files"
    fig.suptitle(f"{source}: {len(cases)} case(s) scored; lesion-wise by the BraTS 2023 {challenge} rules",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    fig.savefig(path, format="png", dpi=100)  # the caller renames it into place with the report
    plt.close(fig)
