"""Process group and device for single-process or `torchrun` (DistributedDataParallel) runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ..devices import resolve_device
from ..errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(device_name: str) -> Runtime:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and device_name.startswith("cuda:"):
        raise ConfigError(f"--device {device_name}: under torchrun each process uses the GPU of its LOCAL_RANK; "
                          "give --device cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES")
    device = resolve_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not dist.is_initialized():
        # Rank 0 validates while the others wait: allow for long validations.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return Runtime(rank, world, device)


def stop(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(runtime: Runtime, value: float) -> float:
    if not runtime.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=runtime.device if runtime.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t) / runtime.world_size


def gather_to_main(runtime: Runtime, value: Any) -> list[Any]:
    """Every rank's `value` (picklable, small), in rank order; every rank must call it."""
    if not runtime.distributed:
        return [value]
    values: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(values, value)
    return values


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()
