"""The memory planner (`brats plan`) against real training steps on the CPU, fp32, at a few sizes.

Each size runs in a fresh process: the model and AdamW are built and one step is taken (so the
optimiser state exists), then the peak resident memory is reset (`/proc/self/clear_refs`) and a
second step (forward, deep-supervised loss, backward, AdamW) is measured. glibc is told to map
large blocks and return them on free (MALLOC_MMAP_THRESHOLD_), so the first step's memory cannot
hide the second's. What the step adds, peak minus the resident memory before it, is compared with
the planner's saved activations + backward working set + gradients (freed between steps, as in
training). The data batch is made before the measurement and the planner's margin is left out.

    python bench/plan_memory.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, record_results  # noqa: E402

SIZES = [(8, 32, 2), (8, 64, 1), (16, 48, 2), (32, 64, 1), (32, 96, 1)]  # base width, patch side, batch


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def measure(base: int, side: int, batch: int) -> dict:
    import torch

    from gliostream.regions import region_targets
    from gliostream.trainer.config import config_from_dict
    from gliostream.trainer.loss import deep_supervision_loss
    from gliostream.trainer.memory_plan import estimate_step_memory
    from gliostream.trainer.model import ResUNet

    torch.set_num_threads(2)
    config = config_from_dict(dict(base_channels=base, patch_size=[side] * 3, batch_size=batch))
    estimate = estimate_step_memory(config, amp=False)
    model = ResUNet(config.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    image = torch.randn(batch, 4, side, side, side)
    targets = region_targets(torch.randint(0, 4, (batch, side, side, side)))

    def step() -> None:
        deep_supervision_loss(model(image), targets, config.loss).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    before = _status("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")
    step()
    added = _status("VmHWM:") - before
    planned = estimate.activations + estimate.backward + estimate.gradients
    return {"base": base, "side": side, "batch": batch, "measured": added, "planned": planned}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(measure(*map(int, sys.argv[2:]))))
        return
    print(f"Machine: {machine()}\n")
    print("| base width | patch | batch | step adds, measured MiB | planner MiB | planner / measured |")
    print("|---|---|---|---|---|---|")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ratios = []
    for base, side, batch in SIZES:
        out = subprocess.run([sys.executable, __file__, "--child", str(base), str(side), str(batch)], env=env,
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {base} | {side}^3 | {batch} | {r['measured'] / 2**20:.0f} | {r['planned'] / 2**20:.0f} "
              f"| {r['planned'] / r['measured']:.2f} |", flush=True)
        ratios.append(r["planned"] / r["measured"] - 1)
    from gliostream.trainer.config import TrainConfig
    from gliostream.trainer.memory_plan import estimate_step_memory

    amp = estimate_step_memory(TrainConfig(), amp=True).total / 2**30
    print(f"\nthe reference design with 16-bit AMP: {amp:.2f} GiB")
    record_results("plan_memory", {"planner_error_high": f"{100 * max(ratios):+.0f}%",
                                   "planner_error_low": f"{100 * min(ratios):+.1f}%".replace("-", "−"),
                                   "reference_design_amp": f"{amp:.2f} GiB"})


if __name__ == "__main__":
    main()
