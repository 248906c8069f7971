"""How long the README's first command takes on a fresh clone: `make demo` (set up .venv, synth,
ingest, train, score, predict), timed as a whole and without the set-up.

    python bench/demo.py [--keep DIR]

Clones this repository's HEAD into a temporary folder (or DIR), runs `make setup` and then
`make demo` there, and writes both times to docs/results/demo.json. pip uses whatever wheels
this machine's pip has at hand (a CPU torch wheel here), so set-up times depend on the machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, record_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", default=None, help="clone into this (new) folder and keep it")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(args.keep or Path(tmp) / "clone")
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        setup = timed(["make", "setup"], clone)
        demo = timed(["make", "demo"], clone)
    print(f"make setup {setup / 60:.1f} min, then make demo {demo / 60:.1f} min: {(setup + demo) / 60:.1f} min in all")
    record_results("demo", {"setup_minutes": f"{setup / 60:.1f} minutes", "demo_minutes": f"{demo / 60:.1f} minutes",
                            "total_minutes": f"{(setup + demo) / 60:.1f} minutes"})


if __name__ == "__main__":
    main()
