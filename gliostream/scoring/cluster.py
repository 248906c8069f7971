"""Prediction spread over a Dask cluster: cases stream to workers, each worker loads the models once.

One task per case, at most two per worker thread in flight (cases stream; a 1,000-case run never
queues 1,000 volumes). A task's worker reads the case itself (raw files or the store, which every
worker must see), predicts it, writes what it writes atomically and returns a small result. A
worker that dies is replaced by Dask, which runs its case again elsewhere (up to the scheduler's
`allowed-failures`); each task logs an event when it starts, so cases started more than once are
reported as retried, and a case that killed every worker it reached is reported as failed while
the others go on. With a GPU (`device` cuda) each task asks for the Dask resource GPU=1: start one
worker per GPU with `dask worker ADDRESS --nthreads 1 --resources GPU=1`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..devices import configure_kernels, resolve_device
from ..errors import shortened
from .models import Member, load_members

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads (picklable): the checkpoints or exports, engine, device and threads."""

    ckpt: tuple[str, ...]
    engine: str
    device: str
    threads: int | None
    window: tuple[int, int, int] | None
    batch_windows: int


_LOADED: dict[ModelSpec, tuple[list[Member], torch.device]] = {}


def worker_members(spec: ModelSpec) -> tuple[list[Member], torch.device]:
    """This process's members for `spec`, loaded on first use and kept: a worker loads its models once."""
    if spec not in _LOADED:
        from distributed import get_worker

        device = resolve_device(spec.device)
        configure_kernels(device)
        threads = spec.threads or get_worker().state.nthreads  # the worker's own threads, not every core
        _LOADED[spec] = (load_members(spec.ckpt, device, spec.engine, threads, window=spec.window,
                                      batch_windows=spec.batch_windows), device)
    return _LOADED[spec]


def _started(topic: str, name: str) -> None:
    """Tell the scheduler this worker starts `name` (a case run twice was retried)."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(topic, {"case": name, "worker": worker.address})


def _run(topic: str, name: str, function: Callable[..., Any], *args: Any) -> Any:
    _started(topic, name)
    return function(*args)


@dataclass
class ClusterReport:
    """What the cluster did beyond the results: the cases run more than once, and on which workers."""

    retried: dict[str, list[str]] = field(default_factory=dict)  # case -> the workers that started it
    workers: int = 0

    def lines(self) -> list[str]:
        return [f"{case}: retried after a worker was lost (started on {', '.join(w)})" for case, w in self.retried.items()]


def model_spec(config: Any) -> ModelSpec:
    """The models a `ScoreConfig` or `PredictConfig` asks workers to load (paths made absolute;
    one thread per local worker unless `threads` says otherwise)."""
    return ModelSpec(tuple(str(Path(p).resolve()) for p in config.ckpt), config.engine, config.device,
                     config.threads or (1 if config.workers else None), config.window, config.batch_windows)


def run_on_cluster(client: Any, function: Callable[..., Any], items: list[T], name: Callable[[T], str],
                   args: tuple[Any, ...], gpu: bool, report: ClusterReport) -> Iterator[tuple[T, Any]]:
    """Run `function(item, *args)` for every item on the cluster, yielding (item, its result or
    the exception it ended with) as they finish; at most two tasks per worker thread in flight."""
    from distributed import as_completed

    topic = f"brats-{uuid.uuid4().hex}"
    threads = sum(client.nthreads().values()) or 1
    report.workers = len(client.nthreads())
    resources = {"GPU": 1} if gpu else None
    pending = iter(items)
    futures: dict[Any, T] = {}

    def submit() -> bool:
        item = next(pending, None)
        if item is None:
            return False
        future = client.submit(_run, topic, name(item), function, item, *args, key=f"{topic}-{name(item)}",
                               pure=False, resources=resources)
        futures[future] = item
        return True

    flow = as_completed()
    for _ in range(2 * threads):
        if not submit():
            break
    flow.update(futures)
    for future in flow:
        item = futures.pop(future)
        try:
            result: Any = future.result()
        except Exception as error:  # noqa: BLE001 - the task's own error, or KilledWorker: reported per case
            result = error
        future.release()
        if submit():
            flow.add(next(reversed(futures)))
        yield item, result
    started: dict[str, list[str]] = {}
    for _, event in client.get_events(topic):
        started.setdefault(event["case"], []).append(event["worker"])
    report.retried = {case: workers for case, workers in sorted(started.items()) if len(workers) > 1}


def failure_text(error: BaseException) -> str:
    """One line for a case whose task ended in an error that is not the case's own."""
    if type(error).__name__ == "KilledWorker":
        return "every worker that ran it died (out of memory, or killed); the other cases went on"
    return f"{type(error).__name__}: {shortened(str(error), 160)}"
