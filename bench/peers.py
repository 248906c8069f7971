"""brats against the pipelines its users would pick instead, on the same real cases, in one run.

  ingest  `brats ingest --workers W` (validation, crop, z-score, Zarr, index) against nnU-Net v2's
          `nnUNetv2_plan_and_preprocess -c 3d_fullres -np W -npfp W` (fingerprint, plan, crop,
          z-score, blosc2), both run as users run them: one command in a subprocess, timed from
          start to exit, peak memory summed over its process tree, bytes written per case.
  stream  batches of 4 x (4 x 96^3 + label) delivered to a loop, W workers:
          brats    PatchStream (thread workers), half the patches centred on tumour
          nnU-Net  its trainer's nnUNetDataLoader + NonDetMultiThreadedAugmenter (W processes),
                   foreground oversampled at its 33%, targets as its BraTS region training uses
          MONAI    its fast-training recipe: CacheDataset (W threads caching the loaded,
                   z-scored, cropped cases) + RandCropByPosNegLabeld (pos 1, neg 1: half on
                   tumour, 4 per case) + ThreadDataLoader
          each without augmentation and with its standard one (brats: BatchAugmenter on the
          training device, here the CPU, counted in the loop's time; nnU-Net: its training
          transforms in its worker processes; MONAI: the flips and intensity scale/shift of its
          BraTS tutorial in the loader thread). Patches/s after a warm-up, time to first batch
          (from the start of the process, caching included), peak RSS of the process tree.

Every line ends with `vs nnU-Net v2: N.N×` or `vs MONAI: N.N×` (brats over the peer, higher
is better). Needs the bench extra: pip install -e '.[bench]' (see README).

    python bench/peers.py [--raw DIR] [--workers 2] [--ingest-only] [--batches 60]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BIN, folder_bytes, json_child, labelled_cases, machine, raw_dataset, record_results, timed_command  # noqa: E402

PATCH, BATCH = 96, 4
DATASET_ID, DATASET = 501, "Dataset501_BraTSPeers"


def nnunet_raw(cases, root: Path) -> Path:
    """The cases in nnU-Net's raw layout: images linked, labels converted as its BraTS 2021
    converter does (edema 1, necrosis 2, enhancing 3: regions WT 1-3, TC 2-3, ET 3)."""
    import nibabel as nib
    import numpy as np

    from gliostream.pipeline.naming import MODALITIES

    folder = root / "raw" / DATASET
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for case in cases:
        for channel, modality in enumerate(MODALITIES):
            (folder / "imagesTr" / f"{case.case_id}_{channel:04d}.nii.gz").symlink_to(case.files[modality])
        seg = nib.load(case.files["seg"])
        labels = np.asanyarray(seg.dataobj).astype(np.uint8)
        converted = np.zeros_like(labels)
        converted[labels == 2], converted[labels == 1], converted[(labels == 3) | (labels == 4)] = 1, 2, 3
        nib.save(nib.Nifti1Image(converted, seg.affine, seg.header), folder / "labelsTr" / f"{case.case_id}.nii.gz")
    dataset = {"channel_names": {str(i): m for i, m in enumerate(MODALITIES)},
               "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
               "regions_class_order": [1, 2, 3], "numTraining": len(cases), "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return folder


def nnunet_env(root: Path) -> dict[str, str]:
    return {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
            "nnUNet_results": str(root / "results")}


def compare_ingest(cases, root: Path, workers: int) -> Path:
    """Time both preprocessing commands on the same cases; return nnU-Net's preprocessed folder."""
    raw = root / "brats_raw"
    raw.mkdir()
    for case in cases:
        (raw / case.case_id).mkdir()
        for path in case.files.values():
            (raw / case.case_id / path.name).symlink_to(path)
    nnunet_raw(cases, root)
    n = len(cases)
    brats_s, brats_mib = timed_command([str(BIN / "brats"), "ingest", str(raw), "--out", str(root / "store"),
                                        "--workers", str(workers), "--no-progress"])
    nn_s, nn_mib = timed_command([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres",
                                  "-np", str(workers), "-npfp", str(workers)], env=nnunet_env(root))
    preprocessed = root / "preprocessed" / DATASET
    brats_bytes = folder_bytes(root / "store") / n
    nn_bytes = folder_bytes(preprocessed / "nnUNetPlans_3d_fullres") / n
    print(f"\n## Ingest, {n} cases, {workers} workers")
    print("| | brats ingest | nnUNetv2_plan_and_preprocess |\n|---|---|---|")
    print(f"| seconds per case | {brats_s / n:.2f} | {nn_s / n:.2f} |")
    print(f"| MB on disk per case | {brats_bytes / 1e6:.1f} | {nn_bytes / 1e6:.1f} (its 3d_fullres data; "
          f"{folder_bytes(preprocessed) / n / 1e6:.1f} with its copies of the labels) |")
    print(f"| peak memory, MiB (process tree) | {brats_mib:.0f} | {nn_mib:.0f} |")
    print(f"ingest seconds per case vs nnU-Net v2: {nn_s / brats_s:.1f}×")
    print(f"ingest bytes per case vs nnU-Net v2: {nn_bytes / brats_bytes:.1f}×")
    print(f"ingest peak memory vs nnU-Net v2: {nn_mib / brats_mib:.1f}×")
    record_results("peers", {"ingest_speedup_vs_nnunet": f"{nn_s / brats_s:.1f}×",
                             "ingest_memory_vs_nnunet": f"{nn_mib / brats_mib:.1f}×"})
    return preprocessed


# --- stream children: each yields (image, label) batches; run in their own process -----------------

def brats_batches(root: Path, workers: int, augment: bool):
    import torch

    from gliostream.store.reader import labelled_case_ids
    from gliostream.trainer.augment import BatchAugmenter
    from gliostream.trainer.config import AugmentConfig, StreamConfig
    from gliostream.trainer.stream import PatchStream

    store = root / "store"
    config = StreamConfig(patch_size=(PATCH,) * 3, batch_size=BATCH, workers=workers)
    stream = PatchStream(store, labelled_case_ids(store), config, seed=0)
    augmenter = BatchAugmenter(AugmentConfig(), seed=0) if augment else None
    epoch = 0
    while True:
        for batch in stream.batches(epoch, 10_000):
            image, label = batch.image.float(), batch.label
            if augmenter is not None:
                with torch.no_grad():
                    image, label = augmenter(image, label)
            yield image, label
        epoch += 1


def nnunet_batches(root: Path, workers: int, augment: bool):
    """nnU-Net v2's own trainer builds its loaders; the plans get our patch and batch size."""
    import torch

    os.environ.update(nnunet_env(root))
    os.environ["nnUNet_n_proc_DA"] = str(workers)
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    preprocessed = root / "preprocessed" / DATASET
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["configurations"]["3d_fullres"].update(patch_size=[PATCH] * 3, batch_size=BATCH)
    plans["continue_training"] = False  # what nnUNetv2_train adds to the plans
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    trainer = nnUNetTrainer(plans, "3d_fullres", "all", dataset_json, device=torch.device("cpu"))
    trainer.initialize()
    if augment:
        loader, _ = trainer.get_dataloaders()
    else:
        train, _ = trainer.get_tr_and_val_datasets()
        transforms = trainer.get_validation_transforms(trainer._get_deep_supervision_scales(), is_cascaded=False,
                                                       foreground_labels=trainer.label_manager.foreground_labels,
                                                       regions=trainer.label_manager.foreground_regions,
                                                       ignore_label=trainer.label_manager.ignore_label)
        patch = trainer.configuration_manager.patch_size
        plain = nnUNetDataLoader(train, BATCH, patch, patch, trainer.label_manager,
                                 oversample_foreground_percent=trainer.oversample_foreground_percent,
                                 transforms=transforms)
        loader = NonDetMultiThreadedAugmenter(plain, None, workers, max(6, workers // 2), None, False, 0.002)
    while True:
        batch = next(loader)
        target = batch["target"]
        yield batch["data"], target[0] if isinstance(target, list) else target


def monai_batches(root: Path, workers: int, augment: bool):
    from monai import transforms as mt
    from monai.data import CacheDataset, ThreadDataLoader

    from gliostream.pipeline.naming import MODALITIES

    cases = labelled_cases(Path(os.environ["PEERS_RAW"]))
    data = [{"image": [str(c.files[m]) for m in MODALITIES], "label": str(c.files["seg"])} for c in cases]
    keys = ["image", "label"]
    deterministic = [mt.LoadImaged(keys), mt.EnsureChannelFirstd(keys),
                     mt.NormalizeIntensityd("image", nonzero=True, channel_wise=True),
                     mt.CropForegroundd(keys, source_key="image"), mt.EnsureTyped(keys)]
    random = [mt.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=(PATCH,) * 3, pos=1, neg=1,
                                        num_samples=BATCH, image_key="image", image_threshold=0)]
    if augment:
        random += [mt.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
        random += [mt.RandScaleIntensityd("image", factors=0.1, prob=1.0),
                   mt.RandShiftIntensityd("image", offsets=0.1, prob=1.0)]
    dataset = CacheDataset(data, mt.Compose(deterministic + random), cache_rate=1.0, num_workers=workers,
                           progress=False)
    while True:
        for batch in ThreadDataLoader(dataset, batch_size=1, shuffle=True, num_workers=0):
            yield batch["image"], batch["label"]


SOURCES = {"brats": brats_batches, "nnunet": nnunet_batches, "monai": monai_batches}


def measure(kind: str, root: Path, workers: int, batches: int) -> dict:
    started = time.perf_counter()
    tool, _, aug = kind.partition("-")
    source = SOURCES[tool](root, workers, aug == "aug")
    image, label = next(source)
    first = time.perf_counter() - started
    for _ in range(max(3, batches // 10)):
        next(source)
    start = time.perf_counter()
    for _ in range(batches):
        image, label = next(source)
    wall = time.perf_counter() - start
    assert tuple(image.shape) == (BATCH, 4, PATCH, PATCH, PATCH), image.shape
    return {"kind": kind, "patches_per_s": batches * BATCH / wall, "first_batch_s": first}


def run_child(kind: str, root: Path, workers: int, batches: int, raw: Path) -> dict:
    return json_child([sys.executable, __file__, "--child", kind, str(root), str(workers), str(batches)],
                      env={**os.environ, "PEERS_RAW": str(raw), "OMP_NUM_THREADS": str(workers)})


def brats_time_split(root: Path, per_volume: int = 8) -> dict[str, float]:
    """Where brats' stream spends a patch, one thread, in this process: reading (decompressing)
    the case it comes from, shared by `per_volume` patches, cutting it, and the batch copy."""
    from itertools import islice

    from gliostream.store.reader import labelled_case_ids
    from gliostream.trainer.sampler import TumourSampler
    from gliostream.trainer.stream import collate_patches
    from gliostream.trainer.subjects import store_subjects_dataset

    store = root / "store"
    dataset = store_subjects_dataset(store, labelled_case_ids(store), (PATCH,) * 3)
    sampler = TumourSampler((PATCH,) * 3, seed=0)
    read = cut = copy = 0.0
    for i in range(len(dataset)):
        t0 = time.perf_counter()
        subject = dataset[i]
        t1 = time.perf_counter()
        patches = list(islice(sampler(subject), per_volume))
        t2 = time.perf_counter()
        for first in range(0, per_volume, BATCH):
            collate_patches(patches[first:first + BATCH])
        t3 = time.perf_counter()
        read, cut, copy = read + t1 - t0, cut + t2 - t1, copy + t3 - t2
    patches = len(dataset) * per_volume
    return {"read": 1000 * read / patches, "cut": 1000 * cut / patches, "copy": 1000 * copy / patches}


def compare_streams(root: Path, raw: Path, workers: int, batches: int) -> None:
    print(f"\n## Patch stream: batches of {BATCH} x (4 x {PATCH}^3 + label), {workers} workers, "
          f"{batches} batches timed")
    print("| pipeline | augmentation | tumour-centred share | patches/s | time to first batch, s | peak RSS, MiB |")
    print("|---|---|---|---|---|---|")
    share = {"brats": "50%", "nnunet": "33% (its oversampling)", "monai": "50% (pos 1, neg 1)"}
    results = {}
    for aug in ("", "-aug"):
        for tool in ("brats", "nnunet", "monai"):
            r = results[tool + aug] = run_child(tool + aug, root, workers, batches, raw)
            print(f"| {tool} | {'standard' if aug else 'none'} | {share[tool]} | {r['patches_per_s']:.1f} "
                  f"| {r['first_batch_s']:.1f} | {r['peak_rss_mib']:.0f} |", flush=True)
    figures = {}
    for aug, words in (("", "without augmentation"), ("-aug", "with augmentation")):
        ours = results["brats" + aug]
        for tool, name in (("nnunet", "nnU-Net v2"), ("monai", "MONAI")):
            peer = results[tool + aug]
            ratio = f"{ours['patches_per_s'] / peer['patches_per_s']:.1f}×"
            figures[f"stream_vs_{tool}{aug.replace('-', '_')}"] = ratio
            print(f"stream patches/s {words}, {workers} workers vs {name}: {ratio}")
            print(f"stream time to first batch {words} vs {name}: {peer['first_batch_s'] / ours['first_batch_s']:.1f}×")
            print(f"stream peak memory {words} vs {name}: {peer['peak_rss_mib'] / ours['peak_rss_mib']:.1f}×")
    split = brats_time_split(root)
    print(f"\nbrats, one thread, ms per patch: reading its case (shared by 8 patches) {split['read']:.1f}, "
          f"cutting {split['cut']:.1f}, batch copy {split['copy']:.1f}; MONAI's recipe does no reading after "
          f"its cache is built")
    record_results("peers", figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", default=None, help="BraTS cases (default: ../shared/realdata)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--ingest-only", action="store_true")
    parser.add_argument("--work", default=None, help="an empty folder to work in, kept (default: a temporary one)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, root, workers, batches = args.child
        print(json.dumps(measure(kind, Path(root), int(workers), int(batches))))
        return
    if shutil.which("nnUNetv2_plan_and_preprocess", path=str(BIN)) is None:
        raise SystemExit("nnU-Net v2 is not installed: pip install -e '.[bench]' (README, Benchmarks)")
    print(f"Machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.work or tmp)
        root.mkdir(parents=True, exist_ok=True)
        raw = raw_dataset(args.raw, root)
        cases = labelled_cases(raw)
        print(f"Data: {len(cases)} labelled cases of {raw}")
        compare_ingest(cases, root, args.workers)  # both streams read what their own ingest wrote
        if not args.ingest_only:
            compare_streams(root, raw, args.workers, args.batches)


if __name__ == "__main__":
    main()
