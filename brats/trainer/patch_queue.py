"""A `tio.Queue` that streams an endless, seeded, rank-split order of store subjects."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
import torchio as tio
from torch.utils.data import DataLoader, Sampler

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


def _first(batch: list[tio.Subject]) -> tio.Subject:
    return batch[0]


class StoreQueue(tio.Queue):
    """TorchIO's patch queue, with its subject loader kept alive between epochs.

    tio.Queue builds a new DataLoader (new worker processes) every time the subjects run out.
    Here subjects come from an endless `SubjectOrder`, loaded either by `num_workers` threads
    (the default: reading a case is mostly decompression and copies that release the GIL, and
    a subject handed over between threads costs nothing, where a process must copy ~30-60 MB
    through shared memory) or by persistent worker processes started with forkserver/spawn,
    never fork (zarr 3 and Blosc are not fork-safe). `start_epoch` resets every source of
    randomness, so epoch `e` yields the same patches whatever happened before (exact resume).

    It overrides private parts of `tio.Queue` (torchio<2 is pinned); tests/test_stream.py fails
    when a TorchIO release renames or drops one of them.
    """

    def __init__(self, subjects_dataset: tio.SubjectsDataset, max_length: int, samples_per_volume: int,
                 sampler: TumourSampler, num_workers: int = 0, seed: int = 0, rank: int = 0,
                 world_size: int = 1, loader: str = "threads") -> None:
        if loader not in ("threads", "processes"):
            raise ValueError(f"loader must be 'threads' or 'processes', not {loader!r}")
        self.order = SubjectOrder(len(subjects_dataset), seed, rank, world_size)
        self.seed = seed
        self.shuffle_generator = torch.Generator()
        self._pool = ThreadPoolExecutor(num_workers, "brats-subjects") if loader == "threads" and num_workers else None
        self._loader = None if self._pool else DataLoader(
            subjects_dataset, batch_size=1, collate_fn=_first, sampler=self.order, num_workers=num_workers,
            persistent_workers=num_workers > 0, multiprocessing_context=worker_context(num_workers),
            prefetch_factor=2 if num_workers > 0 else None,
        )
        super().__init__(subjects_dataset, max_length, samples_per_volume, sampler, num_workers=num_workers,
                         shuffle_subjects=False, shuffle_patches=True, start_background=False)
        self.sampler: TumourSampler

    def start_epoch(self, epoch: int) -> None:
        """Drop queued patches and restart subjects, patch draws and shuffles from (seed, epoch)."""
        self.patches_list = []
        self._incomplete_subject = None
        self._num_patches_incomplete = 0
        self.order.set_epoch(epoch)
        self.sampler.reseed(PATCHES, self.seed, epoch, self.order.rank)  # each DDP rank its own draws
        self.shuffle_generator.manual_seed(derive_seed(SHUFFLE, self.seed, epoch, self.order.rank))
        self._initialize_subjects_iterable()

    def close(self) -> None:
        """Stop the loader threads or worker processes."""
        self._subjects_iterable = None
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            return
        iterator, self._loader._iterator = self._loader._iterator, None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def _get_subjects_iterable(self) -> Iterator[tio.Subject]:
        self._num_sampled_subjects = 0
        if self._pool is not None:
            return prefetched(self.subjects_dataset, iter(self.order), self._pool, 2 * self.num_workers)
        return iter(self._loader)

    def _fill(self) -> None:
        # The subject stream is endless: count subjects per fill, not since the loader started.
        self._num_sampled_subjects = 0
        super()._fill()

    def _shuffle_patches_list(self) -> None:
        indices = torch.randperm(self.num_patches, generator=self.shuffle_generator)
        self.patches_list = [self.patches_list[i] for i in indices]
