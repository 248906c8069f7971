"""TorchIO's patch `Queue` over a seeded, rank-split order of store subjects, by its public API only."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import torch
import torchio as tio
from torch.utils.data import DataLoader, Sampler

from ..files import keep_freed_memory
from ..readahead import prefetched
from .sampler import TumourSampler
from .seeds import ORDER, PATCHES, SHUFFLE, derive_seed


def worker_context(workers: int) -> str | None:
    """Start method for loader workers: never `fork`.

    zarr 3 runs an event-loop thread and Blosc keeps global contexts; a forked child inherits
    them half-initialised and can hang (a known zarr/Blosc hazard with fork). `forkserver` forks from a clean server
    process, so each worker starts fast and safe; `spawn` where forkserver is unavailable.
    """
    if workers <= 0:
        return None
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class SubjectOrder(Sampler[int]):
    """Endless subject indices: a fresh permutation per round, seeded by (seed, epoch, round),
    each rank taking every `world_size`-th index (DistributedSampler's split, without its
    end-of-epoch padding)."""

    def __init__(self, num_subjects: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_subjects = num_subjects
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, len(range(self.rank, self.num_subjects, self.world_size)))

    def __iter__(self) -> Iterator[int]:
        round_ = 0
        while True:
            generator = torch.Generator().manual_seed(derive_seed(ORDER, self.seed, self.epoch, round_))
            order = torch.randperm(self.num_subjects, generator=generator).tolist()
            mine = order[self.rank::self.world_size] or order[:1]
            yield from mine
            round_ += 1


def _keep_freed_memory(worker_id: int) -> None:
    keep_freed_memory()  # each worker process is a fresh one (forkserver/spawn): set it there too


def _first(batch: list[tio.Subject]) -> tio.Subject:
    return batch[0]


class _Indices(Sampler[int]):
    """The indices a persistent loader reads next: set before each epoch."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.indices))

    def __len__(self) -> int:
        return len(self.indices)


class SubjectReader:
    """Loads subjects in a given order ahead of their use, by `workers` threads (the default:
    reading a case is mostly decompression and copies that release the GIL, and a subject handed
    over between threads costs nothing, where a process must copy ~30-60 MB through shared memory)
    or by persistent worker processes started with forkserver/spawn, never fork."""

    def __init__(self, dataset: tio.SubjectsDataset, workers: int, loader: str, reuse_memory: bool = True) -> None:
        self.dataset, self.workers = dataset, workers
        self._pool = ThreadPoolExecutor(workers, "brats-subjects") if loader == "threads" and workers else None
        self._indices = _Indices()
        self._loader: DataLoader | None = None
        if self._pool is None and workers:
            self._loader = DataLoader(dataset, batch_size=1, collate_fn=_first, sampler=self._indices,
                                      num_workers=workers, persistent_workers=True,
                                      multiprocessing_context=worker_context(workers), prefetch_factor=2,
                                      worker_init_fn=_keep_freed_memory if reuse_memory else None)

    def read(self, order: list[int]) -> Iterator[tio.Subject]:
        if self._pool is not None:
            return prefetched(self.dataset, order, self._pool, 2 * self.workers)
        if self._loader is not None:
            self._indices.indices = order
            return iter(self._loader)
        return (self.dataset[i] for i in order)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        self._loader = None  # a persistent loader stops its workers when it is collected


class EpochSubjects(tio.SubjectsDataset):
    """One epoch's subjects in their drawn order, as the `tio.Queue` reads them: index k is the
    k-th subject of the order (the queue reads them in sequence: no subject shuffling, no workers
    of its own), already loaded by the `SubjectReader`."""

    def __init__(self, unloaded: list[tio.Subject], loaded: Iterator[tio.Subject]) -> None:
        super().__init__(unloaded)  # the subjects, not yet read: what the queue counts
        self.loaded_in_order, self.next_index = loaded, 0

    def __getitem__(self, index: int) -> tio.Subject:
        if index != self.next_index:
            raise RuntimeError(f"epoch subjects are read in order: asked for {index}, next is {self.next_index}")
        self.next_index += 1
        return next(self.loaded_in_order)


class StoreQueue:
    """Balanced patches from store subjects through TorchIO's `Queue`, used by its public API only.

    Each epoch gets a fresh `tio.Queue` over that epoch's subjects (`EpochSubjects`: the seeded,
    rank-split `SubjectOrder`, loaded ahead by a `SubjectReader` that lives across epochs), with
    the `TumourSampler`, `max_length` and `samples_per_volume`; the queue neither shuffles nor
    starts workers itself. Patches are shuffled around it, one full queue at a time, with a
    generator seeded by (seed, epoch, rank): so epoch `e` yields the same patches whatever
    happened before (exact resume), as TorchIO's own fill-then-shuffle would, but seeded.
    """

    def __init__(self, subjects_dataset: tio.SubjectsDataset, max_length: int, samples_per_volume: int,
                 sampler: TumourSampler, num_workers: int = 0, seed: int = 0, rank: int = 0,
                 world_size: int = 1, loader: str = "threads", reuse_memory: bool = True) -> None:
        self.samples_per_volume = samples_per_volume
        # As in TorchIO's own queue, one fill takes each subject of the data set at most once: a
        # data set smaller than a full queue fills it only partly.
        self.max_length = min(max_length, len(subjects_dataset) * samples_per_volume)
        self.sampler = sampler
        self.seed = seed
        self.order = SubjectOrder(len(subjects_dataset), seed, rank, world_size)
        self.reader = SubjectReader(subjects_dataset, num_workers, loader, reuse_memory)
        self.shuffle_generator = torch.Generator()
        self._queue: tio.Queue | None = None
        self._patches: Iterator[tio.Subject] | None = None
        self._subjects: EpochSubjects | None = None
        self._buffer: list[tio.Subject] = []

    def start_epoch(self, epoch: int, patches: int = 0) -> None:
        """Restart subjects, patch draws and shuffles from (seed, epoch), for `patches` patches
        (0: as many as one full queue)."""
        self.order.set_epoch(epoch)
        self.sampler.reseed(PATCHES, self.seed, epoch, self.order.rank)  # each DDP rank its own draws
        self.shuffle_generator.manual_seed(derive_seed(SHUFFLE, self.seed, epoch, self.order.rank))
        # Enough subjects for the patches plus one more full queue: the queue never runs dry.
        count = -(-max(patches, 1) // self.samples_per_volume) + -(-self.max_length // self.samples_per_volume) + 1
        order = list(islice(iter(self.order), count))
        unloaded = self.reader.dataset.dry_iter()
        self._end_epoch()
        self._subjects = EpochSubjects([unloaded[i] for i in order], self.reader.read(order))
        self._queue = tio.Queue(self._subjects, self.max_length,
                                self.samples_per_volume, self.sampler, num_workers=0, shuffle_subjects=False,
                                shuffle_patches=False, start_background=False)
        # Iterated, not indexed: TorchIO 1 serves patches through the sequence protocol, TorchIO 2's
        # queue is an iterable; both give the same patches in the same order.
        self._patches = iter(self._queue)

    def next_patch(self) -> tio.Subject:
        if self._patches is None:
            raise RuntimeError("start_epoch() first")
        if not self._buffer:
            fill = list(islice(self._patches, self.max_length))  # exactly one fill of the queue
            self._buffer = [fill[i] for i in torch.randperm(len(fill), generator=self.shuffle_generator)]
            self._buffer.reverse()
        return self._buffer.pop()

    def _end_epoch(self) -> None:
        """Drop the last epoch's queue and the subjects read ahead for it, now rather than when
        the garbage collector finds them."""
        if self._subjects is not None:
            close = getattr(self._subjects.loaded_in_order, "close", None)  # a read-ahead generator
            if close is not None:
                close()
        self._queue, self._patches, self._subjects, self._buffer = None, None, None, []

    def close(self) -> None:
        """Stop the loader threads or worker processes."""
        self._end_epoch()
        self.reader.close()
