"""What every verb of the command line shares: one-line errors, progress bars, logging."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import BratsError, printable
from ..scoring.settings import ENGINES

EXIT_FATAL = 3
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C


class Interrupted(Exception):
    """Ctrl-C or SIGTERM, with what the user can do next (one line)."""


def stop_on_sigterm() -> None:
    """A batch scheduler's SIGTERM stops a verb the way Ctrl-C does (cleanly, one line)."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


_VERBOSE = [0]


def on_terminal() -> bool:
    """Progress bars only where a person watches: redirected to a file they are noise."""
    return sys.stderr.isatty()


def _progress_default(ctx: click.Context, param: click.Parameter, value: bool | None) -> bool:
    return on_terminal() if value is None else value


progress_option = click.option("--progress/--no-progress", default=None, callback=_progress_default,
                               help="Progress bars.  [default: only when stderr is a terminal]")


def configure_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    _VERBOSE[0] = verbose


def quiet_dask() -> None:
    """Dask's loggers are configured when it is imported (by the verbs that use it, not by
    `--help`): quiet them unless -vv."""
    import distributed  # noqa: F401

    logging.getLogger("distributed").setLevel(logging.DEBUG if _VERBOSE[0] > 1 else logging.ERROR)


def exit_interrupted(message: str) -> None:
    """Say how to continue, then end the process at once with exit code 130.

    An interrupt can land while a library's background thread (zarr's event loop, a loader) is
    still inside C code; letting the interpreter finalise around it can crash ("Fatal Python
    error", exit -6 or -2 instead of 130). Everything a verb keeps is already written atomically,
    so nothing is lost by skipping the finalisation.
    """
    click.echo(message, err=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def line(text: str) -> str:
    """A message as exactly one line: its first line, control characters (a newline in a folder
    name) written as escapes so that no name can forge a second message."""
    return printable(str(text).strip())


def reports_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a BratsError or an OSError into one line on stderr and exit code 3."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BratsError as exc:
            click.echo(line(f"error: {exc}"), err=True)
            sys.exit(EXIT_FATAL)
        except OSError as exc:  # the file system said no (full disk, permissions): one line, not a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(line(f"error: {where}{exc.strerror or exc}"), err=True)
            sys.exit(EXIT_FATAL)
        except Interrupted as exc:
            exit_interrupted(line(f"interrupted: {exc}"))
        except KeyboardInterrupt:
            exit_interrupted("interrupted: nothing half-written was kept; run the same command again to continue")

    return wrapper


def running_options(defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """How `brats score` and `brats predict` compute: engine, threads, windows per batch, Dask workers.
    `defaults` is their config class (the one owner of each default)."""
    options = [
        click.option("--engine", type=click.Choice(ENGINES),
                     default=defaults.engine, show_default=True,
                     help="What runs the network: auto is ONNX Runtime on the CPU where the onnx extra is installed "
                          "(about 3x faster than torch, the same labels), else torch; torch on a GPU."),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="Threads per process (each Dask worker).  [default: every core; 1 per local --workers]"),
        click.option("--batch-windows", type=click.IntRange(1), default=defaults.batch_windows, show_default=True,
                     help="Sliding windows per forward pass."),
        click.option("--workers", type=click.IntRange(1), default=None,
                     help="Spread the cases over a local Dask cluster of N single-threaded workers.  "
                          "[default: no Dask, this process]"),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Spread the cases over an existing Dask cluster (tcp://host:8786 or a scheduler file); "
                          "workers must see the checkpoints, the inputs and the outputs."),
    ]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate
