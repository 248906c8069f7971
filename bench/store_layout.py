"""Chunk shape and codec of the store, measured for the reads the trainer and scorer do.

For one preprocessed case (z-scored float16 image + uint8 label), writes each candidate
layout and measures (median of repeats): write time, size on disk, whole-case read (what a
TorchIO Queue worker and the sliding-window scorer do) and random 96^3 patch read.

    python bench/store_layout.py [--raw DIR] [--case ID]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import folder_bytes, machine, raw_dataset  # noqa: E402

from gliostream.pipeline.discovery import discover_cases  # noqa: E402
from gliostream.pipeline.preprocess import preprocess_case  # noqa: E402
from gliostream.pipeline.validation import load_case  # noqa: E402
from gliostream.store import layout  # noqa: E402

PATCH = 96


def candidates(shape: tuple[int, ...]):
    lz4 = BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle")
    lz4_shuffle = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    zstd = ZstdCodec(level=1)
    whole = shape
    yield "one chunk, blosc-lz4 (chosen)", whole, lz4, True
    yield "one chunk, blosc-lz4, fill scan on", whole, lz4, False
    yield "one chunk, blosc-lz4+shuffle", whole, lz4_shuffle, True
    yield "one chunk, zstd-1", whole, zstd, True
    yield "one chunk, uncompressed", whole, None, True
    for c in (96, 64, 48):
        yield f"{c}^3 chunks, blosc-lz4", (shape[0], c, c, c), lz4, True
    yield "64^3 chunks, zstd-1", (shape[0], 64, 64, 64), zstd, True


def measure(tmp: Path, image: np.ndarray, label: np.ndarray, chunks, codec, skip_fill_scan: bool, rng):
    config = {"write_empty_chunks": True} if skip_fill_scan else {}
    writes = []
    for _ in range(3):
        path = tmp / "case"
        shutil.rmtree(path, ignore_errors=True)
        group = zarr.open_group(str(path), mode="w")
        start = time.perf_counter()
        for name, data, ch in (("image", image, chunks), ("label", label, chunks[1:])):
            arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=ch,
                                     compressors=codec, fill_value=0, config=config)
            arr[...] = data
        writes.append(time.perf_counter() - start)
    size = folder_bytes(tmp / "case")
    group = zarr.open_group(str(tmp / "case"), mode="r")
    img, lab = group["image"], group["label"]
    full = []
    for _ in range(7):
        start = time.perf_counter()
        img[...], lab[...]
        full.append(time.perf_counter() - start)
    patches = []
    for _ in range(30):
        o = [int(rng.integers(0, max(1, s - PATCH))) for s in label.shape]
        sl = tuple(slice(a, a + PATCH) for a in o)
        start = time.perf_counter()
        img[(slice(None),) + sl], lab[sl]
        patches.append(time.perf_counter() - start)
    return statistics.median(writes), size, statistics.median(full), statistics.median(patches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw")
    parser.add_argument("--case", default=None)
    args = parser.parse_args()
    print(f"# bench/store_layout.py\n\nmachine: {machine()}, zarr {zarr.__version__}")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        cases = [c for c in discover_cases(raw_dataset(args.raw, tmp, cases=1)) if c.labelled and not c.problem]
        case = next((c for c in cases if c.case_id == args.case), cases[0])
        pre = preprocess_case(load_case(case))
        print(f"case: {case.case_id}, cropped image {pre.image.shape} float16 = {pre.image.nbytes / 1e6:.1f} MB\n")
        print("| layout | write ms | MB on disk | whole-case read ms | 96^3 patch read ms |\n|---|---|---|---|---|")
        rng = np.random.default_rng(0)
        for name, chunks, codec, skip in candidates(pre.image.shape):
            w, size, full, patch = measure(tmp, pre.image, pre.label, chunks, codec, skip, rng)
            print(f"| {name} | {w * 1e3:.0f} | {size / 1e6:.1f} | {full * 1e3:.1f} | {patch * 1e3:.1f} |")
        chosen = layout.chunk_shape(pre.image.shape, 2)
        print(f"\nbrats writes image chunks {chosen} with {layout.codec()}")


if __name__ == "__main__":
    main()
