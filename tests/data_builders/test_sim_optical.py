"""Tests of the optical g,r,z simulator: shapes, determinism, labels, boxes and the physics it claims."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from data_builders.sim import optical
from data_builders.sim.optical import (
    ARTEFACT_KINDS,
    GMNIST_CLASSES,
    MORPHOLOGIES,
    SOURCE_CLASSES,
    render_artefact,
    render_galaxy,
    sample_field,
    sample_gmnist,
    sample_lsbg,
    sample_morphology,
)

SAMPLERS = {
    "optical-gmnist": sample_gmnist,
    "optical-lsbg": sample_lsbg,
    "optical-morphology": sample_morphology,
    "optical-field": sample_field,
}


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def clean(cls: str, seed: int = 0, size: int = 128, **kw):
    """The central galaxy alone, without noise: what the physics checks measure."""
    return render_galaxy(rng(seed), cls, size, background=False, noise=False, **kw)


def axis_ratio(plane: np.ndarray) -> float:
    """sqrt(minor / major) of the flux-weighted second moments of the positive pixels."""
    w = np.clip(plane, 0.0, None).astype(np.float64)
    y, x = np.indices(w.shape)
    total = w.sum()
    mx, my = (w * x).sum() / total, (w * y).sum() / total
    cxx = (w * (x - mx) ** 2).sum() / total
    cyy = (w * (y - my) ** 2).sum() / total
    cxy = (w * (x - mx) * (y - my)).sum() / total
    lo, hi = np.linalg.eigvalsh([[cxx, cxy], [cxy, cyy]])
    return float(np.sqrt(lo / hi))


def g_minus_r(g: float, r: float) -> float:
    return -2.5 * np.log10(g / r)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("size", [48, 64, 128])
def test_record_shape_dtype_and_metadata(name, size):
    rec = SAMPLERS[name](rng(size), size, f"{name}-1")
    assert rec.image.shape == (3, size, size)
    assert rec.image.dtype == np.float32
    assert np.isfinite(rec.image).all()
    assert rec.bands == ("g", "r", "z")
    assert rec.domain == "optical"
    assert rec.family == name
    assert rec.pixel_scale_arcsec == pytest.approx(0.262)
    assert rec.id == f"{name}-1"
    json.dumps(rec.params)  # captions read these: plain floats and strings only
    assert all(type(v) in (float, str) for v in rec.params.values())


def test_large_stamp_and_field_sizes():
    assert sample_morphology(rng(1), 512, "m").image.shape == (3, 512, 512)
    assert sample_field(rng(1), 96, "f").image.shape == (3, 96, 96)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_deterministic_given_the_generator(name):
    size = 96
    a = SAMPLERS[name](rng(7), size, "a")
    b = SAMPLERS[name](rng(7), size, "a")
    c = SAMPLERS[name](rng(8), size, "a")
    np.testing.assert_array_equal(a.image, b.image)
    assert a.labels == b.labels and a.boxes == b.boxes and a.params == b.params
    assert not np.array_equal(a.image, c.image)


def test_no_global_random_state():
    np.random.seed(0)  # noqa: NPY002 (the legacy global state must not matter)
    a = sample_morphology(rng(3), 64, "a")
    np.random.seed(1)  # noqa: NPY002 (the legacy global state must not matter)
    b = sample_morphology(rng(3), 64, "a")
    np.testing.assert_array_equal(a.image, b.image)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_labels_and_boxes_come_from_the_family(name):
    families = pytest.importorskip("data_builders.families")  # it imports the radio simulator too
    fam = families.get_family(name)
    assert fam.simulate is SAMPLERS[name]
    assert set(fam.box_classes) == set(SOURCE_CLASSES)
    g = rng(11)
    for i in range(25 if name != "optical-field" else 6):
        rec = fam.simulate(g, 64 if name != "optical-field" else 160, f"r{i}")
        assert rec.labels and set(rec.labels) <= set(fam.classes)
        if fam.label_type in ("single", "binary"):
            assert len(rec.labels) == 1
        assert {b.label for b in rec.boxes} <= set(fam.box_classes)


def test_module_level_names():
    assert MORPHOLOGIES == (
        "smooth_round",
        "smooth_cigar",
        "edge_on_disk",
        "unbarred_spiral",
        "barred_spiral",
        "merger",
        "lens",
        "lsbg",
    )
    assert set(MORPHOLOGIES) | {"star", "artefact"} == set(SOURCE_CLASSES)
    assert all(c == c.lower() for c in SOURCE_CLASSES)
    assert set(GMNIST_CLASSES) <= set(MORPHOLOGIES)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_boxes_lie_inside_the_image(name):
    g = rng(5)
    for i in range(12 if name != "optical-field" else 4):
        size = 64 if name != "optical-field" else 200
        rec = SAMPLERS[name](g, size, f"r{i}")
        assert rec.boxes, "every record boxes at least its main source"
        for b in rec.boxes:
            assert 0 <= b.x0 < b.x1 <= size and 0 <= b.y0 < b.y1 <= size


@pytest.mark.parametrize("cls", MORPHOLOGIES)
def test_main_box_covers_the_brightest_pixel_of_the_central_source(cls):
    for seed in range(3):
        rec = clean(cls, seed, size=96)
        assert len(rec.boxes) == 1 and rec.boxes[0].label == cls
        b = rec.boxes[0]
        y, x = np.unravel_index(np.argmax(rec.image[1]), rec.image.shape[1:])
        assert b.x0 <= x < b.x1 and b.y0 <= y < b.y1


def test_main_box_is_tight_for_a_small_galaxy():
    rec = clean("smooth_round", size=128, r_eff_px=3.0, mu_eff_r=21.0, sersic_n=3.0)
    b = rec.boxes[0]
    assert b.x1 - b.x0 < 64 and b.y1 - b.y0 < 64  # a small galaxy does not fill the stamp
    assert b.x0 < 63.5 < b.x1 and b.y0 < 63.5 < b.y1


def test_background_sources_get_their_own_boxes():
    counts = Counter()
    g = rng(2)
    for i in range(30):
        rec = sample_morphology(g, 128, f"r{i}")
        assert rec.boxes[0].label == rec.labels[0]
        counts.update(b.label for b in rec.boxes[1:])
    assert counts["star"] > 0 and counts["smooth_round"] + counts["smooth_cigar"] > 0


@pytest.mark.parametrize(
    ("sampler", "classes", "n"),
    [
        (sample_morphology, MORPHOLOGIES, 240),
        (sample_gmnist, GMNIST_CLASSES, 200),
        (sample_lsbg, ("ARTEFACT", "LSBG"), 200),
    ],
)
def test_class_balance_is_roughly_uniform(sampler, classes, n):
    g = rng(21)
    counts = Counter(sampler(g, 48, f"r{i}").labels[0] for i in range(n))
    assert set(counts) == set(classes)
    expected = n / len(classes)
    for cls in classes:
        assert 0.5 * expected < counts[cls] < 1.5 * expected, counts


def test_lsbg_artefacts_cover_every_kind():
    g = rng(4)
    kinds = Counter()
    for i in range(60):
        rec = sample_lsbg(g, 64, f"r{i}")
        if rec.labels == ("ARTEFACT",):
            kinds[rec.params["class"]] += 1
            assert rec.params["class"] in ARTEFACT_KINDS
        else:
            assert rec.params["class"] == "lsbg" and rec.boxes[0].label == "lsbg"
    assert set(kinds) == set(ARTEFACT_KINDS)


def test_field_labels_are_the_classes_of_its_boxes():
    g = rng(9)
    seen = set()
    for i in range(8):
        rec = sample_field(g, 256, f"f{i}")
        assert rec.labels == tuple(sorted({b.label for b in rec.boxes}))
        assert 1 <= len(rec.boxes) <= rec.params["n_sources"] <= 12
        assert rec.params["n_sources"] >= 3
        sources = json.loads(rec.params["sources"])
        assert [s["class"] for s in sources] == [b.label for b in rec.boxes]
        seen |= set(rec.labels)
    assert "star" in seen and len(seen) >= 4


def test_overrides_fix_parameters_and_unknown_names_fail_loudly():
    rec = render_galaxy(rng(0), "lens", 128, theta_e_px=9.0, source_offset_theta_e=0.0)
    assert rec.params["theta_e_px"] == 9.0 and rec.params["source_offset_theta_e"] == 0.0
    assert render_galaxy(rng(0), "unbarred_spiral", 64, n_arms=3).params["n_arms"] == 3.0
    assert render_galaxy(rng(0), "edge_on_disk", 64, dust_lane="yes").params["dust_lane"] == "yes"
    with pytest.raises(ValueError, match="unknown parameter override"):
        render_galaxy(rng(0), "smooth_round", 64, n_arms=2)
    with pytest.raises(ValueError, match="unknown galaxy class"):
        render_galaxy(rng(0), "spiral", 64)
    with pytest.raises(ValueError, match="unknown artefact kind"):
        render_artefact(rng(0), "cosmic_ray", 64)


def test_override_changes_only_its_own_parameter():
    a = render_galaxy(rng(3), "smooth_cigar", 96, background=False)
    b = render_galaxy(rng(3), "smooth_cigar", 96, background=False, pa_deg=10.0)
    assert b.params["pa_deg"] == 10.0
    for key in ("sersic_n", "axis_ratio", "r_eff_px", "mag_r", "psf_fwhm_px", "sky_sigma"):
        assert a.params[key] == b.params[key]


def test_sky_noise_matches_the_recorded_sigma_per_band():
    noisy = render_galaxy(rng(6), "smooth_round", 256, background=False)
    model = render_galaxy(rng(6), "smooth_round", 256, background=False, noise=False)
    noise = noisy.image - model.image
    p = noisy.params
    for b, key in enumerate(("sky_sigma_g", "sky_sigma", "sky_sigma_z")):
        assert noise[b].std() == pytest.approx(p[key], rel=0.03)
        assert abs(noise[b].mean()) < 0.05 * p[key]  # sky-subtracted
    assert p["sky_sigma_g"] < p["sky_sigma"] < p["sky_sigma_z"]  # DECam: z is the noisiest band


def test_flux_matches_magnitude_and_psf_conserves_it():
    kw = dict(background=False, noise=False, r_eff_px=3.0, sersic_n=1.5, mu_eff_r=20.0)
    sharp = render_galaxy(rng(1), "smooth_round", 128, psf=False, **kw)
    seen = render_galaxy(rng(1), "smooth_round", 128, **kw)
    expected = 10 ** (-0.4 * (sharp.params["mag_r"] - 22.5))
    assert sharp.image[1].sum() == pytest.approx(expected, rel=0.03)
    np.testing.assert_allclose(seen.image.sum(axis=(1, 2)), sharp.image.sum(axis=(1, 2)), rtol=0.02)
    assert seen.image[1].max() < sharp.image[1].max()  # the PSF blurs the core


def test_ellipticals_are_redder_than_spiral_arms():
    ell = [clean("smooth_round", s, psf=False).image for s in range(6)]
    ell_gr = [g_minus_r(im[0].sum(), im[1].sum()) for im in ell]
    arm_gr = []
    for s in range(6):
        rec = clean("unbarred_spiral", s, psf=False, bulge_fraction=0.05)
        img = rec.image
        y, x = np.indices(img.shape[1:])
        rad = np.hypot(x - rec.params["x_px"], y - rec.params["y_px"])
        outer = (rad > 0.8 * rec.params["r_eff_px"]) & (rad < 2.0 * rec.params["r_eff_px"])
        arms = outer & (img[0] > np.percentile(img[0][outer], 80))  # the brightest g pixels: arms and knots
        arm_gr.append(g_minus_r(img[0][arms].sum(), img[1][arms].sum()))
    assert min(ell_gr) > max(arm_gr) + 0.2
    assert min(ell_gr) > 0.6 and max(arm_gr) < 0.5


def test_lensed_arcs_are_bluer_than_the_deflector_and_sit_at_the_einstein_radius():
    rec = clean("lens", 2, psf=False, theta_e_px=10.0, source_offset_theta_e=0.1)
    img = rec.image
    y, x = np.indices(img.shape[1:])
    rad = np.hypot(x - rec.params["x_px"], y - rec.params["y_px"])
    core, ring = rad < 2.0, (rad > 8.0) & (rad < 12.0)
    assert (
        g_minus_r(img[0][ring].sum(), img[1][ring].sum())
        < g_minus_r(img[0][core].sum(), img[1][core].sum()) - 0.5
    )
    # the blue light (g minus the deflector's red g/r) peaks near theta_E
    ratio = img[0][core].sum() / img[1][core].sum()
    excess = img[0] - ratio * img[1]
    profile = [excess[(rad >= r) & (rad < r + 2)].mean() for r in range(0, 30, 2)]
    assert 8 <= 2 * int(np.argmax(profile)) <= 12


def test_cigars_are_flatter_than_round_ellipticals_and_edge_on_disks_flatter_still():
    rounds = [axis_ratio(clean("smooth_round", s).image[1]) for s in range(5)]
    cigars = [axis_ratio(clean("smooth_cigar", s).image[1]) for s in range(5)]
    edges = [axis_ratio(clean("edge_on_disk", s).image[1]) for s in range(5)]
    assert max(cigars) < min(rounds)
    assert min(rounds) > 0.75 and max(cigars) < 0.6  # measured through the PSF
    assert np.median(edges) < np.median(cigars)


def test_lsbg_surface_brightness_is_far_below_a_normal_galaxy():
    def central_sb(cls, seed, **kw):
        rec = clean(cls, seed, size=64, **kw)
        return float(rec.image[1, 27:37, 27:37].mean())

    lsbg = [central_sb("lsbg", s, nucleus="no") for s in range(5)]
    normal = [central_sb(c, s) for c in ("smooth_round", "unbarred_spiral", "edge_on_disk") for s in range(3)]
    assert max(lsbg) < 0.15 * min(normal)  # at least 2 mag/arcsec^2 fainter
    assert np.median(lsbg) < 0.05 * np.median(normal)
    for s in range(5):
        assert render_galaxy(rng(s), "lsbg", 64).params["mu_mean_eff_g"] > 24.2


def test_satellite_trail_is_a_straight_line():
    for seed in range(4):
        rec = render_artefact(rng(seed), "satellite_trail", 96, background=False, noise=False)
        band = int(np.argmax(rec.image.sum(axis=(1, 2))))
        w = np.clip(rec.image[band], 0, None).astype(np.float64)
        y, x = np.indices(w.shape)
        mx, my = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
        cov = np.cov(np.stack([x.ravel() - mx, y.ravel() - my]), aweights=w.ravel())
        _, vecs = np.linalg.eigh(cov)
        normal = vecs[:, 0]  # across the line
        dist = np.abs((x - mx) * normal[0] + (y - my) * normal[1])
        assert w[dist < 2.0 * rec.params["psf_fwhm_px"]].sum() > 0.9 * w.sum()
        assert rec.boxes[0].label == "artefact"


def test_single_band_trails_are_strongly_coloured():
    rec = render_artefact(
        rng(0), "satellite_trail", 64, background=False, noise=False, trail_single_band="yes"
    )
    flux = rec.image.sum(axis=(1, 2))
    assert flux.max() > 0 and np.sort(flux)[-2] == 0.0


def test_bright_star_has_four_spikes_and_a_saturated_core():
    rec = render_artefact(
        rng(0),
        "diffraction_spikes",
        128,
        background=False,
        noise=False,
        star_distance_frac=0.0,
        spike_angle_deg=0.0,
    )
    img = rec.image[1]
    cy, cx = round(rec.params["y_px"]), round(rec.params["x_px"])
    assert img.max() == pytest.approx(rec.params["saturation_nmgy"])
    # at 30 px from the star, along a spike (0 or 90 deg) is much brighter than between spikes (45 deg)
    on = [img[cy, cx + 30], img[cy, cx - 30], img[cy + 30, cx], img[cy - 30, cx]]
    off = img[cy + 21, cx + 21]
    assert min(on) > 3 * off


def test_ghost_is_a_faint_doughnut():
    rec = render_artefact(rng(1), "ghost", 128, background=False, noise=False, ghost_offset_frac=0.0)
    p = rec.params
    img = rec.image.max(axis=0)
    y, x = np.indices(img.shape)
    rad = np.hypot(x - p["x_px"], y - p["y_px"])
    r_in, r_out = p["ghost_hole_frac"] * p["ghost_radius_px"], p["ghost_radius_px"]
    ring = img[(rad > r_in + 4) & (rad < r_out - 4)].mean()
    hole = img[rad < max(r_in - 6, 2)].mean()
    assert ring > 3 * hole
    assert ring < 0.05  # nanomaggies per pixel: a few sky sigma at most


def test_stamp_scale_grows_sub_linearly():
    assert optical.stamp_scale(128) == pytest.approx(1.0)
    assert 0.5 < optical.stamp_scale(64) < 1.0 < optical.stamp_scale(256) < 2.0
