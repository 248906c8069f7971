"""Dask clients: a LocalCluster on this machine by default, or an existing scheduler."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BratsError, printable, shortened

log = logging.getLogger(__name__)


class SchedulerError(BratsError):
    """The Dask scheduler asked for cannot be reached."""


def default_workers() -> int:
    """One single-threaded worker process per available core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


ADDRESS = re.compile(r"(tcp|tls|inproc|ucx|ws|wss)://\S+|[\w.-]+:\d+")


def scheduler_address(scheduler: str) -> str:
    """The address of `scheduler`: an address itself, or read from a scheduler file (the JSON that
    `dask scheduler --scheduler-file` and dask-jobqueue write); SchedulerError otherwise."""
    path = Path(scheduler)
    if path.exists():
        try:
            address = json.loads(path.read_text())["address"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SchedulerError(f"{printable(scheduler)}: not a Dask scheduler file (a JSON object with an "
                                 f"\"address\"; {type(exc).__name__})") from None
        if not isinstance(address, str) or not ADDRESS.fullmatch(address):
            raise SchedulerError(f"{printable(scheduler)}: its address {address!r} is not a Dask scheduler address")
        return address
    if not ADDRESS.fullmatch(scheduler):
        raise SchedulerError(f"{printable(scheduler)}: neither a scheduler address (tcp://host:8786) nor an "
                             "existing scheduler file")
    return scheduler


def _check_listening(address: str, scheduler: str) -> None:
    """Fail in a second, not after the client's 20 s of retries, when nothing listens at a TCP address."""
    match = re.fullmatch(r"(?:tcp://)?\[?([\w.:-]+?)\]?:(\d+)", address)
    if not match:
        return  # tls://, ucx://, ...: left to the client
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=5).close()
    except OSError as exc:
        raise SchedulerError(f"cannot reach Dask scheduler {printable(scheduler)}: nothing answers at {address} "
                             f"({exc.strerror or type(exc).__name__})") from None


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator["distributed.Client"]:  # noqa: F821
    """A connected `distributed.Client`, closed (and its cluster stopped) on exit.

    `scheduler` is an address (`tcp://host:8786`) or a scheduler file written by
    `dask scheduler --scheduler-file` / dask-jobqueue. Without it, a LocalCluster of
    `workers` single-threaded processes listens on 127.0.0.1 only (dashboard on a free port).
    """
    from distributed import Client, LocalCluster

    if scheduler:
        address = scheduler_address(scheduler)
        _check_listening(address, scheduler)
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError, AssertionError, KeyError) as exc:
            raise SchedulerError(f"cannot reach Dask scheduler {printable(scheduler)}: "
                                 f"{shortened(str(exc), 120) or type(exc).__name__}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or default_workers()
    # The worker processes' own logs stay quiet: a case's failure reaches the report through its
    # task, and at shutdown a worker may log a heartbeat to the closed scheduler as an ERROR.
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL)
    client = Client(cluster)
    log.debug("local Dask cluster with %d workers", n)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
