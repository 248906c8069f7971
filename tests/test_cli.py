import os
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from brats import __version__
from brats.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version_and_help_on_every_verb():
    assert __version__ in run("--version").output
    for verb in ("synth", "ingest"):
        result = run(verb, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_console_script_synth_then_ingest_with_dask(tmp_path):
    raw, store = tmp_path / "raw", tmp_path / "store"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "-m", "brats", "synth", str(raw), "--cases", "2", "--shape", "32,32,24",
                    "--naming", "2023"], check=True, env=env, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "brats", "ingest", str(raw), "--out", str(store), "--workers", "2",
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


def test_unreachable_scheduler_is_fatal(synth_raw, tmp_path):
    result = run("ingest", str(synth_raw), "--out", str(tmp_path / "s"), "--scheduler", "tcp://127.0.0.1:9",
                 "--no-progress")
    assert result.exit_code == 3 and "cannot reach Dask scheduler tcp://127.0.0.1:9" in result.output


def test_synth_rejects_bad_shape(tmp_path):
    result = run("synth", str(tmp_path / "r"), "--shape", "4,4")
    assert result.exit_code == 2 and "three integers" in result.output
