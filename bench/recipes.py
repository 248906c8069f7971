"""Patches per minute of the candidate CPU recipes, side by side in one run (issue 33).

Each recipe trains one epoch of --patches patches through the real training loop (no validation)
on a store of the real cases, with the CPU preset's other settings, and reports patches per
second and minute, the field of view a patch covers, and the tissue it sees per minute (field
volume times patches), each as a ratio to today's preset (1 mm, 96^3, base 8). Run it alone on
the machine: the recipes share its cores in turn, not at once.

    python bench/recipes.py [--raw DIR] [--patches 48] [--record]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, raw_dataset, record_results  # noqa: E402

from gliostream.pipeline.ingest import run_ingest  # noqa: E402
from gliostream.trainer.config import load_config  # noqa: E402
from gliostream.trainer.loop import run_training  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# name -> (downsample, model patch side, base channels); "today" first: the ratios' reference
RECIPES = {
    "today: 1 mm, 96^3, base 8": (1, 96, 8),
    "2 mm, 48^3, base 8": (2, 48, 8),
    "2 mm, 64^3, base 8": (2, 64, 8),
    "2 mm, 64^3, base 16": (2, 64, 16),
    "2 mm, 96^3, base 8": (2, 96, 8),
}


def throughput(store: Path, out: Path, recipe: tuple[int, int, int], patches: int) -> float:
    """Patches per second of one epoch of `patches` patches, no validation."""
    downsample, side, base = recipe
    preset = load_config(ROOT / "configs" / "real-cpu.toml", {})
    config = dataclasses.replace(
        preset, store=str(store), out=str(out), epochs=1, patches_per_epoch=patches, val_fraction=0.0,
        device="cpu", downsample=downsample, model=dataclasses.replace(preset.model, base_channels=base),
        stream=dataclasses.replace(preset.stream, patch_size=(side,) * 3))
    run_training(config, progress=False)
    return float(pd.read_csv(out / "train_log.csv").iloc[-1]["patches_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=None)
    parser.add_argument("--patches", type=int, default=48)
    parser.add_argument("--record", action="store_true", help="keep the table in docs/results/recipes.json")
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        run_ingest(raw_dataset(options.raw, Path(tmp)), store, workers=0, progress=False)
        for i, (name, recipe) in enumerate(RECIPES.items()):
            per_s = throughput(store, Path(tmp) / f"run{i}", recipe, options.patches)
            field = recipe[0] * recipe[1]
            rows.append({"recipe": name, "patches_per_s": per_s, "patches_per_min": 60 * per_s, "field_mm": field,
                         "tissue_cm3_per_min": 60 * per_s * field**3 / 1000})
    table = pd.DataFrame(rows).set_index("recipe")
    table["patches_x_today"] = table.patches_per_min / table.patches_per_min.iloc[0]
    table["tissue_x_today"] = table.tissue_cm3_per_min / table.tissue_cm3_per_min.iloc[0]
    print(f"machine: {machine()}; one epoch of {options.patches} patches each, no validation")
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    if options.record:
        record_results("recipes", {f"{k}|{c}": f"{v:.2f}" for k, row in table.iterrows()
                                   for c, v in row.items() if c != "field_mm"})


if __name__ == "__main__":
    main()
