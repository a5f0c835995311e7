"""helpers.data.augment: batch transforms keep shape and range, repeat with a seed, and do what they say."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.data.augment import Augment, color_jitter, gaussian_noise, random_affine, random_erasing, random_hflip

SETTINGS = {
    "rotation": Augment(rotation=20),
    "noise_std": Augment(noise_std=0.1),
    "hflip": Augment(hflip=True),
    "brightness": Augment(brightness=0.3),
    "contrast": Augment(contrast=0.5),
    "crop_padding": Augment(crop_padding=3),
    "erasing": Augment(erasing=0.7),
    "all": Augment(rotation=10, noise_std=0.05, hflip=True, brightness=0.1, contrast=0.2, crop_padding=2,
                   erasing=0.5),
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """64 asymmetric images in (0.1, 1]: no pixel is zero, none is left-right symmetric."""
    X = torch.rand(64, 1, 28, 28, generator=gen(123)) * 0.9 + 0.1
    X[:, :, :, :4] = 1.0  # a bright left edge
    return X


@pytest.mark.parametrize("name", SETTINGS)
def test_shape_range_and_change(images, name):
    out = SETTINGS[name](images.clone(), gen(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, images)


@pytest.mark.parametrize("name", SETTINGS)
def test_same_seed_same_result_other_seed_differs(images, name):
    aug = SETTINGS[name]
    a, b, c = aug(images.clone(), gen(5)), aug(images.clone(), gen(5)), aug(images.clone(), gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", SETTINGS)
def test_input_not_modified(images, name):
    before = images.clone()
    SETTINGS[name](images, gen(0))
    assert torch.equal(images, before)


def test_off_by_default_is_identity(images):
    aug = Augment()
    assert not aug.active
    assert aug(images, gen(0)) is images
    assert aug.describe() == "none"
    assert all(not v for v in dataclasses.asdict(aug).values())


def test_describe_lists_active_settings():
    aug = Augment(hflip=True, erasing=0.5)
    assert aug.active
    assert aug.describe() == "hflip=True, erasing=0.5"


def test_hflip_flips_some_and_keeps_others(images):
    out = random_hflip(images, generator=gen(0))
    flipped = torch.tensor([torch.equal(o, x.flip(-1)) for o, x in zip(out, images, strict=True)])
    kept = torch.tensor([torch.equal(o, x) for o, x in zip(out, images, strict=True)])
    assert torch.all(flipped ^ kept)  # every image is exactly one of the two
    assert 10 <= int(flipped.sum()) <= 54  # about half of 64
    assert torch.all(out[flipped][:, :, :, -4:] == 1.0)  # the bright edge moved to the right


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (C, H, W) moved down by ``dy`` and right by ``dx`` pixels, zero filled."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_crop_padding_is_an_integer_shift(images):
    pad = 3
    out = Augment(crop_padding=pad)(images, gen(1))
    shifts = []
    for o, x in zip(out, images, strict=True):
        match = [(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
                 if torch.allclose(o, shifted(x, dy, dx), atol=1e-6)]
        assert len(match) == 1, "every image must be its original moved by whole pixels"
        shifts.append(match[0])
    assert len(set(shifts)) > 5  # different images get different shifts
    assert any(s != (0, 0) for s in shifts)
    # what is shifted out is replaced by zeros (the images themselves have no zero pixel)
    moved = [i for i, s in enumerate(shifts) if s != (0, 0)]
    assert all((out[i] == 0).any() for i in moved)


def test_rotation_keeps_centre_and_changes_pixels(images):
    out = random_affine(images, degrees=30, generator=gen(0))
    assert out.shape == images.shape
    assert (out != images).float().mean() > 0.5
    zero = random_affine(images, degrees=0, shift=0, generator=gen(0))
    assert torch.allclose(zero, images, atol=1e-6)


def test_erasing_zeros_one_rectangle(images):
    out = random_erasing(images, p=1.0, generator=gen(0))
    for o, x in zip(out, images, strict=True):
        zero = o[0] == 0
        assert zero.any()
        rows, cols = torch.nonzero(zero, as_tuple=True)
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        # the zeros fill their bounding box: a rectangle
        assert zero[top:bottom + 1, left:right + 1].all()
        assert int(zero.sum()) == int((bottom - top + 1) * (right - left + 1))
        assert int(zero.sum()) <= 0.25 * 28 * 28
        # everything else is untouched
        assert torch.equal(o[0][~zero], x[0][~zero])


def test_erasing_probability(images):
    out = random_erasing(images, p=0.5, generator=gen(0))
    erased = (out == 0).flatten(1).any(1)
    assert 10 <= int(erased.sum()) <= 54
    assert torch.equal(out[~erased], images[~erased])
    assert torch.equal(random_erasing(images, p=0.0, generator=gen(0)), images)


def test_noise_is_additive_with_std(images):
    mid = torch.full((256, 1, 28, 28), 0.5)
    out = gaussian_noise(mid, std=0.05, generator=gen(0))
    assert abs(float((out - mid).std()) - 0.05) < 0.002
    assert abs(float((out - mid).mean())) < 0.002


def test_brightness_shifts_each_image_by_one_constant():
    mid = torch.rand(32, 1, 28, 28, generator=gen(0)) * 0.4 + 0.3  # room for +-0.2
    out = color_jitter(mid, brightness=0.2, generator=gen(1))
    delta = (out - mid).flatten(1)
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-6)
    assert delta.abs().max() <= 0.2 + 1e-6
    assert delta[:, 0].std() > 0.01


def test_contrast_scales_around_the_mean():
    mid = torch.rand(32, 1, 28, 28, generator=gen(0)) * 0.2 + 0.4
    out = color_jitter(mid, contrast=0.5, generator=gen(1))
    mean = mid.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out.mean(dim=(1, 2, 3), keepdim=True), mean, atol=1e-5)
    d_in, d_out = mid - mean, out - mean
    factor = (d_in * d_out).sum(dim=(1, 2, 3), keepdim=True) / (d_in ** 2).sum(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(d_out, factor * d_in, atol=1e-5)  # one factor per image
    assert factor.min() >= 0.5 - 1e-4 and factor.max() <= 1.5 + 1e-4
    assert factor.std() > 0.05


@pytest.mark.parametrize("kwargs,name", [
    ({"rotation": -1}, "rotation"),
    ({"noise_std": -0.1}, "noise_std"),
    ({"brightness": -0.2}, "brightness"),
    ({"contrast": -0.1}, "contrast"),
    ({"contrast": 1.0}, "contrast"),
    ({"crop_padding": -1}, "crop_padding"),
    ({"erasing": 1.5}, "erasing"),
    ({"erasing": -0.1}, "erasing"),
])
def test_invalid_values_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"augment {name}="):
        Augment(**kwargs)
