"""`brats predict`: segment new cases with a trained model (BraTS submission layout)."""

from __future__ import annotations

import sys

import click

from ..scoring.settings import PredictConfig
from ..tasks import TASKS
from .common import Interrupted, line, progress_option, quiet_dask, reports_errors, running_options


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="[IN] OUT", type=click.Path())
@click.option("--ckpt", type=click.Path(), multiple=True, required=True,
              help="Checkpoint to predict with (best.pt), or a model exported by `brats export` (its folder or "
                   "a member .onnx); repeat it for an ensemble (mean probabilities).")
@click.option("--store", default=None, type=click.Path(file_okay=False),
              help="Predict the cases of this store instead of a raw folder IN.")
@click.option("--cases", default=PredictConfig.cases, show_default=True,
              help="With --store: all, val (the checkpoint's validation cases) or a file of case ids.")
@click.option("--tta/--no-tta", default=PredictConfig.tta, show_default=True, help="Average over the 8 axis mirrorings.")
@click.option("--overlap", type=float, default=PredictConfig.overlap, show_default=True, help="Sliding-window overlap.")
@click.option("--postprocess/--no-postprocess", default=PredictConfig.postprocess, show_default=True,
              help="Apply the checkpoint's postprocessing (small stray components removed, never a region's "
                   "largest inside each tumour; small ET relabelled if it does).")
@click.option("--overwrite", is_flag=True,
              help="Predict every case again, also replacing segmentations in OUT made by another model or options.")
@click.option("--device", default=PredictConfig.device, show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--task", type=click.Choice(list(TASKS), case_sensitive=False), default=None,
              help="BraTS task of the cases, checked against the checkpoint's (which decides the labels written).")
@running_options(PredictConfig)
@progress_option
@reports_errors
def predict(paths: tuple[str, ...], progress: bool, **options: object) -> None:
    """Segment every case folder in IN (either BraTS naming; a seg there is ignored) into
    OUT/<case_id>.nii.gz, in the case's raw geometry and label convention.

    \b
    brats predict new_patients/ seg/ --ckpt best.pt
    brats predict new_patients/ seg/ --ckpt fold0/best.pt --ckpt fold1/best.pt --tta
    brats predict --store store/ --cases val seg/ --ckpt best.pt
    brats predict new_patients/ seg/ --ckpt exported/              a `brats export` folder (ONNX)
    brats predict new_patients/ seg/ --ckpt best.pt --workers 2    a local Dask cluster
    brats predict new_patients/ seg/ --ckpt best.pt --scheduler scheduler.json

    Outputs are written whole (never half a file), never inside IN, by one run at a time.
    OUT/predictions.json records the checkpoints (SHA-256), options and brats version that made
    them and the inputs of each: a case made by this model from the same inputs is skipped, so
    running the command again continues an interrupted run; segmentations made by another model
    or options are refused unless --overwrite.

    \b
    With --workers or --scheduler the cases stream to Dask workers, each loading the models
    once; a case whose worker died is run again on another and reported as retried.

    \b
    Exit codes: 0 every case written or up to date; 1 some cases refused (listed, the
    others predicted); 2 bad command line; 3 fatal error (unusable checkpoint, no case,
    unwritable OUT, OUT inside IN or in use, OUT holding another model's segmentations).
    """
    wanted = 1 if options["store"] else 2
    if len(paths) != wanted:
        raise click.UsageError("give IN and OUT" if wanted == 2 else "with --store give only OUT")
    from ..scoring.predict import run_prediction

    inputs, out = (None, paths[0]) if options["store"] else paths
    if options["workers"] or options["scheduler"]:
        quiet_dask()
    try:
        summary = run_prediction(PredictConfig(out=out, inputs=inputs, **options), progress=progress)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        raise Interrupted(f"the segmentations written so far are complete files in {out}; "
                          "run the same command again to predict the rest") from None
    for refusal in summary.refused:
        click.echo(line(f"refused: {refusal.problem}"), err=True)
    for retried in summary.cluster.lines() if summary.cluster else []:
        click.echo(line(f"retried: {retried}"), err=True)
    click.echo(summary.line())
    sys.exit(summary.exit_code)
