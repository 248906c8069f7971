"""Batch augmentation: reproducible, label-consistent, identity when switched off."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from gliostream.errors import ConfigError
from gliostream.trainer.augment import (
    AugmentConfig,
    BatchAugmenter,
    apply_gamma,
    bias_field,
    gaussian_blur,
    low_resolution,
    rotation_matrices,
    stretch_contrast,
    warp,
)
from gliostream.trainer.config import config_from_dict

OFF = AugmentConfig(flip_prob=0, scale_prob=0, shift_prob=0, gamma_prob=0, noise_prob=0, affine_prob=0,
                    contrast_prob=0, bias_prob=0, blur_prob=0, lowres_prob=0)
EVERY_TRANSFORM = AugmentConfig(flip_prob=0.5, affine_prob=1, scale_prob=1, contrast_prob=1, shift_prob=1,
                                gamma_prob=1, gamma_invert_prob=0.5, bias_prob=1, blur_prob=1, lowres_prob=1,
                                noise_prob=1)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 4, (3, 12, 10, 8), generator=g, dtype=torch.uint8)
    image = torch.stack([label.float() * (c + 1) for c in range(4)], 1)  # image encodes the label
    return image, label


def test_all_off_is_identity():
    image, label = batch()
    out, lab = BatchAugmenter(OFF, seed=0)(image.clone(), label.clone())
    assert torch.equal(out, image) and torch.equal(lab, label)


def test_same_seed_same_result_and_state_resumes():
    config = EVERY_TRANSFORM
    a, b = BatchAugmenter(config, seed=3), BatchAugmenter(config, seed=3)
    for _ in range(3):
        x, y = batch()
        assert all(torch.equal(p, q) for p, q in zip(a(x.clone(), y.clone()), b(x.clone(), y.clone()), strict=True))
    state = a.state_dict()
    expected = a(*batch(1))
    c = BatchAugmenter(config, seed=99)
    c.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(c(*batch(1)), expected, strict=True))
    assert not torch.equal(BatchAugmenter(config, seed=4)(*batch(1))[0], expected[0])


def test_flips_move_image_and_label_together():
    image, label = batch()
    out, lab = BatchAugmenter(dataclasses.replace(OFF, flip_prob=1.0), seed=1)(image.clone(), label.clone())
    assert torch.equal(lab, label.flip([1, 2, 3])) and torch.equal(out[:, 0], lab.float())


def test_affine_moves_image_and_label_together():
    label = torch.zeros((2, 16, 16, 16), dtype=torch.uint8)
    label[:, 4:12, 5:11, 6:10] = 2
    label[:, 6:10, 7:9, 7:9] = 3
    image = label.float()[:, None].repeat(1, 4, 1, 1, 1)
    config = dataclasses.replace(OFF, affine_prob=1.0, rotation_degrees=20, zoom_range=(0.8, 1.2))
    out, lab = BatchAugmenter(config, seed=1)(image.clone(), label.clone())
    assert lab.dtype == torch.uint8 and set(lab.unique().tolist()) <= {0, 2, 3}
    assert not torch.equal(lab, label)
    assert float((out[:, 0].round() == lab.float()).float().mean()) > 0.9


def test_soft_targets_of_a_pooled_batch_move_with_the_image():
    """At 1/downsample resolution the augmenter gets (B, R, ...) soft region targets: flips and the
    rotation-zoom move them exactly as the image's channels (trilinear both), and every transform
    is drawn as for integer labels, so the image is what it would be."""
    g = torch.Generator().manual_seed(5)
    targets = torch.rand((3, 3, 12, 10, 8), generator=g)
    image = torch.cat([targets, torch.ones_like(targets[:, :1])], 1)  # the image's first channels are the targets
    config = dataclasses.replace(OFF, flip_prob=0.5, affine_prob=1.0, rotation_degrees=25, zoom_range=(0.8, 1.2))
    out, soft = BatchAugmenter(config, seed=2)(image.clone(), targets.clone())
    assert soft.shape == targets.shape and soft.dtype == targets.dtype and not torch.equal(soft, targets)
    torch.testing.assert_close(soft, out[:, :3])
    labels = (targets[:, 0] * 4).to(torch.uint8)  # the same draws with integer labels: the same image
    torch.testing.assert_close(BatchAugmenter(config, seed=2)(image.clone(), labels)[0], out)


def test_intensity_changes_stay_in_bounds():
    config = dataclasses.replace(OFF, scale_prob=1, scale_range=(0.9, 1.1), shift_prob=1, gamma_prob=1)
    image, label = batch()
    out, _ = BatchAugmenter(config, seed=2)(image.clone(), label.clone())
    assert not torch.equal(out, image)
    ratio = (out.amax(dim=(2, 3, 4)) - out.amin(dim=(2, 3, 4))) / (image.amax(dim=(2, 3, 4)) - image.amin(dim=(2, 3, 4)))
    assert bool(((ratio > 0.85) & (ratio < 1.15)).all())


def _theta(angles=(0.0, 0.0, 0.0), zoom=1.0) -> torch.Tensor:
    theta = torch.zeros((1, 3, 4))
    theta[:, :, :3] = rotation_matrices(torch.tensor([angles])) / zoom
    return theta


def test_warp_by_a_quarter_turn_is_exactly_rot90():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 4, (1, 12, 12, 12), generator=g, dtype=torch.uint8)
    image = torch.randn((1, 4, 12, 12, 12), generator=g)
    out, lab = warp(image, label, _theta((0.0, 0.0, math.pi / 2)))
    assert torch.equal(lab, torch.rot90(label, 1, (2, 3)))  # a forgotten or wrong label warp fails here
    torch.testing.assert_close(out, torch.rot90(image, 1, (3, 4)), atol=1e-5, rtol=0)


def test_warp_by_a_zoom_samples_the_known_voxels():
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 4, (1, 16, 16, 16), generator=g, dtype=torch.uint8)
    _, lab = warp(label[:, None].float(), label, _theta(zoom=2.0))  # 2x magnification about the centre
    # output voxel i samples input coordinate i/2 + 3.75 (align_corners=False), never a tie
    src = np.rint(np.arange(16) / 2 + 3.75).astype(int)
    assert torch.equal(lab[0], label[0][np.ix_(src, src, src)])


def brain_batch(seed=0, batch=2, size=20):
    """Images with a zero background around a ball of brain, labels inside it."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.arange(size) - (size - 1) / 2
    ball = (axis.view(-1, 1, 1) ** 2 + axis.view(1, -1, 1) ** 2 + axis.view(1, 1, -1) ** 2) < (0.4 * size) ** 2
    image = torch.randn((batch, 4, size, size, size), generator=g) * ball
    label = torch.randint(0, 4, (batch, size, size, size), generator=g, dtype=torch.uint8) * ball
    return image, label, ball


def test_every_transform_leaves_the_background_at_zero_and_labels_to_the_spatial_ones():
    image, label, ball = brain_batch()
    intensity_only = dataclasses.replace(EVERY_TRANSFORM, flip_prob=0, affine_prob=0)
    out, lab = BatchAugmenter(intensity_only, seed=5)(image.clone(), label.clone())
    assert torch.equal(lab, label)  # intensity transforms never touch labels
    assert bool((out[:, :, ~ball] == 0).all()) and bool((out[:, :, ball] != image[:, :, ball]).any())
    out, lab = BatchAugmenter(EVERY_TRANSFORM, seed=5)(image.clone(), label.clone())
    brain = (out != 0).any(1)
    assert bool((lab[~brain] == 0).all())  # outside the warped brain only background
    legacy = dataclasses.replace(OFF, shift_prob=1, keep_background=False)  # brats <= 0.3: the shift moved it
    assert bool((BatchAugmenter(legacy, seed=5)(image.clone(), label.clone())[0][:, :, ~ball] != 0).any())


def test_bias_field_is_the_specified_multiplicative_field():
    image = torch.randn((1, 2, 9, 9, 9))
    k = torch.tensor([[2.0, 3.0]])
    flat = torch.full((1, 2, 3, 3, 3), 0.2)  # the same log at every node: b = e^0.2 everywhere
    offsets = k.view(1, 2, 1, 1, 1)
    torch.testing.assert_close(bias_field(image, flat, k), math.exp(0.2) * (image + offsets) - offsets)
    ramp = torch.zeros((1, 2, 2, 2, 2))
    ramp[:, :, 1] = 0.3  # log b from 0 at x = 0 to 0.3 at x = 8, linear between: a smooth field
    field = (bias_field(torch.zeros((1, 2, 9, 9, 9)), ramp, k) + k.view(1, 2, 1, 1, 1)) / k.view(1, 2, 1, 1, 1)
    expected = torch.exp(0.3 * torch.arange(9) / 8).view(9, 1, 1).expand(9, 9, 9)
    torch.testing.assert_close(field[0, 0], expected)
    torch.testing.assert_close(field[0, 1], expected)


def test_blur_is_a_normalised_gaussian_of_the_given_sigma():
    delta = torch.zeros((15, 15, 15))
    delta[7, 7, 7] = 1.0
    out = gaussian_blur(delta, 1.0)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)
    x = torch.arange(-3, 4, dtype=torch.float32)
    g = torch.exp(-x**2 / 2)
    g /= g.sum()
    torch.testing.assert_close(out[4:11, 7, 7], g * g[3] * g[3])  # separable: the 1-D kernel times its peak twice
    assert torch.equal(gaussian_blur(delta, 0.0), delta)


def test_low_resolution_loses_detail_but_keeps_the_shape_and_smooth_content():
    checker = (torch.arange(16).view(-1, 1, 1) + torch.arange(16).view(1, -1, 1) + torch.arange(16).view(1, 1, -1)) % 2
    out = low_resolution(checker.float(), 0.5)
    assert out.shape == checker.shape and float((out - checker).abs().mean()) > 0.4  # 1-voxel detail is gone
    smooth = torch.linspace(0, 1, 16).view(-1, 1, 1).expand(16, 16, 16).contiguous()
    assert float((low_resolution(smooth, 0.5) - smooth).abs().max()) < 0.1
    assert torch.equal(low_resolution(smooth, 1.0), smooth)


def test_contrast_and_gamma_are_the_specified_maps_of_the_brain_intensities():
    image, _, ball = brain_batch(seed=1, batch=1)
    brain = ball.view(1, 1, *ball.shape)
    x = image[0, 0][ball].double()
    low, high, mean = x.min(), x.max(), x.mean()
    factor = torch.full((1, 4, 1, 1, 1), 1.2)
    out = stretch_contrast(image, factor, brain)
    torch.testing.assert_close(out[0, 0][ball].double(), ((x - mean) * 1.2 + mean).clamp(low, high), atol=1e-5, rtol=0)
    gamma, sign = torch.full((1, 4, 1, 1, 1), 0.7), torch.ones((1, 4, 1, 1, 1))
    sign[:, 1] = -1.0  # channel 1: the inverted gamma
    out = apply_gamma(image, gamma, sign, brain)
    expected = ((x - low) / (high - low)) ** 0.7 * (high - low) + low
    torch.testing.assert_close(out[0, 0][ball].double(), expected, atol=1e-5, rtol=0)
    y = -image[0, 1][ball].double()
    inverted = -(((y - y.min()) / (y.max() - y.min())) ** 0.7 * (y.max() - y.min()) + y.min())
    torch.testing.assert_close(out[0, 1][ball].double(), inverted, atol=1e-5, rtol=0)
    assert bool((out[:, :, ~ball] == 0).all())


def test_brightness_and_shift_change_the_brain_only():
    image, label, ball = brain_batch(seed=2, batch=1)
    config = dataclasses.replace(OFF, scale_prob=1, scale_range=(1.2, 1.2), shift_prob=1, shift_range=(0.1, 0.1))
    out, _ = BatchAugmenter(config, seed=0)(image.clone(), label.clone())
    torch.testing.assert_close(out[:, :, ball], image[:, :, ball] * 1.2 + 0.1)
    assert bool((out[:, :, ~ball] == 0).all())


def _analytic_nearest_warp(label: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The label an affine map gives, voxel by voxel: each output voxel centre (normalised, grid
    order x = last axis) mapped by `theta` into the input and rounded to the nearest voxel (outside:
    0); and where that rounding is a near-tie (excluded from the comparison)."""
    sizes = label.shape
    axes = [(2 * torch.arange(n, dtype=torch.float64) + 1) / n - 1 for n in sizes]
    d, h, w = torch.meshgrid(*axes, indexing="ij")
    points = torch.stack([w, h, d, torch.ones_like(w)], -1)  # affine_grid's (x, y, z) = (W, H, D)
    mapped = points @ theta.double().T  # (..., 3): input (x, y, z) normalised
    index = [((mapped[..., 2 - a] + 1) * sizes[a] - 1) / 2 for a in range(3)]  # back to (D, H, W) voxels
    rounded = [torch.round(i).long() for i in index]
    tie = torch.stack([((i - i.floor()) - 0.5).abs() < 1e-3 for i in index]).any(0)
    inside = torch.stack([(r >= 0) & (r < n) for r, n in zip(rounded, sizes, strict=True)]).all(0)
    out = torch.zeros(sizes, dtype=label.dtype)
    out[inside] = label[tuple(r[inside] for r in rounded)]
    return out, tie


def test_a_rotated_and_zoomed_label_is_the_analytic_warp():
    g = torch.Generator().manual_seed(3)
    label = torch.randint(0, 4, (1, 14, 12, 10), generator=g, dtype=torch.uint8)
    theta = _theta((0.3, -0.2, 0.5), zoom=1.15)
    _, lab = warp(label[:, None].float(), label, theta)
    expected, tie = _analytic_nearest_warp(label[0], theta[0])
    assert tie.float().mean() < 0.05
    assert torch.equal(lab[0][~tie], expected[~tie])


def test_augment_settings_are_validated_and_old_runs_keep_their_augmentation():
    with pytest.raises(ConfigError, match="bias-prob"):
        AugmentConfig(bias_prob=2.0)
    with pytest.raises(ConfigError, match="gamma-range"):
        AugmentConfig(gamma_range=(1.5, 0.7))
    old = {"flip_prob": 0.5, "scale_prob": 0.5, "scale_range": [0.9, 1.1], "shift_prob": 0.5, "shift_range": [-0.1, 0.1],
           "gamma_prob": 0.3, "gamma_range": [0.7, 1.5], "noise_prob": 0.15, "noise_std": [0.0, 0.1],
           "affine_prob": 0.0, "rotation_degrees": 15.0, "zoom_range": [0.9, 1.1]}  # a brats 0.3 checkpoint's
    restored = config_from_dict({"augment": old}).augment
    assert (restored.bias_prob, restored.blur_prob, restored.lowres_prob, restored.contrast_prob) == (0, 0, 0, 0)
    assert not restored.keep_background and restored.affine_prob == 0 and restored.noise_prob == 0.15
    assert config_from_dict({"augment": {"flip_prob": 0.0}}).augment.bias_prob == AugmentConfig().bias_prob
