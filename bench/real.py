"""Real tumours across institutions: train a preset on some sites' real cases, score it on other sites'.

Groups the labelled cases of ../shared/realdata (or --raw) by institution, read from the case id
(BraTS 2018 ids name the site: `Brats18_CBICA_...`, `_TCIA01_`, `_2013_`; BraTS 2021 and 2023 ids
and TCGA cases are groups of their own), and runs grouped folds, each trained on some groups and
scored on others:

- `sites`: every case of the minority sites held out at once, trained on the largest site only:
  how a model learnt at one hospital does at the others (the failure users meet);
- `within`: as many cases of the largest site held out, trained on the rest of it and all the
  other sites (how it does on a known site's new patients);
- `random`: the seeded random split of earlier benchmarks (6 held out), for comparison only.

Each fold trains the preset (`configs/real-cpu.toml` by default) with `brats train` (its seeded
validation share, inside the training groups, chooses best.pt and may change the postprocessing),
then scores the held-out cases with `brats score` as a user would: the defaults, without the
postprocessing, and with mirror TTA (`--tta`). The raw predictions are kept for the
postprocessing sweep (`bench/postprocess.py`). Prints per-case, per-group and mean legacy and
lesion-wise Dice and HD95, the training time (validation excluded) and the machine, and writes
them to WORK/results.json.

    python bench/real.py [--folds sites,within] [--config configs/real-cpu.toml] [--work DIR] [--no-tta]
                         [-- extra train options]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REALDATA, machine  # noqa: E402

from gliostream.scoring.report import SUMMARY_ROWS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BRATS = [sys.executable, "-m", "gliostream"]
SEED = 2026  # the held-out draws; fixed so every preset is judged on the same cases
FOLDS = ("sites", "within", "random")
REGIONS = ("wt", "tc", "et")


def institution(case_id: str) -> str:
    """The site a BraTS case came from, as far as its id says."""
    match = re.match(r"Brats\d\d_([A-Za-z0-9]+)_", case_id)
    if match:
        return match.group(1).upper()
    if case_id.startswith("BraTS2021_"):
        return "BraTS2021"
    if case_id.startswith("BraTS-"):
        return "BraTS2023"
    if case_id.startswith("TCGA-"):
        return "TCGA"
    return "other"


def _shuffled(ids: list[str], salt: str) -> list[str]:
    order = sorted(ids)
    random.Random(f"bench-real-{salt}-{SEED}" if salt else f"bench-real-{SEED}").shuffle(order)  # "": brats 0.3's
    return order


def held_out(labelled: list[str], fold: str) -> list[str]:
    """The test cases of a fold (see the module docstring)."""
    groups = pd.Series({c: institution(c) for c in labelled})
    largest = groups.value_counts().idxmax()
    minority = sorted(groups.index[groups != largest])
    if fold == "sites":
        return minority
    if fold == "within":
        return sorted(_shuffled(list(groups.index[groups == largest]), "within")[:len(minority)])
    return sorted(_shuffled(labelled, "")[:6])  # the draw of brats 0.3's benchmark


def run(args: list[str]) -> None:
    print("$ brats " + " ".join(args), flush=True)
    subprocess.run(BRATS + args, check=True, cwd=ROOT)


def scores(csv: Path) -> pd.DataFrame:
    table = pd.read_csv(csv).set_index("case_id")
    columns = [f"{m}_{r}" for m in ("dice", "hd95", "lw_dice", "lw_hd95") for r in REGIONS]
    return table.loc[[i for i in table.index if i not in SUMMARY_ROWS], columns].astype(float)


def train_fold(store: Path, fold_dir: Path, train: list[str], config: str, extra: list[str]) -> None:
    order = _shuffled(train, "val")
    n_val = max(1, round(0.2 * len(order)))  # as the presets' val-fraction
    split = fold_dir / "train_cases.json"
    split.write_text(json.dumps({"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}))
    run(["train", "--config", config, "--store", str(store), "--out", str(fold_dir / "run"), "--device", "cpu",
         "--split-file", str(split), "--no-progress", "--overwrite", *extra])


def score_fold(store: Path, fold_dir: Path, tta: bool) -> dict[str, tuple[pd.DataFrame, float]]:
    ckpt, cases = fold_dir / "run" / "best.pt", fold_dir / "heldout.txt"
    variants = {"default": [], "no-postprocess": ["--no-postprocess", "--save-predictions",
                                                   str(fold_dir / "predictions_raw")]}
    if tta:
        variants["tta"] = ["--tta"]
    out = {}
    for name, options in variants.items():
        csv = fold_dir / f"heldout_{name}.csv"
        start = time.perf_counter()
        run(["score", "--ckpt", str(ckpt), "--store", str(store), "--cases", str(cases), "--out", str(csv),
             "--device", "cpu", "--no-progress", *options])
        out[name] = (scores(csv), time.perf_counter() - start)
    return out


def _means(table: pd.DataFrame) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in table.mean().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=str(REALDATA))
    parser.add_argument("--config", default=str(ROOT / "configs" / "real-cpu.toml"))
    parser.add_argument("--work", default=str(ROOT / "data" / "bench-real"))
    parser.add_argument("--folds", default="sites,within", help=f"comma-separated, of {', '.join(FOLDS)}")
    parser.add_argument("--no-tta", dest="tta", action="store_false", help="skip the mirrored scoring (8x slower)")
    parser.add_argument("--skip-train", action="store_true", help="score the runs already in --work")
    parser.add_argument("train_options", nargs="*", help="extra `brats train` options (after --)")
    options = parser.parse_args()
    folds = [f.strip() for f in options.folds.split(",") if f.strip()]
    if not folds or set(folds) - set(FOLDS):
        parser.error(f"--folds takes {', '.join(FOLDS)}")
    work = Path(options.work).resolve()
    store = work / "store"
    run(["ingest", options.raw, "--out", str(store)])
    index = pd.read_csv(store / "index.csv")
    labelled = sorted(index.loc[index.labelled, "case_id"])
    results: dict[str, dict] = {}
    tables = []
    for fold in folds:
        fold_dir = work / fold
        fold_dir.mkdir(parents=True, exist_ok=True)
        test = held_out(labelled, fold)
        train = [c for c in labelled if c not in test]
        (fold_dir / "heldout.txt").write_text("\n".join(test) + "\n")
        print(f"\nfold {fold}: training on {len(train)} cases of {sorted({institution(c) for c in train})} "
              f"(with its validation share), holding out {len(test)}: {', '.join(test)}", flush=True)
        if not options.skip_train:
            train_fold(store, fold_dir, train, options.config, options.train_options)
        log = pd.read_csv(fold_dir / "run" / "train_log.csv")
        scored = score_fold(store, fold_dir, options.tta)
        best = log.loc[log.dice_mean.idxmax()]
        results[fold] = {
            "train_cases": len(train), "heldout": test, "epochs": len(log),
            "train_minutes": round(float(log.seconds.sum()) / 60, 1),
            "patches_per_s": round(float(log.patches_per_s.mean()), 2), "best_epoch": int(best.epoch),
            "validation_dice_mean": round(float(best.dice_mean), 4),
            "postprocessing": [int(best[f"min_voxels_{r}"]) for r in REGIONS] + [int(best.et_min_voxels)],
            "variants": {name: {"mean": _means(table), "score_seconds": round(seconds, 1),
                                "cases": {c: _means(row.to_frame().T) for c, row in table.iterrows()}}
                         for name, (table, seconds) in scored.items()},
        }
        for name, (table, _) in scored.items():
            tables.append(table.assign(fold=fold, variant=name, group=[institution(c) for c in table.index]))
    print(f"\nmachine: {machine()}")
    for fold, result in results.items():
        print(f"fold {fold}: {result['train_cases']} training cases, {result['epochs']} epochs, "
              f"{result['train_minutes']} min of training (validation excluded), {result['patches_per_s']} patches/s; "
              f"best.pt from epoch {result['best_epoch']} (validation mean Dice {result['validation_dice_mean']}, "
              f"out of fit); postprocessing WT/TC/ET/ET-total {result['postprocessing']}")
    everything = pd.concat(tables)
    pd.set_option("display.width", 250)
    for name, variant in everything.groupby("variant", sort=False):
        print(f"\nheld-out cases, `brats score` {name}: per case, then per institution and overall (means)")
        print(variant.drop(columns="variant").to_string(float_format=lambda v: f"{v:.3f}"))
        by_group = variant.drop(columns=["fold", "variant"]).groupby("group").mean()
        by_group.loc["all"] = variant.drop(columns=["fold", "variant", "group"]).mean()
        print(by_group.to_string(float_format=lambda v: f"{v:.3f}"))
    (work / "results.json").write_text(json.dumps({"machine": machine(), "config": options.config,
                                                   "folds": results}, indent=1) + "\n")
    print(f"\nwrote {work / 'results.json'}")


if __name__ == "__main__":
    main()
