"""Stretches, radio three-channel rendering, adaptive crop and image statistics."""

import numpy as np
import pytest

from data_builders.crop import adaptive_crop, main_source_box
from data_builders.measure import image_stats
from data_builders.stretch import STRETCHES, background_stats, get_stretch, radio_to_rgb, render_rgb


def gaussian_blob(size=64, cx=32, cy=32, sigma=3.0, amp=100.0, noise=1.0, seed=0):
    y, x = np.mgrid[:size, :size]
    rng = np.random.default_rng(seed)
    plane = amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)) + rng.normal(
        0, noise, (size, size)
    )
    return plane.astype(np.float32)


@pytest.mark.parametrize("name", sorted(STRETCHES))
def test_every_stretch_maps_to_unit_interval_and_keeps_order(name):
    plane = gaussian_blob()
    out = get_stretch(name)(plane)
    assert out.shape == plane.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out[32, 32] == out.max()  # the peak stays the brightest pixel


def test_constant_plane_does_not_divide_by_zero():
    for fn in STRETCHES.values():
        assert np.isfinite(fn(np.ones((16, 16), dtype=np.float32))).all()


def test_unknown_stretch_lists_the_valid_ones():
    with pytest.raises(ValueError, match="asinh"):
        get_stretch("gamma")


def test_sigma_clip_zeroes_the_background():
    out = STRETCHES["sigma_clip"](gaussian_blob())
    assert (out[:8, :8] == 0).mean() > 0.95


def test_background_stats_ignore_sources():
    med, std = background_stats(gaussian_blob(amp=1e3, sigma=3, noise=2.0))
    assert abs(med) < 0.3 and std == pytest.approx(2.0, rel=0.15)


def test_radio_three_stretches_keep_faint_emission():
    plane = gaussian_blob(amp=1000.0) + gaussian_blob(cx=12, cy=12, sigma=6, amp=5.0, noise=0.0)
    rgb = radio_to_rgb(plane)
    assert rgb.shape == (3, 64, 64)
    # The faint blob (SNR ~5) is nearly invisible linearly but stands out in the log channel.
    faint, sky = rgb[:, 10:15, 10:15].mean(axis=(1, 2)), rgb[:, 50:60, 2:12].mean(axis=(1, 2))
    assert faint[2] - sky[2] > 0.15 and faint[0] - sky[0] < 0.05


def test_render_rgb_per_domain():
    radio = render_rgb(gaussian_blob()[None], "radio")
    assert radio.shape == (64, 64, 3) and radio.dtype == np.uint8
    grz = np.stack([gaussian_blob(amp=a, seed=i) for i, a in enumerate((20, 40, 60))])
    optical = render_rgb(grz, "optical", ("g", "r", "z"))
    assert optical.shape == (64, 64, 3) and optical[32, 32, 0] > optical[32, 32, 2]  # z-bright source is red
    display = np.random.default_rng(0).integers(0, 255, (3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(
        render_rgb(display, "optical", ("R", "G", "B")), np.moveaxis(display, 0, -1)
    )
    with pytest.raises(ValueError, match="C, H, W"):
        render_rgb(np.zeros((8, 8)))


def test_adaptive_crop_zooms_on_a_small_source():
    image = gaussian_blob(size=128, cx=40, cy=80, sigma=3, amp=200)[None]
    y0, x0, y1, x1 = main_source_box(image)
    assert x0 < 40 < x1 and y0 < 80 < y1
    crop = adaptive_crop(image, 64)
    assert crop.shape == (1, 64, 64)
    # The source now fills a much larger fraction of the stamp than it did of the field.
    assert (crop > 50).mean() > 4 * (image > 50).mean()


def test_adaptive_crop_on_pure_noise_keeps_the_whole_image():
    noise = np.random.default_rng(1).normal(0, 1, (1, 48, 48)).astype(np.float32)
    assert adaptive_crop(noise, 32).shape == (1, 32, 32)


def test_image_stats():
    stats = image_stats(gaussian_blob(amp=500.0, noise=2.0)[None], ("I",))
    assert stats["width"] == 64 and stats["bands"] == ["I"]
    assert stats["noise"] == pytest.approx(2.0, rel=0.2)
    assert stats["dynamic_range"] == pytest.approx(250, rel=0.2)
