"""`brats train`: train the Res-UNet on the store's labelled cases."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from .common import Interrupted, progress_option, reports_errors


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
@click.option("--store", default=None, help="Store to train from.  [default: ./store]")
@click.option("--out", default=None, help="Folder for best.pt, last.pt, train_log.csv, training_curves.png.  [default: .]")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Epochs.  [default: 100]")
@click.option("--patches-per-epoch", type=click.IntRange(1), default=None,
              help="Training patches per epoch, rounded up to whole optimizer steps.  [default: 4096]")
@click.option("--patch-size", callback=_triple, default=None, help="Patch side(s), multiples of 16.  [default: 96]")
@click.option("--base-channels", type=click.IntRange(1), default=None,
              help="Width of the first level; the others follow x2.  [default: 32]")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Patches per step.  [default: 4]")
@click.option("--accum-steps", type=click.IntRange(1), default=None,
              help="Steps accumulated per optimizer update.  [default: 8]")
@click.option("--lr", type=float, default=None, help="AdamW learning rate.  [default: 1e-4]")
@click.option("--amp/--no-amp", default=None, help="Mixed precision.  [default: on CUDA, off on CPU]")
@click.option("--workers", type=click.IntRange(0), default=None, help="Case-loading threads; 0 inline.  [default: 2]")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.  [default: auto]")
@click.option("--seed", type=int, default=None, help="Seed of every random choice.  [default: 0]")
@click.option("--val-fraction", type=float, default=None,
              help="Share of the labelled cases held out for validation (a seeded draw).  [default: 0.2]")
@click.option("--folds", type=click.IntRange(0), default=None,
              help="K-fold cross-validation: train on all folds but --fold (seeded, disjoint, covering).  [default: 0, off]")
@click.option("--fold", type=click.IntRange(0), default=None, help="The held-out fold, 0..folds-1.  [default: 0]")
@click.option("--loss", type=click.Choice(["dice+bce", "dice"]), default=None,
              help="Region soft Dice + binary cross-entropy, or the Dice alone.  [default: dice+bce]")
@click.option("--batch-dice/--no-batch-dice", default=None,
              help="Dice over the whole batch per region, or per sample.  [default: batch]")
@click.option("--downsample", type=click.IntRange(1, 4), default=None,
              help="Train and predict at 1/N resolution (2: 2 mm voxels, 8x less compute).  [default: 1]")
@click.option("--split-file", default=None, help='JSON {"train": [ids], "val": [ids]} instead of --val-fraction.')
@click.option("--val-every", type=click.IntRange(1), default=None,
              help="Validate every N epochs (and after the last).  [default: 5]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file of these options (names as here); options given here override it.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue a run from its checkpoint (last.pt), with its settings.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in --out (its checkpoints and log).")
@progress_option
@reports_errors
def train(config_file: str | None, resume: str | None, overwrite: bool, progress: bool, **options: Any) -> None:
    """Train the 3D Res-UNet on the labelled cases of the store.

    Defaults are the reference design: 96^3 patches (half centred on tumour), encoder
    32-64-128-256 and bottleneck 512, deep supervision, region Dice on WT/TC/ET, batch 4 x 8
    accumulated steps, AdamW 1e-4, cosine schedule, 100 epochs. Keeps best.pt (by mean
    validation Dice) and last.pt (every epoch) in --out.

    \b
    Exit codes: 0 trained; 2 bad command line; 3 fatal error (empty store, no labelled case,
    unwritable --out, --out holding another run, unusable checkpoint or config).
    """
    from ..trainer.config import load_config
    from ..trainer.loop import resume_base, run_training

    logging.getLogger("brats.trainer").setLevel(logging.INFO)
    base = resume_base(resume) if resume else None
    config = load_config(config_file, options, base)
    try:
        result = run_training(config, resume=resume, progress=progress, overwrite=overwrite)
    except KeyboardInterrupt:
        last = Path(config.out).absolute() / "last.pt"
        if last.exists():
            raise Interrupted(f"the last finished epoch is in {last}; continue with: brats train --resume {last}") from None
        raise Interrupted("stopped before the first epoch ended; nothing to resume, start the run again") from None
    click.echo(result.line())
