"""Where a training step's time goes, phase by phase. Opt-in: each phase boundary waits for the
device, which serialises work a GPU would otherwise overlap with the host."""

from __future__ import annotations

import time

import torch

# data: waiting for the next batch; augment: host-to-device copy, augmentation, region targets;
# forward: network and loss; backward; optimizer: the update every accum_steps micro-batches.
PHASES = ("data", "augment", "forward", "backward", "optimizer")


class StepTimes:
    """Seconds per phase summed over an epoch's micro-batches; does nothing unless `enabled`."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.device, self.enabled = device, enabled
        self.reset()

    def reset(self) -> None:
        """Start a new epoch's sums."""
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.steps, self._last = 0, 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        if self.enabled:
            self._last = self._now()

    def mark(self, phase: str) -> None:
        """The time since the last mark belongs to `phase`."""
        if self.enabled:
            now = self._now()
            self.totals[phase] += now - self._last
            self._last = now
            self.steps += phase == "data"

    def per_step(self) -> dict[str, float]:
        """`step_s_<phase>`: mean seconds per micro-batch (empty when not enabled)."""
        if not self.enabled:
            return {}
        return {f"step_s_{phase}": total / max(self.steps, 1) for phase, total in self.totals.items()}
