"""Balanced training patches from the store, batched and delivered ahead of the training loop."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torchio as tio

from ..files import keep_freed_memory
from ..tasks import ALL_REGIONS
from .config import StreamConfig
from .patch_queue import StoreQueue
from .sampler import START, TUMOUR_CENTRED, TumourSampler
from .subjects import store_subjects_dataset

log = logging.getLogger(__name__)


@dataclass
class PatchBatch:
    """A batch as the training loop receives it: image float16 (B, 4, x, y, z), label uint8 (B, x, y, z)."""

    image: torch.Tensor
    label: torch.Tensor
    case_ids: list[str]
    starts: torch.Tensor  # (B, 3) first voxel of each patch in its cropped case
    tumour_centred: torch.Tensor  # (B,) bool


def collate_patches(patches: list[tio.Subject], pin_memory: bool = False) -> PatchBatch:
    """Stack patch subjects into one batch (into page-locked memory for an asynchronous GPU copy)."""
    images = [p["image"].data for p in patches]
    labels = [p["label"].data[0] for p in patches]
    image = torch.empty((len(images), *images[0].shape), dtype=images[0].dtype, pin_memory=pin_memory)
    label = torch.empty((len(labels), *labels[0].shape), dtype=labels[0].dtype, pin_memory=pin_memory)
    torch.stack(images, out=image)
    torch.stack(labels, out=label)
    return PatchBatch(
        image=image, label=label, case_ids=[p["case_id"] for p in patches],
        starts=torch.stack([p[START] for p in patches]),
        tumour_centred=torch.tensor([bool(p[TUMOUR_CENTRED]) for p in patches]),
    )


class PatchStream:
    """Endless balanced patches from labelled store cases through a TorchIO Queue.

    Subjects are read by `config.workers` threads (or processes, `config.loader`); patches are
    cut and batched in a background thread so that the training loop only waits when the data
    is truly late.
    With `workers=0` everything runs in the calling thread, for debugging.
    """

    def __init__(self, root: str | Path, case_ids: list[str], config: StreamConfig, seed: int = 0,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False) -> None:
        self.config = config
        self.pin_memory = pin_memory
        if config.reuse_memory:
            keep_freed_memory()
        sampler = TumourSampler(config.patch_size, config.tumour_fraction, config.tumour_regions or ALL_REGIONS, seed)
        self.queue = StoreQueue(store_subjects_dataset(root, case_ids, config.patch_size), max_length=config.queue_length,
                                samples_per_volume=config.samples_per_volume, sampler=sampler,
                                num_workers=config.workers, seed=seed, rank=rank, world_size=world_size,
                                loader=config.loader, reuse_memory=config.reuse_memory)

    def close(self) -> None:
        """Stop the worker processes (also on leaving a `with` block)."""
        self.queue.close()

    def __enter__(self) -> PatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batches(self, epoch: int, num_batches: int) -> Iterator[PatchBatch]:
        """The `num_batches` batches of `epoch`: the same ones for the same (seed, epoch)."""
        self.queue.start_epoch(epoch, num_batches * self.config.batch_size)
        if self.config.workers == 0 or self.config.prefetch_batches == 0:
            for _ in range(num_batches):
                yield self._next_batch()
            return
        yield from self._background(num_batches)

    def _next_patches(self) -> list[tio.Subject]:
        return [self.queue.next_patch() for _ in range(self.config.batch_size)]

    def _next_batch(self) -> PatchBatch:
        return collate_patches(self._next_patches(), self.pin_memory)

    def _background(self, num_batches: int) -> Iterator[PatchBatch]:
        """A thread draws patches (views, cheap) in order; a small pool makes the batch copies
        (torch releases the GIL while copying), `prefetch_batches` ahead of the consumer."""
        ready: queue.Queue = queue.Queue(maxsize=self.config.prefetch_batches)
        stop = threading.Event()
        pool = ThreadPoolExecutor(self.config.collate_threads, thread_name_prefix="brats-collate")

        def offer(item: Future) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for _ in range(num_batches):
                    if not offer(pool.submit(collate_patches, self._next_patches(), self.pin_memory)):
                        return
            except BaseException as error:  # handed to the consumer, raised by its .result()
                failed: Future = Future()
                failed.set_exception(error)
                offer(failed)

        thread = threading.Thread(target=produce, name="brats-patches", daemon=True)
        thread.start()
        try:
            for _ in range(num_batches):
                yield ready.get().result()
        finally:
            stop.set()
            thread.join()
            pool.shutdown(cancel_futures=True)
