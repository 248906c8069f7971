"""Which fixed postprocessing generalises: every candidate rule on out-of-fold predictions of other sites.

Reads the raw predictions `bench/real.py` saved for each fold's held-out cases
(WORK/<fold>/predictions_raw/<case>.nii.gz, no postprocessing) and the references of its store,
applies each rule (minimum component sizes per region under the protection of
`regions.remove_small_components`, and the ET total) and prints, per rule, the mean legacy Dice,
lesion-wise Dice and their mean over the three regions, per fold and overall. The default of
`PostprocessConfig` is chosen from this table: on cases of other institutions than those trained
on, never on a run's own few validation cases.

    python bench/postprocess.py [--work data/bench-real [--work OTHER ...]] [--folds sites,within]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gliostream.geometry import crop_slices  # noqa: E402
from gliostream.regions import remove_small_components, suppress_small_et  # noqa: E402
from gliostream.scoring.cases import store_cases  # noqa: E402
from gliostream.scoring.exports import read_prediction  # noqa: E402
from gliostream.trainer.postprocess import region_scores  # noqa: E402

WT_SIZES = (0, 250, 500, 1000, 2000)
TC_SIZES = (0, 100, 250, 500)
ET_SIZES = (0, 25, 50, 100, 250)
ET_TOTALS = (0, 50, 100, 200)


def _region(labels: np.ndarray, reference: np.ndarray, region: str) -> dict[str, float]:
    legacy, lesion = region_scores(labels, reference, region)
    return {f"dice_{region}": legacy, f"lw_dice_{region}": lesion}


def case_rows(prediction: np.ndarray, reference: np.ndarray) -> list[dict]:
    """Every rule of the grid on one case, stage by stage (a region's scores depend only on the
    stages up to its own, so each is computed once per distinct prefix of the rule)."""
    rows = []
    for wt in WT_SIZES:
        after_wt = remove_small_components(prediction, "wt", wt)
        wt_scores = _region(after_wt, reference, "wt")
        for tc in TC_SIZES:
            after_tc = remove_small_components(after_wt, "tc", tc)
            tc_scores = _region(after_tc, reference, "tc")
            for et in ET_SIZES:
                after_et = remove_small_components(after_tc, "et", et)
                for total in ET_TOTALS:
                    labels = suppress_small_et(after_et, total)
                    row = {**wt_scores, **tc_scores, **_region(labels, reference, "et")}
                    rows.append({"rule": f"{wt}/{tc}/{et} et<{total}", "sizes": (wt, tc, et, total), **row,
                                 "score": float(np.mean(list(row.values())))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", action="append", help="a bench/real.py work folder; repeat it to pool the "
                        "predictions of several models  [default: data/bench-real]")
    parser.add_argument("--folds", default="sites,within")
    options = parser.parse_args()
    works = [Path(w) for w in options.work or [ROOT / "data" / "bench-real"]]
    cases = []
    for work in works:
        for fold in options.folds.split(","):
            folder = work / fold / "predictions_raw"
            ids = sorted(path.name.removesuffix(".nii.gz") for path in folder.glob("*.nii.gz"))
            label = f"{work.parent.name if work.name == 'work' else work.name}:{fold}"
            for case in store_cases(work / "store", ids, with_image=False):
                prediction = read_prediction(folder, case)[crop_slices(case.crop_box)]
                cases.append((label, case.case_id, prediction, case.reference))
    if not cases:
        raise SystemExit("no saved predictions under WORK/<fold>/predictions_raw: run bench/real.py first")
    rows = [{"fold": fold, "case_id": case_id, **row}
            for fold, case_id, prediction, reference in cases for row in case_rows(prediction, reference)]
    table = pd.DataFrame(rows)
    by_rule = table.groupby("rule", sort=False).agg({**{c: "mean" for c in table.columns if c.startswith(("dice", "lw_"))},
                                                     "score": "mean", "sizes": "first"})
    by_fold = table.pivot_table(index="rule", columns="fold", values="score", sort=False)
    summary = by_rule.join(by_fold.add_prefix("score_"))
    summary = summary.assign(_order=-summary.score.round(6)).sort_values(["_order", "sizes"]).drop(columns="_order")
    pd.set_option("display.width", 250)
    print(f"{len(cases)} held-out cases ({', '.join(sorted({c[1] for c in cases}))}); rules WT/TC/ET sizes, ET total")
    print(summary.drop(columns="sizes").head(15).to_string(float_format=lambda v: f"{v:.4f}"))
    print("\nno postprocessing and other rules named in docs/benchmarks.md:")
    print(summary.loc[[r for r in ("0/0/0 et<0", "500/100/0 et<0", "1000/250/50 et<0", "1000/250/50 et<100")
                       if r in summary.index]].drop(columns="sizes").to_string(
        float_format=lambda v: f"{v:.4f}"))
    (works[0] / "postprocess_sweep.json").write_text(json.dumps(summary.reset_index().to_dict("records"), indent=1))


if __name__ == "__main__":
    main()
