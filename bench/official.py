"""The official BraTS evaluation: ours (`gliostream.official`) against `BraTS-evaluation` itself.

Every labelled real case of ../shared/realdata against four perturbed copies of its own reference
(tests/official_cases.py: a shell removed, a shift, a component dropped with a blob added, a
relabelling), the gli config's six label groups. `BraTS-evaluation` runs in its own virtual
environment (it pins numpy < 2.3, pandas < 3), made as bench/official_reference.py says; both run in
this one process's turn, one after the other, on the same machine. Prints seconds per case of each,
the ratio, and how far apart the values are (Dice, NSD, HD95 and counts, every column).

    python bench/official.py [--evalenv /tmp/evalenv]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import official_cases  # noqa: E402
from _common import record_results  # noqa: E402

from gliostream.official import official_metrics  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evalenv", type=Path, default=Path("/tmp/evalenv"))
    parser.add_argument("--realdata", type=Path, default=official_cases.REALDATA)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "official.json"
        subprocess.run([str(args.evalenv / "bin" / "python"), str(HERE / "official_reference.py"), "--all-real",
                        "--realdata", str(args.realdata), "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
        official = json.loads(out.read_text())
    ours_seconds, official_seconds, worst, compared = [], [], 0.0, 0
    for name, prediction, reference, spacing in official_cases.real_pairs(
            args.realdata, official_cases.labelled_cases(args.realdata)):
        start = time.perf_counter()
        ours = official_metrics(prediction, reference, spacing, "gli")
        ours_seconds.append(time.perf_counter() - start)
        entry = official["pairs"][name]
        official_seconds.append(entry["seconds"])
        for key, value in entry["gli"].items():
            expected = math.nan if value is None else value
            if math.isnan(expected) or math.isinf(expected):
                worst = worst if (math.isnan(ours[key]) and math.isnan(expected)) or ours[key] == expected else math.inf
            else:
                worst = max(worst, abs(ours[key] - expected))
            compared += 1
    ours_s, official_s = float(np.mean(ours_seconds)), float(np.mean(official_seconds))
    print(f"{len(ours_seconds)} pairs, {compared} values compared; largest difference {worst:.1e}")
    print(f"seconds per case (6 label groups): ours {ours_s:.2f}, BraTS-evaluation {official_s:.2f}, "
          f"ratio {official_s / ours_s:.1f}x")
    record_results("official", {"pairs": str(len(ours_seconds)), "values_compared": str(compared),
                                "largest_difference": f"{worst:.1e}" if worst else "0",
                                "ours_s_per_case": f"{ours_s:.2f} s", "official_s_per_case": f"{official_s:.2f} s",
                                "ratio": f"{official_s / ours_s:.1f}×",
                                "versions": ", ".join(f"{k} {v}" for k, v in official["versions"].items())})


if __name__ == "__main__":
    main()
