"""Which regions a run trains: those of the store's task that its labelled cases hold."""

from __future__ import annotations

import dataclasses
import logging

from ..errors import StoreError
from ..store.reader import scan_cases, store_task
from ..tasks import task as task_named
from .config import TrainConfig

log = logging.getLogger(__name__)


def with_task_regions(config: TrainConfig) -> TrainConfig:
    """`config` with the store's task and the regions to train: every region of the task that
    some labelled case of the store holds (a 2018-2023 glioma store has no resection cavity, so its
    model predicts WT, TC and ET as before), and one model output per region."""
    chosen = task_named(store_task(config.store))
    records = [r for r in scan_cases(config.store).records.values() if r.labelled]
    present = [r.name for r in chosen.regions if any(rec.voxels.get(r.name, 0) > 0 for rec in records)]
    if not present:
        raise StoreError(f"{config.store}: no labelled case holds any {chosen.name} tumour region "
                         f"({', '.join(r.name for r in chosen.regions)})")
    left_out = [r.name for r in chosen.regions if r.name not in present]
    if left_out:
        log.debug("task %s: training %s (no case holds %s)", chosen.name, ", ".join(present), ", ".join(left_out))
    model = dataclasses.replace(config.model, classes=len(present))
    stream = dataclasses.replace(config.stream, tumour_regions=config.stream.tumour_regions or tuple(present))
    return dataclasses.replace(config, task=chosen.name, regions=tuple(present), model=model, stream=stream)


def with_checkpoint_regions(config: TrainConfig, saved: TrainConfig) -> TrainConfig:
    """A config to resume `saved` with: the task, regions, model outputs and patch-centring regions
    the run started with, where `config` leaves them to be derived (a run's regions never change)."""
    if config.regions:
        return config
    model = dataclasses.replace(config.model, classes=saved.model.classes)
    stream = dataclasses.replace(config.stream, tumour_regions=config.stream.tumour_regions or saved.stream.tumour_regions)
    return dataclasses.replace(config, task=saved.task, regions=saved.regions, model=model, stream=stream)
