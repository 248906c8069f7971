"""`brats plan`: will a training config fit a GPU's memory, and what is the largest that does?"""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import line, reports_errors
from .train import _triple, default


@click.command()
@click.option("--gpu-memory", type=click.FloatRange(min=0.5), default=8.0, show_default=True, metavar="GIB",
              help="Memory of the GPU to plan for, GiB.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="The training config (TOML or a run's train_config.json); the options below override it.")
@click.option("--patch-size", callback=_triple, default=None, help="Patch side(s)." + default("patch_size"))
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Patches per step." + default("batch_size"))
@click.option("--base-channels", type=click.IntRange(1), default=None,
              help="Width of the first level." + default("base_channels"))
@click.option("--amp/--no-amp", default=True, show_default=True, help="Plan for 16-bit mixed precision (a GPU's default).")
@reports_errors
def plan(gpu_memory: float, config_file: str | None, amp: bool, **options: Any) -> None:
    """Estimate the peak memory of one training step of the config (weights, gradients, AdamW,
    activations saved for backward under the precision, the backward pass, the data batch, a
    margin for cuDNN workspaces) and the largest batch and cubic patch that fit --gpu-memory,
    before any GPU is touched (a second or two on the CPU; within 10% of measured CPU steps,
    docs/benchmarks.md).

    \b
    brats plan --gpu-memory 8                       the reference design on an 8 GiB card
    brats plan --gpu-memory 12 --config my.toml --batch-size 2

    \b
    Exit codes: 0 the config fits; 1 it does not (the line says what would); 2 bad command
    line; 3 fatal error (unreadable config).
    """
    from ..trainer.config import load_config
    from ..trainer.memory_plan import plan_fit

    config = load_config(config_file, options)
    fit = plan_fit(config, amp, gpu_memory)
    click.echo(line(f"plan: {config.patch_size[0]}x{config.patch_size[1]}x{config.patch_size[2]} patches, batch "
                    f"{config.stream.batch_size}, base width {config.model.base_channels}, "
                    f"{'16-bit AMP' if amp else 'fp32'}: {fit.line()}"))
    sys.exit(0 if fit.fits else 1)
