"""Which device computes, and in which precision: one answer for training, scoring and prediction."""

from __future__ import annotations

import os

import torch

from .device_names import check_device_name
from .errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks this process's GPU when there is one, else the CPU."""
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device cuda asked for, but this torch build sees no CUDA GPU")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def cuda_autocast_dtype() -> torch.dtype:
    """bf16 on GPUs with native bf16 (Ampere and later: no overflow, same speed), else fp16; emulated
    bf16 (V100, T4) is slow, so it does not count."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def configure_kernels(device: torch.device, deterministic: bool = False) -> None:
    """On CUDA: cuDNN autotuning, since training patches and inference windows have fixed shapes
    (nnU-Net does the same); or, with `deterministic`, cuDNN's deterministic kernels and PyTorch's
    deterministic algorithms (ops without one warn), for runs that must repeat exactly. On the
    CPU both are already deterministic: nothing to set."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
