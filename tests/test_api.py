"""The public Python API: what `import gliostream` names, and the README's Python examples, run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import gliostream
from gliostream import InvalidCaseError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_blocks() -> list[str]:
    """The ```python blocks of the README's "From Python" section, in order."""
    text = README.read_text()
    section = text[text.index("## From Python"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_every_public_name_resolves_and_torch_waits_until_needed():
    assert len(gliostream.__all__) == len(set(gliostream.__all__))
    for name in gliostream.__all__:
        assert getattr(gliostream, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'loop'"):
        gliostream.loop  # noqa: B018 - internals are not public names
    code = ("import sys, gliostream; assert 'torch' not in sys.modules; gliostream.IngestConfig; "
            "assert 'torch' not in sys.modules; gliostream.TrainConfig; assert 'torch' not in sys.modules; "
            "gliostream.run_training; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_python_examples_run_and_segment_as_predict_does(tmp_path, monkeypatch):
    blocks = readme_python_blocks()
    assert len(blocks) == 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - the README's own examples
    assert namespace["ingested"].count("ingested") == 4 and namespace["trained"].last_epoch == 2
    assert namespace["scores"].scored > 0 and len(namespace["predicted"].written) == 4
    written = nib.load(tmp_path / "predictions" / "BraTS2021_00000.nii.gz")
    labels = namespace["labels"]
    assert labels.dtype == np.uint8 and labels.shape == written.shape
    assert np.array_equal(labels, np.asanyarray(written.dataobj)), "in-memory segmentation differs from predict's"
    assert set(np.unique(labels)) <= {0, 1, 2, 4} and (labels > 0).any()
    assert np.array_equal(namespace["onnx_segment"](namespace["image"], convention="2021"), labels)  # the export's
    segment, image = namespace["segment"], namespace["image"]
    as_2023 = segment({"t1n": image[0], "t1c": image[1], "t2w": image[2], "t2f": image[3]}, convention="2023")
    assert np.array_equal(as_2023, np.where(labels == 4, 3, labels))  # the same labels, enhancing as 3
    with pytest.raises(InvalidCaseError, match=r"image: must be an array \(4, x, y, z\)"):
        segment(image[:3])
    with pytest.raises(InvalidCaseError, match="missing flair"):
        segment({"t1": image[0], "t1ce": image[1], "t2": image[2]})
    nan = image.astype(np.float32)
    nan[2, 0, 0, 0] = np.nan
    with pytest.raises(InvalidCaseError, match="image t2: holds NaN"):
        segment(nan)
