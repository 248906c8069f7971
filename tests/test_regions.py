"""The objective, decoding, postprocessing, ensembles and folds that make whole real volumes work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gliostream.inference import (
    InferenceConfig,
    ProbabilityModel,
    predict_labels,
    predict_probabilities,
    sliding_window_probabilities,
)
from gliostream.regions import (
    Postprocessing,
    decode_regions,
    region_probabilities,
    region_targets,
    remove_small_components,
    suppress_small_et,
)
from gliostream.trainer.config import PostprocessConfig
from gliostream.trainer.loss import LossConfig, deep_supervision_loss, region_loss
from gliostream.trainer.model import ModelConfig, ResUNet
from gliostream.trainer.postprocess import choose_postprocessing
from gliostream.trainer.split import fold_of, split_cases


def _false_positive_gradient(config: LossConfig) -> tuple[float, float]:
    """Gradient of the loss at one false-positive voxel of a tumour-free patch, and at one
    missed voxel of a tumour patch, at initialisation-like logits (probability 0.5)."""
    label = torch.zeros((2, 16, 16, 16), dtype=torch.long)
    label[0, 4:12, 4:12, 4:12] = 2  # sample 0: oedema; sample 1: no tumour at all
    logits = torch.zeros((2, 3, 16, 16, 16), requires_grad=True)
    region_loss(logits, region_targets(label), config).backward()
    grad = logits.grad.abs()
    return float(grad[1, 0, 0, 0, 0]), float(grad[0, 0, 8, 8, 8])


def test_false_positives_in_empty_regions_get_a_real_gradient():
    old_fp, old_tp = _false_positive_gradient(LossConfig(kind="dice", batch_dice=False))
    new_fp, new_tp = _false_positive_gradient(LossConfig())
    assert old_fp < 1e-3 * old_tp  # the per-sample Dice alone: nearly nothing for a tumour-free patch
    assert new_fp > 0.1 * new_tp  # Dice + BCE: a false positive weighs like a missed tumour voxel


def test_a_perfect_prediction_has_the_smallest_loss():
    label = torch.zeros((2, 16, 16, 16), dtype=torch.long)
    label[0, 2:10, 2:10, 2:10] = 2
    label[0, 4:8, 4:8, 4:8] = 3
    targets = region_targets(label)
    perfect = (targets * 2 - 1) * 20
    outputs = [perfect, perfect[..., ::2, ::2, ::2], perfect[..., ::4, ::4, ::4]]
    assert float(deep_supervision_loss(outputs, label)) < 1e-6
    worse = perfect.clone()
    worse[1, 0, 0, 0, 0] = 20  # one false positive in the tumour-free sample
    assert float(region_loss(worse, targets)) > float(region_loss(perfect, targets)) + 1e-5


def test_decoding_is_nested():
    p = torch.zeros((3, 5))
    p[:, 0] = torch.tensor([0.9, 0.9, 0.9])  # ET
    p[:, 1] = torch.tensor([0.9, 0.9, 0.2])  # necrosis (TC, not ET)
    p[:, 2] = torch.tensor([0.9, 0.2, 0.9])  # ET without TC: edema only
    p[:, 3] = torch.tensor([0.2, 0.9, 0.9])  # not WT: background whatever the others say
    p[:, 4] = torch.tensor([0.55, 0.3, 0.1])  # WT at 0.55: tumour (argmax of classes could say background)
    assert decode_regions(p).tolist() == [3, 1, 2, 0, 2]
    labels = decode_regions(torch.rand(3, 20, 20, 20)).numpy()
    targets = region_targets(torch.from_numpy(labels)[None].long())[0].bool().numpy()
    assert not (targets[2] & ~targets[1]).any() and not (targets[1] & ~targets[0]).any()


def test_class_logits_of_old_checkpoints_give_region_probabilities():
    logits = torch.randn(1, 4, 3, 3, 3)
    p = torch.softmax(logits, 1)
    regions = region_probabilities(logits)
    torch.testing.assert_close(regions[:, 0], p[:, 1:].sum(1))
    torch.testing.assert_close(regions[:, 1], p[:, 1] + p[:, 3])
    torch.testing.assert_close(regions[:, 2], p[:, 3])


def test_small_et_is_relabelled_necrosis():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:5, 2:5, 2:5] = 3  # 27 voxels of ET
    assert (suppress_small_et(labels, 28) == 3).sum() == 0 and (suppress_small_et(labels, 28) == 1).sum() == 27
    assert np.array_equal(suppress_small_et(labels, 27), labels) and np.array_equal(suppress_small_et(labels, 0), labels)


def test_an_ensemble_is_the_mean_of_its_members_probabilities():
    torch.manual_seed(0)
    members = [ResUNet(ModelConfig(base_channels=4)).eval() for _ in range(3)]
    image = torch.randn(4, 40, 36, 32)
    config = InferenceConfig(window=(32, 32, 32), amp=False)
    each = [sliding_window_probabilities(m, image, config, "cpu") for m in members]
    torch.testing.assert_close(predict_probabilities(members, image, config, "cpu"), sum(each) / 3)
    assert torch.equal(predict_labels(members, image, config, "cpu"), decode_regions(sum(each) / 3))


def test_downsampled_prediction_pools_the_input_and_upsamples_the_probabilities():
    torch.manual_seed(0)
    model = ResUNet(ModelConfig(base_channels=4)).eval()
    image = torch.randn(4, 66, 64, 63)  # odd sizes: the last coarse voxel covers a partial block
    config = InferenceConfig(window=(32, 32, 32), amp=False, downsample=2)
    out = predict_probabilities(model, image, config, "cpu")
    assert out.shape == (3, 66, 64, 63)
    coarse = sliding_window_probabilities(model, torch.nn.functional.avg_pool3d(image[None], 2, ceil_mode=True)[0],
                                          config, "cpu")
    assert coarse.shape == (3, 33, 32, 32)
    up = torch.nn.functional.interpolate(coarse[None], scale_factor=2, mode="trilinear", align_corners=False)[0]
    torch.testing.assert_close(out, up[:, :66, :64, :63])


def test_folds_are_disjoint_cover_the_cases_and_are_seeded(tiny_store):
    ids = [f"case{i:02d}" for i in range(23)]
    folds = fold_of(ids, 5, seed=0)
    assert sorted(folds) == sorted(ids) and set(folds.values()) == set(range(5))
    sizes = sorted(list(folds.values()).count(k) for k in range(5))
    assert sizes == [4, 4, 5, 5, 5]
    assert fold_of(ids, 5, seed=0) == folds and fold_of(ids, 5, seed=1) != folds
    splits = [split_cases(tiny_store, 0.2, folds=2, fold=k) for k in range(2)]
    assert set(splits[0].val) | set(splits[1].val) == set(splits[0].train) | set(splits[0].val)
    assert not set(splits[0].val) & set(splits[1].val)
    assert all(not set(s.train) & set(s.val) for s in splits)


def test_validation_split_is_a_seeded_draw_not_the_tail():
    from gliostream.trainer.split import shuffled

    ids = [f"Brats18_{site}_{i}" for site in ("2013", "CBICA", "TCIA") for i in range(10)]
    order = shuffled(ids, 0)
    assert sorted(order) == sorted(ids) and order != sorted(ids)
    assert shuffled(ids, 0) == order and shuffled(list(reversed(ids)), 0) == order


def test_small_components_are_removed_keeping_the_regions_nested():
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[2:12, 2:12, 2:12] = 2
    labels[4:10, 4:10, 4:10] = 1
    labels[5:8, 5:8, 5:8] = 3  # the tumour: ET 27 inside TC 216 inside WT 1000
    labels[20:22, 20:22, 20:22] = 3  # a stray enhancing blob of 8 voxels: a component of WT, TC and ET
    labels[25, 25, 25] = 2  # one stray edema voxel
    out = remove_small_components(labels, "wt", 9)
    assert out[20:22, 20:22, 20:22].max() == 0 and out[25, 25, 25] == 0
    assert (out[:12, :12, :12] == labels[:12, :12, :12]).all()
    out = remove_small_components(labels, "tc", 9)  # each WT component keeps its largest TC: nothing removed
    assert np.array_equal(out, labels)
    labels[9, 9, 2] = 1  # a 1-voxel TC beside the core inside the main tumour: not its largest TC
    out = remove_small_components(labels, "tc", 9)  # TC blobs become edema: still whole tumour
    assert out[9, 9, 2] == 2 and (out[20:22, 20:22, 20:22] == 3).all() and out[6, 6, 6] == 3
    labels[9, 9, 2] = 2
    labels[5, 5, 9] = 3  # a 1-voxel ET inside the core, apart from its 27-voxel ET
    out = remove_small_components(labels, "et", 28)  # ET blobs become necrosis: still tumour core
    assert out[5, 5, 9] == 1 and (out[5:8, 5:8, 5:8] == 3).all() and (out[20:22, 20:22, 20:22] == 3).all()
    post = Postprocessing((9, 0, 0), et_min_voxels=100)  # components first, then the ET total (28 < 100)
    assert (post.apply(labels) == 3).sum() == 0 and post.apply(labels)[20:22, 20:22, 20:22].max() == 0
    assert Postprocessing.from_dict(post.to_dict()) == post and Postprocessing.from_dict(None) == Postprocessing()
    assert Postprocessing.from_dict({"et_min_voxels": 50}) == Postprocessing((0, 0, 0), 50)  # brats 0.2 checkpoints


def _tumour(shape=(48, 48, 48)) -> np.ndarray:
    """A large whole tumour (edema, 16^3 = 4096 voxels) around a small core: 27 voxels of
    necrosis with 8 of enhancing tumour."""
    labels = np.zeros(shape, np.uint8)
    labels[4:20, 4:20, 4:20] = 2
    labels[10:13, 10:13, 10:13] = 1
    labels[11:13, 11:13, 11:13] = 3
    return labels


def test_the_largest_component_of_each_region_survives_every_size():
    labels = _tumour()
    for size in (10, 100, 2000, 10**6):
        out = Postprocessing((size, size, size)).apply(labels)
        assert np.array_equal(out, labels), size  # the only (so largest) WT, TC and ET components stay
    second = labels.copy()
    second[30:40, 30:40, 30:40] = 2  # a second, separate tumour of 1000 voxels, with its own small core
    second[34:36, 34:36, 34:36] = 1
    out = Postprocessing((2000, 2000, 2000)).apply(second)
    assert out[30:40, 30:40, 30:40].max() == 0  # smaller than 2000 and not the largest WT: removed, core with it
    out = Postprocessing((500, 2000, 2000)).apply(second)
    assert np.array_equal(out, second)  # kept as a tumour (>= 500), so its core is the largest TC inside it


def test_a_far_blob_is_removed_and_a_small_core_inside_a_large_tumour_kept():
    labels = _tumour()
    noisy = labels.copy()
    noisy[40:43, 40:43, 40:43] = 2  # a 27-voxel blob far from the tumour
    out = Postprocessing((100, 100, 0)).apply(noisy)
    assert np.array_equal(out, labels)


def _pairs(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` validation cases whose predictions carry a 27-voxel false-positive blob far from
    the tumour: every one gains from removing components under 50 voxels."""
    reference = _tumour()
    noisy = reference.copy()
    noisy[40:43, 40:43, 40:43] = 2
    return [(noisy, reference)] * count


def test_sizes_are_chosen_only_with_enough_validation_cases():
    config = PostprocessConfig(min_component_voxels=(0, 0, 0), et_min_voxels=0, min_cases=4)
    few = choose_postprocessing(_pairs(3), config)
    assert not few.searched and few.postprocessing == Postprocessing()  # 3 < 4: the configured rule
    assert few.lesion_dice["wt"] == 0.5  # one lesion and one false positive, as configured
    enough = choose_postprocessing(_pairs(4), config)
    assert enough.searched and enough.postprocessing.min_component_voxels == (50, 0, 0)  # smallest above 27
    assert choose_postprocessing(_pairs(4), PostprocessConfig(min_component_voxels=(0, 0, 0), et_min_voxels=0, min_cases=4,
                                                              search=False)).postprocessing == Postprocessing()
    clean = [(reference, reference) for _, reference in _pairs(8)]
    assert not choose_postprocessing(clean, config).postprocessing.min_component_voxels[0]  # no gain, no change


def test_a_change_needs_a_margin_and_more_cases_helped_than_hurt():
    reference = _tumour()
    satellite = reference.copy()
    satellite[40:43, 40:43, 40:43] = 2  # a real 27-voxel satellite lesion, predicted
    pairs = _pairs(2) + [(satellite, satellite)] * 3  # 2 cases gain from removing it, 3 would lose
    config = PostprocessConfig(min_component_voxels=(0, 0, 0), et_min_voxels=0, min_cases=4, margin=0.0)
    assert choose_postprocessing(pairs, config).postprocessing == Postprocessing()
    config = PostprocessConfig(min_component_voxels=(0, 0, 0), et_min_voxels=0, min_cases=4, margin=0.5)
    assert choose_postprocessing(_pairs(5), config).postprocessing == Postprocessing()  # gain 1/12 < 0.5


def test_the_reported_validation_score_is_out_of_fit():
    """Each case is scored with the rule chosen on the other cases: one case alone showing a gain
    cannot lift its own score."""
    reference = _tumour()
    satellite = reference.copy()
    satellite[40:43, 40:43, 40:43] = 2
    pairs = _pairs(1) + [(satellite, satellite)] * 4  # case 0 wants size 50; the other four lose by it
    config = PostprocessConfig(min_component_voxels=(0, 0, 0), et_min_voxels=0, min_cases=4, margin=0.0)
    choice = choose_postprocessing(pairs, config)
    assert choice.postprocessing == Postprocessing()
    assert choice.lesion_dice["wt"] == (0.5 + 4 * 1.0) / 5
    helped = _pairs(5)  # all five gain: each one's own score is computed with the rule of the other four
    choice = choose_postprocessing(helped, config)
    assert choice.postprocessing.min_component_voxels[0] == 50 and choice.lesion_dice["wt"] == 1.0
    assert all(np.array_equal(labels, reference) for labels in choice.labels)
    fitted_only = _pairs(4) + [(satellite, satellite)]  # the satellite case is judged by the rule of the four
    choice = choose_postprocessing(fitted_only, config)
    assert choice.postprocessing.min_component_voxels[0] == 50  # chosen on all five (4 helped, 1 hurt)
    lost = 2 * 4096 / (4096 + 4096 + 27)  # the satellite case's WT without its satellite, out of fit
    assert choice.dice["wt"] == pytest.approx((4 * 1.0 + lost) / 5, abs=1e-12)
    assert np.array_equal(choice.labels[4], reference)


class _RegionsFromChannels(ProbabilityModel):
    """An oracle network: its windows' first three channels are the region probabilities."""

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[:, :3].clone()


def _as_image(labels: torch.Tensor) -> torch.Tensor:
    """(4, x, y, z): the WT, TC and ET masks of store labels, then a blank channel."""
    masks = region_targets(labels[None].long())[0]
    return torch.cat([masks, torch.zeros_like(masks[:1])])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_2mm_prediction_comes_back_on_the_1mm_grid_exactly(axis):
    """Labels a 2 mm model predicts perfectly return to the 1 mm grid voxel for voxel: pooled with
    the partial block at odd edges averaged over its own voxels, windowed, upsampled and decoded.
    Slabs along one axis, so trilinear upsampling is exact; a shift by one voxel or a mirroring fails."""
    shape = [67, 64, 61]
    coarse = torch.randint(0, 4, ((shape[axis] + 1) // 2,), generator=torch.Generator().manual_seed(axis))
    coarse[-1] = 2  # the partial coarse voxel at the odd end holds tumour too
    profile = coarse.to(torch.uint8).repeat_interleave(2)[:shape[axis]]  # a label per 2 mm voxel, edge to edge
    view = [1, 1, 1]
    view[axis] = -1
    labels = profile.view(view).expand(shape).contiguous()
    config = InferenceConfig(window=(16, 16, 16), amp=False, downsample=2)
    predicted = predict_labels(_RegionsFromChannels(), _as_image(labels), config, "cpu")
    assert predicted.shape == labels.shape
    assert torch.equal(predicted, labels)
    for moved in (labels.roll(1, axis), labels.flip(axis)):
        assert not torch.equal(predict_labels(_RegionsFromChannels(), _as_image(moved), config, "cpu"), labels)


def test_a_2mm_prediction_of_a_tumour_differs_from_it_only_on_its_surface():
    """A tumour of 2 mm blocks, predicted perfectly at 2 mm: inside and well outside every region
    the 1 mm labels are exact; only voxels at a region's corners may change (trilinear upsampling),
    and each region's volume is within 5% of the truth."""
    coarse = torch.zeros((20, 18, 17), dtype=torch.uint8)
    coarse[3:15, 4:14, 3:13] = 2
    coarse[6:12, 6:12, 5:11] = 1
    coarse[7:10, 8:11, 6:9] = 3
    labels = coarse.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :, :33]
    config = InferenceConfig(window=(16, 16, 16), amp=False, downsample=2)
    predicted = predict_labels(_RegionsFromChannels(), _as_image(labels), config, "cpu")
    changed = predicted != labels
    interior = torch.ones_like(changed)
    for axis in range(3):  # voxels whose six neighbours hold their own label
        for step in (1, -1):
            interior &= labels == labels.roll(step, axis)
    assert not (changed & interior).any()
    truth, got = region_targets(labels[None].long())[0], region_targets(predicted[None].long())[0]
    assert ((got.sum((1, 2, 3)) - truth.sum((1, 2, 3))).abs() <= 0.05 * truth.sum((1, 2, 3))).all()
