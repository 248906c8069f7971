"""`brats ingest`: raw BraTS NIfTI to a validated, normalised Zarr store (a Dask job)."""

from __future__ import annotations

import logging
import sys

import click

from ..tasks import TASKS
from .common import Interrupted, line, progress_option, quiet_dask, reports_errors


@click.command()
@click.argument("raw", type=click.Path(file_okay=False))
@click.option("--out", "store", default="store", show_default=True, type=click.Path(file_okay=False),
              help="Store folder (created if missing; re-runs add new and changed cases).")
@click.option("--workers", type=click.IntRange(0), default=None,
              help="Local Dask worker processes (default: one per core; 0: no Dask, in this process).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Existing Dask scheduler (tcp://host:8786) or its scheduler file; workers must see RAW and --out.")
@click.option("--task", type=click.Choice(list(TASKS), case_sensitive=False), default=None,
              help="BraTS task of the cases, which decides the labels a seg may hold: GLI (2018-2021, 2023 and "
                   "2024+ post-treatment glioma), MET, PED, MEN, MEN-RT, SSA, GOAT.  [default: the store's, else GLI]")
@click.option("--redo-damaged", is_flag=True,
              help="Also check every stored case as `brats verify` does, and rewrite the damaged ones from RAW.")
@progress_option
@reports_errors
def ingest(raw: str, store: str, workers: int | None, scheduler: str | None, task: str | None, redo_damaged: bool,
           progress: bool) -> None:
    """Validate, crop, normalise and store every new or changed case under RAW.

    \b
    A case record edited or damaged since ingest is always rewritten from RAW; with
    --redo-damaged every stored array is checked too (it reads the whole store). A case whose
    changed files are rejected keeps its previous version, marked stale (verify reports it).

    \b
    Exit codes: 0 every case ingested or unchanged; 1 some cases rejected or failed
    (see ingest_report.csv in the store); 2 bad command line; 3 fatal error
    (raw folder empty, store incompatible or not writable, scheduler unreachable).
    """
    from ..pipeline.config import IngestConfig
    from ..pipeline.ingest import run_ingest
    from ..store.reader import existing_store_task

    quiet_dask()
    config = IngestConfig(task=task or existing_store_task(store) or "GLI")
    logging.getLogger("gliostream.pipeline.ingest.progress").setLevel(logging.INFO)  # shown off a terminal
    try:
        summary = run_ingest(raw, store, config, workers=workers, scheduler=scheduler, progress=progress,
                             redo_damaged=redo_damaged)
    except KeyboardInterrupt:
        raise Interrupted(f"the cases finished so far are in {store} (a case cut short is never kept); "
                          "run the same command again to continue") from None
    for r in summary.results:
        if r.status in ("rejected", "failed"):
            click.echo(line(f"{r.status}: {r.file}: {r.problem}"), err=True)
    click.echo(summary.line())
    sys.exit(summary.exit_code)
