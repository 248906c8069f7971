"""Real tumours: train a preset on real BraTS cases and score it on real cases it never saw.

Ingests the labelled cases of ../shared/realdata (or --raw), holds out a fixed, seeded set of
--heldout cases, trains the preset (`configs/real-cpu.toml` by default) on the others with
`brats train` (its own seeded validation share chooses best.pt and the ET postprocessing
threshold), then scores the held-out cases with `brats score`, with and without the
postprocessing. Prints per-case and mean Dice/HD95, the training time (validation excluded)
and the machine. Everything goes through the command line, as a user would run it.

    python bench/real.py [--config configs/real-cpu.toml] [--work DIR] [--heldout 6] [-- extra train options]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REALDATA, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BRATS = [sys.executable, "-m", "brats"]
SEED = 2026  # the held-out draw; fixed so every preset is judged on the same cases


def held_out(ids: list[str], count: int) -> list[str]:
    order = sorted(ids)
    random.Random(f"bench-real-{SEED}").shuffle(order)
    return sorted(order[:count])


def run(args: list[str]) -> None:
    print("$ brats " + " ".join(args), flush=True)
    subprocess.run(BRATS + args, check=True, cwd=ROOT)


def summary(csv: Path) -> pd.DataFrame:
    table = pd.read_csv(csv)
    columns = [f"{m}_{r}" for m in ("dice", "hd95", "lw_dice", "lw_hd95") for r in ("wt", "tc", "et")]
    return table.set_index("case_id")[columns].rename(columns=lambda c: c.replace("lw_", "lw"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=str(REALDATA))
    parser.add_argument("--config", default=str(ROOT / "configs" / "real-cpu.toml"))
    parser.add_argument("--work", default=str(ROOT / "data" / "bench-real"))
    parser.add_argument("--heldout", type=int, default=6)
    parser.add_argument("--skip-train", action="store_true", help="score the run already in --work")
    parser.add_argument("train_options", nargs="*", help="extra `brats train` options (after --)")
    options = parser.parse_args()
    work = Path(options.work).resolve()
    store, run_dir = work / "store", work / "run"
    run(["ingest", options.raw, "--out", str(store)])
    index = pd.read_csv(store / "index.csv")
    labelled = sorted(index.loc[index.labelled, "case_id"])
    test = held_out(labelled, options.heldout)
    train = [c for c in labelled if c not in test]
    (work / "heldout.txt").write_text("\n".join(test) + "\n")
    print(f"{len(labelled)} labelled cases: training on {len(train)} (with its validation share), "
          f"held out {len(test)}: {', '.join(test)}", flush=True)
    if not options.skip_train:
        split = work / "train_cases.json"  # the training cases only; the preset's val-fraction is applied inside
        order = sorted(train)
        random.Random(f"bench-real-val-{SEED}").shuffle(order)
        n_val = max(1, round(0.2 * len(order)))
        split.write_text(json.dumps({"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}))
        run(["train", "--config", options.config, "--store", str(store), "--out", str(run_dir), "--device", "cpu",
             "--split-file", str(split), "--no-progress", *options.train_options])
    log = pd.read_csv(run_dir / "train_log.csv")
    results = {}
    for post in ("postprocess", "no-postprocess"):
        csv = run_dir / f"heldout_{post}.csv"
        start = time.perf_counter()
        run(["score", "--ckpt", str(run_dir / "best.pt"), "--store", str(store), "--cases", str(work / "heldout.txt"),
             "--out", str(csv), f"--{post}", "--device", "cpu", "--no-progress"])
        results[post] = (summary(csv), time.perf_counter() - start)
    print(f"\nmachine: {machine()}")
    print(f"training: {len(log)} epochs, {log.seconds.sum() / 60:.1f} min of training (validation excluded), "
          f"{log.patches_per_s.mean():.2f} patches/s; best.pt from epoch "
          f"{int(log.loc[log.dice_mean.idxmax(), 'epoch'])} (validation mean Dice {log.dice_mean.max():.3f})")
    best = log.loc[log.dice_mean.idxmax()]
    if "min_voxels_wt" in log:
        print("postprocessing chosen on the validation cases: minimum components WT/TC/ET "
              f"{best.min_voxels_wt:.0f}/{best.min_voxels_tc:.0f}/{best.min_voxels_et:.0f} voxels, "
              f"ET threshold {best.et_min_voxels:.0f}")
    for post, (table, seconds) in results.items():
        print(f"\nheld-out cases, {post} ({seconds:.0f} s to score): legacy, then lesion-wise (lw)")
        print(table.to_string(float_format=lambda v: f"{v:.3f}", line_width=200))


if __name__ == "__main__":
    main()
