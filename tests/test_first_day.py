"""A new user's first day, through the console script: synth -> ingest -> train -> Ctrl-C ->
resume from another directory -> score -> predict new patients. Every line they see is checked."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from gliostream.store import layout

from .helpers import brain_arrays, write_case


def brats(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "gliostream", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def interrupted(args: list[str], cwd: Path, ready) -> subprocess.CompletedProcess:
    """Run a verb, send SIGINT (Ctrl-C) once `ready()` holds, and return what the user saw."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gliostream", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in out + err, err
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_first_day_of_a_new_user(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    made = brats("synth", "raw", "--cases", "5", "--shape", "48,48,40", "--seed", "3", cwd=home)
    assert made.returncode == 0 and made.stdout.startswith("synth: wrote 5 cases")
    assert made.stderr == ""  # no progress bar off a terminal
    stored = brats("ingest", "raw", "--out", "store", "--workers", "1", cwd=home)
    assert stored.returncode == 0 and stored.stdout.startswith("ingest: 5 ingested")
    # off a terminal: no bar, a log line per tenth of the cases (here each of the five)
    assert stored.stderr.splitlines() == [f"INFO gliostream.pipeline.ingest.progress: ingest: {k}/5 cases processed"
                                          for k in range(1, 6)]

    tiny = ["--patches-per-epoch", "16", "--patch-size", "32", "--base-channels", "4", "--batch-size", "2",
            "--accum-steps", "1", "--val-every", "50", "--workers", "0"]
    stopped = interrupted(["train", "--store", "store", "--out", "run", "--epochs", "200", *tiny], home,
                          ready=lambda: (home / "run" / "last.pt").exists())
    assert stopped.returncode == 130, stopped.stderr
    last_line = stopped.stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted: the last finished epoch is in (\S+); continue with: brats train --resume (\S+)",
                         last_line)
    assert match and Path(match.group(2)) == home / "run" / "last.pt", last_line

    elsewhere = tmp_path / "elsewhere"  # a new shell, another directory: the printed command works as it is
    elsewhere.mkdir()
    resumed = brats("train", "--resume", match.group(2), "--epochs", "3", "--val-every", "1", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("trained ") and "now at epoch 3" in resumed.stdout

    scored = brats("score", "--ckpt", str(home / "run" / "best.pt"), "--out", "scores.csv", cwd=elsewhere)
    assert scored.returncode == 0 and "Mean" in scored.stdout and scored.stderr == ""
    assert (elsewhere / "scores.json").is_file() and len(pd.read_csv(elsewhere / "scores.csv")) == 6

    write_case(elsewhere / "patients" / "p1", "p1", brain_arrays(seed=11)[0])
    predicted = brats("score", "--ckpt", str(home / "run" / "best.pt"), "--raw", "patients", "--save-predictions",
                      "out", "--out", "none.csv", cwd=elsewhere)
    assert predicted.returncode == 0 and "no score table written" in predicted.stdout
    assert (elsewhere / "out" / "p1.nii.gz").is_file() and not (elsewhere / "none.csv").exists()


def test_ctrl_c_during_ingest_is_one_line_and_resumable(tmp_path):
    for i in range(12):
        mods, seg = brain_arrays(seed=i, shape=(64, 64, 48))
        write_case(tmp_path / "raw" / f"c{i:02d}", f"c{i:02d}", mods, seg)
    cases = layout.cases_dir(tmp_path / "store")
    stopped = interrupted(["ingest", "raw", "--out", "store", "--workers", "2"], tmp_path,
                          ready=lambda: cases.is_dir() and len(list(cases.iterdir())) >= 2)
    assert stopped.returncode == 130, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1].startswith("interrupted: the cases finished so far are in store")
    again = brats("ingest", "raw", "--out", "store", "--workers", "0", cwd=tmp_path)
    assert again.returncode == 0 and "0 rejected, 0 failed" in again.stdout
    done = re.match(r"ingest: (\d+) ingested, (\d+) unchanged", again.stdout)
    assert done and int(done.group(1)) + int(done.group(2)) == 12 and int(done.group(2)) >= 2
