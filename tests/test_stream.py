"""Training patches from the store: shapes, balance, edge tumours, determinism, workers."""

from __future__ import annotations

import shutil
import signal

import numpy as np
import pytest
import torch
import torchio as tio

from gliostream.errors import ConfigError
from gliostream.store import layout
from gliostream.store.reader import labelled_case_ids, open_case
from gliostream.store.volumes import iterate_volumes
from gliostream.trainer.patch_queue import SubjectOrder
from gliostream.trainer.sampler import padded_window
from gliostream.trainer.stream import PatchStream, StreamConfig
from gliostream.trainer.subjects import store_subjects_dataset

from .helpers import brain_arrays, ingest_cases

SMALL = StreamConfig(patch_size=(16, 16, 16), samples_per_volume=4, queue_length=16, batch_size=4, workers=0)


@pytest.fixture
def alarm():
    """Fail a test that hangs instead of blocking the suite."""
    def handler(*_):
        raise TimeoutError("stream hung")
    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def collect(store, config, seed=0, epoch=0, batches=8, ids=None):
    ids = ids or labelled_case_ids(store)
    with PatchStream(store, ids, config, seed=seed) as stream:
        return list(stream.batches(epoch, batches))


def test_patch_shapes_dtypes_and_content(tiny_store):
    batches = collect(tiny_store, SMALL, batches=4)
    cases = {c: open_case(tiny_store, c) for c in labelled_case_ids(tiny_store)}
    for batch in batches:
        assert batch.image.shape == (4, 4, 16, 16, 16) and batch.image.dtype == torch.float16
        assert batch.label.shape == (4, 16, 16, 16) and batch.label.dtype == torch.uint8
        assert int(batch.label.max()) <= 3
        for i, case_id in enumerate(batch.case_ids):
            start = batch.starts[i].tolist()
            case = cases[case_id]
            expected = padded_window(torch.from_numpy(case.image[...]), start, (16, 16, 16))
            assert torch.equal(batch.image[i], expected)
            assert torch.equal(batch.label[i], padded_window(torch.from_numpy(case.label[...]), start, (16, 16, 16)))


@pytest.mark.parametrize("fraction", [0.5, 0.2])
def test_tumour_centred_fraction_within_tolerance(tiny_store, fraction):
    config = StreamConfig(patch_size=(8, 8, 8), samples_per_volume=8, queue_length=32, batch_size=16, workers=0,
                          tumour_fraction=fraction)
    batches = collect(tiny_store, config, seed=7, batches=125)  # 2000 patches
    centre = torch.cat([b.label[:, 4, 4, 4] for b in batches])
    flags = torch.cat([b.tumour_centred for b in batches])
    assert abs(float((centre > 0).float().mean()) - fraction) <= 0.05
    assert bool((centre[flags] > 0).all()), "a tumour-centred patch must have tumour at its centre"


def test_regions_are_balanced(tiny_store):
    """Each present region (WT, TC, ET) is chosen equally often: ET centres ~1/3 of tumour draws."""
    config = StreamConfig(patch_size=(8, 8, 8), samples_per_volume=8, queue_length=32, batch_size=16, workers=0,
                          tumour_fraction=1.0)
    batches = collect(tiny_store, config, seed=3, batches=60)
    centre = torch.cat([b.label[:, 4, 4, 4] for b in batches])
    assert bool((centre > 0).all())
    assert float((centre == 3).float().mean()) > 0.2  # ET is a few % of WT voxels; uniform draws would miss it


def test_edge_tumour_is_reachable(tmp_path):
    """A tumour in the corner of the brain crop is centred on, with the patch zero-padded outside."""
    mods, _ = brain_arrays()
    seg = np.zeros(mods[0].shape, np.uint8)
    seg[5:8, 6:9, 4:6] = 2  # the first voxels of the brain box: the crop's corner
    store = ingest_cases(tmp_path, {"edge": (mods, seg)})
    config = StreamConfig(patch_size=(16, 16, 16), samples_per_volume=8, queue_length=16, batch_size=8,
                          workers=0, tumour_fraction=1.0)
    batches = collect(store, config, batches=4)
    for batch in batches:
        assert bool((batch.label[:, 8, 8, 8] == 2).all())
        assert bool((batch.starts < 0).any(dim=1).all()), "edge patches overhang the volume"
        assert bool((batch.image[:, :, 0, 0, 0] == 0).all()), "the overhang is zero-padded"
    # TorchIO's own LabelSampler never centres a patch here: its probability is zeroed near the border.
    case = open_case(store, "edge")
    subject = tio.Subject(label=tio.LabelMap(tensor=torch.from_numpy(case.label[...][None]).int()))
    sampler = tio.LabelSampler(16, "label")
    with pytest.raises(RuntimeError, match="Empty probability map"):
        sampler.process_probability_map(sampler.get_probability_map(subject), subject)


def test_small_volume_is_padded_not_refused(tiny_store):
    config = StreamConfig(patch_size=(48, 48, 48), samples_per_volume=2, queue_length=4, batch_size=2, workers=0)
    batch = collect(tiny_store, config, batches=1)[0]
    assert batch.image.shape == (2, 4, 48, 48, 48)


def test_deterministic_for_a_seed_and_epoch(tiny_store):
    first = collect(tiny_store, SMALL, seed=5, epoch=2, batches=6)
    again = collect(tiny_store, SMALL, seed=5, epoch=2, batches=6)
    other_seed = collect(tiny_store, SMALL, seed=6, epoch=2, batches=6)
    other_epoch = collect(tiny_store, SMALL, seed=5, epoch=3, batches=6)
    same = lambda a, b: all(torch.equal(x.image, y.image) and x.case_ids == y.case_ids for x, y in zip(a, b, strict=True))
    assert same(first, again)
    assert not same(first, other_seed)
    assert not same(first, other_epoch)


def test_epoch_is_independent_of_what_came_before(tiny_store):
    """Resuming at epoch e yields the same patches as running epochs 0..e-1 first."""
    with PatchStream(tiny_store, labelled_case_ids(tiny_store), SMALL, seed=1) as stream:
        list(stream.batches(0, 3))  # a partly consumed epoch leaves patches in the queue
        after = list(stream.batches(1, 5))
    fresh = collect(tiny_store, SMALL, seed=1, epoch=1, batches=5)
    assert all(torch.equal(a.image, b.image) for a, b in zip(after, fresh, strict=True))


@pytest.mark.parametrize("loader", ["threads", "processes"])
def test_loader_workers_give_the_same_patches(tiny_store, alarm, loader):
    parallel = StreamConfig(**{**SMALL.__dict__, "workers": 2, "loader": loader})
    inline = [collect(tiny_store, SMALL, seed=2, epoch=e, batches=6) for e in range(2)]
    with PatchStream(tiny_store, labelled_case_ids(tiny_store), parallel, seed=2) as stream:
        for epoch in range(2):  # the same workers serve a second epoch
            batches = list(stream.batches(epoch, 6))
            assert all(torch.equal(a.image, b.image) for a, b in zip(inline[epoch], batches, strict=True))


@pytest.mark.parametrize("loader", ["threads", "processes"])
def test_worker_failure_is_raised_not_hung(tiny_store, tmp_path, alarm, loader):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    ids = labelled_case_ids(store)
    parallel = StreamConfig(**{**SMALL.__dict__, "workers": 2, "loader": loader})
    with PatchStream(store, ids, parallel, seed=0) as stream:
        for case_id in ids:
            shutil.rmtree(layout.case_dir(store, case_id) / "image")
        with pytest.raises(Exception, match="image|not found|No such"):
            list(stream.batches(0, 4))


def test_subject_order_splits_ranks():
    orders = [SubjectOrder(10, seed=3, rank=r, world_size=3) for r in range(3)]
    firsts = [list(zip(range(len(o)), iter(o), strict=False)) for o in orders]
    seen = [i for first in firsts for _, i in first]
    assert sorted(seen) == list(range(10))


def test_empty_case_list_is_refused(tiny_store):
    with pytest.raises(Exception, match="no labelled case"):
        store_subjects_dataset(tiny_store, [], (8, 8, 8))


def test_validation_volumes_in_order(tiny_store, alarm):
    ids = labelled_case_ids(tiny_store)
    volumes = list(iterate_volumes(tiny_store, ids, workers=1))
    assert [v.case_id for v in volumes] == ids
    for v in volumes:
        case = open_case(tiny_store, v.case_id)
        assert v.image.dtype == torch.float16 and torch.equal(v.image, torch.from_numpy(case.image[...]))
        assert torch.equal(v.label, torch.from_numpy(case.label[...]))


def test_a_bad_tumour_fraction_is_refused_once_by_its_config():
    with pytest.raises(ConfigError, match=r"tumour-fraction must lie in \[0, 1\], not 1.5"):
        StreamConfig(tumour_fraction=1.5)


def test_ranks_draw_their_own_patches_and_shuffles(tiny_store):
    ids = labelled_case_ids(tiny_store)
    draws = []
    for rank in (0, 1):
        stream = PatchStream(tiny_store, ids, StreamConfig(patch_size=(16, 16, 16), workers=0), seed=0, rank=rank,
                             world_size=2)
        stream.queue.start_epoch(3)
        draws.append((stream.queue.sampler.rng.random(4).tolist(), torch.rand(4, generator=stream.queue.shuffle_generator)))
        stream.close()
    assert draws[0][0] != draws[1][0] and not torch.equal(draws[0][1], draws[1][1])


def test_the_torchio_queue_contract_the_stream_relies_on():
    """The stream shuffles around `tio.Queue` (which reproduces TorchIO's own fill-then-shuffle)
    only if, with shuffling off and no workers, the queue reads subjects in index order and hands
    out each fill of `max_length` patches in subject order, finishing a cut subject first.
    A TorchIO release that changes this fails here, not silently in training."""
    import torchio as tio

    class Recorded(tio.SubjectsDataset):
        def __init__(self, subjects):
            super().__init__(subjects)
            self.asked = []

        def __getitem__(self, index):
            self.asked.append(index)
            return super().__getitem__(index)

    subjects = [tio.Subject(image=tio.ScalarImage(tensor=torch.full((1, 4, 4, 4), float(i))), number=i)
                for i in range(5)]
    dataset = Recorded(subjects)
    queue = tio.Queue(dataset, max_length=5, samples_per_volume=2, sampler=tio.UniformSampler(2), num_workers=0,
                      shuffle_subjects=False, shuffle_patches=False, start_background=False)
    assert [int(queue[0]["number"]) for _ in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert dataset.asked == [0, 1, 2, 3, 4]


def test_a_queue_fill_takes_each_case_at_most_once(tiny_store):
    """As TorchIO's queue does: with fewer cases than a full queue needs, each fill holds every
    case's patches once (a partial fill), never a case twice."""
    from collections import Counter

    ids = labelled_case_ids(tiny_store)
    config = StreamConfig(patch_size=(16, 16, 16), samples_per_volume=2, queue_length=64, batch_size=2, workers=0)
    batches = collect(tiny_store, config, batches=2 * len(ids))  # two fills of 2 x cases patches
    per_fill = len(ids)  # batches of 2 per fill
    for fill in (batches[:per_fill], batches[per_fill:]):
        assert Counter(c for b in fill for c in b.case_ids) == dict.fromkeys(ids, 2)
