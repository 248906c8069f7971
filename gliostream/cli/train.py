"""`brats train`: train the Res-UNet on the store's labelled cases."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from ..tasks import TASKS
from ..trainer.config import LOSSES, TrainConfig, setting
from .common import Interrupted, progress_option, reports_errors

DEFAULTS = TrainConfig()  # the one definition of every default; torch-free, so --help stays fast


def default(name: str, shown: str | None = None) -> str:
    """The help suffix naming the default of a TrainConfig field (one side for a cube)."""
    value = setting(DEFAULTS, name)
    if isinstance(value, tuple) and len(set(value)) == 1:
        value = value[0]
    return f"  [default: {shown if shown is not None else format(value, 'g') if isinstance(value, float) else value}]"


def _triple(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().replace("x", ",").split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give one side (96) or three (96,96,96)") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise click.BadParameter(f"{value!r}: give one side (96) or three (96,96,96)")
    return tuple(parts)  # type: ignore[return-value]


@click.command()
@click.option("--store", default=None, help="Store to train from." + default("store"))
@click.option("--out", default=None,
              help="Folder for best.pt, last.pt, train_log.csv, training_curves.png." + default("out"))
@click.option("--epochs", type=click.IntRange(1), default=None, help="Epochs." + default("epochs"))
@click.option("--patches-per-epoch", type=click.IntRange(1), default=None,
              help="Training patches per epoch, rounded up to whole optimizer steps." + default("patches_per_epoch"))
@click.option("--patch-size", callback=_triple, default=None,
              help=f"Patch side(s), multiples of {DEFAULTS.model.divisor}." + default("patch_size"))
@click.option("--base-channels", type=click.IntRange(1), default=None,
              help="Width of the first level; the others follow x2." + default("base_channels"))
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Patches per step." + default("batch_size"))
@click.option("--accum-steps", type=click.IntRange(1), default=None,
              help="Steps accumulated per optimizer update." + default("accum_steps"))
@click.option("--lr", type=float, default=None, help="AdamW learning rate." + default("lr"))
@click.option("--weight-decay", type=float, default=None,
              help="AdamW's decoupled weight decay (each update shrinks weights by lr x this)." + default("weight_decay"))
@click.option("--grad-clip", type=float, default=None,
              help="Clip each update's global gradient norm to this; 0 off." + default("grad_clip"))
@click.option("--amp/--no-amp", default=None, help="Mixed precision.  [default: on CUDA, off on CPU]")
@click.option("--workers", type=click.IntRange(0), default=None, help="Case-loading threads; 0 inline." + default("workers"))
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N." + default("device"))
@click.option("--deterministic/--no-deterministic", default=None,
              help="On CUDA, deterministic kernels instead of cuDNN autotuning: repeatable runs and resumes, "
                   "slower.  [default: off; the CPU is always deterministic]")
@click.option("--seed", type=int, default=None, help="Seed of every random choice." + default("seed"))
@click.option("--val-fraction", type=float, default=None,
              help="Share of the labelled cases held out for validation (a seeded draw)." + default("val_fraction"))
@click.option("--folds", type=click.IntRange(0), default=None,
              help="K-fold cross-validation: train on all folds but --fold (seeded, disjoint, covering); 0 is off."
                   + default("folds"))
@click.option("--fold", type=click.IntRange(0), default=None, help="The held-out fold, 0..folds-1." + default("fold"))
@click.option("--loss", type=click.Choice(list(LOSSES)), default=None,
              help="Region soft Dice + binary cross-entropy, or the Dice alone." + default("loss"))
@click.option("--batch-dice/--no-batch-dice", default=None,
              help="Dice over the whole batch per region, or per sample."
                   + default("batch_dice", "batch" if DEFAULTS.loss.batch_dice else "per sample"))
@click.option("--downsample", type=click.IntRange(1, 4), default=None,
              help="Train and predict at 1/N resolution (2: 2 mm voxels, 8x less compute)." + default("downsample"))
@click.option("--split-file", default=None, help='JSON {"train": [ids], "val": [ids]} instead of --val-fraction.')
@click.option("--val-every", type=click.IntRange(1), default=None,
              help="Validate every N epochs (and after the last)." + default("val_every"))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML (or a run's train_config.json): these options, or tables [model], [loss], [stream], "
                   "[augment]; options given here override it.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue a run from its checkpoint (last.pt), with its settings.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in --out (its checkpoints and log).")
@click.option("--tensorboard/--no-tensorboard", default=None,
              help="Also log each epoch's figures to TensorBoard in --out/tensorboard (needs the tensorboard "
                   "package: pip install 'gliostream[tensorboard]').  [default: off]")
@click.option("--task", "expected_task", type=click.Choice(list(TASKS), case_sensitive=False), default=None,
              help="The BraTS task the store must hold (its labels and regions are the store's task's).")
@click.option("--step-times", is_flag=True,
              help="Log where each micro-batch's time goes (data, augment, forward, backward, optimizer); "
                   "synchronises the device at each phase, so slightly slower.")
@progress_option
@reports_errors
def train(config_file: str | None, resume: str | None, overwrite: bool, step_times: bool, tensorboard: bool | None,
          expected_task: str | None, progress: bool, **options: Any) -> None:
    """Train the 3D Res-UNet on the labelled cases of the store.

    Defaults are the reference design: 96^3 patches (half centred on tumour), encoder
    32-64-128-256 and bottleneck 512, deep supervision, region Dice on the task's regions (WT/TC/ET,
    and the resection cavity or cyst where the store's task and labels have them), batch 4 x 8
    accumulated steps, AdamW 1e-4, cosine schedule, 100 epochs. Keeps best.pt (by mean
    validation Dice) and last.pt (every epoch) in --out.

    \b
    Exit codes: 0 trained; 2 bad command line; 3 fatal error (empty store, no labelled case,
    unwritable --out, --out holding another run, unusable checkpoint or config).
    """
    from ..trainer.config import load_config
    from ..trainer.loop import resume_base, run_training

    logging.getLogger("gliostream.trainer").setLevel(logging.INFO)
    base = resume_base(resume) if resume else None
    config = load_config(config_file, options, base)
    if tensorboard is not None:  # on or off over what the config file or the resumed run says
        others = tuple(t for t in config.trackers if t != "tensorboard")
        config = dataclasses.replace(config, trackers=others + (("tensorboard",) if tensorboard else ()))
    if expected_task:
        from ..store.reader import store_task

        held = store_task(config.store)
        if held != expected_task.upper():
            raise ConfigError(f"{config.store}: holds {held} cases, not {expected_task.upper()} (--task)")
    try:
        result = run_training(config, resume=resume, progress=progress, overwrite=overwrite, step_times=step_times)
    except KeyboardInterrupt:
        last = Path(config.out).absolute() / "last.pt"
        if last.exists():
            raise Interrupted(f"the last finished epoch is in {last}; continue with: brats train --resume {last}") from None
        raise Interrupted("stopped before the first epoch ended; nothing to resume, start the run again") from None
    click.echo(result.line())
