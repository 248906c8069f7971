"""The GPU checks of one session, in one command: what a first real training run on a GPU would hit.

    python bench/gpu_check.py [--raw ../shared/realdata] [--minutes 6] [--device cuda] [--results FILE]
    python bench/gpu_check.py --dry-run      # every check at toy size on the CPU (the test suite runs this)

Prints one markdown table row per check (for docs/benchmarks.md, with the device named) and
rewrites `--results` (JSON: device, machine, rows) after each one, so a session cut short keeps
what it measured. A check that fails is reported as FAILED with its error and the others go on.
 1. the full reference model, 4 x 96^3 patches with AMP: patches/s, data wait, peak memory
    allocated and reserved (goal: reserved <= 8 GiB) against the planner's estimate
    (`brats plan`), the precision chosen; with
    cudnn.benchmark off and on;
 2. one epoch under `torch.cuda.set_sync_debug_mode("warn")`: the host syncs of the step;
 3. fp16 + GradScaler forced for two tiny epochs: finite loss, steps not all skipped, resume;
 4. sliding-window prediction of a real case in fp32 and bf16: largest probability difference
    and the Dice between the two label maps;
 5. a checkpoint written on the CPU resumed on the GPU;
 6. two identical one-epoch runs: do the weights match (exact resume on GPU)?
 7. the reference recipe (default augmentation) on the real cases for `--minutes`, trained on the
    largest site and scored on the others (bench/real.py's `sites` fold): Dice per institution
    group, patches/s, data wait, peak memory.
 8. one training micro-step (forward, backward, AdamW) of the full model, timed with
    `channels_last_3d` off and on, and `torch.compile` off and on;
 9. sliding-window inference seconds per case, without and with TTA.
10. `brats predict` of the real cases on a Dask worker holding the Dask resource GPU=1 (the
    `dask worker --resources GPU=1` recipe) against this process: seconds per case, same labels.
With `--device cpu` every check runs at toy size (to test this script without a GPU);
`--dry-run` also uses generated cases when `--raw` is absent, and shortens every check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REALDATA, machine  # noqa: E402
from real import held_out, institution  # noqa: E402

from gliostream.inference import InferenceConfig, predict_probabilities  # noqa: E402
from gliostream.labels import REGIONS  # noqa: E402
from gliostream.metrics import region_dice  # noqa: E402
from gliostream.pipeline.ingest import run_ingest  # noqa: E402
from gliostream.regions import decode_regions  # noqa: E402
from gliostream.scoring.run import ScoreConfig, run_scoring  # noqa: E402
from gliostream.store.reader import labelled_case_ids  # noqa: E402
from gliostream.store.volumes import iterate_volumes  # noqa: E402
from gliostream.trainer import loop  # noqa: E402
from gliostream.trainer.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402
from gliostream.trainer.config import TrainConfig, config_from_dict  # noqa: E402
from gliostream.trainer.memory_plan import estimate_step_memory  # noqa: E402
from gliostream.trainer.step_timing import PHASES  # noqa: E402

ROWS: list[tuple[str, str]] = []
RESULTS: dict[str, object] = {}


def report(check: str, result: str) -> None:
    ROWS.append((check, result))
    print(f"| {check} | {result} |", flush=True)
    path = RESULTS.get("path")
    if path:
        Path(str(path)).write_text(json.dumps({**{k: v for k, v in RESULTS.items() if k != "path"},
                                               "rows": [{"check": c, "result": r} for c, r in ROWS]}, indent=1) + "\n")


def guarded(name: str, check, *args):  # noqa: ANN001, ANN201 - any check
    """Run one check; a failure is a FAILED row (the error named) and the next check still runs."""
    try:
        return check(*args)
    except Exception as error:  # noqa: BLE001 - one check must never cost the others
        report(name, f"FAILED: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}")
        return None
    finally:
        torch.backends.cudnn.benchmark = False


def last_row(out: Path) -> pd.Series:
    return pd.read_csv(out / "train_log.csv").iloc[-1]


def throughput(store: Path, work: Path, base: TrainConfig, steps: int) -> None:
    for bench in (False, True) if base.device.startswith("cuda") else (False,):  # a CUDA flag: one run on CPU
        torch.backends.cudnn.benchmark = bench
        config = dataclasses.replace(base, out=str(work / f"speed-{bench}"), epochs=1, val_fraction=0.0,
                                     patches_per_epoch=steps * base.stream.batch_size * base.accum_steps)
        loop.run_training(config, progress=False)
        row = last_row(Path(config.out))
        amp, _ = loop.precision(config, torch.device(config.device))
        planned = estimate_step_memory(config, amp is not None).total / 2**30
        memory = (f"{row.peak_gpu_mib / 1024:.2f} GiB allocated, {row.peak_gpu_reserved_mib / 1024:.2f} GiB reserved "
                  f"(planned {planned:.2f} GiB: {planned / (row.peak_gpu_reserved_mib / 1024):.2f}x)"
                  if not pd.isna(row.peak_gpu_mib) else f"CPU (planned for a GPU: {planned:.2f} GiB)")
        shape = f"{base.patch_size[0]}^3 x {base.stream.batch_size} x {base.accum_steps}"
        report(f"1. full model {shape}, cudnn.benchmark={bench}",
               f"{row.patches_per_s:.1f} patches/s, data wait {100 * row.data_wait:.1f}%, {memory}, "
               f"{str(amp).removeprefix('torch.') if amp else 'fp32'}")
    torch.backends.cudnn.benchmark = False
    config = dataclasses.replace(base, out=str(work / "phases"), epochs=1, val_fraction=0.0,
                                 patches_per_epoch=steps * base.stream.batch_size * base.accum_steps)
    loop.run_training(config, progress=False, step_times=True)
    phases = load_checkpoint(Path(config.out) / "last.pt")["history"][-1]
    times = {p: 1000 * phases[f"step_s_{p}"] for p in PHASES}
    total = sum(times.values())
    report("1b. where a micro-batch goes (device synchronised per phase)",
           ", ".join(f"{p} {t:.0f} ms ({100 * t / total:.0f}%)" for p, t in times.items()))


def sync_debug(store: Path, work: Path, tiny: TrainConfig) -> None:
    config = dataclasses.replace(tiny, out=str(work / "sync"), epochs=1, val_fraction=0.0)
    if torch.device(config.device).type != "cuda":
        report("2. host syncs in one epoch", "skipped (no CUDA)")
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            loop.run_training(config, progress=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    micro = config.patches_per_epoch // config.stream.batch_size
    report("2. host syncs in one epoch", f"{len(syncs)} warning(s) for {micro} "
           f"micro-batches: {'; '.join(sorted(set(syncs)))[:300] or 'none'}")


def fp16_path(store: Path, work: Path, tiny: TrainConfig) -> None:
    original = loop.precision
    loop.precision = lambda config, device: (torch.float16, True) if device.type == "cuda" else original(config, device)
    try:
        out = work / "fp16"
        config = dataclasses.replace(tiny, out=str(out), epochs=2, val_fraction=0.0)
        loop.run_training(config, progress=False, stop_after=1)
        loop.run_training(config, resume=out / "last.pt", progress=False)
        state = load_checkpoint(out / "last.pt")
        losses = [r["train_loss"] for r in state["history"]]
        scale = state["scaler"].get("scale") if state["scaler"] else None
        report("3. fp16 + GradScaler, 2 epochs with a resume", f"losses {', '.join(f'{v:.3f}' for v in losses)} "
               f"(finite: {all(np.isfinite(losses))}), scaler scale {scale}, epoch {state['epoch']}")
    finally:
        loop.precision = original


def bf16_inference(store: Path, ckpt: Path, device: str) -> None:
    from gliostream.scoring.models import load_model

    checkpoint = read_checkpoint(ckpt)
    model = load_model(checkpoint, torch.device(device))
    case = next(iterate_volumes(store, labelled_case_ids(store)[:1], workers=0))
    trained = checkpoint.config
    config = InferenceConfig(window=trained.patch_size, downsample=trained.downsample)
    full = predict_probabilities(model, case.image, dataclasses.replace(config, amp=False), device)
    mixed = predict_probabilities(model, case.image, config, device)
    dice = region_dice(decode_regions(full).cpu().numpy(), decode_regions(mixed).cpu().numpy())
    report("4. sliding window fp32 vs autocast", f"max |p32 - p16| {float((full - mixed).abs().max()):.4f}; Dice of "
           f"the label maps {', '.join(f'{r.upper()} {dice[r]:.4f}' for r in REGIONS)}")


def cpu_to_gpu(store: Path, work: Path, tiny: TrainConfig) -> None:
    out = work / "cpu-gpu"
    loop.run_training(dataclasses.replace(tiny, out=str(out), epochs=2, device="cpu", val_fraction=0.0),
                      progress=False, stop_after=1)
    config = dataclasses.replace(tiny, out=str(out), epochs=2, device=tiny.device, val_fraction=0.0)
    loop.run_training(config, resume=out / "last.pt", progress=False)
    report("5. CPU checkpoint resumed on " + tiny.device, f"epoch {load_checkpoint(out / 'last.pt')['epoch']} of 2")


def repeatability(store: Path, work: Path, tiny: TrainConfig) -> None:
    states = []
    for run in ("a", "b"):
        config = dataclasses.replace(tiny, out=str(work / f"same-{run}"), epochs=1, val_fraction=0.0)
        loop.run_training(config, progress=False)
        states.append(load_checkpoint(Path(config.out) / "last.pt")["model"])
    worst = max(float((states[0][k].float() - states[1][k].float()).abs().max()) for k in states[0])
    report("6. two identical one-epoch runs", "weights identical" if worst == 0 else f"weights differ by up to {worst:.2e}")


def micro_step(base: TrainConfig, steps: int, compile_too: bool = True) -> None:
    """Forward, backward and AdamW step of the full model on one batch, with each layout and compiler
    setting (memory format `channels_last_3d`; `torch.compile`)."""
    from gliostream.regions import region_targets
    from gliostream.trainer.loss import deep_supervision_loss
    from gliostream.trainer.model import ResUNet

    device = torch.device(base.device)
    amp, _ = loop.precision(base, device)
    batch = torch.randn(base.stream.batch_size, 4, *base.patch_size, device=device)
    targets = region_targets(torch.randint(0, 4, (base.stream.batch_size, *base.patch_size), device=device))
    results = []
    for layout in ("contiguous", "channels_last_3d"):
        for compiled in (False, True) if compile_too else (False,):
            model = ResUNet(base.model).to(device)
            fmt = torch.channels_last_3d if layout == "channels_last_3d" else torch.contiguous_format
            model = model.to(memory_format=fmt)
            net = torch.compile(model) if compiled else model
            optimizer = torch.optim.AdamW(model.parameters(), lr=base.lr)
            x = batch.contiguous(memory_format=fmt)

            def step() -> None:
                with torch.autocast(device.type, dtype=amp) if amp else torch.autocast(device.type, enabled=False):
                    outputs = net(x)
                deep_supervision_loss(outputs, targets, base.loss).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            start = time.perf_counter()
            step()  # the first step compiles and autotunes
            first = time.perf_counter() - start
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            each = (time.perf_counter() - start) / steps
            results.append(f"{layout}{', compiled' if compiled else ''} {1000 * each:.0f} ms (first {first:.1f} s)")
    report(f"8. one micro-step of {base.stream.batch_size} x {base.patch_size[0]}^3, full model",
           "; ".join(results) + ("" if compile_too else "; torch.compile not tried (dry run)"))


def inference_speed(store: Path, ckpt: Path, device: str, cases: int) -> None:
    from gliostream.scoring.models import load_model

    checkpoint = read_checkpoint(ckpt)
    model = load_model(checkpoint, torch.device(device))
    trained = checkpoint.config
    volumes = list(iterate_volumes(store, labelled_case_ids(store)[:cases], workers=0))
    timings = []
    for tta in (False, True):
        config = InferenceConfig(window=trained.patch_size, downsample=trained.downsample, tta=tta)
        predict_probabilities(model, volumes[0].image, config, device)  # warm-up (cuDNN autotuning)
        start = time.perf_counter()
        for volume in volumes:
            predict_probabilities(model, volume.image, config, device)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        timings.append(f"{'TTA (8 mirrorings)' if tta else 'no TTA'} {(time.perf_counter() - start) / len(volumes):.2f} s")
    report(f"9. sliding-window inference per case ({len(volumes)} case(s), window {trained.patch_size[0]}^3)",
           "; ".join(timings))


def dask_gpu_worker(raw: Path, work: Path, ckpt: Path, device: str, cases: int) -> None:
    import nibabel as nib
    from distributed import LocalCluster

    from gliostream.scoring.predict import run_prediction
    from gliostream.scoring.settings import PredictConfig

    folder = work / "predict-raw"
    folder.mkdir(exist_ok=True)
    for case in sorted(p for p in raw.iterdir() if p.is_dir())[:cases]:
        (folder / case.name).symlink_to(case.resolve())
    here = run_prediction(PredictConfig(out=str(work / "p-here"), ckpt=(str(ckpt),), inputs=str(folder), device=device,
                                        engine="torch"), progress=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      resources={"GPU": 1}) as cluster:
        spread = run_prediction(PredictConfig(out=str(work / "p-dask"), ckpt=(str(ckpt),), inputs=str(folder),
                                              device=device, engine="torch", scheduler=cluster.scheduler_address),
                                progress=False)
    same = all(np.array_equal(np.asarray(nib.load(f).dataobj), np.asarray(nib.load(work / "p-dask" / f.name).dataobj))
               for f in sorted((work / "p-here").glob("*.nii.gz")))
    report(f"10. brats predict on a Dask worker with resources GPU=1 ({len(here.written)} cases)",
           f"this process {here.seconds / max(len(here.written), 1):.2f} s per case, the worker "
           f"{spread.seconds / max(len(spread.written), 1):.2f} s per case (with its start and model load); "
           f"labels {'identical' if same else 'DIFFERENT'}")


def reference_recipe(store: Path, work: Path, base: TrainConfig, minutes: float) -> Path:
    """The reference recipe with the default augmentation, trained on the largest site's cases and
    scored on every other site's (bench/real.py's `sites` fold): Dice per institution group."""
    ids = labelled_case_ids(store)
    test = held_out(ids, "sites") or sorted(ids)[-2:]  # generated cases (dry run) are all of one "site"
    train = [c for c in ids if c not in test]
    out = work / "reference"
    probe = dataclasses.replace(base, out=str(out / "probe"), epochs=1, val_fraction=0.0, patches_per_epoch=64)
    start = time.perf_counter()
    loop.run_training(probe, progress=False)
    per_patch = (time.perf_counter() - start) / 64
    per_epoch = max(base.stream.batch_size * base.accum_steps, int(minutes * 60 / per_patch / 10))
    split = work / "split.json"
    split.write_text(pd.Series({"train": train[2:], "val": train[:2]}).to_json())
    config = dataclasses.replace(base, out=str(out), epochs=10, patches_per_epoch=per_epoch, split_file=str(split),
                                 val_every=5)
    loop.run_training(config, progress=False)
    log = pd.read_csv(out / "train_log.csv")
    (work / "test.txt").write_text("\n".join(test) + "\n")
    table = run_scoring(ScoreConfig(ckpt=(str(out / "best.pt"),), store=str(store), cases=str(work / "test.txt"),
                                    out=str(out / "heldout.csv"), device=base.device), progress=False).table
    mean = table[table.case_id == "Mean"].iloc[0]
    cases = table[table.case_id.isin(test)]
    groups = "; ".join(f"{institution(row.case_id)} {row.dice_wt:.3f}/{row.dice_tc:.3f}/{row.dice_et:.3f}"
                       for row in cases.itertuples())
    memory = ("CPU" if log.peak_gpu_mib.isna().all() else f"peak {log.peak_gpu_mib.max() / 1024:.2f} GiB allocated / "
              f"{log.peak_gpu_reserved_mib.max() / 1024:.2f} GiB reserved")
    report(f"7. reference recipe, {log.seconds.sum() / 60:.1f} min, {len(test)} real cases of other sites",
           f"Dice WT {mean.dice_wt:.3f} TC {mean.dice_tc:.3f} ET {mean.dice_et:.3f} (lesion-wise "
           f"{mean.lw_dice_wt:.3f}/{mean.lw_dice_tc:.3f}/{mean.lw_dice_et:.3f}); per site WT/TC/ET: {groups}; "
           f"{log.patches_per_s.mean():.1f} patches/s, data wait {100 * log.data_wait.mean():.1f}%, {memory}")
    return out / "best.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=str(REALDATA))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=6.0, help="training time of check 7")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps of check 1")
    parser.add_argument("--results", default="gpu_check_results.json", help="JSON file of the rows, rewritten after each")
    parser.add_argument("--dry-run", action="store_true", help="every check at toy size on the CPU")
    args = parser.parse_args()
    if args.dry_run:
        args.device = "cpu"
    gpu = torch.device(args.device).type == "cuda"
    name = torch.cuda.get_device_name() if gpu else "CPU (toy sizes)"
    RESULTS.update(path=args.results, device=name, machine=machine(), torch=torch.__version__)
    print(f"device: {name}; {machine()}; torch {torch.__version__}\n\n| check | result |\n|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = work / "store"
        raw = Path(args.raw)
        if args.dry_run and not raw.is_dir():
            from gliostream.synth import SynthConfig, synth_dataset

            raw = work / "raw"
            synth_dataset(raw, SynthConfig(cases=5, shape=(48, 48, 40), seed=1), progress=False)
        run_ingest(raw, store, workers=0, progress=False)
        base = config_from_dict(dict(store=str(store), device=args.device, workers=4 if gpu else 1))
        if not gpu:
            base = config_from_dict(dict(patch_size=(32, 32, 32), base_channels=4, batch_size=2, accum_steps=1), base)
        tiny = config_from_dict(dict(patch_size=(64, 64, 64) if gpu else (32, 32, 32), base_channels=8 if gpu else 4,
                                   batch_size=2, accum_steps=2, patches_per_epoch=32 if gpu else 8), base)
        guarded("1. full model throughput", throughput, store, work, base, args.steps if gpu else 2)
        guarded("2. host syncs in one epoch", sync_debug, store, work, tiny)
        guarded("3. fp16 + GradScaler", fp16_path, store, work, tiny)
        guarded("5. CPU checkpoint resumed", cpu_to_gpu, store, work, tiny)
        guarded("6. two identical one-epoch runs", repeatability, store, work, tiny)
        guarded("8. one micro-step", micro_step, base, 10 if gpu else 1, not args.dry_run)
        best = guarded("7. reference recipe", reference_recipe, store, work, base,
                       args.minutes if gpu else (0.05 if args.dry_run else 0.2))
        if best is not None:
            guarded("4. sliding window fp32 vs autocast", bf16_inference, store, best, args.device)
            guarded("9. sliding-window inference", inference_speed, store, best, args.device, 3 if gpu else 1)
            guarded("10. predict on a Dask GPU worker", dask_gpu_worker, raw, work, best, args.device, 4 if gpu else 2)
        else:
            report("4, 9. inference checks", "skipped: check 7 wrote no checkpoint")


if __name__ == "__main__":
    main()
