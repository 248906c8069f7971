"""Fault injection for the reliability tests: die by SIGKILL at a named point.

`BRATS_FAULT=<point>[:<n>]` kills the process the n-th time (default 1st) it reaches `point`;
with `BRATS_FAULT_ERROR=ENOSPC` it raises that OSError there instead (a full disk).
With `BRATS_FAULT_ONCE=<file>`, only the first process to get there dies (it creates the file
first), so that a restarted Dask worker carries on. Unset (always, outside tests) it costs one
dictionary lookup per call.
"""

from __future__ import annotations

import errno
import os
import signal

_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get("BRATS_FAULT")
    if not spec:
        return
    point, _, nth = spec.rpartition(":")
    if not nth.isdigit():
        point, nth = spec, "1"
    if point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] != int(nth or 1):
        return
    error = os.environ.get("BRATS_FAULT_ERROR")
    if error:
        code = getattr(errno, error)
        raise OSError(code, os.strerror(code))
    once = os.environ.get("BRATS_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
