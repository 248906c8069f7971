"""The `brats` console script: a click group whose verbs are thin shells over the pure cores."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from .. import __version__
from ..errors import BratsError

EXIT_FATAL = 3


def configure_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    import distributed  # noqa: F401 - configures its loggers on import; quiet them unless -vv

    logging.getLogger("distributed").setLevel(logging.DEBUG if verbose > 1 else logging.ERROR)


def reports_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a BratsError into one line on stderr and exit code 3."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BratsError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FATAL)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="brats")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Fast 3D brain-tumour segmentation on BraTS: ingest, train, score."""
    configure_logging(verbose)


def _register() -> None:
    from .ingest import ingest
    from .score import score
    from .synth import synth
    from .train import train
    from .verify import verify

    cli.add_command(synth)
    cli.add_command(ingest)
    cli.add_command(train)
    cli.add_command(score)
    cli.add_command(verify)


_register()
