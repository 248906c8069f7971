"""The `brats` console script: a click group whose verbs are thin shells over the pure cores.

Each verb imports its stage inside its function, so `brats --help` and the verbs that need no
model (synth, ingest, verify) never import torch.
"""

from __future__ import annotations

import click

from .. import __version__
from .common import configure_logging, stop_on_sigterm
from .export import export
from .ingest import ingest
from .plan import plan
from .predict import predict
from .score import score
from .synth import synth
from .train import train
from .verify import verify


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """brats, torch and the device training would use (torch is imported only here and by the verbs)."""
    if not value or ctx.resilient_parsing:
        return
    import torch

    cuda = torch.cuda.is_available()
    device = f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu"
    click.echo(f"gliostream {__version__} (the brats command); torch {torch.__version__} "
               f"(CUDA build: {torch.version.cuda or 'none'}, CUDA available: {'yes' if cuda else 'no'}); "
               f"--device auto uses {device}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the versions of brats and torch, and the device, and exit.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Fast 3D brain-tumour segmentation on BraTS: ingest, train, score, predict, export."""
    configure_logging(verbose)
    stop_on_sigterm()


for command in (synth, ingest, train, plan, score, predict, export, verify):
    cli.add_command(command)
