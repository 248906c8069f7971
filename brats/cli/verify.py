"""`brats verify`: check a store's integrity."""

from __future__ import annotations

import sys

import click

from .common import reports_errors


@click.command()
@click.argument("store", type=click.Path(file_okay=False))
@reports_errors
def verify(store: str) -> None:
    """Check that every case of STORE is complete, readable, shaped as the schema says and
    unchanged since ingest (CRC-32), and that no half-written case is left.

    \b
    One line per problem. Exit codes: 0 the store is clean; 1 problems found; 2 bad command
    line; 3 fatal error (not a brats store).
    """
    from ..store.verify import verify_store

    problems = verify_store(store)
    for problem in problems:
        click.echo(problem.line())
    click.echo(f"verify: {store}: " + (f"{len(problems)} problem(s)" if problems else "clean"))
    sys.exit(1 if problems else 0)
