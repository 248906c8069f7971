"""brats verify: clean stores pass; each kind of damage is named, one line each."""

from __future__ import annotations

import shutil

import zarr
from click.testing import CliRunner

from gliostream.cli.main import cli
from gliostream.store import layout
from gliostream.store.verify import verify_store


def damaged(tiny_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    return store


def test_clean_store_verifies(tiny_store):
    assert verify_store(tiny_store) == []
    result = CliRunner().invoke(cli, ["verify", str(tiny_store)])
    assert result.exit_code == 0 and "clean" in result.output


def test_each_kind_of_damage_is_reported(tiny_store, tmp_path):
    store = damaged(tiny_store, tmp_path)
    cases = layout.cases_dir(store)
    # 1. contents changed after ingest (same shape and dtype): caught by the checksum
    label = zarr.open_array(str(cases / "BraTS2021_00000" / "label"), mode="r+")
    data = label[...]
    data[0, 0, 0] = 3 - data[0, 0, 0] % 3
    label[...] = data
    # 2. a chunk deleted
    shutil.rmtree(cases / "BraTS2021_00001" / "image" / "c")
    # 3. a case without its record (half-written)
    (cases / "BraTS2021_00002" / "zarr.json").unlink()
    # 4. a listed case gone, 5. staging debris
    shutil.rmtree(cases / "BraTS2021_00003")
    (store / ".staging" / "BraTS2021_00003.abc").mkdir(parents=True)
    problems = [p.line() for p in verify_store(store)]
    assert any("00000/label: content differs from the checksum" in p for p in problems)
    assert any("00001/image" in p and ("unreadable" in p or "checksum" in p) for p in problems)
    assert any("00002: case folder without a readable record" in p for p in problems)
    assert any("00003: listed in the index but absent" in p for p in problems)
    assert any(".staging/BraTS2021_00003.abc: left by an interrupted ingest" in p for p in problems)
    result = CliRunner().invoke(cli, ["verify", str(store)])
    assert result.exit_code == 1 and result.output.count("\n") == len(problems) + 1
    assert "--redo-damaged" in result.output.splitlines()[-1]


def test_not_a_store_is_a_fatal_error(tmp_path, synth_raw, reliability):
    """Exit 3 as the help says, for a missing folder, an empty one, and a raw folder."""
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "missing", tmp_path / "empty", synth_raw):
        result = CliRunner().invoke(cli, ["verify", str(folder)])
        assert result.exit_code == 3 and "not a brats store" in result.output, result.output
        assert result.output.count("\n") == 1
    reliability("bad input", "`brats verify` of a missing folder, an empty one, a raw folder", 3,
                "exit 3 as its help says, one line: `not a brats store (run `brats ingest RAW --out ...` first)`")
