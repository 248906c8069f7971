"""How cost grows with the store, up to the BraTS 2021 training size (1,251 cases).

The real labelled cases are linked under distinct ids (2021 naming: BraTS2021_00000 ...) into a
raw folder of --cases cases; the store holds real arrays for each. Measured through the command
line as users run it, at a small size (--small, 20) and the full one:

  ingest   `brats ingest --workers W` of the small set, then the incremental run adding the rest
           (s per case); Dask scaling from 1 and 2 workers on --scaling-cases cases, projected to
           more workers by Amdahl's law from those two
  store    bytes on disk; the case listing, index rebuild and `brats verify` (s, s per case)
  stream   PatchStream over all the store's cases: time to first batch and peak RSS (must not
           grow with the store), small store against full
  score    `brats score` of the same --score-cases cases from the small and the full store
           (a tiny checkpoint: the cost per case, not the model, is measured)

Writes the figures next to --plot (PNG: seconds and memory against case count).

    python bench/scale.py [--cases 1251] [--small 20] [--workers 2] [--plot docs/scale.png] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BIN, REALDATA, folder_bytes, json_child, labelled_cases, machine, record_results, timed_command  # noqa: E402


def link_cases(sources, raw: Path, first: int, last: int) -> None:
    """Cases first..last-1 as links to the real cases, round robin, under 2021 names."""
    from gliostream.pipeline.naming import MODALITIES

    for i in range(first, last):
        case = sources[i % len(sources)]
        case_id = f"BraTS2021_{i:05d}"
        folder = raw / case_id
        folder.mkdir(parents=True, exist_ok=True)
        for role in (*MODALITIES, "seg"):
            (folder / f"{case_id}_{role}.nii.gz").symlink_to(case.files[role])


def stream_child(store: str, limit: int) -> None:
    """Run in a child process: the first batch of a PatchStream over `limit` cases (0: all)."""
    started = time.perf_counter()
    from gliostream.store.reader import labelled_case_ids
    from gliostream.trainer.config import StreamConfig
    from gliostream.trainer.stream import PatchStream

    ids = labelled_case_ids(store)
    ids = ids[:limit] if limit else ids
    listed = time.perf_counter() - started
    with PatchStream(store, ids, StreamConfig(workers=2), seed=0) as stream:
        batches = stream.batches(0, 40)
        next(batches)
        first = time.perf_counter() - started
        for _ in range(39):
            next(batches)
    print(json.dumps({"cases": len(ids), "first_batch_s": first, "listing_s": listed,
                      "batches_s": time.perf_counter() - started - first}))


def stream_run(store: Path, limit: int) -> dict:
    return json_child([sys.executable, __file__, "--stream-child", str(store), str(limit)])


def store_costs(store: Path) -> dict:
    from gliostream.store.index import build_index
    from gliostream.store.reader import labelled_case_ids

    start = time.perf_counter()
    n = len(labelled_case_ids(store))
    listing = time.perf_counter() - start
    start = time.perf_counter()
    build_index(store)
    index = time.perf_counter() - start
    verify, verify_mib = timed_command([str(BIN / "brats"), "verify", str(store)])
    return {"cases": n, "bytes": folder_bytes(store), "listing_s": listing, "index_s": index, "verify_s": verify,
            "verify_mib": verify_mib}


def score_run(store: Path, ckpt: Path, ids: Path, out: Path) -> float:
    seconds, _ = timed_command([str(BIN / "brats"), "score", "--ckpt", str(ckpt), "--store", str(store), "--cases",
                                str(ids), "--out", str(out), "--device", "cpu", "--no-progress"])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=str(REALDATA))
    parser.add_argument("--cases", type=int, default=1251)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scaling-cases", type=int, default=40)
    parser.add_argument("--score-cases", type=int, default=20)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--work", default=None, help="an empty folder to work in, kept (default: a temporary one)")
    parser.add_argument("--stream-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream_child:
        stream_child(args.stream_child[0], int(args.stream_child[1]))
        return

    print(f"Machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.work or tmp)
        root.mkdir(parents=True, exist_ok=True)
        sources = [c for c in labelled_cases(Path(args.raw)) if c.convention is not None
                   and c.files["t1"].name.endswith("_t1.nii.gz")]
        print(f"Data: {args.cases} cases linked to {len(sources)} real labelled cases of {args.raw}")

        # Dask scaling: the same cases with 1 and 2 workers.
        link_cases(sources, root / "scaling", 0, args.scaling_cases)
        one, _ = timed_command([str(BIN / "brats"), "ingest", str(root / "scaling"), "--out", str(root / "s1"),
                                "--workers", "1", "--no-progress"])
        two, _ = timed_command([str(BIN / "brats"), "ingest", str(root / "scaling"), "--out", str(root / "s2"),
                                "--workers", "2", "--no-progress"])
        serial = max(0.0, min(1.0, 2 * two / one - 1))  # Amdahl: T(n) = T(1) (s + (1 - s) / n)
        print(f"\n## Ingest scaling, {args.scaling_cases} cases: 1 worker {one:.1f} s, 2 workers {two:.1f} s "
              f"({one / two:.2f}×); serial share {serial:.2f}")
        print("| workers | " + " | ".join(str(n) for n in (1, 2, 4, 8, 16, 32)) + " |\n|---|" + "---|" * 6)
        print("| projected s per case | " + " | ".join(f"{one * (serial + (1 - serial) / n) / args.scaling_cases:.3f}"
                                                   for n in (1, 2, 4, 8, 16, 32)) + " |")

        raw, store = root / "raw", root / "store"
        link_cases(sources, raw, 0, args.small)
        small_s, small_mib = timed_command([str(BIN / "brats"), "ingest", str(raw), "--out", str(store),
                                            "--workers", str(args.workers), "--no-progress"])
        small = store_costs(store)
        small_store = root / "small_store"
        subprocess.run(["cp", "-a", str(store), str(small_store)], check=True)
        link_cases(sources, raw, args.small, args.cases)
        rest_s, rest_mib = timed_command([str(BIN / "brats"), "ingest", str(raw), "--out", str(store),
                                          "--workers", str(args.workers), "--no-progress"])
        full = store_costs(store)
        added = args.cases - args.small

        print(f"\n## Store of {args.small} and of {args.cases} cases, {args.workers} workers")
        print(f"| | {args.small} cases | {args.cases} cases | per case, small / full |\n|---|---|---|---|")
        print(f"| ingest (incremental for the full store: {added} cases added), s | {small_s:.1f} | {rest_s:.1f} "
              f"| {small_s / args.small:.3f} / {rest_s / added:.3f} |")
        print(f"| ingest peak memory, MiB | {small_mib:.0f} | {rest_mib:.0f} | |")
        print(f"| store size, GB | {small['bytes'] / 1e9:.2f} | {full['bytes'] / 1e9:.2f} "
              f"| {small['bytes'] / args.small / 1e6:.1f} / {full['bytes'] / args.cases / 1e6:.1f} MB |")
        for key, words in (("listing_s", "case listing (labelled ids), s"), ("index_s", "index rebuild, s"),
                           ("verify_s", "brats verify, s")):
            print(f"| {words} | {small[key]:.2f} | {full[key]:.2f} "
                  f"| {1000 * small[key] / args.small:.2f} / {1000 * full[key] / args.cases:.2f} ms |")
        print(f"| brats verify peak memory, MiB | {small['verify_mib']:.0f} | {full['verify_mib']:.0f} | |")

        streams = {n: stream_run(store, n) for n in (args.small, 0)}
        s_small, s_full = streams[args.small], streams[0]
        print(f"| stream over all cases: time to first batch, s | {s_small['first_batch_s']:.1f} "
              f"| {s_full['first_batch_s']:.1f} | |")
        print(f"| stream peak RSS, MiB | {s_small['peak_rss_mib']:.0f} | {s_full['peak_rss_mib']:.0f} | |")

        ckpt_dir = root / "run"
        subprocess.run([str(BIN / "brats"), "train", "--store", str(small_store), "--out", str(ckpt_dir), "--epochs", "1",
                        "--patches-per-epoch", "4", "--patch-size", "64", "--base-channels", "4", "--batch-size", "2",
                        "--accum-steps", "1", "--val-fraction", "0", "--device", "cpu", "--no-progress"],
                       check=True, capture_output=True)
        ids = root / "score_ids.txt"
        ids.write_text("\n".join(f"BraTS2021_{i:05d}" for i in range(args.score_cases)) + "\n")
        score_small = score_run(small_store, ckpt_dir / "last.pt", ids, root / "score_small.csv")
        score_full = score_run(store, ckpt_dir / "last.pt", ids, root / "score_full.csv")
        print(f"| brats score of the same {args.score_cases} cases, s | {score_small:.1f} | {score_full:.1f} "
              f"| {score_small / args.score_cases:.2f} / {score_full / args.score_cases:.2f} |")
        print(f"\nscale: ingest s per case, {args.cases} against {args.small} cases: "
              f"{(rest_s / added) / (small_s / args.small):.2f}× (1.00× is linear)")
        print(f"scale: verify s per case, {args.cases} against {args.small} cases: "
              f"{(full['verify_s'] / args.cases) / (small['verify_s'] / args.small):.2f}×")
        print(f"scale: stream peak RSS, {args.cases} against {args.small} cases: "
              f"{s_full['peak_rss_mib'] / s_small['peak_rss_mib']:.2f}×")
        record_results("scale", {"stream_peak_rss_1251_cases": f"{s_full['peak_rss_mib'] / 1024:.1f} GiB",
                                 "stream_peak_rss_20_cases_mib": f"{s_small['peak_rss_mib']:.0f} MiB",
                                 "ingest_1251_cases": f"{rest_s / 60:.1f} minutes",
                                 "ingest_s_per_case_1251": f"{rest_s / added:.2f} s"})
        if args.plot:
            plot(Path(args.plot), args, small, full, small_s, rest_s, s_small, s_full)


def plot(path: Path, args, small: dict, full: dict, small_s: float, rest_s: float, s_small: dict, s_full: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [args.small, args.cases]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    ax_time.plot(counts, [small_s, small_s + rest_s], "o-", label="ingest (cumulative)")
    ax_time.plot(counts, [small["verify_s"], full["verify_s"]], "o-", label="brats verify")
    ax_time.plot(counts, [small["index_s"], full["index_s"]], "o-", label="index rebuild")
    ax_time.plot(counts, [s_small["first_batch_s"], s_full["first_batch_s"]], "o-", label="stream: first batch")
    ax_time.set(xlabel="cases in the store", ylabel="seconds", xscale="log", yscale="log", title="time")
    ax_time.legend(fontsize=8)
    ax_mem.plot(counts, [s_small["peak_rss_mib"], s_full["peak_rss_mib"]], "o-", label="stream peak RSS")
    ax_mem.plot(counts, [small["verify_mib"], full["verify_mib"]], "o-", label="brats verify peak memory")
    ax_mem.plot(counts, [small["bytes"] / 2**20, full["bytes"] / 2**20], "o--", label="store size")
    ax_mem.set(xlabel="cases in the store", ylabel="MiB", xscale="log", yscale="log", title="memory and disk")
    ax_mem.legend(fontsize=8)
    fig.suptitle(f"brats at BraTS 2021 scale ({machine()})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
