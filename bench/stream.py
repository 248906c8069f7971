"""Training patches per second: brats' store stream against a plain TorchIO pipeline on NIfTI.

Both deliver batches of 4 patches of 4 x 96^3 plus label to a loop, with a queue of 64
patches, 8 patches per volume, half centred on tumour, and the same number of loader workers:

  nifti   tio.Subject of the raw .nii.gz files, ZNormalization on non-zero voxels,
          tio.LabelSampler (0: 1/2, each tumour label: 1/6), tio.Queue, DataLoader
  store   gliostream.trainer.stream.PatchStream over the ingested store, its workers being
          threads (the default) or processes (`--loader processes`, forkserver)

Each configuration runs in its own process; after a warm-up of one queue fill it times the
next batches and reports peak resident memory (sum over the process tree). Then a simulated
training loop (--step-ms per batch of compute, sleeping) measures the share of time spent
waiting for data.

    python bench/stream.py [--raw DIR] [--workers 1 2] [--step-ms 40]
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
from _common import machine, raw_dataset, record_results  # noqa: E402

PATCH, BATCH, QUEUE, PER_VOLUME = 96, 4, 64, 8


def tree_peak_rss_mib(pid: int) -> float:
    """Sum of the peak RSS (VmHWM) of a process and all its descendants."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def nonzero(x):
    return x != 0


def nifti_batches(raw: Path, workers: int):
    import torch
    import torchio as tio
    from torch.utils.data import DataLoader

    from gliostream.pipeline.discovery import discover_cases
    from gliostream.pipeline.naming import MODALITIES

    subjects = []
    for case in discover_cases(raw):
        if "seg" not in case.files:
            continue
        images = {m: tio.ScalarImage(case.files[m]) for m in MODALITIES}
        subjects.append(tio.Subject(**images, seg=tio.LabelMap(case.files["seg"])))
    labels = sorted({int(v) for s in subjects[:1] for v in s["seg"].data.unique()} | {1, 2})
    tumour = [v for v in labels if v != 0]
    probabilities = {0: 0.5, **{v: 0.5 / len(tumour) for v in tumour}}
    dataset = tio.SubjectsDataset(subjects, transform=tio.ZNormalization(masking_method=nonzero))
    sampler = tio.LabelSampler(PATCH, "seg", label_probabilities=probabilities)
    queue = tio.Queue(dataset, QUEUE, PER_VOLUME, sampler, num_workers=workers)

    def collate(patches):
        image = torch.stack([torch.cat([p[m][tio.DATA] for m in MODALITIES]) for p in patches])
        return image, torch.stack([p["seg"][tio.DATA][0] for p in patches])

    while True:
        yield from DataLoader(queue, batch_size=BATCH, num_workers=0, collate_fn=collate)


def store_batches(store: Path, workers: int, loader: str):
    from gliostream.store.reader import labelled_case_ids
    from gliostream.trainer.stream import PatchStream, StreamConfig

    config = StreamConfig(patch_size=(PATCH,) * 3, samples_per_volume=PER_VOLUME, queue_length=QUEUE,
                          batch_size=BATCH, workers=workers, loader=loader)
    stream = PatchStream(store, labelled_case_ids(store), config, seed=0)
    epoch = 0
    while True:
        for batch in stream.batches(epoch, 10_000):
            yield batch.image, batch.label
        epoch += 1


def measure(kind: str, path: Path, workers: int, batches: int, step_ms: float) -> dict:
    """Run in a child process: warm up one queue fill, then time `batches` batches."""
    import os

    source = nifti_batches(path, workers) if kind == "nifti" else store_batches(path, workers, kind.split("-")[1])
    for _ in range(QUEUE // BATCH):
        next(source)
    waited, start = 0.0, time.perf_counter()
    for _ in range(batches):
        t = time.perf_counter()
        image, _ = next(source)
        waited += time.perf_counter() - t
        if step_ms:
            time.sleep(step_ms / 1000)
    wall = time.perf_counter() - start
    return {"kind": kind, "workers": workers, "patches_per_s": batches * BATCH / wall, "wait_share": waited / wall,
            "dtype": str(image.dtype), "peak_rss_mib": tree_peak_rss_mib(os.getpid())}


def run_child(kind: str, path: Path, workers: int, batches: int, step_ms: float = 0.0) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(workers), str(batches),
                          str(step_ms)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--nifti-batches", type=int, default=32)
    parser.add_argument("--store-batches", type=int, default=400)
    parser.add_argument("--step-ms", type=float, default=40.0)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path, workers, batches, step_ms = args.child
        print(json.dumps(measure(kind, Path(path), int(workers), int(batches), float(step_ms))))
        return

    from gliostream.pipeline.ingest import run_ingest

    print(f"Machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        raw = raw_dataset(args.raw, Path(tmp))
        store = Path(tmp) / "store"
        run_ingest(raw, store, workers=0, progress=False)
        print(f"Data: {raw}; batches of {BATCH} x (4 x {PATCH}^3 + label), queue {QUEUE}, {PER_VOLUME} per volume\n")
        print("| workers | NIfTI patches/s | store, process workers | store, thread workers (default) "
              "| ratio per worker, processes | ratio per worker, threads | peak RSS MiB NIfTI / processes / threads |")
        print("|---|---|---|---|---|---|---|")
        ratios = []
        for workers in args.workers:
            nifti = run_child("nifti", raw, workers, args.nifti_batches)
            procs = run_child("store-processes", store, workers, args.store_batches)
            threads = run_child("store-threads", store, workers, args.store_batches)
            base = nifti["patches_per_s"]
            ratios.append(threads["patches_per_s"] / base)
            print(f"| {workers} | {base:.1f} | {procs['patches_per_s']:.1f} | {threads['patches_per_s']:.1f} "
                  f"| {procs['patches_per_s'] / base:.1f}× | {threads['patches_per_s'] / base:.1f}× "
                  f"| {nifti['peak_rss_mib']:.0f} / {procs['peak_rss_mib']:.0f} / {threads['peak_rss_mib']:.0f} |")
        print(f"\nDelivered dtypes: NIfTI {nifti['dtype']}, store {threads['dtype']}")
        low, high = round(min(ratios)), round(max(ratios))
        record_results("stream", {"store_threads_vs_nifti_per_worker": f"{low}–{high}×" if low != high else f"{low}×"})
        if args.step_ms:
            workers = max(args.workers)
            loop = run_child("store-threads", store, workers, 200, args.step_ms)
            print(f"\nSimulated training loop, {args.step_ms:.0f} ms of compute per batch of {BATCH}, "
                  f"{workers} workers: {loop['patches_per_s']:.1f} patches/s, waiting for data "
                  f"{100 * loop['wait_share']:.2f}% of the time")


if __name__ == "__main__":
    main()
