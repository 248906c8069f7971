"""`brats train`: the training run (epochs of accumulated mixed-precision steps, validation, checkpoints)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
from tqdm import tqdm

from .. import __version__
from ..devices import configure_kernels, cuda_autocast_dtype
from ..errors import CheckpointError, ConfigError, TrainingDiverged, shortened
from ..faults import fault_point
from ..files import check_output, folder_lock
from ..inference import predict_labels
from ..metrics import region_dice
from ..regions import region_targets
from ..store.reader import labelled_case_ids, read_store_attrs
from ..store.stale import warn_stale
from ..store.volumes import iterate_volumes
from ..tasks import regions_of
from ..tasks import task as task_named
from . import ddp
from .augment import BatchAugmenter
from .checkpoint import Checkpoint, implied_inference, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .loss import deep_supervision_loss
from .memory_plan import plan_fit, profile_is_cheap
from .postprocess import choose_postprocessing, configured
from .registry import build_network, loss_label
from .seeds import AUGMENT, INIT, derive_seed
from .split import Split, split_cases
from .step_timing import PHASES, StepTimes
from .stream import PatchBatch, PatchStream
from .task_regions import with_checkpoint_regions, with_task_regions
from .tracking import Tracker, open_trackers
from .train_log import plot_curves, write_log

log = logging.getLogger(__name__)

BEST, LAST, LOG_CSV, CURVES, CONFIG_JSON = "best.pt", "last.pt", "train_log.csv", "training_curves.png", "train_config.json"
POSTFIX_SECONDS = 10.0  # the progress bar shows the loss at most this often (each read is a device sync)


@dataclass(frozen=True)
class TrainResult:
    epochs_run: int
    last_epoch: int
    best_dice: float | None
    best_epoch: int | None
    out: Path

    def line(self) -> str:
        best = (f"best mean validation Dice {self.best_dice:.4f} at epoch {self.best_epoch}"
                if self.best_dice is not None else "no validation")
        return (f"trained {self.epochs_run} epoch(s), now at epoch {self.last_epoch}; {best}; "
                f"wrote {BEST}, {LAST}, {LOG_CSV}, {CURVES} in {self.out}")


# Forward and backward of one 96^3 patch through the full model (base 32), fp32, 2 CPU cores
# (docs/benchmarks.md, bench/train.py); the cost grows with base width squared and patch volume.
CPU_SECONDS_PER_REFERENCE_PATCH = 14.0


def cpu_hours_per_epoch(config: TrainConfig, cores: int) -> float:
    """A rough CPU time of one epoch, to warn before a run that would take days."""
    scale = (config.model.base_channels / 32) ** 2 * math.prod(config.patch_size) / 96**3
    return config.patches_per_epoch * CPU_SECONDS_PER_REFERENCE_PATCH * scale * 2 / max(cores, 1) / 3600


@dataclass(frozen=True)
class StepPlan:
    """How an epoch is cut into optimiser updates for `world_size` processes.

    The global batch (patches per update) and the number of updates stay those of the config
    whatever the number of processes: each process accumulates `accum_steps / world_size`
    micro-batches per update (DDP averages the gradients), as nnU-Net splits its batch across
    GPUs. When `world_size` does not divide `accum_steps`, each process accumulates the nearest
    whole number (at least 1) and the global batch changes accordingly; the plan line says so.
    """

    world_size: int
    batch_size: int  # patches per micro-batch, per process
    rank_accum: int  # micro-batches per update, per process
    updates: int  # optimiser updates per epoch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.rank_accum * self.world_size

    @property
    def micro_batches(self) -> int:
        """Micro-batches each process runs per epoch."""
        return self.updates * self.rank_accum

    @property
    def patches(self) -> int:
        """Training patches per epoch, all processes together."""
        return self.updates * self.global_batch


def step_plan(config: TrainConfig, world_size: int) -> StepPlan:
    rank_accum = max(1, round(config.accum_steps / world_size))
    global_batch = config.stream.batch_size * rank_accum * world_size
    return StepPlan(world_size, config.stream.batch_size, rank_accum, math.ceil(config.patches_per_epoch / global_batch))


def plan_line(config: TrainConfig, plan: StepPlan, done_epochs: int = 0) -> str:
    """What the run will do, said before it starts (updates are what a recipe's length is measured in)."""
    total = plan.updates * config.epochs
    split = (f" ({plan.world_size} processes x {plan.batch_size} x {plan.rank_accum} accumulated)"
             if plan.world_size > 1 else f" ({plan.batch_size} x {plan.rank_accum} accumulated)")
    changed = ("" if plan.global_batch == config.stream.batch_size * config.accum_steps else
               f"; {plan.world_size} processes do not divide accum-steps {config.accum_steps}: the global batch is "
               f"{plan.global_batch}, not {config.stream.batch_size * config.accum_steps}")
    left = f", {plan.updates * (config.epochs - done_epochs)} still to do" if done_epochs else ""
    epochs = f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}"
    return (f"plan: {epochs} x {plan.updates} updates of {plan.global_batch} patches{split} = "
            f"{total} updates, {total * plan.global_batch} patches{left}{changed}")


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """The learning rate of epoch `epoch` (0-based) of `epochs`: cosine annealing from `base` to 0,
    computed from the epoch alone, so a run resumed with more epochs follows the longer curve
    from where it is (its lr rises from the old curve's to the new one's) instead of staying at 0."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))


def precision(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a grad scaler): bf16 on CUDA GPUs with native bf16 (Ampere and
    later: same speed as fp16, no overflow), fp16 + scaler on older ones, full precision on CPU
    unless asked (then bf16)."""
    amp = config.amp if config.amp is not None else device.type == "cuda"
    if not amp:
        return None, False
    if device.type == "cuda":
        dtype = cuda_autocast_dtype()
        return dtype, dtype == torch.float16  # fp16 needs the loss scaler
    return torch.bfloat16, False


def resume_base(path: str | Path) -> TrainConfig:
    """The config a checkpoint was trained with (the base for options given when resuming), with
    the absolute store path it recorded, so a run resumes from any working directory."""
    checkpoint = read_checkpoint(path)
    return dataclasses.replace(checkpoint.config, store=checkpoint.store or checkpoint.config.store)


class Trainer:
    """State of one run: model, optimiser, schedule, scaler, augmenter, history."""

    def __init__(self, config: TrainConfig, runtime: ddp.Runtime, split: Split, step_times: bool = False) -> None:
        self.config, self.runtime, self.split = config, runtime, split
        self.regions = regions_of(config.task, config.regions)
        self.timer = StepTimes(runtime.device, step_times)
        self.store_params = read_store_attrs(config.store).to_attrs()
        device = runtime.device
        configure_kernels(device, config.deterministic)
        torch.manual_seed(derive_seed(INIT, config.seed))
        self.model = build_network(config.model).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.amp_dtype, scaled = precision(config, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=scaled)
        self.augmenter = BatchAugmenter(config.augment, derive_seed(AUGMENT, config.seed, runtime.rank), device)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.best: tuple[float, int] | None = None
        self.postprocessing = configured(config.postprocess, self.regions)  # then chosen at each validation
        self.plan = step_plan(config, runtime.world_size)
        self.net = (DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
                    if runtime.distributed else self.model)

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, augmenters: list[dict[str, Any]] | None = None) -> Checkpoint:
        """Everything a resume needs; `augmenters` holds every rank's augmentation state (rank order)."""
        return Checkpoint(
            path="", network=self.config.model, weights=self.model.state_dict(), config=self.config,
            split=self.split, store=str(Path(self.config.store).resolve()), store_params=self.store_params,
            epoch=self.epoch, history=tuple(self.history), best=self.best, postprocessing=self.postprocessing,
            world_size=self.runtime.world_size, version=__version__,
            training={"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                      "augmenter": augmenters or [self.augmenter.state_dict()], "torch_rng": torch.get_rng_state()})

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from a checkpoint, also one written on another device type or number of
        processes: what cannot carry over is started afresh, and a log line says so."""
        training = checkpoint.training or {}
        try:
            self.model.load_state_dict(checkpoint.weights)
            self.optimizer.load_state_dict(training["optimizer"])
            self._restore_scaler(training.get("scaler") or {})
            self._restore_augmenter(training["augmenter"])
            torch.set_rng_state(training["torch_rng"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"{checkpoint.path}: does not fit this model ({shortened(str(error))})") from None
        self.epoch, self.history = checkpoint.epoch, list(checkpoint.history)
        self.best = checkpoint.best
        self.postprocessing = checkpoint.postprocessing

    def _restore_scaler(self, saved: dict[str, Any]) -> None:
        if self.scaler.is_enabled() and saved:
            self.scaler.load_state_dict(saved)
        elif self.scaler.is_enabled() != bool(saved):
            log.info("the fp16 loss scaler starts afresh: the checkpoint was trained in another precision")

    def _restore_augmenter(self, saved: list[dict[str, Any]] | dict[str, Any]) -> None:
        states = saved if isinstance(saved, list) else [saved]  # brats 0.1 kept rank 0's only
        if len(states) != self.runtime.world_size:
            log.info("augmentation streams re-seeded per process: the checkpoint was written by %d process(es), "
                     "this run has %d", len(states), self.runtime.world_size)
        elif not self.augmenter.load_state_dict(states[self.runtime.rank]):
            log.info("augmentation noise re-seeded: the checkpoint was written on %s, this run is on %s",
                     states[self.runtime.rank].get("device_type"), self.runtime.device.type)

    # -- one epoch ---------------------------------------------------------------------------
    def train_epoch(self, stream: PatchStream, progress: bool) -> dict[str, float]:
        cfg, device = self.config, self.runtime.device
        plan = self.plan
        micro = plan.micro_batches
        self.net.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        autocast = torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        losses, waited, start = [], 0.0, time.perf_counter()
        self.timer.reset()
        self.grad_norms: list[torch.Tensor] = []
        batches = stream.batches(self.epoch, micro)
        bar = tqdm(total=micro, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not (progress and self.runtime.main))
        self.optimizer.zero_grad(set_to_none=True)
        shown = time.perf_counter()
        try:
            for i in range(micro):
                self.timer.start()
                t = time.perf_counter()
                batch = next(batches)
                waited += time.perf_counter() - t
                self.timer.mark("data")
                update = (i + 1) % plan.rank_accum == 0
                losses.append(self._step(batch, update, autocast))  # read back once per epoch: no host sync
                fault_point("train:step")
                bar.update()
                if update and not bar.disable and time.perf_counter() - shown > POSTFIX_SECONDS:
                    shown = time.perf_counter()  # reading the loss syncs with the device: rarely
                    bar.set_postfix(loss=f"{float(losses[-1]) * plan.rank_accum:.4f}")
        finally:  # also on an error (e.g. out of memory): stop the producer thread
            bar.close()
            batches.close()
        losses = [value * plan.rank_accum for value in torch.stack(losses).double().tolist()]
        self._check_finite(sum(losses) / len(losses))
        seconds = time.perf_counter() - start
        cuda = device.type == "cuda"
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
        reserved = torch.cuda.max_memory_reserved(device) / 2**20 if cuda else None
        return {"train_loss": ddp.mean_across(self.runtime, sum(losses) / len(losses)),
                "updates": plan.updates, "patches": plan.patches,
                "patches_per_s": micro * cfg.stream.batch_size * self.runtime.world_size / seconds,
                "data_wait": waited / seconds, "peak_gpu_mib": peak, "peak_gpu_reserved_mib": reserved,
                "seconds": seconds, **self._gradient_stats(), **self.timer.per_step()}

    def _check_finite(self, loss: float) -> None:
        """Stop (TrainingDiverged, one line) before a non-finite loss or weights reach a checkpoint."""
        weights_finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if math.isfinite(loss) and weights_finite:
            return
        last = Path(self.config.out) / LAST
        kept = (f"{last} keeps epoch {self.epoch}" if self.epoch and last.exists() else "no checkpoint was written")
        what = f"the loss is {loss}" if not math.isfinite(loss) else "the weights are no longer finite"
        raise TrainingDiverged(f"training diverged in epoch {self.epoch + 1}: {what}; {kept}. Lower --lr, or check "
                               f"the store with `brats verify {self.config.store}`")

    def _step(self, batch: PatchBatch, update: bool, autocast: Any) -> torch.Tensor:
        """One micro-batch: augment and pool on the device, forward, backward; the optimizer
        steps when `update`. Returns the (scaled-down) loss, still on the device."""
        cfg, device = self.config, self.runtime.device
        image = batch.image.to(device, non_blocking=True).float()
        label = batch.label.to(device, non_blocking=True).long()
        if cfg.downsample > 1:  # pooled first: the augmentation works on 1/downsample^3 of the voxels
            image = F.avg_pool3d(image, cfg.downsample)
            targets = F.avg_pool3d(region_targets(label, self.regions), cfg.downsample)  # each coarse voxel's share
            image, targets = self.augmenter(image, targets)
        else:
            image, label = self.augmenter(image, label)
            targets = region_targets(label, self.regions)
        self.timer.mark("augment")
        sync = self.net.no_sync() if self.runtime.distributed and not update else nullcontext()
        with sync:
            with autocast:
                outputs = self.net(image)
            loss = deep_supervision_loss(outputs, targets, cfg.loss) / self.plan.rank_accum
            self.timer.mark("forward")
            self.scaler.scale(loss).backward()
            self.timer.mark("backward")
        if update:
            self._clip_gradients()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.timer.mark("optimizer")
        return loss.detach()

    def _clip_gradients(self) -> None:
        """Keep the update's global gradient norm (true scale, on the device: no host sync), and
        scale the gradients down to `grad_clip` where it is above."""
        self.scaler.unscale_(self.optimizer)  # a no-op without the fp16 scaler
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = get_total_norm(grads)
        if self.config.grad_clip:
            clip_grads_with_norm_(self.model.parameters(), self.config.grad_clip, norm)
        self.grad_norms.append(norm.detach())

    def _gradient_stats(self) -> dict[str, float | None]:
        """The epoch's update norms (fp16 overflow steps, skipped by the scaler, left out)."""
        norms = torch.stack(self.grad_norms).double().cpu() if self.grad_norms else torch.zeros(0)
        norms = norms[torch.isfinite(norms)]
        if not len(norms):
            return {"grad_norm_p50": None, "grad_norm_p99": None, "grad_norm_max": None, "clipped_share": None}
        clipped = float((norms > self.config.grad_clip).double().mean()) if self.config.grad_clip else None
        return {"grad_norm_p50": float(norms.quantile(0.5)), "grad_norm_p99": float(norms.quantile(0.99)),
                "grad_norm_max": float(norms.max()), "clipped_share": clipped}

    def validate(self, progress: bool) -> dict[str, float]:
        """Mean Dice per region over the validation cases (sliding window on whole cases, nested
        decoding), each case postprocessed by the rule chosen on the other cases (out of fit), the
        lesion-wise Dice likewise, and the raw Dice; the rule chosen on all of them is kept."""
        cfg = self.config
        inference = implied_inference(cfg, amp=self.amp_dtype is not None)
        self.model.eval()
        pairs = []
        volumes = iterate_volumes(cfg.store, self.split.val, workers=1 if cfg.stream.workers else 0)
        for volume in tqdm(volumes, total=len(self.split.val), desc="validation", unit="case", leave=False,
                           disable=not progress):
            prediction = predict_labels(self.model, volume.image, inference, self.runtime.device).numpy()
            pairs.append((prediction, volume.label.numpy()))
        self.model.train()
        choice = choose_postprocessing(pairs, cfg.postprocess, task_named(cfg.task).lesion_rules, self.regions)
        self.postprocessing = choice.postprocessing
        names = [r.name for r in self.regions]
        out = {f"dice_{r}": v for r, v in choice.dice.items()}
        out["dice_mean"] = sum(out[f"dice_{r}"] for r in names) / len(names)
        raw = [region_dice(p, r, self.regions) for p, r in pairs]
        out.update({f"dice_{r}_raw": float(np.mean([d[r] for d in raw])) for r in names})
        out.update({f"lw_dice_{r}": v for r, v in choice.lesion_dice.items()})
        out.update({f"min_voxels_{r}": v for r, v in zip(names, self.postprocessing.sizes(len(names)), strict=True)})
        out["et_min_voxels"] = self.postprocessing.et_min_voxels
        out["postprocess_searched"] = int(choice.searched)
        return out


def run_training(config: TrainConfig, resume: str | Path | None = None, progress: bool = True,
                 stop_after: int | None = None, overwrite: bool = False, step_times: bool = False) -> TrainResult:
    """Train from `config.store` into `config.out`; with `resume`, continue that checkpoint exactly.

    `stop_after` ends this call after that epoch (a time-boxed job); resuming finishes the run
    exactly as if it had not stopped. A new run refuses an `out` that holds another run's
    checkpoints unless `overwrite`. `step_times` adds each phase's mean seconds per micro-batch
    (`step_timing.StepTimes`) to the history kept in the checkpoints; it synchronises the device.
    """
    out = check_output(config.out, "--out")
    config = dataclasses.replace(config, store=str(Path(config.store).absolute()), out=str(out))  # as recorded
    checkpoint = read_checkpoint(resume) if resume else None
    if checkpoint is not None:
        config = with_checkpoint_regions(config, checkpoint.config)
        checkpoint.check_resumable(config)
    runtime = ddp.start(config.device)
    try:
        with folder_lock(out, "train") if runtime.main else nullcontext():
            return _locked_run(config, out, runtime, checkpoint, progress, stop_after, overwrite, step_times)
    finally:
        ddp.stop(runtime)


def _locked_run(config: TrainConfig, out: Path, runtime: ddp.Runtime, checkpoint: Checkpoint | None,
                progress: bool, stop_after: int | None, overwrite: bool, step_times: bool) -> TrainResult:
    """`run_training` once this process holds the run folder (a second run into it is refused)."""
    if checkpoint is not None:
        split = checkpoint.split
        _check_same_store(config.store, checkpoint)
    else:
        split = split_cases(config.store, config.val_fraction, config.split_file, config.seed, config.folds,
                            config.fold)
        config = with_task_regions(config)
        if not overwrite and any((out / name).exists() for name in (LAST, BEST)):
            raise ConfigError(f"{out}: holds another run ({LAST}); continue it with --resume {out / LAST}, "
                              "replace it with --overwrite, or give another --out")
    warn_stale(config.store, split.train + split.val)
    trainer = Trainer(config, runtime, split, step_times)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    return _run(trainer, progress, min(stop_after or config.epochs, config.epochs))


def _log_memory_plan(config: TrainConfig, device: torch.device, amp: bool) -> None:
    """Say what one step needs (`memory_plan`); on a GPU it cannot hold, say what would fit."""
    cuda = device.type == "cuda"
    if not profile_is_cheap(config):
        log.info("memory: not estimated at the start for a model this deep or wide; `brats plan` estimates it")
        return
    fit = plan_fit(config, amp if cuda else True, torch.cuda.get_device_properties(device).total_memory / 2**30
                   if cuda else 8.0)
    where = f"of {fit.budget / 2**30:.1f} GiB on this GPU" if cuda else "on a GPU with 16-bit AMP (estimate; 8 GiB card)"
    log.info("memory: one step needs about %s %s", fit.estimate.line(), where)
    if cuda and not fit.fits:
        log.warning("this GPU (%.1f GiB) is likely too small for one step (%.1f GiB): use --batch-size %d, or "
                    "--patch-size %s (`brats plan --gpu-memory %.0f` tells more)", fit.budget / 2**30,
                    fit.estimate.total / 2**30, max(fit.largest_batch, 1), fit.largest_patch or "smaller",
                    fit.budget / 2**30)


def _check_same_store(store: str, checkpoint: Checkpoint) -> None:
    """A resumed run may read another copy of its store: same preprocessing, same labelled cases."""
    path, split = checkpoint.path, checkpoint.split
    if read_store_attrs(store).to_attrs() != checkpoint.store_params:
        raise CheckpointError(f"{path}: was trained on a store preprocessed differently from {store}")
    missing = sorted(set(split.train + split.val) - set(labelled_case_ids(store)))
    if missing:
        raise CheckpointError(f"{path}: {store} lacks {len(missing)} of the run's cases ({', '.join(missing[:3])}); "
                              "resume with the store it was trained on")


def _run(trainer: Trainer, progress: bool, until: int) -> TrainResult:
    config, runtime = trainer.config, trainer.runtime
    out = Path(config.out)
    if runtime.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_JSON).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        log.info("training on %d cases, validating on %d; %s on %s%s", len(trainer.split.train),
                 len(trainer.split.val), "AMP " + str(trainer.amp_dtype).removeprefix("torch.")
                 if trainer.amp_dtype else "full precision", runtime.device,
                 f" x {runtime.world_size} processes" if runtime.distributed else "")
    if runtime.main:
        log.info("%s", plan_line(config, trainer.plan, trainer.epoch))
        _log_memory_plan(config, runtime.device, trainer.amp_dtype is not None)
    hours = cpu_hours_per_epoch(config, os.cpu_count() or 1)
    if runtime.main and runtime.device.type == "cpu" and hours >= 1:
        log.warning("no GPU: this model and patch size take roughly %.0f h per epoch on this CPU; for real data "
                    "on a CPU use --config configs/real-cpu.toml (about 36 min of training on 2 cores), or a GPU", hours)
    first = trainer.epoch
    trackers = open_trackers(config) if runtime.main else []
    try:
        stream = PatchStream(config.store, trainer.split.train, config.store_stream, seed=config.seed,
                             rank=runtime.rank, world_size=runtime.world_size,
                             pin_memory=runtime.device.type == "cuda")
        _epochs(trainer, stream, trackers, progress, until)
    finally:
        for tracker in trackers:
            tracker.close()
    best = trainer.best
    return TrainResult(trainer.epoch - first, trainer.epoch, best[0] if best and trainer.split.val else None,
                       best[1] if best and trainer.split.val else None, out)


def _epochs(trainer: Trainer, stream: PatchStream, trackers: list[Tracker], progress: bool, until: int) -> None:
    """Train, validate and save epoch by epoch until epoch `until`; every tracker sees each epoch's row."""
    config, runtime, out = trainer.config, trainer.runtime, Path(trainer.config.out)
    with stream:
        while trainer.epoch < until:
            lr = cosine_lr(config.lr, trainer.epoch, config.epochs)
            for group in trainer.optimizer.param_groups:
                group["lr"] = lr
            row: dict[str, Any] = {"epoch": trainer.epoch + 1, "lr": lr}
            row.update(trainer.train_epoch(stream, progress))
            trainer.epoch += 1
            due = trainer.split.val and (trainer.epoch % config.val_every == 0 or trainer.epoch == config.epochs)
            if due and runtime.main:
                row.update(trainer.validate(progress))
            ddp.barrier(runtime)
            trainer.history.append(row)
            improved = _improved(trainer, row)
            augmenters = ddp.gather_to_main(runtime, trainer.augmenter.state_dict())
            if runtime.main:
                _save(trainer, out, improved, augmenters)
                log.info(_summary(row, config.epochs))
                for tracker in trackers:
                    tracker.log_epoch(row, trainer.epoch)
    # No process may tear down the process group while another is still saving: a gloo peer that
    # leaves mid-exchange can abort the process ("terminate called without an active exception").
    ddp.barrier(runtime)


def _improved(trainer: Trainer, row: dict[str, Any]) -> bool:
    """Best by mean validation Dice; without validation cases, by lowest training loss."""
    score = row.get("dice_mean") if trainer.split.val else -row["train_loss"]
    if score is None or (trainer.best is not None and score <= trainer.best[0]):
        return False
    trainer.best = (float(score), trainer.epoch)
    return True


def _save(trainer: Trainer, out: Path, improved: bool, augmenters: list[dict[str, Any]]) -> None:
    state = trainer.checkpoint(augmenters).to_state()
    save_checkpoint(out / LAST, state)
    if improved:
        save_checkpoint(out / BEST, state)
    names = tuple(r.name for r in trainer.regions)
    write_log(out / LOG_CSV, trainer.history, names)
    plot_curves(out / CURVES, trainer.history, loss_label(trainer.config.loss.kind),
                trainer.best[1] if trainer.best and trainer.split.val else None, names)


def _summary(row: dict[str, Any], epochs: int) -> str:
    regions = [k.removeprefix("dice_") for k in row if k.startswith("dice_") and k.count("_") == 1 and k != "dice_mean"]
    dice = ("Dice " + " ".join(f"{r.upper()} {row[f'dice_{r}']:.3f}" for r in regions) + f" mean {row['dice_mean']:.3f}"
            if "dice_mean" in row else "no validation")
    gpu = (f", peak GPU {row['peak_gpu_mib']:.0f} MiB allocated, {row['peak_gpu_reserved_mib']:.0f} MiB reserved"
           if row.get("peak_gpu_mib") is not None else "")
    phases = ("; per micro-batch " + ", ".join(f"{p} {1000 * row[f'step_s_{p}']:.0f} ms" for p in PHASES)
              if "step_s_data" in row else "")
    return (f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, {dice}, lr {row['lr']:.2e}, "
            f"{row['patches_per_s']:.1f} patches/s, data wait {100 * row['data_wait']:.1f}%{gpu}{phases}")
