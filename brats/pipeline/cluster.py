"""Dask clients: a LocalCluster on this machine by default, or an existing scheduler."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BratsError

log = logging.getLogger(__name__)


class SchedulerError(BratsError):
    """The Dask scheduler asked for cannot be reached."""


def default_workers() -> int:
    """One single-threaded worker process per available core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator["distributed.Client"]:  # noqa: F821
    """A connected `distributed.Client`, closed (and its cluster stopped) on exit.

    `scheduler` is an address (`tcp://host:8786`) or a scheduler file written by
    `dask scheduler --scheduler-file` / dask-jobqueue. Without it, a LocalCluster of
    `workers` single-threaded processes listens on 127.0.0.1 only (dashboard on a free port).
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            if Path(scheduler).is_file():
                client = Client(scheduler_file=scheduler, timeout="20s")
            else:
                client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise SchedulerError(f"cannot reach Dask scheduler {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or default_workers()
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
    client = Client(cluster)
    log.debug("local Dask cluster with %d workers", n)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
