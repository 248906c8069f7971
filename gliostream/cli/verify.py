"""`brats verify`: check a store's integrity."""

from __future__ import annotations

import sys

import click

from .common import line, reports_errors


@click.command()
@click.argument("store", type=click.Path(file_okay=False))
@reports_errors
def verify(store: str) -> None:
    """Check that every case of STORE is complete, readable, shaped as the schema says and
    unchanged since ingest (CRC-32), and that no half-written case is left.

    \b
    One line per problem. Exit codes: 0 the store is clean; 1 problems found; 2 bad command
    line; 3 fatal error (STORE missing, empty or not a brats store of this version).
    """
    from ..store.verify import verify_store

    problems = verify_store(store)
    for problem in problems:
        click.echo(line(problem.line()))
    if problems:
        click.echo(line(f"verify: {store}: {len(problems)} problem(s); rewrite damaged cases from their raw files with "
                        f"`brats ingest RAW --out {store} --redo-damaged`"))
    else:
        click.echo(line(f"verify: {store}: clean"))
    sys.exit(1 if problems else 0)
