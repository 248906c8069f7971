"""Read items ahead of their use with a thread pool, in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

T = TypeVar("T", covariant=True)


class Indexable(Protocol[T]):
    def __getitem__(self, index: int) -> T: ...


def prefetched(dataset: Indexable[T], indices: Iterable[int], pool: ThreadPoolExecutor, depth: int) -> Iterator[T]:
    """`dataset[i]` for each index in order, the next `depth` being loaded by the pool meanwhile."""
    pending: deque[Future] = deque()
    for index in indices:
        pending.append(pool.submit(dataset.__getitem__, index))
        if len(pending) > depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
