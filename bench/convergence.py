"""How validation Dice grows with optimizer updates, across institutions (issue 22).

Trains the reference recipe at a size a CPU can run (--patch-size, --base-channels, a global
batch of --batch-size × 1) on the largest site's labelled cases of ../shared/realdata and
validates after every epoch on the cases of all the other sites (fold `sites` of bench/real.py),
so the training log of each arm is its held-out curve: Dice (legacy; the default postprocessing,
and raw) against updates, and the global gradient norm of the updates (median, 99th percentile,
maximum per epoch: how often a clip at nnU-Net's 12 would act).

Arms are `name=options` (extra `brats train` options; the defaults: the reference lr 1e-4 and
10x that, both unclipped as first measured). Arms run side by side, one core each (`taskset`, one thread), so their
patches/s compare. The cosine schedule spans each arm's whole run: a curve's early points are
those of a longer run, not of a shorter one. Validating on the held-out sites makes best.pt a
choice on the test cases: read the curves, not the best checkpoints.

    python bench/convergence.py [--updates 2400] [--evals 8] [--work DIR] [--arm name="--lr 1e-3" ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REALDATA, machine  # noqa: E402
from real import BRATS, ROOT, held_out, institution  # noqa: E402

DEFAULT_ARMS = ("reference=--grad-clip 0", "lr-1e-3=--lr 1e-3 --grad-clip 0")  # as measured: before clipping
SHOWN = ["updates", "patches", "lr", "train_loss", "dice_wt", "dice_tc", "dice_et", "dice_mean",
         "dice_wt_raw", "dice_tc_raw", "dice_et_raw", "grad_norm_p50", "grad_norm_p99", "grad_norm_max"]


def arm_command(store: Path, split: Path, out: Path, options: argparse.Namespace, extra: list[str]) -> list[str]:
    per_epoch = options.updates // options.evals * options.batch_size
    return [*BRATS, "train", "--store", str(store), "--out", str(out), "--split-file", str(split), "--device", "cpu",
            "--epochs", str(options.evals), "--patches-per-epoch", str(per_epoch), "--val-every", "1",
            "--patch-size", str(options.patch_size), "--base-channels", str(options.base_channels),
            "--batch-size", str(options.batch_size), "--accum-steps", "1", "--workers", "1",
            "--no-progress", "--overwrite", *extra]


def run_arms(arms: dict[str, list[str]], store: Path, split: Path, work: Path, options: argparse.Namespace) -> None:
    """Every arm at once, each pinned to its own core (round robin) with one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running = []
    for i, (name, extra) in enumerate(arms.items()):
        out = work / name
        out.mkdir(parents=True, exist_ok=True)
        command = ["taskset", "-c", str(i % (os.cpu_count() or 1)),
                   *arm_command(store, split, out / "run", options, extra)]
        print("$ " + shlex.join(command), flush=True)
        running.append((name, subprocess.Popen(command, cwd=ROOT, env=env, stdout=(out / "train.log").open("w"),
                                               stderr=subprocess.STDOUT)))
    for name, process in running:
        if process.wait():
            raise SystemExit(f"arm {name} failed: see {work / name / 'train.log'}")


def weights_moved(run: Path) -> dict[str, float]:
    """How far training moved the weights (relative L2 norm of last.pt's conv weights against the
    run's own seeded initialisation), beside what AdamW's decoupled decay took: 1 − Π(1 − lr·wd)."""
    import torch

    from gliostream.trainer.checkpoint import load_checkpoint
    from gliostream.trainer.config import saved_config
    from gliostream.trainer.model import ResUNet
    from gliostream.trainer.seeds import INIT, derive_seed

    state = load_checkpoint(run / "last.pt")
    config = saved_config(state["config"])
    torch.manual_seed(derive_seed(INIT, config.seed))
    start = ResUNet(config.model).state_dict()
    keys = [k for k in start if k.endswith(".weight") and start[k].dim() == 5]
    moved = sum(float((state["model"][k] - start[k]).double().norm() ** 2) for k in keys) ** 0.5
    norm = sum(float(start[k].double().norm() ** 2) for k in keys) ** 0.5
    kept = 1.0
    for row in state["history"]:
        kept *= (1 - row["lr"] * config.weight_decay) ** row["updates"]
    return {"weights_moved": moved / norm, "decay_removed": 1 - kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=str(REALDATA))
    parser.add_argument("--work", default=str(ROOT / "data" / "bench-convergence"))
    parser.add_argument("--updates", type=int, default=2400, help="optimizer updates of each arm")
    parser.add_argument("--evals", type=int, default=8, help="epochs, each ending with a validation")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--arm", action="append", help='name="brats train options" (repeatable)')
    parser.add_argument("--skip-train", action="store_true", help="report the runs already in --work")
    options = parser.parse_args()
    arms = {}
    for spec in options.arm or DEFAULT_ARMS:
        name, _, extra = spec.partition("=")
        arms[name] = shlex.split(extra)
    work = Path(options.work).resolve()
    store = work / "store"
    subprocess.run([*BRATS, "ingest", options.raw, "--out", str(store), "--no-progress"], check=True, cwd=ROOT)
    index = pd.read_csv(store / "index.csv")
    labelled = sorted(index.loc[index.labelled, "case_id"])
    test = held_out(labelled, "sites")
    train = [c for c in labelled if c not in test]
    split = work / "split.json"
    split.write_text(json.dumps({"train": train, "val": test}))
    print(f"training on {len(train)} cases of {sorted({institution(c) for c in train})}, validating on "
          f"{len(test)} of other sites: {', '.join(test)}", flush=True)
    start = time.perf_counter()
    if not options.skip_train:
        run_arms(arms, store, split, work, options)
    results = {}
    pd.set_option("display.width", 250)
    for name, extra in arms.items():
        log = pd.read_csv(work / name / "run" / "train_log.csv")
        log["updates"] = log["updates"].cumsum()
        log["patches"] = log["patches"].cumsum()
        print(f"\narm {name} ({' '.join(extra) or 'the reference recipe'}): "
              f"{log.seconds.sum() / 60:.0f} min of training, {log.patches_per_s.mean():.2f} patches/s")
        print(log[SHOWN].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        drift = weights_moved(work / name / "run")
        print(f"the conv weights moved {100 * drift['weights_moved']:.1f}% of their initial norm; the weight decay "
              f"took {100 * drift['decay_removed']:.2g}% of each weight")
        results[name] = {"options": extra, "train_minutes": round(float(log.seconds.sum()) / 60, 1), **drift,
                         "rows": log[SHOWN].round(5).to_dict(orient="records")}
    print(f"\nmachine: {machine()}; {(time.perf_counter() - start) / 60:.0f} min in all")
    (work / "results.json").write_text(json.dumps({"machine": machine(), "settings": {
        k: getattr(options, k) for k in ("updates", "evals", "patch_size", "base_channels", "batch_size")},
        "heldout": test, "arms": results}, indent=1) + "\n")
    print(f"wrote {work / 'results.json'}")


if __name__ == "__main__":
    main()
