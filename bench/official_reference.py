"""Reference values of the official BraTS evaluation, produced by that code itself.

Runs `BraTS-evaluation` (its Panoptica evaluator with the bundled configs, then its own `seg`
parser) and DeepMind's `surface-distance` (the surface distances of the BraTS 2023 code) on the
pairs of `tests/official_cases.py`, and writes what they computed to
`tests/data/official_reference.json`, which `tests/test_official_metrics.py` compares ours with.
BraTS-evaluation pins numpy < 2.3 and pandas < 3, so it runs in a virtual environment of its own:

    python3 -m venv /tmp/evalenv
    /tmp/evalenv/bin/pip install BraTS-evaluation==0.0.10 surface-distance==0.1
    /tmp/evalenv/bin/python bench/official_reference.py

With `--all-real` it evaluates every labelled real case's perturbations (gli config only) and records
the evaluator's seconds per pair: what bench/official.py times ours against.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import official_cases  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "official_reference.json"
HAND_CONFIGS = ("gli", "ped", "mets", "MenRT")
REAL_CONFIGS = ("gli",)
REGIONS_2023 = {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)}


def _save(label: np.ndarray, spacing: tuple[float, ...], path: Path) -> None:
    nib.save(nib.Nifti1Image(label.astype(np.uint8), np.diag([*spacing, 1.0])), path)


def _official(evaluator, pred: Path, ref: Path, workdir: Path) -> tuple[dict[str, float], float]:
    """One pair through the evaluator and the official `seg` parser: its CSV row, and the seconds."""
    from brats_evaluation.evaluation import evaluate_single_exam
    from brats_evaluation.metrics_parser import parse_seg_results

    start = time.perf_counter()
    result = evaluate_single_exam(str(pred), str(ref), ref.name, evaluator)
    seconds = time.perf_counter() - start
    if "error" in result:
        raise RuntimeError(f"{ref.name}: {result['error']}")
    summary, table = workdir / "summary.json", workdir / "parsed.csv"
    summary.write_text(json.dumps({"metrics": [result], "missings": []}))
    parse_seg_results(str(summary), str(table))
    row = pd.read_csv(table).iloc[0].drop("subject_id")
    return {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}, seconds


def _deepmind(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """The whole-volume HD95 of the 2023 code (`compute_robust_hausdorff` of DeepMind's surface
    distances) and DeepMind's surface Dice at 1 mm, per region, where both masks are non-empty."""
    import surface_distance

    out = {}
    for region, labels in REGIONS_2023.items():
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        if p.any() and r.any():
            distances = surface_distance.compute_surface_distances(r, p, spacing)
            out[f"hd95_{region}"] = float(surface_distance.compute_robust_hausdorff(distances, 95))
            out[f"nsd1_{region}"] = float(surface_distance.compute_surface_dice_at_tolerance(distances, 1.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=official_cases.REALDATA)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--all-real", action="store_true", help="every labelled real case, no hand-worked pairs")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from panoptica import Panoptica_Evaluator

    evaluators = {c: Panoptica_Evaluator.load_from_config(
        str(files("brats_evaluation").joinpath("configs", f"config_{c}.yaml"))) for c in HAND_CONFIGS}
    pairs: dict[str, dict] = {}
    timings: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jobs = [] if args.all_real else [(name, p, r, (1.0, 1.0, 1.0), HAND_CONFIGS, False)
                                         for name, p, r in official_cases.hand_pairs()]
        if args.realdata.is_dir():
            cases = official_cases.labelled_cases(args.realdata) if args.all_real else official_cases.REAL_CASES
            jobs += [(name, p, r, s, REAL_CONFIGS, True)
                     for name, p, r, s in official_cases.real_pairs(args.realdata, cases)]
        for name, prediction, reference, spacing, configs, real in jobs:
            entry: dict = {"spacing": list(spacing), "deepmind": _deepmind(prediction, reference, spacing)}
            for config in configs:
                p, r = prediction, reference
                if config == "MenRT":  # one label: the pair binarised
                    p, r = (prediction > 0).astype(np.uint8), (reference > 0).astype(np.uint8)
                stem = name.replace(".", "_")  # panoptica reads the file type from the first dot on
                pred_path, ref_path = work / f"pred-{stem}.nii.gz", work / f"ref-{stem}.nii.gz"
                _save(p, spacing, pred_path)
                _save(r, spacing, ref_path)
                entry[config], seconds = _official(evaluators[config], pred_path, ref_path, work)
                if real and config == "gli":
                    timings.append(seconds)
                    entry["seconds"] = round(seconds, 4)
            pairs[name] = entry
            print(f"{name}: done", file=sys.stderr)
    record = {
        "command": "/tmp/evalenv/bin/python bench/official_reference.py  (see its docstring for the environment)",
        "versions": {p: version(p) for p in ("BraTS-evaluation", "panoptica", "surface-distance", "numpy", "scipy",
                                              "connected-components-3d")},
        "official_seconds_per_real_case": round(float(np.mean(timings)), 3) if timings else None,
        "pairs": pairs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}: {len(pairs)} pairs; official evaluator "
          f"{record['official_seconds_per_real_case']} s per real case (gli config)")


if __name__ == "__main__":
    main()
