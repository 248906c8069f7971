"""`brats export`: trained checkpoints as an ONNX (and TorchScript) model folder for deployment."""

from __future__ import annotations

import click

from .common import progress_option, reports_errors


@click.command()
@click.argument("ckpt", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--torchscript", is_flag=True, help="Also write each member as TorchScript (member-<i>.ts).")
@click.option("--overwrite", is_flag=True, help="Replace an export (or other files) already in OUT.")
@click.option("--batch-windows", type=click.IntRange(1), default=2, show_default=True,
              help="Windows per forward pass the ONNX graph is fixed to (engines split or pad other batches).")
@progress_option
@reports_errors
def export(ckpt: tuple[str, ...], out: str, torchscript: bool, overwrite: bool, batch_windows: int, progress: bool) -> None:
    """Export CKPT (several: an ensemble, one member each) to OUT/member-<i>.onnx with OUT/model.json.

    Each ONNX file maps (N, 4, x, y, z) windows of z-scored t1, t1ce, t2, flair to region
    probabilities and carries in its metadata what predicting needs: channels and their order,
    normalisation, window, regions and decoding, postprocessing, label convention, brats version
    and the checkpoint's SHA-256. Each member is checked against PyTorch on a test window before
    anything is written. Predict with it: brats predict IN SEG --ckpt OUT.

    \b
    brats export run/best.pt exported/
    brats export fold0/best.pt fold1/best.pt exported/ --torchscript

    \b
    Exit codes: 0 exported; 2 bad command line; 3 fatal error (unusable checkpoint, OUT holding
    other files, the onnx extra missing, an export that differs from PyTorch).
    """
    from ..scoring.export import ExportConfig, run_export

    result = run_export(ExportConfig(ckpt=ckpt, out=out, torchscript=torchscript, overwrite=overwrite,
                                     batch_windows=batch_windows), progress=progress)
    click.echo(result.line())
