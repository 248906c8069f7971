"""Lesion-wise scoring speed: brats' against the official algorithm, and cc3d against scipy labelling.

On real BraTS segmentations (../shared/realdata, or --raw) the prediction of each case is its
own reference perturbed (--perturb eroded, shifted or blobs added, as in the lesion-wise tests),
or a folder of <case_id>.nii.gz files (--pred). For every case it times, side by side:
- `gliostream.lesionwise.lesionwise_metrics` (WT, TC, ET) on the whole raw grid;
- the official algorithm transcribed step by step (tests/lesionwise_reference.py: one full-volume
  dilation per lesion, scipy labelling, the HD95 of DeepMind's surface-distance), which stands in
  for the official code;
- 26-connected labelling of the region masks and of their dilations by `cc3d` and by
  `scipy.ndimage.label`;
and reports seconds per case, the ratios, and the largest difference between the two results.

    python bench/lesions.py [--raw DIR] [--pred DIR] [--perturb blobs] [--cases 8]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import cc3d
import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _common import REALDATA, machine, record_results  # noqa: E402

from gliostream.labels import REGIONS  # noqa: E402
from gliostream.lesionwise import CHALLENGES, lesionwise_metrics  # noqa: E402
from gliostream.pipeline.discovery import discover_cases  # noqa: E402
from gliostream.pipeline.preprocess import remap_labels  # noqa: E402
from tests.lesionwise_reference import perturbations, reference_lesion_scores  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # surface-distance's scipy namespaces
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=str(REALDATA))
    parser.add_argument("--pred", default=None, help="score these <case_id>.nii.gz instead of perturbations")
    parser.add_argument("--perturb", default="blobs", choices=("eroded", "shifted", "blobs"))
    parser.add_argument("--cases", type=int, default=8)
    args = parser.parse_args()
    rules = CHALLENGES["GLI"]
    cases = [c for c in discover_cases(args.raw) if c.labelled]
    if args.pred:
        cases = [c for c in cases if (Path(args.pred) / f"{c.case_id}.nii.gz").is_file()]
    cases = cases[:args.cases]
    print(f"machine: {machine()}; {len(cases)} real cases, prediction: {args.pred or args.perturb}")
    ours_s, official_s, scipy_s, cc3d_s, worst = [], [], [], [], 0.0
    for index, case in enumerate(cases):
        source = nib.load(case.files["seg"])
        reference = remap_labels(np.asarray(source.dataobj).astype(np.uint8), case.convention)
        spacing = tuple(float(z) for z in source.header.get_zooms()[:3])
        if args.pred:
            prediction = remap_labels(np.asarray(nib.load(Path(args.pred) / f"{case.case_id}.nii.gz").dataobj)
                                      .astype(np.uint8), case.convention)
        else:
            prediction = perturbations(reference, index)[args.perturb]
        seconds, ours = timed(lambda: lesionwise_metrics(prediction, reference, spacing, rules))
        ours_s.append(seconds)
        start = time.perf_counter()
        for region, labels in REGIONS.items():
            expected = reference_lesion_scores(np.isin(prediction, labels), np.isin(reference, labels), spacing,
                                               rules.dilation, rules.min_lesion_voxels)
            got = [ours[f"lw_{m}_{region}"] for m in ("dice", "hd95", "tp", "fn", "fp")]
            worst = max(worst, float(np.max(np.abs(np.subtract(got, expected)))))
        official_s.append(time.perf_counter() - start)
        masks = [np.isin(x, labels) for x in (prediction, reference) for labels in REGIONS.values()]
        masks += [ndimage.binary_dilation(m, ndimage.generate_binary_structure(3, 2), iterations=3) for m in masks[3:]]
        scipy_s.append(timed(lambda: [ndimage.label(m, ndimage.generate_binary_structure(3, 3)) for m in masks])[0])
        cc3d_s.append(timed(lambda: [cc3d.connected_components(m, connectivity=26) for m in masks])[0])
        print(f"  {case.case_id}: brats {ours_s[-1]:.2f} s, official algorithm {official_s[-1]:.2f} s")
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    print(f"\nlesion-wise metrics (WT, TC, ET) per case: brats {mean(ours_s):.2f} s, official algorithm "
          f"{mean(official_s):.2f} s: {mean(official_s) / mean(ours_s):.1f}x; largest difference {worst:.2g}")
    print(f"labelling {len(masks)} full-volume masks per case: scipy.ndimage.label {mean(scipy_s) * 1000:.0f} ms, "
          f"cc3d {mean(cc3d_s) * 1000:.0f} ms: cc3d {mean(scipy_s) / mean(cc3d_s):.1f}x faster")
    if args.pred:  # the figures the README quotes are those of real predictions
        record_results("lesions", {
            "lesionwise_s_per_case": f"{mean(ours_s):.2f} s", "official_algorithm_s_per_case": f"{mean(official_s):.2f} s",
            "lesionwise_speedup": f"{mean(official_s) / mean(ours_s):.0f}×",
            "scipy_label_ms": f"{mean(scipy_s) * 1000:.0f} ms",
            "cc3d_label_ms": f"{mean(cc3d_s) * 1000:.0f} ms", "cc3d_speedup": f"{mean(scipy_s) / mean(cc3d_s):.1f}×"})


if __name__ == "__main__":
    main()
