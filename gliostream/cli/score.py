"""`brats score`: score a checkpoint (or existing segmentations) and write the BraTS-layout CSV."""

from __future__ import annotations

import sys

import click

from ..lesionwise import CHALLENGES
from ..scoring.settings import ScoreConfig
from ..tasks import TASKS
from .common import Interrupted, line, progress_option, quiet_dask, reports_errors, running_options


@click.command()
@click.option("--ckpt", type=click.Path(), multiple=True,
              help="Checkpoint to predict with (best.pt), or a model exported by `brats export` (its folder or "
                   "a member .onnx); repeat it for an ensemble (mean probabilities).")
@click.option("--store", default=None, help="Store of the cases.  [default: the checkpoint's store]")
@click.option("--cases", default=ScoreConfig.cases, show_default=True,
              help="Store cases to predict: val (the checkpoint's validation cases), all, a file of ids, or oof "
                   "(with the --ckpt of every fold: each case by the fold model that held it out).")
@click.option("--raw", type=click.Path(file_okay=False), default=None,
              help="Score raw BraTS NIfTI cases instead (validated and preprocessed as by ingest).")
@click.option("--pred", type=click.Path(file_okay=False), default=None,
              help="Score the <case_id>.nii.gz segmentations in DIR (no model) against --raw or --store.")
@click.option("--out", default=ScoreConfig.out, show_default=True, help="CSV report; the plot goes next to it (.png).")
@click.option("--overlap", type=float, default=ScoreConfig.overlap, show_default=True, help="Sliding-window overlap.")
@click.option("--tta/--no-tta", default=ScoreConfig.tta, show_default=True, help="Average over the 8 axis mirrorings.")
@click.option("--postprocess/--no-postprocess", default=ScoreConfig.postprocess, show_default=True,
              help="Apply the checkpoint's postprocessing: remove predicted components below its sizes (never a "
                   "region's largest inside each tumour), relabel a small enhancing tumour as necrosis if it does.")
@click.option("--task", type=click.Choice(list(TASKS), case_sensitive=False), default=None,
              help="BraTS task of the cases: its labels, regions and official label groups.  [default: the "
                   "checkpoint's, else the store's, else GLI]")
@click.option("--challenge", type=click.Choice(list(CHALLENGES), case_sensitive=False), default=None,
              help="Lesion-wise rules of this BraTS 2023 challenge: GLI, SSA, PED dilate the reference 3 times "
                   "and ignore lesions of at most 50 voxels; MEN dilates once; MET dilates once, limit 2.  "
                   "[default: the task's]")
@click.option("--metrics", default=None, metavar="LIST",
              help="Metric families, comma-separated: legacy (BraTS 2018-2021 whole volume, always included), "
                   "lesionwise-2023 (the BraTS 2023 rules), official (BraTS-evaluation since 2024: global and "
                   "matched-lesion Dice, NSD, HD95 and lesion counts per label group).  [default: all the "
                   "--challenge has]")
@click.option("--figures", type=click.Path(file_okay=False), default=None,
              help="Write one PNG per scored case here: FLAIR and T1ce in three views, reference and prediction outlined.")
@click.option("--device", default=ScoreConfig.device, show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--save-predictions", type=click.Path(file_okay=False), default=None,
              help="Write <case_id>.nii.gz segmentations in the raw geometry and label convention here.")
@running_options(ScoreConfig)
@progress_option
@reports_errors
def score(progress: bool, **options: object) -> None:
    """Predict whole volumes by sliding window and score each region (WT, TC, ET): legacy
    whole-volume Dice, HD95, sensitivity, specificity and volumes (BraTS 2018-2021 rules), and
    lesion-wise Dice and HD95 with lesion counts (the BraTS 2023 ranking rules, --challenge), and
    the official evaluation since 2024 (BraTS-evaluation's columns, --metrics).

    \b
    brats score --ckpt best.pt                  validation cases of the checkpoint's store
    brats score --ckpt best.pt --raw DIR        raw cases, preprocessed on the fly
    brats score --pred DIR --raw DIR            other tools' segmentations, no model
    brats score --ckpt best.pt --figures figs/  and a picture of every case
    brats score --ckpt best.pt --workers 2      spread over a local Dask cluster

    \b
    Exit codes: 0 scored; 1 some raw cases or prediction files unusable (each named, skipped; the
    others scored); 2 bad command line (neither --ckpt nor --pred); 3 fatal error (unusable
    checkpoint, missing or damaged store cases, unwritable --out).
    """
    from ..errors import OptionConflict
    from ..scoring.report import summary_text
    from ..scoring.run import run_scoring

    try:
        config = ScoreConfig(**options)  # type: ignore[arg-type]
    except OptionConflict as error:  # options that do not go together: a bad command line
        raise click.UsageError(str(error)) from None
    if config.workers or config.scheduler:
        quiet_dask()
    try:
        result = run_scoring(config, progress=progress)
    except KeyboardInterrupt:
        raise Interrupted("no score table was written (it is written whole at the end); predictions saved so far "
                          "are complete files; run the same command again") from None
    for skipped in result.skipped:
        click.echo(line(f"skipped: {skipped}"), err=True)
    for retried in result.retried:
        click.echo(line(f"retried: {retried}"), err=True)
    if result.scored:
        click.echo(summary_text(result.table, result.challenge, result.evaluation))
        click.echo(result.worst_text())
    click.echo(result.line())
    sys.exit(result.exit_code)
