"""The yardstick: every labelled real case scored once, by a model that never saw its site.

Groups the labelled cases of ../shared/realdata (or --raw) by institution, read from the case id
(BraTS 2018 ids name the site: `Brats18_CBICA_...`, `_TCIA01_`, `_2013_`; BraTS 2021 and 2023 ids
and TCGA cases are groups of their own), and runs folds grouped by site, each trained on some
sites and scored on the others:

- `sites`: every case of the minority sites held out at once, trained on the largest site only:
  how a model learnt at one hospital does at the others (the failure users meet);
- `largest`: the largest site's cases held out, trained on all the minority sites' cases;
- `within`: as many cases of the largest site held out, trained on the rest of it and all the
  other sites (how it does on a known site's new patients; not part of the yardstick);
- `random`: the seeded random split of earlier benchmarks (6 held out), for comparison only.

The default folds, `sites` and `largest`, are the yardstick: together they score every labelled
case exactly once, never by a model trained on its own site. Its table (per site and pooled;
legacy, lesion-wise 2023 and official Dice; predicted/reference volume per region and case; the
large-tumour and ET checks) is printed and written to WORK/results.json, and with `--record` to
docs/results/real.json, where the README's quality figures come from.

Each fold trains the preset (`configs/real-cpu.toml` by default) with `brats train` (its seeded
validation share, inside the training groups, chooses best.pt and may change the postprocessing),
then scores the held-out cases with `brats score` as a user would: the defaults, without the
postprocessing, and with mirror TTA (`--tta`). The raw predictions are kept for the
postprocessing sweep (`bench/postprocess.py`). Prints per-case, per-group and mean legacy and
lesion-wise Dice and HD95, the training time (validation excluded) and the machine, and writes
them to WORK/results.json.

    python bench/real.py [--folds sites,largest] [--config configs/real-cpu.toml] [--work DIR] [--tta]
                         [--record NAME] [-- extra train options]
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
from _common import REALDATA, machine, record_results  # noqa: E402

from gliostream.scoring.report import SUMMARY_ROWS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BRATS = [sys.executable, "-m", "gliostream"]
SEED = 2026  # the held-out draws; fixed so every preset is judged on the same cases
FOLDS = ("sites", "largest", "within", "random")
YARDSTICK = ("sites", "largest")  # together: every labelled case once, by a model that never saw its site
REGIONS = ("wt", "tc", "et")
LARGE_TC_MM3 = 50_000  # "large core": a reference TC above 50 cm^3
COLUMNS = [f"{m}_{r}" for m in ("dice", "hd95", "lw_dice", "lw_hd95", "ref_vol", "pred_vol") for r in REGIONS]
OFFICIAL = [f"{m}_{r}" for m in ("global_dsc", "lesionwise_dsc_mean") for r in REGIONS]


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
    if fold == "largest":
        return sorted(groups.index[groups == largest])
    if fold == "within":
        return sorted(_shuffled(list(groups.index[groups == largest]), "within")[:len(minority)])
    return sorted(_shuffled(labelled, "")[:6])  # the draw of brats 0.3's benchmark


def run(args: list[str]) -> None:
    print("$ brats " + " ".join(args), flush=True)
    subprocess.run(BRATS + args, check=True, cwd=ROOT)


def scores(csv: Path) -> pd.DataFrame:
    table = pd.read_csv(csv).set_index("case_id")
    columns = COLUMNS + [c for c in OFFICIAL if c in table.columns]
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
    variants = {"default": ["--metrics", "legacy,lesionwise-2023,official"],
                "no-postprocess": ["--no-postprocess", "--save-predictions", str(fold_dir / "predictions_raw")]}
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


def volume_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Predicted over reference volume per case and region (NaN where the reference is empty)."""
    return pd.DataFrame({r: table[f"pred_vol_{r}"] / table[f"ref_vol_{r}"].where(table[f"ref_vol_{r}"] > 0)
                         for r in REGIONS})


def yardstick(table: pd.DataFrame) -> dict:
    """The yardstick's figures from the per-case table of its folds (one row per labelled case):
    per site and pooled means of every family, the volume ratios and the two failure checks."""
    families = {"legacy": "dice", "lesionwise": "lw_dice", "official_global": "global_dsc",
                "official_lesionwise": "lesionwise_dsc_mean"}
    ratios = volume_ratios(table)

    def family_means(rows: pd.DataFrame) -> dict[str, dict[str, float]]:
        return {name: {r: round(float(rows[f"{prefix}_{r}"].mean()), 4) for r in REGIONS}
                for name, prefix in families.items() if f"{prefix}_wt" in rows}

    sites = {site: {"cases": int(len(rows)), **family_means(rows)}
             for site, rows in table.groupby("group", sort=True)}
    large = table[table.ref_vol_tc > LARGE_TC_MM3]
    no_et = table[table.ref_vol_et == 0]
    return {
        "cases": int(len(table)), "pooled": family_means(table),
        "site_mean": {name: {r: round(float(pd.Series([s[name][r] for s in sites.values()]).mean()), 4)
                             for r in REGIONS} for name in families if name in sites[next(iter(sites))]},
        "sites": sites,
        "median_volume_ratio": {r: round(float(ratios[r].median()), 3) for r in REGIONS},
        "large_tc": {"threshold_mm3": LARGE_TC_MM3, "cases": int(len(large)),
                     "below_0.5": sorted(large.index[large.dice_tc < 0.5]),
                     "dice_tc": {c: round(float(v), 4) for c, v in large.dice_tc.items()}},
        "no_et_reference": {c: int(v) for c, v in no_et.pred_vol_et.items()},  # predicted ET mm^3 where none is
        "per_case": {c: {"site": row.group, "fold": row.fold,
                         **{f"{k}_{r}": round(float(row[f"{k}_{r}"]), 4) for k in ("dice", "lw_dice") for r in REGIONS},
                         **{f"volume_ratio_{r}": (None if pd.isna(ratios.at[c, r]) else round(float(ratios.at[c, r]), 3))
                            for r in REGIONS},
                         **{f"ref_vol_{r}": int(row[f"ref_vol_{r}"]) for r in REGIONS}}
                     for c, row in table.iterrows()},
    }


def print_yardstick(name: str, result: dict) -> None:
    print(f"\nyardstick, `brats score` {name}: {result['cases']} cases, each by a model that never saw its site")
    rows = {site: {f"{fam}_{r}": v[fam][r] for fam in ("legacy", "lesionwise") for r in REGIONS}
            | {"cases": v["cases"]} for site, v in result["sites"].items()}
    rows["pooled"] = {f"{fam}_{r}": result["pooled"][fam][r] for fam in ("legacy", "lesionwise") for r in REGIONS} \
        | {"cases": result["cases"]}
    print(pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"median predicted/reference volume: {result['median_volume_ratio']}; reference TC > 50 cm^3: "
          f"{result['large_tc']['cases']} cases, TC Dice below 0.5 on {result['large_tc']['below_0.5'] or 'none'}; "
          f"predicted ET (mm^3) where the reference has none: {result['no_et_reference'] or 'no such case'}")


def figures(result: dict) -> dict[str, str]:
    """The README's quality figures, as docs/results/real.json keeps them."""
    out = {f"yardstick_{fam}_{r}": f"{result['pooled'][fam][r]:.3f}" for fam in ("legacy", "lesionwise")
           for r in REGIONS}
    out["yardstick_cases"] = str(result["cases"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=str(REALDATA))
    parser.add_argument("--config", default=str(ROOT / "configs" / "real-cpu.toml"))
    parser.add_argument("--work", default=str(ROOT / "data" / "bench-real"))
    parser.add_argument("--folds", default=",".join(YARDSTICK), help=f"comma-separated, of {', '.join(FOLDS)}")
    parser.add_argument("--tta", action="store_true", help="also score with mirroring (8x slower)")
    parser.add_argument("--skip-train", action="store_true", help="score the runs already in --work")
    parser.add_argument("--keep-trained", action="store_true", help="train only the folds without a best.pt in --work")
    parser.add_argument("--record", metavar="NAME", help="keep the yardstick in docs/results/real.json under NAME "
                        "(`preset`: the README's quality figures)")
    parser.add_argument("train_options", nargs="*", help="extra `brats train` options (after --)")
    options = parser.parse_args()
    folds = [f.strip() for f in options.folds.split(",") if f.strip()]
    if not folds or set(folds) - set(FOLDS):
        parser.error(f"--folds takes {', '.join(FOLDS)}")
    work = Path(options.work).resolve()
    store = work / "store"
    run(["ingest", options.raw, "--out", str(store), "--no-progress"])
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
        if not (options.skip_train or (options.keep_trained and (fold_dir / "run" / "best.pt").exists())):
            train_fold(store, fold_dir, train, options.config, options.train_options)
        log = pd.read_csv(fold_dir / "run" / "train_log.csv")
        scored = score_fold(store, fold_dir, options.tta)
        best = log.loc[log.dice_mean.idxmax()]
        results[fold] = {
            "train_cases": len(train), "heldout": test, "epochs": len(log),
            "train_minutes": round(float(log.seconds.sum()) / 60, 1),
            "patches": int(log.patches.sum()), "patches_per_s": round(float(log.patches_per_s.mean()), 2),
            "best_epoch": int(best.epoch), "validation_dice_mean": round(float(best.dice_mean), 4),
            "postprocessing": [int(best[f"min_voxels_{r}"]) for r in REGIONS] + [int(best.et_min_voxels)],
            "variants": {name: {"mean": _means(table), "score_seconds": round(seconds, 1)}
                         for name, (table, seconds) in scored.items()},
        }
        for name, (table, _) in scored.items():
            tables.append(table.assign(fold=fold, variant=name, group=[institution(c) for c in table.index]))
    print(f"\nmachine: {machine()}")
    for fold, result in results.items():
        print(f"fold {fold}: {result['train_cases']} training cases, {result['epochs']} epochs, "
              f"{result['train_minutes']} min of training (validation excluded), {result['patches']} patches at "
              f"{result['patches_per_s']} patches/s; best.pt from epoch {result['best_epoch']} (validation mean Dice "
              f"{result['validation_dice_mean']}, out of fit); postprocessing WT/TC/ET/ET-total "
              f"{result['postprocessing']}")
    everything = pd.concat(tables)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 50)
    summary: dict[str, dict] = {}
    for name, variant in everything.groupby("variant", sort=False):
        print(f"\nheld-out cases, `brats score` {name}: per case")
        shown = [c for c in variant.columns if not c.startswith(("ref_vol", "pred_vol", "global", "lesionwise"))]
        print(variant[shown].drop(columns="variant").to_string(float_format=lambda v: f"{v:.3f}"))
        if set(YARDSTICK) <= set(folds):
            summary[name] = yardstick(variant[variant.fold.isin(YARDSTICK)])
            print_yardstick(name, summary[name])
    output = {"machine": machine(), "config": options.config, "train_options": options.train_options,
              "folds": results, "yardstick": summary}
    (work / "results.json").write_text(json.dumps(output, indent=1) + "\n")
    print(f"\nwrote {work / 'results.json'}")
    if options.record and summary:
        record = {"config": Path(options.config).name, "train_options": options.train_options,
                  "folds": {f: {k: v for k, v in r.items() if k != "variants"} for f, r in results.items()},
                  "yardstick": summary}
        prefix = "" if options.record == "preset" else f"{options.record}_"
        record_results("real", {f"{prefix}{k}": v for k, v in figures(summary["default"]).items()},
                       details={options.record: record})


if __name__ == "__main__":
    main()
