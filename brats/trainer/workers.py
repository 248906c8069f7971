"""How data-loading worker processes are started."""

from __future__ import annotations

import multiprocessing


def worker_context(workers: int) -> str | None:
    """Start method for loader workers: never `fork`.

    zarr 3 runs an event-loop thread and Blosc keeps global contexts; a forked child inherits
    them half-initialised and can hang (FIELD-NOTES). `forkserver` forks from a clean server
    process, so each worker starts fast and safe; `spawn` where forkserver is unavailable.
    """
    if workers <= 0:
        return None
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
