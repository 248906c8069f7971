"""Training throughput and peak memory of the full default model, through the real training loop.

Runs `run_training` for one epoch of --steps optimizer steps (no validation) on a store of the
real samples (or full-size synthetic cases), with the reference design's defaults: Res-UNet
32-64-128-256/512, 96^3 patches, batch 4, AMP on CUDA. Prints patches/s, the share of time the
loop waited for data, and peak GPU memory (torch.cuda.max_memory_allocated) or, on CPU, the
peak resident memory of the process.

With --step-times a second epoch times each phase of the step (data wait, copy + augmentation,
forward, backward, optimizer), synchronising the device at each boundary.

    python bench/train.py [--raw DIR] [--steps 20] [--accum 8] [--device auto] [--batch 4] [--base 32] [--step-times]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, raw_dataset  # noqa: E402

from gliostream.devices import resolve_device  # noqa: E402
from gliostream.pipeline.ingest import run_ingest  # noqa: E402
from gliostream.trainer.checkpoint import load_checkpoint  # noqa: E402
from gliostream.trainer.config import config_from_dict  # noqa: E402
from gliostream.trainer.loop import precision, run_training  # noqa: E402
from gliostream.trainer.model import ResUNet, parameter_count  # noqa: E402
from gliostream.trainer.step_timing import PHASES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=None)
    parser.add_argument("--store", default=None, help="an existing store (skips ingest)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--accum", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--base", type=int, default=32, help="base channels (32: the reference model)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--step-times", action="store_true",
                        help="then a second epoch timing each phase of the step (synchronising the device)")
    args = parser.parse_args()

    import torch

    torch.backends.cudnn.benchmark = args.cudnn_benchmark

    print(f"Machine: {machine()}; torch {torch.__version__}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(args.store) if args.store else Path(tmp) / "store"
        if not args.store:
            run_ingest(raw_dataset(args.raw, Path(tmp)), store, workers=0, progress=False)
        patches = args.steps * args.accum * args.batch
        config = config_from_dict(dict(store=str(store), out=str(Path(tmp) / "out"), epochs=1, patches_per_epoch=patches,
                             patch_size=(args.patch,) * 3, batch_size=args.batch, accum_steps=args.accum,
                             device=args.device, val_fraction=0.0, workers=args.workers, base_channels=args.base))
        run_training(config, progress=False)
        row = pd.read_csv(Path(config.out) / "train_log.csv").iloc[-1]
        if args.step_times:
            timed = dataclasses.replace(config, epochs=2)
            run_training(timed, resume=Path(config.out) / "last.pt", progress=False, step_times=True)
            phases = load_checkpoint(Path(config.out) / "last.pt")["history"][-1]
    params = parameter_count(ResUNet(config.model))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = (f"{row['peak_gpu_mib'] / 1024:.2f} / {row['peak_gpu_reserved_mib'] / 1024:.2f} GiB"
           if not pd.isna(row["peak_gpu_mib"]) else "n/a (CPU)")
    print(f"model: {params / 1e6:.1f} M parameters; "
          f"{args.steps} steps of {args.accum} x {args.batch} patches of {args.patch}^3")
    amp, _ = precision(config, resolve_device(config.device))
    print("| device | precision | patches/s | data wait | peak GPU memory (allocated / reserved) | peak RSS |")
    print("|---|---|---|---|---|---|")
    print(f"| {config.device} | {str(amp).removeprefix('torch.') if amp else 'fp32'} | {row['patches_per_s']:.2f} | "
          f"{100 * row['data_wait']:.1f}% | {gpu} | {peak_rss:.0f} MiB |")
    if args.step_times:
        step = {p: phases[f"step_s_{p}"] for p in PHASES}
        total = sum(step.values())
        print(f"\nWhere a micro-batch of {args.batch} goes (second epoch, the device synchronised at each phase):")
        print("| " + " | ".join(PHASES) + " | total |\n|" + "---|" * (len(PHASES) + 1))
        print("| " + " | ".join(f"{1000 * v:.0f} ms ({100 * v / total:.0f}%)" for v in step.values())
              + f" | {1000 * total:.0f} ms |")


if __name__ == "__main__":
    main()
