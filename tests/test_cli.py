import hashlib
import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from gliostream import __version__
from gliostream.cli.main import cli
from gliostream.store import layout


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version_and_help_on_every_verb():
    version = run("--version").output
    assert __version__ in version and "torch" in version and "--device auto uses" in version
    for verb in ("synth", "ingest"):
        result = run(verb, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_console_script_synth_then_ingest_with_dask(tmp_path):
    raw, store = tmp_path / "raw", tmp_path / "store"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "-m", "gliostream", "synth", str(raw), "--cases", "2", "--shape", "32,32,24",
                    "--naming", "2023"], check=True, env=env, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "gliostream", "ingest", str(raw), "--out", str(store), "--workers", "2",
                          "--no-progress"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ingest: 2 ingested, 0 unchanged, 0 rejected, 0 failed" in out.stdout
    assert "distributed" not in out.stderr  # no log noise from the scheduler
    assert len(pd.read_csv(store / "index.csv")) == 2


def test_rejected_case_gives_exit_code_1_and_one_line(synth_raw, tmp_path):
    bad = next((synth_raw / "BraTS2021_00001").glob("*_t1ce.nii.gz"))
    bad.write_bytes(b"GIF89a not a nifti")
    result = run("ingest", str(synth_raw), "--out", str(tmp_path / "s"), "--workers", "0", "--no-progress")
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.startswith("rejected")]
    assert lines == [f"rejected: {bad}: not a gzip file although named .gz"]
    assert "3 ingested" in result.output


@pytest.mark.parametrize("setup,message", [
    ("missing", "raw folder does not exist"),
    ("empty", "no BraTS case found"),
    ("foreign", "not empty and is not a brats store"),
])
def test_fatal_errors_exit_3_with_one_line(tmp_path, synth_raw, setup, message):
    raw = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "foreign": synth_raw}[setup]
    (tmp_path / "empty").mkdir()
    out = tmp_path / "s"
    if setup == "foreign":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    result = run("ingest", str(raw), "--out", str(out), "--workers", "0", "--no-progress")
    assert result.exit_code == 3
    assert result.output.strip().count("\n") == 0 and message in result.output
    if setup == "foreign":  # refused without littering the user's folder
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_unreachable_scheduler_is_fatal(synth_raw, tmp_path):
    result = run("ingest", str(synth_raw), "--out", str(tmp_path / "s"), "--scheduler", "tcp://127.0.0.1:9",
                 "--no-progress")
    assert result.exit_code == 3 and "cannot reach Dask scheduler tcp://127.0.0.1:9" in result.output


def test_synth_rejects_bad_shape(tmp_path):
    result = run("synth", str(tmp_path / "r"), "--shape", "4,4")
    assert result.exit_code == 2 and "three integers" in result.output


def console(*args: str, cwd) -> subprocess.CompletedProcess:
    """The installed console script as a user runs it, in a subprocess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "gliostream", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def one_line_error(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tiny_store, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    one_line_error(console("synth", str(blocker / "raw"), "--cases", "1", cwd=tmp_path), "is not a folder")
    one_line_error(console("train", "--store", str(tiny_store), "--out", str(blocker / "run"), cwd=tmp_path),
                   "is not a folder")
    # score checks its outputs before loading the checkpoint, let alone predicting
    one_line_error(console("score", "--ckpt", "missing.pt", "--out", str(blocker / "s.csv"), cwd=tmp_path),
                   "is not a folder")
    one_line_error(console("score", "--ckpt", "missing.pt", "--save-predictions", str(blocker / "p"), cwd=tmp_path),
                   "is not a folder")
    one_line_error(console("score", "--ckpt", "missing.pt", "--out", str(tmp_path), cwd=tmp_path),
                   "must be a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing created on the way


def test_an_operating_system_refusal_is_one_line(tmp_path):
    proc = console("synth", "/proc/brats-cannot-write-here", "--cases", "1", cwd=tmp_path)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "/proc/brats-cannot-write-here" in proc.stderr


def test_train_refuses_to_overwrite_another_run(tiny_store, tmp_path):
    tiny = ["--store", str(tiny_store), "--out", "run", "--epochs", "1", "--patches-per-epoch", "4", "--patch-size", "32",
            "--base-channels", "4", "--batch-size", "2", "--accum-steps", "1", "--workers", "0", "--no-progress"]
    assert console("train", *tiny, cwd=tmp_path).returncode == 0
    before = (tmp_path / "run" / "last.pt").read_bytes()
    one_line_error(console("train", *tiny, cwd=tmp_path), "holds another run")
    assert (tmp_path / "run" / "last.pt").read_bytes() == before  # untouched
    overwritten = console("train", *tiny, "--overwrite", "--step-times", cwd=tmp_path)
    assert overwritten.returncode == 0
    assert re.search(r"per micro-batch data \d+ ms, augment \d+ ms, forward \d+ ms, backward \d+ ms, optimizer \d+ ms",
                     overwritten.stderr), overwritten.stderr[-2000:]
    # the run's own train_config.json is a config file; the scores say what produced them
    again = console("train", "--config", "run/train_config.json", "--out", "run2", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "run2" / "train_config.json").read_text())["stream"]["patch_size"] == [32, 32, 32]
    assert console("score", "--ckpt", "run/best.pt", "--cases", "all", "--no-progress", cwd=tmp_path).returncode == 0
    provenance = json.loads((tmp_path / "final_scores.json").read_text())
    (checkpoint,) = provenance["checkpoints"]
    assert checkpoint["sha256"] == hashlib.sha256((tmp_path / "run" / "best.pt").read_bytes()).hexdigest()
    assert provenance["options"]["cases"] == "all" and provenance["brats_version"]


def test_ingest_follows_symlinked_case_folders_and_survives_a_link_loop(synth_raw, tmp_path):
    subset = tmp_path / "subset"
    subset.mkdir()
    for case in sorted(synth_raw.iterdir())[:2]:
        (subset / case.name).symlink_to(case, target_is_directory=True)
    (subset / "loop").symlink_to(subset, target_is_directory=True)
    proc = console("ingest", str(subset), "--out", str(tmp_path / "store"), "--workers", "0", "--no-progress",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ingest: 2 ingested, 0 unchanged, 0 rejected, 0 failed" in proc.stdout


def test_help_and_the_verbs_without_a_model_do_not_import_torch(synth_raw, tmp_path):
    script = f"""
import sys
from click.testing import CliRunner
from gliostream.cli.main import cli
for verb in ([], ["synth"], ["ingest"], ["verify"], ["train"], ["score"]):
    result = CliRunner().invoke(cli, [*verb, "--help"])
    assert result.exit_code == 0 and "Exit codes" in result.output or not verb, (verb, result.output)
assert "torch" not in sys.modules and "distributed" not in sys.modules, "imported by --help"
assert CliRunner().invoke(cli, ["synth", {str(tmp_path / "raw")!r}, "--cases", "1", "--shape", "32,32,24"]).exit_code == 0
assert CliRunner().invoke(cli, ["ingest", {str(tmp_path / "raw")!r}, "--out", {str(tmp_path / "s")!r},
                                "--workers", "0"]).exit_code == 0
assert CliRunner().invoke(cli, ["verify", {str(tmp_path / "s")!r}]).exit_code == 0
assert "torch" not in sys.modules, "imported by synth, ingest or verify"
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_score_without_a_model_or_predictions_is_a_bad_command_line(tmp_path):
    proc = console("score", cwd=tmp_path)
    assert proc.returncode == 2 and "give --ckpt" in proc.stderr and "Traceback" not in proc.stderr


def test_predicting_cases_without_a_reference_writes_no_score_table(tiny_store, tmp_path):
    from .helpers import brain_arrays, write_case

    tiny = ["--store", str(tiny_store), "--out", "run", "--epochs", "1", "--patches-per-epoch", "4", "--patch-size", "32",
            "--base-channels", "4", "--batch-size", "2", "--accum-steps", "1", "--workers", "0", "--no-progress"]
    assert console("train", *tiny, cwd=tmp_path).returncode == 0
    write_case(tmp_path / "new" / "patient1", "patient1", brain_arrays(seed=7)[0])  # no seg: a new patient
    proc = console("score", "--ckpt", "run/best.pt", "--raw", "new", "--save-predictions", "preds", "--no-progress",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("scored no case: none has a reference seg; 1 case(s) without a reference seg "
                                   "predicted, not scored; 1 prediction(s) saved; no score table written")
    assert (tmp_path / "preds" / "patient1.nii.gz").is_file() and not (tmp_path / "final_scores.csv").exists()


def test_a_run_with_a_relative_store_resumes_from_anywhere_and_from_a_copy_of_its_store(tiny_store, tmp_path):
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(tiny_store, project / "store")
    tiny = ["--epochs", "1", "--patches-per-epoch", "4", "--patch-size", "32", "--base-channels", "4", "--batch-size",
            "2", "--accum-steps", "1", "--workers", "0", "--val-every", "5", "--no-progress"]
    assert console("train", "--store", "store", "--out", "run", *tiny, cwd=project).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = console("train", "--resume", str(project / "run" / "last.pt"), "--epochs", "2", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    shutil.copytree(project / "store", tmp_path / "copy")  # the store moved: same content, other path
    moved = console("train", "--resume", str(project / "run" / "last.pt"), "--epochs", "3", "--store",
                    str(tmp_path / "copy"), cwd=elsewhere)
    assert moved.returncode == 0, moved.stderr
    shutil.rmtree(min(p for p in layout.cases_dir(tmp_path / "copy").iterdir() if p.is_dir()))
    one_line_error(console("train", "--resume", str(project / "run" / "last.pt"), "--epochs", "4", "--store",
                           str(tmp_path / "copy"), cwd=elsewhere), "lacks 1 of the run's cases")


def test_a_damaged_checkpoint_is_one_line_and_not_called_unsafe(tmp_path):
    import torch

    torch.save({"format": "brats-checkpoint", "version": 1, "model": {"w": torch.zeros(4096)}}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])  # a copy that stopped half-way
    proc = console("score", "--ckpt", "cut.pt", cwd=tmp_path)
    one_line_error(proc, "cut.pt: damaged or not a brats checkpoint")
    assert "refused" not in proc.stderr


def test_train_help_shows_the_defaults_of_the_training_config():
    import re

    from gliostream.cli.train import train
    from gliostream.trainer.config import TrainConfig, setting

    defaults, checked = TrainConfig(), 0
    for param in train.params:
        shown = re.search(r"\[default: ([^\]]+)\]", getattr(param, "help", None) or "")
        try:
            value = setting(defaults, param.name)
        except AttributeError:  # not a setting: --config, --resume, --overwrite, --progress
            value = None
        if shown is None or value is None or isinstance(value, bool):  # None, booleans: described in words
            continue
        value = value[0] if isinstance(value, tuple) else value
        assert shown.group(1) == (format(value, "g") if isinstance(value, float) else str(value)), param.name
        checked += 1
    assert checked >= 15
