"""Helpers shared by the benchmark scripts: where the data comes from, timing, commands and their memory."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
BIN = Path(sys.executable).parent  # the console scripts (brats, nnUNetv2_*) of this environment


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def record_results(bench: str, figures: dict[str, str], results: Path = RESULTS,
                   details: dict | None = None) -> Path:
    """Keep the figures a run measured, formatted as the docs quote them, in docs/results/<bench>.json
    (merged with that file's others, which another part of the script may have measured), and any
    fuller tables under "details" by name. The README and docs/benchmarks.md quote these files;
    tests/test_docs.py fails on a README figure none holds."""
    path = results / f"{bench}.json"
    data = json.loads(path.read_text()) if path.exists() else {"bench": f"bench/{bench}.py", "figures": {}}
    data.pop("source", None)  # no longer transcribed: measured by this run
    data.update(machine=machine(), date=time.strftime("%Y-%m-%d"))
    data["figures"].update(figures)
    if details:
        data.setdefault("details", {}).update(details)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"results: {path}")
    return path


def best_of(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls (seconds): the least disturbed measurement."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def raw_dataset(raw: str | None, tmp: Path, cases: int = 6) -> Path:
    """The real BraTS-space samples if present, else full-size synthetic cases."""
    if raw:
        return Path(raw)
    if REALDATA.is_dir():
        return REALDATA
    from gliostream.synth import SynthConfig, synth_dataset

    out = tmp / "raw"
    synth_dataset(out, SynthConfig(cases=cases, shape=(240, 240, 155)), progress=False)
    return out


class TreeMemory:
    """Peak resident memory summed over a process and its descendants, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            self._stop.wait(0.05)

    def stop_mib(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def measured_run(command: list[str], env: dict[str, str] | None = None) -> tuple[str, float, float]:
    """(stdout, seconds, peak MiB of the process tree) of one command, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(proc.pid)
    out, err = proc.communicate()
    seconds, peak = time.perf_counter() - start, memory.stop_mib()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{(out + err)[-3000:]}")
    return out, seconds, peak


def timed_command(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak MiB of the process tree) of one command, which must succeed."""
    _, seconds, peak = measured_run(command, env)
    return seconds, peak


def json_child(command: list[str], env: dict[str, str] | None = None) -> dict:
    """The JSON object a child process prints last, with its tree's peak memory (`peak_rss_mib`)."""
    out, _, peak = measured_run(command, env)
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mib": peak}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def labelled_cases(raw: Path):
    from gliostream.pipeline.discovery import discover_cases

    return [c for c in discover_cases(raw) if c.problem is None and c.labelled]
