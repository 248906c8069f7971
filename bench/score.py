"""Seconds per case of brats' sliding-window inference against MONAI's, same model, same windows.

Both run the full default Res-UNet (random weights: speed and agreement do not depend on
training) over whole cropped cases of the store with 96^3 windows, overlap 0.5, Gaussian
weighting (sigma 1/8), the same number of windows per batch, on the same device; MONAI's
`sliding_window_inference` gets a predictor returning region probabilities. Reports the time
per case of each (after a warm-up forward pass, MONAI first, best of --repeats), the largest
probability difference and the share of
voxels whose predicted label differs.

    python bench/score.py [--raw DIR] [--cases 1] [--repeats 1] [--device auto] [--window 96]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, raw_dataset  # noqa: E402

from gliostream.devices import (
    cuda_autocast_dtype,  # noqa: E402
    resolve_device,  # noqa: E402
)
from gliostream.inference import InferenceConfig, sliding_window_probabilities  # noqa: E402
from gliostream.pipeline.ingest import run_ingest  # noqa: E402
from gliostream.regions import decode_regions, region_probabilities  # noqa: E402
from gliostream.store.reader import labelled_case_ids  # noqa: E402
from gliostream.store.volumes import iterate_volumes  # noqa: E402
from gliostream.trainer.model import ResUNet  # noqa: E402


def timed(fn, repeats: int, device: torch.device):
    best, out = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=None)
    parser.add_argument("--cases", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--window", type=int, default=96)
    parser.add_argument("--batch-windows", type=int, default=2)
    args = parser.parse_args()
    from monai.inferers import sliding_window_inference

    device = resolve_device(args.device)
    print(f"Machine: {machine()}; torch {torch.__version__}; device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))
    torch.manual_seed(0)
    model = ResUNet().to(device).eval()
    window = (args.window,) * 3
    amp = device.type == "cuda"
    config = InferenceConfig(window=window, overlap=0.5, batch_windows=args.batch_windows, amp=amp)
    autocast = torch.autocast("cuda", dtype=cuda_autocast_dtype() if amp else torch.float16, enabled=amp)

    def monai_predict(image: torch.Tensor) -> torch.Tensor:
        def predictor(x: torch.Tensor) -> torch.Tensor:
            with autocast:
                logits = model(x)
            return region_probabilities(logits)

        with torch.no_grad():
            return sliding_window_inference(image.to(device).float()[None], window, args.batch_windows, predictor,
                                            overlap=0.5, mode="gaussian", sigma_scale=0.125)[0]

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        run_ingest(raw_dataset(args.raw, Path(tmp)), store, workers=0, progress=False)
        ids = labelled_case_ids(store)[:args.cases]
        print("\n| case | cropped shape | brats s | MONAI s | MONAI / brats | max prob diff | labels differing |")
        print("|---|---|---|---|---|---|---|")
        with torch.no_grad(), autocast:  # warm-up: first-call allocations and kernel selection
            model(torch.zeros((args.batch_windows, 4, *window), device=device))
        for volume in iterate_volumes(store, ids, workers=0):
            theirs_s, theirs = timed(lambda: monai_predict(volume.image), args.repeats, device)
            ours_s, ours = timed(lambda: sliding_window_probabilities(model, volume.image, config, device),
                                 args.repeats, device)
            diff = float((ours - theirs).abs().max())
            differing = float((decode_regions(ours) != decode_regions(theirs)).float().mean())
            shape = "x".join(str(s) for s in volume.image.shape[1:])
            print(f"| {volume.case_id} | {shape} | {ours_s:.1f} | {theirs_s:.1f} | {theirs_s / ours_s:.2f} "
                  f"| {diff:.2e} | {100 * differing:.4f}% |")


if __name__ == "__main__":
    main()
