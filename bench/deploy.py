"""Deploying on CPUs, side by side in one run on the real cases (issue 25).

1. Seconds per case of the CPU preset's network (`--ckpt`, a checkpoint trained with
   configs/real-cpu.toml; random weights of that architecture without it) over the cropped real
   cases, through `predict_case` (sliding window, decoding, postprocessing): torch eager as today
   (2 windows per batch), torch with 1 window per batch, torch channels-last, ONNX Runtime,
   OpenVINO, and MONAI's `sliding_window_inference` with the same torch network; labels compared
   with today's torch path (voxels differing, WT/TC/ET Dice).
2. The reference-size network (base 32, random weights): seconds per window batch per engine
   (torch.compile too), projected to the cases' window counts.
3. `brats predict` end to end on the raw cases (read, preprocess, predict, write): today's torch
   path against the CPU default (`--engine auto`), cases/s and the ratio.
4. `brats predict --workers 1` and `--workers 2` (single-threaded Dask workers, default engine):
   cases/s, parallel efficiency and throughput projected to N workers (Amdahl, as bench/scale.py).
5. The knobs' cost and effect on Dice: `brats score` of the checkpoint's validation cases with
   overlap 0.25, 0.5, 0.75 and with TTA.

    python bench/deploy.py --ckpt run/best.pt [--cases 6] [--no-compile]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import REALDATA, machine, record_results  # noqa: E402
from gliostream.inference import predict_labels  # noqa: E402
from gliostream.pipeline.discovery import discover_cases  # noqa: E402
from gliostream.regions import decode_regions, region_probabilities  # noqa: E402
from gliostream.scoring.cases import load_raw_case  # noqa: E402
from gliostream.scoring.engines import OnnxRuntimeNetwork, OpenVinoNetwork  # noqa: E402
from gliostream.scoring.exported import onnx_bytes  # noqa: E402
from gliostream.scoring.models import load_members, postprocessing  # noqa: E402
from gliostream.scoring.predict import run_prediction  # noqa: E402
from gliostream.scoring.settings import PredictConfig  # noqa: E402
from gliostream.trainer.config import ModelConfig  # noqa: E402
from gliostream.trainer.model import ResUNet  # noqa: E402

warnings.simplefilter("ignore")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def agreement(labels: list[np.ndarray], reference: list[np.ndarray]) -> str:
    """Voxels differing (all cases) and the lowest WT/TC/ET Dice of any case, against the reference."""
    differing = sum(int((a != b).sum()) for a, b in zip(labels, reference, strict=True))
    lowest = min(dice(np.isin(a, r), np.isin(b, r)) for a, b in zip(labels, reference, strict=True)
                 for r in ((1, 2, 3), (1, 3), (3,)))
    return f"{differing} voxels differ, lowest Dice {lowest:.5f}"


class ChannelsLast(torch.nn.Module):
    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network.to(memory_format=torch.channels_last_3d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.contiguous(memory_format=torch.channels_last_3d)).contiguous()


def windows_of(shape: tuple[int, ...], window: int, overlap: float = 0.5) -> int:
    from gliostream.inference import window_starts

    return int(np.prod([len(window_starts(max(s, window), window, overlap)) for s in shape]))


ENGINES = ("torch eager (today)", "torch, 1 window per batch", "torch channels-last", "torch.compile", "ONNX Runtime",
           "OpenVINO", "MONAI sliding_window_inference (torch eager)")


def engine_network(name: str, network: torch.nn.Module, window: tuple[int, int, int]):
    """The network as engine `name` runs it (each engine measured in a process of its own: two
    engines' thread pools in one process slow each other down)."""
    if name in ("ONNX Runtime", "OpenVINO"):
        payload = onnx_bytes(network, 3, window, 2, {})
        return OnnxRuntimeNetwork(payload) if name == "ONNX Runtime" else OpenVinoNetwork(payload)
    if name == "torch channels-last":
        return ChannelsLast(network)
    if name == "torch.compile":
        compiled = torch.compile(network)
        with torch.no_grad():
            compiled(torch.zeros(2, 4, *window))  # compilation, not timed
        return compiled
    return network


def monai_labels(network, image, inference, post, regions):
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        probabilities = sliding_window_inference(image[None].float(), inference.window, inference.batch_windows,
                                                 lambda x: region_probabilities(network(x), 3), overlap=inference.overlap,
                                                 mode="gaussian", sigma_scale=0.125, padding_mode="constant")[0]
    return post.apply(decode_regions(probabilities, regions).numpy(), regions)


def preset_model(ckpt: str | None):
    if ckpt:
        member = load_members((ckpt,), torch.device("cpu"), "torch")[0]
        return member.network, member.checkpoint.inference(), postprocessing([member], True), member.regions
    from gliostream.inference_config import InferenceConfig

    inference = InferenceConfig(window=(96, 96, 96))
    return ResUNet(ModelConfig(base_channels=8)).eval(), inference, postprocessing([], False), inference.region_specs


def child(args, cases) -> None:
    """One engine in this process: the preset's labels of every case and its seconds per case, or
    the reference-size network's seconds per 2 windows and its outputs; saved to --child-out."""
    name = args.child
    if args.model == "preset":
        network, inference, post, regions = preset_model(args.ckpt)
        config = replace(inference, batch_windows=1) if "1 window" in name else inference
        if name.startswith("MONAI"):
            def predict(image):
                return monai_labels(network, image, inference, post, regions)
        else:
            net = engine_network(name, network, inference.window)

            def predict(image):
                return post.apply(predict_labels(net, image, config, "cpu").numpy(), regions)
        predict(cases[0].image[:, :96, :96, :96])  # warm-up
        start = time.perf_counter()
        labels = [predict(c.image) for c in cases]
        seconds = (time.perf_counter() - start) / len(cases)
        np.savez_compressed(args.child_out, *labels, seconds=seconds)
        return
    torch.manual_seed(0)
    network = ResUNet(ModelConfig()).eval()  # base 32: 32-64-128-256, bottleneck 512
    net = engine_network(name, network, (96, 96, 96))
    batch = torch.randn(2, 4, 96, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        run = (lambda: net(batch)) if not isinstance(net, torch.nn.Module) else (
            lambda: region_probabilities(net(batch), 3))
        run()
        start = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - start
    np.savez_compressed(args.child_out, seconds=seconds, out=out.numpy())


def run_child(args, name: str, model: str, root: Path):
    out = root / f"{model}-{ENGINES.index(name)}.npz"
    command = [sys.executable, __file__, "--child", name, "--model", model, "--child-out", str(out), "--raw", args.raw,
               "--cases", str(args.cases)] + (["--ckpt", args.ckpt] if args.ckpt else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1][:150]} |")
        return None
    return np.load(out)


def per_case(args, cases, root: Path) -> dict[str, str]:
    figures = {}
    source = f"{args.ckpt} (trained)" if args.ckpt else "random weights"
    print(f"\n## 1. CPU preset's network ({source}), {len(cases)} real cases, {torch.get_num_threads()} threads, "
          "each engine in its own process")
    print("| engine | s per case | × torch eager | labels against torch eager |\n|---|---|---|---|")
    reference, base = None, None
    for name in ENGINES:
        if name == "torch.compile" and not args.compile:
            continue
        result = run_child(args, name, "preset", root)
        if result is None:
            continue
        seconds = float(result["seconds"])
        labels = [result[f"arr_{i}"] for i in range(len(cases))]
        reference = reference or labels
        base = base or seconds
        agree = agreement(labels, reference)
        print(f"| {name} | {seconds:.2f} | {base / seconds:.2f} | {agree} |", flush=True)
        figures[f"preset {name} s/case"] = f"{seconds:.2f} s"
        figures[f"preset {name} ratio"] = f"{base / seconds:.2f}×"
        figures[f"preset {name} agreement"] = agree
    monai = float(figures["preset MONAI sliding_window_inference (torch eager) s/case"][:-2])
    figures["preset MONAI / ONNX Runtime"] = f"{monai / float(figures['preset ONNX Runtime s/case'][:-2]):.2f}×"
    figures["preset MONAI / OpenVINO"] = f"{monai / float(figures['preset OpenVINO s/case'][:-2]):.2f}×"
    print(f"MONAI / ONNX Runtime: {figures['preset MONAI / ONNX Runtime']}; MONAI / OpenVINO: "
          f"{figures['preset MONAI / OpenVINO']}")
    return figures


def reference_size(args, cases, root: Path) -> dict[str, str]:
    counts = [windows_of(tuple(c.image.shape[1:]), 96) for c in cases]
    mean_windows = float(np.mean(counts))
    print(f"\n## 2. Reference-size network (base 32, random weights): s per batch of 2 windows, projected to "
          f"{mean_windows:.1f} windows per case (the cases' mean)")
    print("| engine | s per 2 windows | projected s per case | × torch eager | max abs difference |\n|---|---|---|---|---|")
    figures, base, expected = {}, None, None
    for name in ENGINES:
        if "1 window" in name or name.startswith("MONAI") or (name == "torch.compile" and not args.compile):
            continue
        result = run_child(args, name, "reference", root)
        if result is None:
            continue
        seconds, out = float(result["seconds"]), result["out"]
        expected = out if expected is None else expected
        base = base or seconds
        per = seconds * mean_windows / 2
        print(f"| {name} | {seconds:.2f} | {per:.0f} | {base / seconds:.2f} | {np.abs(out - expected).max():.1e} |",
              flush=True)
        figures[f"reference {name} s/case"] = f"{per:.0f} s"
        figures[f"reference {name} ratio"] = f"{base / seconds:.2f}×"
    return figures


def end_to_end(args, raw: Path, root: Path) -> dict[str, str]:
    """Today's torch path, the CPU default from the checkpoint (exported in memory at the start),
    and the CPU default from a `brats export` folder (exported once beforehand, as deployed)."""
    from gliostream.scoring.export import ExportConfig, run_export

    print(f"\n## 3. `brats predict` end to end, {args.cases} raw cases (read, preprocess, predict, write)")
    start = time.perf_counter()
    run_export(ExportConfig(ckpt=(args.ckpt,), out=str(root / "exported")), progress=False)
    export_seconds = time.perf_counter() - start
    print(f"brats export: {export_seconds:.1f} s (once)")
    results = {}
    for name, ckpt, engine in (("torch (today)", args.ckpt, "torch"), ("CPU default, checkpoint", args.ckpt, "auto"),
                               ("CPU default, exported", str(root / "exported"), "auto")):
        out = root / f"e2e-{len(results)}"
        result = run_prediction(PredictConfig(out=str(out), ckpt=(ckpt,), inputs=str(raw), device="cpu", engine=engine),
                                progress=False)
        results[name] = (len(result.written) / result.seconds, out)
        print(f"| {name} | {result.seconds:.1f} s | {results[name][0]:.3f} cases/s | "
              f"{results[name][0] / results['torch (today)'][0]:.2f}× |", flush=True)
    import nibabel as nib

    files = sorted(results["torch (today)"][1].glob("*.nii.gz"))

    def store_labels(path: Path) -> np.ndarray:  # 2018-2021 files write enhancing tumour as 4
        labels = np.asarray(nib.load(path).dataobj)
        return np.where(labels == 4, 3, labels)

    today = [store_labels(f) for f in files]
    figures = {"export s": f"{export_seconds:.1f} s", "e2e torch cases/s": f"{results['torch (today)'][0]:.3f}",
               "e2e torch s/case": f"{1 / results['torch (today)'][0]:.1f} s"}
    for key, name in (("checkpoint", "CPU default, checkpoint"), ("exported", "CPU default, exported")):
        default = [store_labels(results[name][1] / f.name) for f in files]
        ratio = results[name][0] / results["torch (today)"][0]
        agree = agreement(default, today)
        print(f"{name} / today's torch path: {ratio:.2f}× cases/s; {agree}")
        figures |= {f"e2e {key} cases/s": f"{results[name][0]:.3f}", f"e2e {key} ratio": f"{ratio:.2f}×",
                    f"e2e {key} agreement": agree, f"e2e {key} s/case": f"{1 / results[name][0]:.1f} s"}
    return figures


def scaling(args, raw: Path, root: Path) -> dict[str, str]:
    """Single-threaded local workers predicting from an export (as deployed: exported once)."""
    from gliostream.scoring.export import ExportConfig, run_export

    print(f"\n## 4. `brats predict` of an export on a local Dask cluster of single-threaded workers, {args.cases} cases")
    exported = root / "exported"
    if not exported.exists():
        run_export(ExportConfig(ckpt=(args.ckpt,), out=str(exported)), progress=False)
    seconds = {}
    for n in (1, 2):
        result = run_prediction(PredictConfig(out=str(root / f"dask{n}"), ckpt=(str(exported),), inputs=str(raw),
                                              device="cpu", workers=n), progress=False)
        seconds[n] = result.seconds
        print(f"| {n} worker(s) | {result.seconds:.1f} s | {len(result.written) / result.seconds:.3f} cases/s |",
              flush=True)
    efficiency = seconds[1] / (2 * seconds[2])
    # T(n) = start + cases * per_case / n: the start (the cluster, each worker's model) is paid once,
    # the cases divide over the workers; two runs give both terms.
    per_case = 2 * (seconds[1] - seconds[2]) / args.cases
    start = max(0.0, seconds[1] - args.cases * per_case)
    print(f"efficiency at 2 workers {efficiency:.0%}; fixed start {start:.1f} s, {per_case:.2f} s per case per worker")
    projected = {n: 1251 / (start + 1251 * per_case / n) for n in (1, 2, 4, 8, 16, 32)}
    print("| workers | " + " | ".join(str(n) for n in projected) + " |\n|---|" + "---|" * len(projected))
    print("| projected cases/s, 1,251 cases | " + " | ".join(f"{v:.2f}" for v in projected.values()) + " |")
    return {"scaling cases": str(args.cases), "dask 1 worker cases/s": f"{args.cases / seconds[1]:.3f}",
            "dask 2 workers cases/s":
            f"{args.cases / seconds[2]:.3f}", "dask efficiency": f"{efficiency:.0%}",
            "dask speed-up": f"{seconds[1] / seconds[2]:.2f}×", "dask start": f"{start:.1f} s",
            "dask per case per worker": f"{per_case:.2f} s",
            **{f"dask projected {n} workers cases/s": f"{v:.2f}" for n, v in projected.items()}}


def knobs(args, root: Path) -> dict[str, str]:
    """The knobs' cost and effect on Dice: `brats score` of the checkpoint's validation cases (held
    out of its training) with the default engine, for each overlap and with TTA."""
    from gliostream.scoring.run import run_scoring
    from gliostream.scoring.settings import ScoreConfig

    print("\n## 5. What the knobs cost: `brats score --ckpt` of the checkpoint's validation cases, default engine")
    print("| setting | s per case | mean Dice WT / TC / ET |\n|---|---|---|")
    figures = {}
    for name, options in (("overlap 0.25", {"overlap": 0.25}), ("overlap 0.5 (default)", {}),
                          ("overlap 0.75", {"overlap": 0.75}), ("TTA, overlap 0.5", {"tta": True})):
        start = time.perf_counter()
        result = run_scoring(ScoreConfig(ckpt=(args.ckpt,), out=str(root / f"knob-{len(figures)}.csv"), device="cpu",
                                         metrics=("legacy",), **options), progress=False)
        seconds = (time.perf_counter() - start) / result.scored
        mean = result.table[result.table.case_id == "Mean"].iloc[0]
        dice = f"{mean.dice_wt:.3f} / {mean.dice_tc:.3f} / {mean.dice_et:.3f}"
        print(f"| {name} | {seconds:.1f} | {dice} |", flush=True)
        figures[f"knob {name} s/case"] = f"{seconds:.1f} s"
        figures[f"knob {name} dice"] = dice
        figures |= {f"knob {name} dice_{r}": f"{mean[f'dice_{r}']:.3f}" for r in ("wt", "tc", "et")}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="the CPU preset's checkpoint (configs/real-cpu.toml)")
    parser.add_argument("--raw", default=str(REALDATA))
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--scaling-cases", type=int, default=18, help="cases of part 4 (the Dask scaling)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--parts", default="1,2,3,4,5", help="which of the five parts to run")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="preset", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    found = [c for c in discover_cases(args.raw) if not c.problem][:args.cases]
    if args.child:
        child(args, [load_raw_case(type(c)(**{**c.__dict__, "files": {r: p for r, p in c.files.items() if r != "seg"}}))
                     for c in found] if args.model == "preset" else [])
        return
    print(f"Machine: {machine()}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = root / "raw"
        raw.mkdir()
        for case in found:
            (raw / case.case_id).symlink_to(case.folder.resolve())
        cases = [load_raw_case(type(c)(**{**c.__dict__, "files": {r: p for r, p in c.files.items() if r != "seg"}}))
                 for c in found]
        figures: dict[str, str] = {"cases": str(len(cases))}
        if 1 in parts:
            figures |= per_case(args, cases, root)
        if 2 in parts:
            figures |= reference_size(args, cases, root)
        if args.ckpt and 3 in parts:
            figures |= end_to_end(args, raw, root)
        if args.ckpt and 4 in parts:
            scaling_raw = root / "scaling-raw"
            scaling_raw.mkdir()
            for case in [c for c in discover_cases(args.raw) if not c.problem][:args.scaling_cases]:
                (scaling_raw / case.case_id).symlink_to(case.folder.resolve())
            figures |= scaling(argparse.Namespace(**{**vars(args), "cases": len(list(scaling_raw.iterdir()))}),
                               scaling_raw, root)
        if args.ckpt and 5 in parts:
            figures |= knobs(args, root)
    record_results("deploy", figures)


if __name__ == "__main__":
    main()
