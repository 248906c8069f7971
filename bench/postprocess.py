"""Which fixed postprocessing generalises: every candidate rule on out-of-fold predictions of other sites.

Reads the raw predictions `bench/real.py` saved for each fold's held-out cases
(WORK/<fold>/predictions_raw/<case>.nii.gz, no postprocessing) and the references of its store,
applies each rule (minimum component sizes per region under the protection of
`regions.remove_small_components`, and the ET total) and prints, per rule, the mean legacy Dice,
lesion-wise Dice and their mean over the three regions, per fold and overall. The default of
`PostprocessConfig` is chosen from this table: on cases of other institutions than those trained
on, never on a run's own few validation cases.

    python bench/postprocess.py [--work data/bench-real] [--folds sites,within]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from brats.geometry import crop_slices  # noqa: E402
from brats.labels import REGIONS  # noqa: E402
from brats.lesionwise import lesion_dice  # noqa: E402
from brats.metrics import dice, region_mask  # noqa: E402
from brats.pipeline.naming import CONVENTIONS  # noqa: E402
from brats.regions import Postprocessing  # noqa: E402
from brats.store.reader import open_case  # noqa: E402

WT_SIZES = (0, 100, 250, 500, 1000, 2000)
TC_SIZES = (0, 100, 250, 500)
ET_SIZES = (0, 50)
ET_TOTALS = (0, 200)


def store_prediction(path: Path, convention: str, crop_box) -> np.ndarray:
    """A saved raw-geometry prediction in store labels over the case's crop."""
    raw = np.asarray(nib.load(path).dataobj).astype(np.int64)
    lookup = np.zeros(raw.max() + 1 if raw.size else 1, np.uint8)
    for raw_label, store_label in CONVENTIONS[convention].to_store_labels().items():
        if raw_label < len(lookup):
            lookup[raw_label] = store_label
    return lookup[raw][crop_slices(crop_box)]


def case_scores(prediction: np.ndarray, reference: np.ndarray, rule: Postprocessing) -> dict[str, float]:
    labels = rule.apply(prediction)
    out = {}
    for region in REGIONS:
        p, r = region_mask(labels, region), region_mask(reference, region)
        out[f"dice_{region}"] = dice(p, r)
        out[f"lw_dice_{region}"] = lesion_dice(p, r)
    out["score"] = float(np.mean(list(out.values())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "data" / "bench-real"))
    parser.add_argument("--folds", default="sites,within")
    options = parser.parse_args()
    work = Path(options.work)
    store = work / "store"
    cases = []
    for fold in options.folds.split(","):
        for path in sorted((work / fold / "predictions_raw").glob("*.nii.gz")):
            case_id = path.name.removesuffix(".nii.gz")
            case = open_case(store, case_id)
            record = case.record
            prediction = store_prediction(path, record.convention, record.crop_box)
            cases.append((fold, case_id, prediction, case.label[...]))
    if not cases:
        raise SystemExit(f"no saved predictions under {work}/<fold>/predictions_raw: run bench/real.py first")
    rules = [Postprocessing((wt, tc, et), total)
             for wt, tc, et, total in itertools.product(WT_SIZES, TC_SIZES, ET_SIZES, ET_TOTALS)]
    rows = []
    for rule in rules:
        for fold, case_id, prediction, reference in cases:
            rows.append({"rule": f"{rule.min_component_voxels[0]}/{rule.min_component_voxels[1]}/"
                                 f"{rule.min_component_voxels[2]} et<{rule.et_min_voxels}",
                         "fold": fold, "case_id": case_id, **case_scores(prediction, reference, rule)})
    table = pd.DataFrame(rows)
    by_rule = table.groupby("rule", sort=False).mean(numeric_only=True)
    by_fold = table.pivot_table(index="rule", columns="fold", values="score", sort=False)
    summary = by_rule.join(by_fold.add_prefix("score_")).sort_values("score", ascending=False)
    pd.set_option("display.width", 250)
    print(f"{len(cases)} held-out cases ({', '.join(sorted({c[1] for c in cases}))}); rules WT/TC/ET sizes, ET total")
    print(summary.head(15).to_string(float_format=lambda v: f"{v:.4f}"))
    print("\nno postprocessing and the previous default:")
    print(summary.loc[[r for r in ("0/0/0 et<0", "500/100/0 et<0") if r in summary.index]].to_string(
        float_format=lambda v: f"{v:.4f}"))
    (work / "postprocess_sweep.json").write_text(json.dumps(summary.reset_index().to_dict("records"), indent=1))


if __name__ == "__main__":
    main()
