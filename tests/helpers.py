"""Helpers the tests share: hand-made volumes, raw cases written to disk, and in-process ingests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from gliostream.pipeline.naming import CONVENTIONS, MODALITIES

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
TINY = (40, 40, 32)


def brain_arrays(shape=TINY, seed=0, et=True):
    """Four int16 modalities of a box-shaped brain with a small nested tumour, plus a 2021 seg."""
    rng = np.random.default_rng(seed)
    mods = []
    brain = np.zeros(shape, bool)
    brain[5:-5, 6:-6, 4:-4] = True
    for c in range(len(MODALITIES)):
        m = (rng.normal(500 + 100 * c, 50, shape) * brain).astype(np.int16)
        mods.append(m)
    seg = np.zeros(shape, np.uint8)
    seg[15:25, 15:25, 12:20] = 2
    seg[17:23, 17:23, 14:18] = 4 if et else 1
    seg[19:21, 19:21, 15:17] = 1
    return mods, seg


def write_case(folder: Path, case_id: str, mods, seg=None, naming: str = "2021", affine=None,
               endianness: str = "<") -> Path:
    """Write arrays as a raw case in `naming` layout (`endianness` ">" for big-endian files);
    returns the case folder."""
    conv = CONVENTIONS[naming]
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) if affine is None else affine
    roles = list(zip(MODALITIES, mods, strict=True))
    if seg is not None:
        roles.append(("seg", seg))
    for role, arr in roles:
        header = nib.Nifti1Header(endianness=endianness)
        header.set_data_dtype(arr.dtype)
        nib.save(nib.Nifti1Image(arr, affine, header=header),
                 folder / f"{case_id}{conv.separator}{conv.suffixes[role]}.nii.gz")
    return folder


def ingest_cases(tmp_path: Path, cases: dict[str, tuple[list, np.ndarray | None]]) -> Path:
    """Write hand-made cases {id: (modalities, seg)} and ingest them in-process; returns the store."""
    from gliostream.pipeline.ingest import run_ingest

    raw = tmp_path / "raw"
    for case_id, (mods, seg) in cases.items():
        write_case(raw / case_id, case_id, mods, seg)
    store = tmp_path / "store"
    run_ingest(raw, store, workers=0, progress=False)
    return store


def brats_03_config(config) -> dict:
    """`config` (a TrainConfig) as brats <= 0.3 saved it in checkpoints and train_config.json: one
    flat table, `augment` its only section."""
    from gliostream.trainer.config import ADDED_SINCE, FLAT_NAMES

    nested = config.to_dict()
    flat = {k: v for k, v in nested.items() if k not in ("model", "loss", "stream", "deterministic", *ADDED_SINCE)}
    flat.update({name: nested[section][key] for name, (section, key) in FLAT_NAMES.items()})
    return flat
