"""Ingest time per case against the time to merely decompress the same raw files.

Part 1 pins this process to one core and, per case, measures (best of --repeats):
  floor      read + gzip-inflate the case's files with the standard zlib (what nibabel does)
  floor-ng   the same with zlib-ng, the inflater brats uses
  ingest     `ingest_case`: read, hash, validate, crop, z-score, remap, sample, write Zarr
Part 2 ingests --copies copies of every case on a Dask LocalCluster of 1 and of N workers
(cluster start excluded) and reports the speed-up.

    python bench/ingest.py [--raw DIR] [--repeats 3] [--copies 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, machine, raw_dataset  # noqa: E402
from zlib_ng import zlib_ng  # noqa: E402

from brats.pipeline.config import IngestConfig  # noqa: E402
from brats.pipeline.discovery import discover_cases  # noqa: E402
from brats.pipeline.ingest import ingest_case, run_ingest  # noqa: E402
from brats.store import layout  # noqa: E402
from brats.store.reader import read_case_record  # noqa: E402
from brats.store.writer import create_or_check_store  # noqa: E402


def inflate_all(files, module) -> None:
    for f in files:
        module.decompress(Path(f).read_bytes(), 16 + zlib.MAX_WBITS)


def one_core(raw: Path, tmp: Path, repeats: int) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    config = IngestConfig()
    root = create_or_check_store(tmp / "store1", config.store_params())
    print("\n## One core (pinned)\n\n| case | voxels | floor zlib s | floor zlib-ng s | ingest s | ingest / floor "
          "| ingest / floor-ng |")
    print("|---|---|---|---|---|---|---|")
    ratios, ratios_ng, times = [], [], []
    for case in discover_cases(raw):
        if case.problem:
            continue
        files = list(case.files.values())
        floor = best_of(lambda: inflate_all(files, zlib), repeats)
        floor_ng = best_of(lambda: inflate_all(files, zlib_ng), repeats)

        def ingest() -> None:
            shutil.rmtree(layout.case_dir(root, case.case_id), ignore_errors=True)
            result = ingest_case(case, str(root), config)
            assert result.status == "ingested", result

        t = best_of(ingest, repeats)
        shape = read_case_record(root, case.case_id).original_shape
        ratios.append(t / floor)
        ratios_ng.append(t / floor_ng)
        times.append(t)
        print(f"| {case.case_id} | {'x'.join(map(str, shape))} | {floor:.3f} | {floor_ng:.3f} | {t:.3f} | "
              f"{t / floor:.2f} | {t / floor_ng:.2f} |")
    n = len(ratios)
    print(f"| **mean** | | | | {sum(times) / n:.3f} | **{sum(ratios) / n:.2f}** | {sum(ratios_ng) / n:.2f} |")
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


def scaling(raw: Path, tmp: Path, copies: int, max_workers: int) -> None:
    from distributed import Client, LocalCluster

    many = tmp / "many"
    for case in discover_cases(raw):
        if case.problem:
            continue
        for j in range(copies):
            dst = many / f"{case.case_id}-copy{j}"
            dst.mkdir(parents=True)
            for path in case.files.values():
                shutil.copy(path, dst / path.name.replace(case.case_id, f"{case.case_id}-copy{j}", 1))
    n_cases = len(discover_cases(many))
    print(f"\n## Scaling with Dask workers ({n_cases} cases, cluster start excluded)\n")
    print("| workers | wall s | cases/s | speed-up | efficiency |\n|---|---|---|---|---|")
    base = None
    for workers in sorted({1, max_workers}):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster):
            store = tmp / f"store-w{workers}"
            start = time.perf_counter()
            summary = run_ingest(many, store, scheduler=cluster.scheduler_address, progress=False)
            wall = time.perf_counter() - start
        assert summary.count("ingested") == n_cases, summary.line()
        base = base or wall
        print(f"| {workers} | {wall:.2f} | {n_cases / wall:.2f} | {base / wall:.2f} | {base / wall / workers:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", help="raw BraTS folder (default: ../shared/realdata, else synthetic)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    print(f"# bench/ingest.py\n\nmachine: {machine()}")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        raw = raw_dataset(args.raw, tmp)
        print(f"data: {raw}")
        one_core(raw, tmp, args.repeats)
        scaling(raw, tmp, args.copies, args.workers)


if __name__ == "__main__":
    main()
