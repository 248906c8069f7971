"""Deploying: `brats export` (ONNX, TorchScript) with its metadata, the inference engines giving the
torch engine's segmentations, and prediction and scoring spread over Dask clusters (a local one,
and one started from the dask command line with a worker killed mid-run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from gliostream import load_segmenter
from gliostream.cli.main import cli
from gliostream.errors import ConfigError
from gliostream.pipeline.discovery import discover_cases
from gliostream.pipeline.naming import MODALITIES
from gliostream.scoring.cases import load_raw_case
from gliostream.scoring.engines import OnnxRuntimeNetwork, OpenVinoNetwork
from gliostream.scoring.exported import onnx_bytes, read_exported
from gliostream.scoring.models import load_members
from gliostream.store.reader import list_case_ids
from gliostream.trainer.checkpoint import save_checkpoint
from gliostream.trainer.config import config_from_dict
from gliostream.trainer.model import ModelConfig, ResUNet

from .helpers import brain_arrays, write_case

ROOT = Path(__file__).resolve().parents[1]


DEFAULT_RULE = {"min_component_voxels": [20, 10, 5], "et_min_voxels": 8}


def decisive_checkpoint(path: Path, store: Path, seed: int = 0, postprocess: dict = DEFAULT_RULE,
                        bias: tuple[float, float, float] = (0.5, -0.5, -1.0)) -> Path:
    """A random base-4 Res-UNet whose head is scaled up, so that most voxels are far from the 0.5
    threshold (a network fresh from initialisation puts nearly every voxel at 0.5 +- 0.01)."""
    torch.manual_seed(seed)
    model_config = ModelConfig(base_channels=4)
    model = ResUNet(model_config)
    with torch.no_grad():
        model.head.weight.mul_(40.0)
        model.head.bias.copy_(torch.tensor(bias))
    config = config_from_dict(dict(store=str(store), out=str(path.parent), patch_size=(32, 32, 32), base_channels=4))
    save_checkpoint(path, {"config": config.to_dict(), "model_config": asdict(model_config), "model": model.state_dict(),
                           "split": {"train": [], "val": list_case_ids(store)[:2]}, "store": str(store),
                           "postprocess": postprocess})
    return path


def run(*args: str):
    return CliRunner().invoke(cli, [*args])


def labels_of(folder: Path) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(nib.load(f).dataobj) for f in sorted(folder.glob("*.nii.gz"))}


def raw_cases(root: Path, count: int = 4) -> Path:
    for i in range(count):
        write_case(root / f"case{i}", f"case{i}", brain_arrays(seed=10 + i)[0], None, naming="2023" if i % 2 else "2021")
    return root


@pytest.fixture(scope="module")
def exported(tiny_store, tmp_path_factory):
    """A decisive checkpoint and its export with TorchScript members."""
    folder = tmp_path_factory.mktemp("export")
    ckpt = decisive_checkpoint(folder / "best.pt", tiny_store)
    result = run("export", str(ckpt), str(folder / "exported"), "--torchscript", "--no-progress")
    assert result.exit_code == 0, result.output
    return ckpt, folder / "exported"


def test_an_export_carries_what_predicting_needs_and_computes_what_torch_computes(exported, tiny_store):
    ckpt, out = exported
    manifest = json.loads((out / "model.json").read_text())
    assert [m["onnx"] for m in manifest["members"]] == ["member-0.onnx"]
    member = load_members((str(ckpt),), torch.device("cpu"), "torch")[0]
    assert manifest["members"][0]["sha256"] == member.sha256
    for name in ("member-0.onnx", "member-0.ts"):
        meta = read_exported(out / name).meta
        assert meta["source"]["sha256"] == member.sha256
        assert meta["input"]["channels"] == list(MODALITIES) and meta["input"]["window"] == [32, 32, 32]
        assert [r["name"] for r in meta["output"]["regions"]] == ["wt", "tc", "et"]
        assert [r["parent"] for r in meta["output"]["regions"]] == [None, "wt", "tc"]
        assert meta["postprocessing"] == {"min_component_voxels": [20, 10, 5], "et_min_voxels": 8}
        assert meta["task"] == "GLI" and "z-scored" in meta["input"]["normalisation"]
    # The same windows' outputs: ONNX Runtime within 1e-5 of PyTorch, TorchScript to the bit.
    windows = torch.randn(3, 4, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.sigmoid(member.network(windows))
    onnx_member, script_member = (load_members((str(out / n),), torch.device("cpu"), e)[0]
                                  for n, e in (("member-0.onnx", "onnxruntime"), ("member-0.ts", "torch")))
    assert float((onnx_member.network(windows) - expected).abs().max()) < 1e-4  # 3 windows: chunks of 2, one padded
    assert torch.equal(script_member.network(windows), expected)
    assert onnx_member.postprocessing == member.postprocessing and onnx_member.regions == member.regions
    assert onnx_member.provenance()["exported_from_sha256"] == member.sha256


def test_every_engine_writes_the_torch_engines_segmentations(exported, tmp_path):
    ckpt, out = exported
    raw = raw_cases(tmp_path / "raw")
    runs = {"torch": ("--ckpt", str(ckpt), "--engine", "torch"),
            "onnxruntime": ("--ckpt", str(ckpt), "--engine", "onnxruntime"),
            "openvino": ("--ckpt", str(ckpt), "--engine", "openvino"),
            "exported": ("--ckpt", str(out)),  # auto: ONNX Runtime
            "torchscript": ("--ckpt", str(out), "--engine", "torch"),
            "batch of 3": ("--ckpt", str(out), "--batch-windows", "3", "--threads", "1")}
    written = {}
    for name, options in runs.items():
        result = run("predict", str(raw), str(tmp_path / name), *options, "--device", "cpu", "--no-progress")
        assert result.exit_code == 0, (name, result.output)
        written[name] = labels_of(tmp_path / name)
    reference = written.pop("torch")
    assert len(reference) == 4 and all(np.isin(a, [1, 2, 3, 4]).any() and (a == 0).any() for a in reference.values())
    for name, labels in written.items():
        assert labels.keys() == reference.keys()
        for case, a in labels.items():
            assert np.array_equal(a, reference[case]), (name, case, int((a != reference[case]).sum()))
    producer = json.loads((tmp_path / "exported" / "predictions.json").read_text())["producer"]
    assert producer["options"]["engine"] == ["onnxruntime"]


def test_exported_models_refuse_what_they_cannot_do_in_one_line(exported, tmp_path):
    ckpt, out = exported
    raw = raw_cases(tmp_path / "raw", count=1)
    result = run("predict", str(raw), str(tmp_path / "a"), "--ckpt", str(out / "member-0.onnx"), "--engine", "torch",
                 "--device", "cpu", "--no-progress")
    assert result.exit_code == 3 and "--engine onnxruntime or openvino" in result.output
    segment = load_segmenter(out, device="cpu", window=(48, 48, 48))  # the graph's windows are 32^3
    with pytest.raises(ConfigError, match=r"takes windows of \(32, 32, 32\) voxels, not \(48, 48, 48\)"):
        segment(np.stack(brain_arrays()[0]).astype(np.float32))
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes((out / "member-0.onnx").read_bytes()[:5000])
    result = run("predict", str(raw), str(tmp_path / "b"), "--ckpt", str(damaged), "--device", "cpu", "--no-progress")
    assert result.exit_code == 3 and result.output.count("\n") == 1 and "damaged.onnx: damaged or not a brats export" \
        in result.output
    result = run("export", str(ckpt), str(out), "--no-progress")
    assert result.exit_code == 3 and "holds an exported model; give --overwrite" in result.output
    assert read_exported(out / "member-0.onnx").meta  # the export refused to overwrite is intact


@pytest.mark.realdata
def test_exported_onnx_gives_torchs_window_outputs_on_real_cases(realdata, tmp_path):
    """Windows of three real cases (cropped, z-scored as ingest does; one in the brain, one at the
    crop's corner, mostly background) through PyTorch, ONNX Runtime and OpenVINO. The differences
    are float32 rounding, which instance normalisation amplifies in near-empty windows (measured
    with the trained CPU preset: at most 7e-4 for ONNX Runtime, 4e-3 for OpenVINO; docs/benchmarks.md);
    a wrong graph (a layer, weight or normalisation missing) differs by 0.1 or more."""
    model = ResUNet(ModelConfig(base_channels=4)).eval()
    payload = onnx_bytes(model, 3, (64, 64, 64), 2, {})
    engines = {"onnxruntime": OnnxRuntimeNetwork(payload, threads=2), "openvino": OpenVinoNetwork(payload, threads=2)}
    worst, flipped, voxels = dict.fromkeys(engines, 0.0), dict.fromkeys(engines, 0), 0
    for case in discover_cases(realdata)[:3]:
        files = {role: path for role, path in case.files.items() if role != "seg"}
        image = load_raw_case(type(case)(**{**case.__dict__, "files": files})).image.float()
        centre = [s // 2 for s in image.shape[1:]]
        windows = torch.stack([image[:, c0 - 32:c0 + 32, c1 - 32:c1 + 32, c2 - 32:c2 + 32]
                               for c0, c1, c2 in (centre, [32, 32, 32])])
        with torch.no_grad():
            expected = torch.sigmoid(model(windows))
        voxels += expected.numel()
        for name, network in engines.items():
            got = network(windows)
            worst[name] = max(worst[name], float((got - expected).abs().max()))
            flipped[name] += int(((got > 0.5) != (expected > 0.5)).sum())
    assert worst["onnxruntime"] < 1e-3 and worst["openvino"] < 5e-3, worst
    assert all(n <= voxels * 1e-4 for n in flipped.values()), (flipped, voxels)


def test_score_and_predict_on_a_local_dask_cluster_match_this_process(exported, tiny_store, tmp_path):
    ckpt, _ = exported
    common = ("--ckpt", str(ckpt), "--engine", "torch", "--device", "cpu", "--no-progress")
    here = run("score", *common, "--out", str(tmp_path / "here.csv"), "--cases", "all")
    spread = run("score", *common, "--out", str(tmp_path / "spread.csv"), "--cases", "all", "--workers", "2")
    assert here.exit_code == 0 and spread.exit_code == 0, spread.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "here.csv"), pd.read_csv(tmp_path / "spread.csv"))
    table = pd.read_csv(tmp_path / "here.csv")
    assert list(table.case_id[:4]) == list_case_ids(tiny_store) and table.dice_wt[:4].notna().all()


def _start_cluster(tmp_path: Path, env: dict, worker_env: list[dict]) -> tuple[list[subprocess.Popen], Path]:
    """A scheduler and one worker per `worker_env`, started from the dask command line."""
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                               "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    for _ in range(300):
        if scheduler_file.exists() and scheduler_file.stat().st_size:
            break
        time.sleep(0.1)
    for i, extra in enumerate(worker_env):
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                                       str(scheduler_file), "--nthreads", "1", "--host", "127.0.0.1", "--name", f"w{i}",
                                       "--no-dashboard"], env={**env, **extra},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from distributed import Client

    with Client(json.loads(scheduler_file.read_text())["address"], timeout=30) as client:
        client.wait_for_workers(len(worker_env), timeout=90)
    return procs, scheduler_file


def test_predict_on_a_command_line_cluster_survives_a_killed_worker_and_continues(exported, tmp_path, reliability):
    ckpt, _ = exported
    raw = raw_cases(tmp_path / "raw", count=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRATS_FAULT")}
    env["PYTHONPATH"] = str(ROOT)
    died = tmp_path / "died"  # the first worker to reach the point dies there (its restart carries on)
    fault = {"BRATS_FAULT": "predict:before-write", "BRATS_FAULT_ONCE": str(died)}
    procs, scheduler_file = _start_cluster(tmp_path, env, [fault, {}])
    command = [sys.executable, "-m", "gliostream", "predict", str(raw), str(tmp_path / "out"), "--ckpt", str(ckpt),
               "--engine", "torch", "--device", "cpu", "--scheduler", str(scheduler_file), "--no-progress"]
    try:
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert died.exists(), "no worker was killed"
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 written, 0 up to date, 0 refused, 1 retried" in first.stdout and "on 2 Dask worker(s)" in first.stdout
    retried = [line for line in first.stderr.splitlines() if line.startswith("retried: ")]
    assert len(retried) == 1 and "retried after a worker was lost" in retried[0], first.stderr
    assert again.returncode == 0 and "0 written, 4 up to date" in again.stdout, again.stdout + again.stderr
    assert not list((tmp_path / "out").glob(".*tmp*"))  # the killed worker left no half-written file
    local = run("predict", str(raw), str(tmp_path / "local"), "--ckpt", str(ckpt), "--engine", "torch", "--device",
                "cpu", "--no-progress")
    assert local.exit_code == 0
    spread, here = labels_of(tmp_path / "out"), labels_of(tmp_path / "local")
    assert spread.keys() == here.keys() and all(np.array_equal(spread[k], here[k]) for k in here)
    reliability("scale-out", "`brats predict --scheduler FILE` on a scheduler and 2 workers started from the dask "
                             "command line, one worker SIGKILLed before writing its first case", 1,
                "its case retried on the other worker and reported (`retried:`), every file whole and identical to "
                "an in-process run; the same command again: all up to date")


def test_the_et_rule_is_applied_alike_by_predict_score_and_the_export(tiny_store, synth_raw_session, tmp_path):
    """The same network with and without an ET rule that relabels all of a case's enhancing tumour
    (its ET total above any case's): `brats predict` (torch), `brats predict` from the export (ONNX
    Runtime) and `brats score --save-predictions` write no ET with the rule and ET without it; with
    it, exactly the ET voxels became necrosis; score writes what predict writes, and the export all
    but the rare voxel that ONNX Runtime's float sums put on the other side of 0.5."""
    written: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for name, et_total in (("keep", 0), ("rule", 10**9)):
        folder = tmp_path / name
        ckpt = decisive_checkpoint(folder / "best.pt", tiny_store, bias=(2.0, 1.0, 1.0),  # ET in every case
                                   postprocess={"min_component_voxels": [0, 0, 0], "et_min_voxels": et_total})
        assert run("export", str(ckpt), str(folder / "exported"), "--no-progress").exit_code == 0
        commands = {"predict": ("predict", str(synth_raw_session), str(folder / "predict"), "--ckpt", str(ckpt),
                                "--engine", "torch"),
                    "export": ("predict", str(synth_raw_session), str(folder / "export"), "--ckpt",
                               str(folder / "exported")),
                    "score": ("score", "--ckpt", str(ckpt), "--store", str(tiny_store), "--cases", "all",
                              "--out", str(folder / "scores.csv"), "--save-predictions", str(folder / "score"),
                              "--engine", "torch")}
        for path, command in commands.items():
            result = run(*command, "--device", "cpu", "--no-progress")
            assert result.exit_code == 0, (name, path, result.output)
        written[name] = {path: labels_of(folder / path) for path in commands}
    for path, kept in written["keep"].items():
        assert len(kept) == 4 and kept.keys() == written["rule"][path].keys()
        assert all(np.isin(a, [3, 4]).sum() > 100 for a in kept.values())  # the network predicts ET
        for case, labels in kept.items():
            relabelled = np.where(np.isin(labels, [3, 4]), 1, labels)
            assert np.array_equal(written["rule"][path][case], relabelled), (path, case)
    for name in written:  # score runs torch too: identical; ONNX Runtime's float sums may flip a rare voxel
        for case, labels in written[name]["predict"].items():
            assert np.array_equal(written[name]["score"][case], labels), (name, case)
            assert (written[name]["export"][case] != labels).mean() < 1e-3, (name, case)
