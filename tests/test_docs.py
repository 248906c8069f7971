"""Docs that cannot go stale: every measured figure the README quotes is held by a results file
under docs/results/ (which the bench scripts write), and the README's layout names modules that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"

_NUMBER = r"[+−-]?\d[\d,]*(?:\.\d+)?"
# A figure: a number (or a range of two) with a unit of time, memory, speed-up or share, or a
# three-decimal score (Dice, lesion-wise Dice). A × between two numbers is a shape (240×240×155).
FIGURE = re.compile(rf"(?<![\w.×/])({_NUMBER}(?:–{_NUMBER})?(?: ?(?:ms|s|min|minutes|h|hours|GiB|MiB|GB)\b| ?%|×(?![\d×]))"
                    rf"|(?<![\w.])0\.\d{{3}}(?![\d.]))")

# README figures that are settings, examples or arithmetic, not measurements: each says why, and
# each must still be in the README (an entry nobody needs is removed).
NOT_MEASURED = {
    "0.923": "the seed design's published WT Dice (not ours)", "0.895": "the seed design's published TC Dice",
    "0.842": "the seed design's published ET Dice", "8 GB": "the seed design's published memory",
    "0.125": "the Gaussian window's sigma (a setting)", "0.005": "the postprocessing search margin (a setting)",
    "1 %": "the minimum share of a region's voxels sampled (a setting)", "32GB": "a SLURM memory request",
    "128 MiB": "the chunk split threshold (a setting)", "8 GiB": "the card size `brats plan` is asked about",
    "5.2 s": "an example summary line", "240.1 s": "an example summary line",
    "20%": "the default validation share (a setting)", "2×": "a downsampling factor",
    "8×": "the compute of 2 mm voxels: 2³ (arithmetic)", "4×": "25,600 updates against 6,400 (arithmetic)",
    "3×": "25,600 against 8,000 (arithmetic)",
    "6%": "the share of each weight a weight decay of 0.1 removes (arithmetic)",
    "1%": "a share of clipped updates, with its source in the same sentence",
    "0.5–1×": "the low-resolution augmentation's zoom (a setting)",
}


def results_figures() -> dict[str, str]:
    """Every figure of every results file: the value as quoted -> `file: name`."""
    held = {}
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        assert {"bench", "machine", "date", "figures"} <= set(data), f"{path.name}: incomplete"
        for name, value in data["figures"].items():
            held.setdefault(value, f"{path.name}: {name}")
    return held


def readme_figures(text: str) -> list[tuple[int, str]]:
    """(line, figure) of every measured-looking figure, code blocks' comments included."""
    return [(number, m.group(0).strip()) for number, line in enumerate(text.splitlines(), 1)
            for m in FIGURE.finditer(line.replace("`", ""))]


def test_every_figure_the_readme_quotes_is_held_by_a_results_file():
    held, text = results_figures(), (ROOT / "README.md").read_text()
    quoted = readme_figures(text)
    unheld = [f"README.md:{line}: {figure}" for line, figure in quoted
              if figure not in held and figure not in NOT_MEASURED]
    assert not unheld, "figures no docs/results file holds (rerun the bench, or correct the README):\n" + "\n".join(unheld)
    stale = sorted(set(NOT_MEASURED) - {figure for _, figure in quoted})
    assert not stale, f"NOT_MEASURED entries the README no longer has: {stale}"


def test_the_check_catches_a_stale_figure():
    held = results_figures()
    assert "0.20 s" in held and "0.24 s" not in held  # lesion-wise seconds per case, and the stale figure
    assert readme_figures("0.24 s per case for the three regions, 13× faster; shape 240×240×155") == [
        (1, "0.24 s"), (1, "13×")]
    assert readme_figures("WT 0.827 / TC 0.755, within +9% / −0.3%, 3×3×3 kernels") == [
        (1, "0.827"), (1, "0.755"), (1, "+9%"), (1, "−0.3%")]


def test_the_layouts_the_docs_list_name_modules_that_exist():
    for doc in ("README.md", "docs/architecture.md"):
        text = (ROOT / doc).read_text()
        for path in re.findall(r"`(gliostream/[\w/]+(?:\.py)?)`", text):
            assert (ROOT / path).exists(), f"{doc} names {path}, which does not exist"
        for module in re.findall(r"`(\w+\.py)`", text):
            assert list((ROOT / "gliostream").rglob(module)) or list((ROOT / "bench").glob(module)) \
                or list((ROOT / "tests").glob(module)), f"{doc} names {module}, which does not exist"
