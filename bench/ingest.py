"""Ingest time per case against the time to merely decompress the same raw files.

Part 1 pins this process to one core and, per case, measures (best of --repeats):
  floor      read + gzip-inflate the case's files with the standard zlib (what nibabel does)
  floor-ng   the same with zlib-ng, the inflater brats uses
  ingest     `ingest_case`: read, hash, validate, crop, z-score, remap, sample, write Zarr
Part 2 ingests --copies copies of every case on a Dask LocalCluster of 1 and of N workers
(cluster start excluded) and reports the speed-up.
Part 3 is ingest as users run it: `brats ingest --workers 1` of all the cases against the first 2
(cases linked under distinct ids), the wall time per extra case against the zlib floor of the
same cases, and where an in-process `ingest_case` spends it (cProfile, per stage).

    python bench/ingest.py [--raw DIR] [--repeats 3] [--copies 3] [--workers 2] [--only cli]
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
from _common import BIN, best_of, machine, raw_dataset, record_results, timed_command  # noqa: E402
from zlib_ng import zlib_ng  # noqa: E402

from gliostream.pipeline.config import IngestConfig  # noqa: E402
from gliostream.pipeline.discovery import discover_cases  # noqa: E402
from gliostream.pipeline.ingest import ingest_case, run_ingest  # noqa: E402
from gliostream.store import layout  # noqa: E402
from gliostream.store.reader import read_case_record  # noqa: E402
from gliostream.store.writer import create_or_check_store  # noqa: E402


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
    ratios, ratios_ng, times, labelled = [], [], [], []
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
        labelled.append("seg" in case.files)
        print(f"| {case.case_id} | {'x'.join(map(str, shape))} | {floor:.3f} | {floor_ng:.3f} | {t:.3f} | "
              f"{t / floor:.2f} | {t / floor_ng:.2f} |")
    n = len(ratios)
    print(f"| **mean** | | | | {sum(times) / n:.3f} | **{sum(ratios) / n:.2f}** | {sum(ratios_ng) / n:.2f} |")
    labelled_ratios = [r for r, seg in zip(ratios, labelled, strict=True) if seg]
    record_results("ingest", {"one_core_mean_s": f"{sum(times) / n:.2f} s",
                              "one_core_vs_zlib_floor_mean": f"{sum(ratios) / n:.2f}×",
                              "one_core_vs_zlib_floor_labelled": f"{min(labelled_ratios):.2f}–{max(labelled_ratios):.2f}×"})
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
    record_results("ingest", {"dask_2_worker_efficiency": f"{100 * base / wall / max_workers:.0f} %"})


STAGES = {  # function name in gliostream.pipeline / gliostream.store -> what it does
    "case_lock": "lock", "recover_case": "recover debris", "read_case_record": "read previous record",
    "open_sources": "read files, SHA-256, header checks", "case_fingerprint": "fingerprint",
    "decode_case": "inflate + decode, finite/label checks", "preprocess_case": "crop, z-score, remap, locations",
    "_case_record": "record", "write_case": "Zarr write, checksums, atomic rename",
}


def cli(raw: Path, tmp: Path) -> None:
    import cProfile
    import pstats

    cases = [c for c in discover_cases(raw) if c.problem is None]
    folders = {}
    for n in (2, len(cases)):
        folder = folders[n] = tmp / f"cli-{n}"
        for case in cases[:n]:
            (folder / case.case_id).mkdir(parents=True)
            for path in case.files.values():
                (folder / case.case_id / path.name).symlink_to(path)
    walls = {n: timed_command([str(BIN / "brats"), "ingest", str(folder), "--out", str(tmp / f"cli-store-{n}"),
                               "--workers", "1", "--no-progress"])[0] for n, folder in folders.items()}
    extra = (walls[len(cases)] - walls[2]) / (len(cases) - 2)
    floor = sum(best_of(lambda c=c: inflate_all(list(c.files.values()), zlib), 1) for c in cases) / len(cases)
    floor_ng = sum(best_of(lambda c=c: inflate_all(list(c.files.values()), zlib_ng), 1) for c in cases) / len(cases)
    print(f"\n## Through the command line: `brats ingest --workers 1`, {len(cases)} cases against 2\n")
    print(f"| 2 cases, s | {len(cases)} cases, s | per extra case, s | floor zlib, s | floor zlib-ng, s "
          f"| per extra case / floor |\n|---|---|---|---|---|---|")
    print(f"| {walls[2]:.2f} | {walls[len(cases)]:.2f} | {extra:.3f} | {floor:.3f} | {floor_ng:.3f} "
          f"| **{extra / floor:.2f}** |")
    record_results("ingest", {"cli_s_per_extra_case": f"{extra:.3f} s", "cli_vs_zlib_floor": f"{extra / floor:.2f}×"})

    config = IngestConfig()
    root = create_or_check_store(tmp / "profiled", config.store_params())
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    for case in cases:
        ingest_case(case, str(root), config)
    profile.disable()
    inprocess = (time.perf_counter() - start) / len(cases)
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, ..., cumulative, ...)
    spent = {name: sum(v[3] for (_, _, fn), v in stats.items() if fn == name) / len(cases) for name in STAGES}
    print(f"\nWhere an in-process `ingest_case` spends its {1000 * inprocess:.0f} ms per case (cProfile, "
          f"cumulative; the CLI's per-case cost above includes Dask's task overhead):\n")
    print("| stage | ms per case |\n|---|---|")
    for name, words in STAGES.items():
        print(f"| {words} (`{name}`) | {1000 * spent[name]:.0f} |")
    print(f"| the rest of `ingest_case` | {1000 * (inprocess - sum(spent.values())):.0f} |")
    print(f"| Dask task and process overhead (CLI per extra case - in process) | {1000 * (extra - inprocess):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", help="raw BraTS folder (default: ../shared/realdata, else synthetic)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--only", choices=("cli",), default=None)
    args = parser.parse_args()
    print(f"# bench/ingest.py\n\nmachine: {machine()}")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        raw = raw_dataset(args.raw, tmp)
        print(f"data: {raw}")
        if args.only is None:
            one_core(raw, tmp, args.repeats)
            scaling(raw, tmp, args.copies, args.workers)
        cli(raw, tmp)


if __name__ == "__main__":
    main()
