"""Which fixed postprocessing generalises: every candidate rule on out-of-fold predictions of other sites.

Reads the raw predictions `bench/real.py` saved for each fold's held-out cases
(WORK/<fold>/predictions_raw/<case>.nii.gz, no postprocessing) and the references of its store,
applies each rule (minimum component sizes per region under the protection of
`regions.remove_small_components`, then the ET rule: all ET relabelled necrosis when the case has
less than a total of it, `et<N`, or, a case-level alternative measured beside it, less than a
share of its tumour core, `et/tc<S`) and prints, per rule, the mean legacy Dice, lesion-wise
Dice and their mean over the three regions, per fold and overall, and what each ET rule does to
the cases whose reference has no ET. The default of `PostprocessConfig` is chosen from this table:
on cases of other institutions than those trained on (the yardstick's folds), never on a run's own
few validation cases.

    python bench/postprocess.py [--work data/bench-real [--work OTHER ...]] [--folds sites,largest]
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
ET_TOTALS = (0, 50, 100, 200, 300, 500, 750, 1000)  # nnU-Net's BraTS entries chose 200-500 by cross-validation
ET_SHARES = (0.02, 0.05, 0.1, 0.2)  # of the predicted tumour core


def et_rule(labels: np.ndarray, rule: tuple[str, float]) -> np.ndarray:
    """The ET rule `("total", voxels)` (`regions.suppress_small_et`) or `("share", s)`: all ET
    relabelled necrosis when it is less than `s` of the predicted tumour core."""
    kind, value = rule
    if kind == "total":
        return suppress_small_et(labels, int(value))
    et = labels == 3
    core = int(np.isin(labels, (1, 3)).sum())
    if core and et.sum() < value * core:
        return np.where(et, np.uint8(1), labels)
    return labels


ET_RULES = [("total", t) for t in ET_TOTALS] + [("share", s) for s in ET_SHARES]


def rule_name(rule: tuple[str, float]) -> str:
    return f"et<{rule[1]}" if rule[0] == "total" else f"et/tc<{rule[1]}"


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
                for index, rule in enumerate(ET_RULES):
                    labels = et_rule(after_et, rule)
                    row = {**wt_scores, **tc_scores, **_region(labels, reference, "et")}
                    rows.append({"rule": f"{wt}/{tc}/{et} {rule_name(rule)}", "sizes": (wt, tc, et, index), **row,
                                 "et_voxels": int((labels == 3).sum()), "score": float(np.mean(list(row.values())))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", action="append", help="a bench/real.py work folder; repeat it to pool the "
                        "predictions of several models  [default: data/bench-real]")
    parser.add_argument("--folds", default="sites,largest")
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
    rows = [{"fold": fold, "case_id": case_id, "reference_et": int((reference == 3).sum()), **row}
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
    print(summary.loc[[r for r in ("0/0/0 et<0", "500/100/0 et<0", "1000/250/50 et<0", "1000/250/50 et<100",
                                   "2000/500/250 et<50")
                       if r in summary.index]].drop(columns="sizes").to_string(
        float_format=lambda v: f"{v:.4f}"))
    best_sizes = summary.index[0].split(" ")[0]
    et_table = summary[summary.index.str.startswith(best_sizes + " ")][["dice_et", "lw_dice_et", "score"]]
    no_et = table[(table.reference_et == 0) & table.rule.str.startswith(best_sizes + " ")]
    et_table = et_table.join(no_et.pivot_table(index="rule", columns="case_id", values="et_voxels").add_prefix("ET of "))
    print(f"\nthe ET rules after {best_sizes}, with the predicted ET voxels of the cases without ET in the reference:")
    print(et_table.to_string(float_format=lambda v: f"{v:.4f}"))
    (works[0] / "postprocess_sweep.json").write_text(json.dumps(summary.reset_index().to_dict("records"), indent=1))


if __name__ == "__main__":
    main()
