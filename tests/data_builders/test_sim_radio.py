"""Tests for the radio simulator: records, labels that follow from what was drawn, C/P counts, FR-I/II
brightness structure, ring artefacts, beam-correlated noise, boxes and class balance."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from skimage.feature import peak_local_max
from skimage.measure import label as connected_label
from skimage.morphology import h_maxima

from data_builders.families import get_family
from data_builders.sim import radio

FAMILIES = ("radio-b1", "radio-b2", "radio-b3", "radio-b4", "radio-b5", "radio-b6")
DRAW = {f"radio-b{i}": getattr(radio, f"draw_b{i}") for i in range(1, 7)}
SAMPLE = {f"radio-b{i}": getattr(radio, f"sample_b{i}") for i in range(1, 7)}
GALAXIES = {"fr-i", "fr-ii", "extended"}


def scene_and_record(family: str, seed: int, size: int = 128):
    """The scene a sampler draws and the record it makes, from one seed (the sampler's exact path)."""
    rng = np.random.default_rng(seed)
    scene = DRAW[family](rng, size)
    return scene, radio.simulate(scene, rng, f"{family}-{seed}")


@pytest.fixture(scope="module")
def records():
    return {fam: [scene_and_record(fam, seed) for seed in range(12)] for fam in FAMILIES}


def test_source_classes_and_family_wiring():
    assert radio.SOURCE_CLASSES == (
        "compact", "extended", "diffuse", "diffuse-large", "fr-i", "fr-ii", "ring-artefact", "peculiar",
    )  # fmt: skip
    for fam in FAMILIES:
        family = get_family(fam)
        assert family.simulate is SAMPLE[fam]
        assert set(family.box_classes) == set(radio.SOURCE_CLASSES)


@pytest.mark.parametrize("family", FAMILIES)
def test_records_are_valid(family, records):
    fam = get_family(family)
    for scene, rec in records[family]:
        assert rec.image.shape == (1, 128, 128) and rec.image.dtype == np.float32
        assert np.isfinite(rec.image).all()
        assert rec.domain == "radio" and rec.bands == ("I",) and rec.family == family
        assert rec.pixel_scale_arcsec == (1.8 if family in ("radio-b2", "radio-b6") else 2.0)
        assert rec.labels and set(rec.labels) <= set(fam.classes)
        if fam.label_type != "multi":
            assert len(rec.labels) == 1
        assert rec.boxes, "every field has at least one source"
        for box in rec.boxes:
            assert box.label in radio.SOURCE_CLASSES
            assert 0 <= box.x0 < box.x1 <= 128 and 0 <= box.y0 < box.y1 <= 128
        assert all(isinstance(v, (float, str)) for v in rec.params.values()), rec.params
        json.dumps(rec.params)
        assert rec.params["n_sources"] == len(rec.boxes)
        assert abs(rec.params["rms_ujy"] - scene.rms * 1e6) < 0.01


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic_by_seed(family):
    a = SAMPLE[family](np.random.default_rng(7), 96, "a")
    b = SAMPLE[family](np.random.default_rng(7), 96, "a")
    c = SAMPLE[family](np.random.default_rng(8), 96, "a")
    np.testing.assert_array_equal(a.image, b.image)
    assert a.labels == b.labels and a.boxes == b.boxes and a.params == b.params
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("size", [64, 200, 512])
def test_other_sizes(size):
    for i, family in enumerate(FAMILIES):
        rec = SAMPLE[family](np.random.default_rng(i), size, "s")
        assert rec.image.shape == (1, size, size) and np.isfinite(rec.image).all()
        assert all(0 <= b.x0 < b.x1 <= size and 0 <= b.y0 < b.y1 <= size for b in rec.boxes)


def test_labels_follow_from_the_boxes(records):
    """Each label is what was drawn: check it against the per-source boxes."""
    for _, rec in records["radio-b1"]:
        kinds = {b.label for b in rec.boxes}
        assert ("EXTENDED" in rec.labels) == bool(kinds & GALAXIES)
        assert ("DIFFUSE" in rec.labels) == ("diffuse" in kinds)
        large = [b for b in rec.boxes if b.label == "diffuse-large"]
        assert ("DIFFUSE-LARGE" in rec.labels) == bool(large)
        assert all(max(b.x1 - b.x0, b.y1 - b.y0) >= 128 / 3 for b in large)  # spans > 1/3 of the field
        assert (rec.labels == ("NONE",)) == (kinds == {"compact"})
    for _, rec in records["radio-b3"]:
        assert (rec.labels == ("YES",)) == any(b.label in ("fr-i", "fr-ii") for b in rec.boxes)
    for _, rec in records["radio-b4"]:
        assert (rec.labels == ("YES",)) == any(b.label == "ring-artefact" for b in rec.boxes)
        assert rec.params["has_ring"] == ("yes" if rec.labels == ("YES",) else "no")
    for _, rec in records["radio-b5"]:
        kinds = {b.label for b in rec.boxes}
        assert (rec.labels == ("PECULIAR",)) == ("peculiar" in kinds)
        if rec.labels == ("ORDINARY",):
            assert kinds == {"compact"} and rec.params["morphology"] == "compact sources only"
        if rec.labels == ("COMPLEX",):
            assert kinds != {"compact"} or "blended" in rec.params["morphology"]
    for _, rec in records["radio-b6"]:
        assert rec.boxes[0].label == {"FR-I": "fr-i", "FR-II": "fr-ii"}[rec.labels[0]]
        assert rec.params["largest_angular_size_arcsec"] > 20 * 1.8


def test_b2_counts_on_the_noiseless_model_and_the_noisy_image():
    """C (islands above 3 sigma) and P (local maxima) counted independently with scikit-image."""
    noisy_ok, n = 0, 48
    for seed in range(n):
        scene, rec = scene_and_record("radio-b2", seed)
        n_c, n_p = int(rec.labels[0][0]), int(rec.labels[0][3])
        assert (rec.params["n_components"], rec.params["n_peaks"]) == (n_c, n_p)
        model = radio.render_model(scene.sources, 128, scene.beam) / scene.rms
        assert connected_label(model > 3.0, connectivity=2).max() == n_c, seed
        peaks = peak_local_max(model, min_distance=1, threshold_abs=3.0, exclude_border=False)
        assert len(peaks) == n_p, seed
        assert radio.count_components_and_peaks(model, 3.0) == (n_c, n_p)
        # the noisy image at safe thresholds: islands above 3 sigma that reach 6 sigma, and maxima above
        # 6 sigma that stand at least 2.5 sigma above their surroundings (so noise bumps do not count)
        snr = (rec.image[0] / scene.rms).astype(np.float64)
        islands = connected_label(snr > 3.0, connectivity=2)
        c = sum(snr[islands == i].max() > 6.0 for i in range(1, islands.max() + 1))
        maxima = connected_label(h_maxima(snr, 2.5), connectivity=2)
        p = sum(snr[maxima == i].max() > 6.0 for i in range(1, maxima.max() + 1))
        noisy_ok += (c, p) == (n_c, n_p)
    assert noisy_ok >= 0.95 * n


def test_cp_source_raises_on_unknown_class():
    with pytest.raises(ValueError, match="1C-1P"):
        radio.cp_source(np.random.default_rng(0), "4C-4P", 64, 64, 128, radio.Beam(3.0), 1e-4)


def test_b6_fr2_is_edge_brightened_and_fr1_core_brightened():
    seen = Counter()
    for seed in range(60):
        scene, rec = scene_and_record("radio-b6", seed)
        src, beam = scene.sources[0], scene.beam
        model = radio.render_source(src, 128, beam)
        las = radio._feret(model > 3 * scene.rms)
        cx, cy, _ = radio._extent(src)
        for image in (model, rec.image[0]):
            image = np.where(model > 3 * scene.rms, image, -np.inf)  # on the galaxy, not the neighbours
            y, x = np.unravel_index(np.argmax(image), image.shape)
            if rec.labels == ("FR-I",):  # the core is the brightest point
                core = src.gaussians[0, :2]
                assert np.hypot(x + 0.5 - core[0], y + 0.5 - core[1]) < 1.5 * beam.fwhm_major_px, seed
            else:  # the hotspots at the outer ends are
                assert np.hypot(x + 0.5 - cx, y + 0.5 - cy) > 0.3 * las, seed
        seen[rec.labels[0]] += 1
    assert seen["FR-I"] >= 15 and seen["FR-II"] >= 15


def _elliptical_radius(shape, ring: radio.Ring) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    c, s = np.cos(np.deg2rad(ring.pa_deg)), np.sin(np.deg2rad(ring.pa_deg))
    dx, dy = xx - ring.x, yy - ring.y
    return np.hypot(c * dx + s * dy, (-s * dx + c * dy) / ring.axis_ratio)


def test_ring_artefacts_alternate_in_sign_around_the_bright_source():
    n_yes = n_bright_no = 0
    for seed in range(40):
        scene, rec = scene_and_record("radio-b4", seed)
        snr = rec.image[0] / scene.rms
        artefacts = [s for s in scene.sources if s.label == "ring-artefact"]
        if artefacts:
            rings = [r for r in artefacts[0].rings if r.n == 0]  # the concentric ripples, not the spokes
            r = _elliptical_radius(snr.shape, rings[0])
            spacing = rings[1].radius - rings[0].radius
            edges = np.arange(rings[0].radius - spacing / 2, rings[-1].radius + spacing / 2, spacing / 3)
            which = np.digitize(r, edges)
            means = np.array([snr[which == i].mean() for i in range(1, len(edges)) if np.any(which == i)])
            significant = means[np.abs(means) > 1.5]
            assert means.min() < -2.0 and means.max() > 2.0, seed
            assert np.sum(np.diff(np.sign(significant)) != 0) >= 2, seed  # + - + or - + -
            n_yes += 1
        elif rec.params["peak_snr"] > 300:  # a bright source without rings: no negative annuli
            y, x = np.unravel_index(np.argmax(snr), snr.shape)
            r = _elliptical_radius(snr.shape, radio.Ring(x + 0.5, y + 0.5, 0.0, 0.0, 0.0))
            means = np.array([snr[(r >= a) & (r < a + 3)].mean() for a in np.arange(8, 40, 3)])
            assert means.min() > -1.5, seed
            n_bright_no += 1
    assert n_yes >= 8 and n_bright_no >= 3


def test_noise_has_the_drawn_rms_and_is_correlated_on_the_beam_scale():
    for seed in range(6):
        rng = np.random.default_rng(seed)
        survey = radio.SURVEYS["askap" if seed % 2 else "first"]
        beam, rms = survey.draw_beam(rng), survey.draw_rms(rng)
        field = radio.render_field(radio.compact_population(rng, 128, beam, rms), 128, beam, rms, rng)
        image = field.image[0]
        free = np.abs(field.model) < 0.01 * rms
        corners = np.zeros_like(free)
        for sy in (slice(0, 40), slice(-40, None)):
            for sx in (slice(0, 40), slice(-40, None)):
                corners[sy, sx] = True
        assert (free & corners).sum() > 2000
        assert image[free & corners].std() == pytest.approx(rms, rel=0.2)
        noise = image - field.model
        assert noise.std() == pytest.approx(rms, rel=0.01)
        rho = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
        assert rho > 0.6  # white noise would give ~0; a 3 px beam gives ~0.85, a 5-8 px one ~0.95


def test_render_field_is_beam_convolved_and_boxes_are_tight():
    beam, rms, rng = radio.Beam(6.0), 30e-6, np.random.default_rng(0)
    point = radio.compact_source(50.3, 60.7, 0.01, beam)
    assert radio.render_source(point, 128, beam).max() == pytest.approx(0.01, rel=0.02)  # Jy/beam
    # a resolved Gaussian keeps its flux: sum over pixels / beam area
    blob = radio.RadioSource("extended", radio.gaussians(64.0, 64.0, 0.02, 10.0, 6.0, 0.3))
    assert radio.render_source(blob, 128, beam).sum() / beam.area_px == pytest.approx(0.02, rel=0.01)
    galaxy = radio.fr2_source(rng, 64, 64, 80, beam, rms)
    field = radio.render_field([point, galaxy], 128, beam, rms, rng)
    assert [b.label for b in field.boxes] == ["compact", "fr-ii"]
    plane = radio.render_source(galaxy, 128, beam)
    box = field.boxes[1]
    inside = plane[int(box.y0) : int(box.y1), int(box.x0) : int(box.x1)]
    assert (plane > 3 * rms).sum() == (inside > 3 * rms).sum()  # nothing above 3 sigma outside the box
    assert field.las_px[1] == pytest.approx(box.x1 - box.x0, abs=0.5 * (box.x1 - box.x0) + 2)


def test_class_balance():
    n = 200
    counts = {fam: Counter() for fam in FAMILIES}
    for fam in FAMILIES:
        rng = np.random.default_rng(123)
        for _ in range(n):
            for lab in DRAW[fam](rng, 64).labels:
                counts[fam][lab] += 1

    def share(fam: str, lab: str) -> float:
        return counts[fam][lab] / n

    # bounds are the design shares +- ~4 binomial standard deviations at n = 200
    assert 0.08 <= share("radio-b1", "NONE") <= 0.32
    for lab in ("EXTENDED", "DIFFUSE", "DIFFUSE-LARGE"):
        assert 0.27 <= share("radio-b1", lab) <= 0.55, counts["radio-b1"]
    assert all(0.08 <= share("radio-b2", c) <= 0.28 for c in radio.CP_CLASSES), counts["radio-b2"]
    for fam in ("radio-b3", "radio-b4"):
        assert 0.35 <= share(fam, "YES") <= 0.65, counts[fam]
    assert 0.26 <= share("radio-b5", "ORDINARY") <= 0.54 and 0.26 <= share("radio-b5", "COMPLEX") <= 0.54
    assert 0.08 <= share("radio-b5", "PECULIAR") <= 0.32
    assert 0.35 <= share("radio-b6", "FR-I") <= 0.65


def test_peculiar_kinds_and_unknown_names_fail_loudly():
    beam, rms = radio.Beam(6.0), 30e-6
    for kind in radio.PeculiarParams().kinds:
        src = radio.peculiar_source(np.random.default_rng(1), 64, 64, 80, beam, rms, kind=kind)
        assert src.label == "peculiar" and radio.render_source(src, 128, beam).max() > 5 * rms
    with pytest.raises(ValueError, match="orc"):
        radio.peculiar_source(np.random.default_rng(1), 64, 64, 80, beam, rms, kind="blob")
    with pytest.raises(ValueError, match="nat"):
        radio.fr1_source(np.random.default_rng(1), 64, 64, 80, beam, rms, bend="zigzag")
    with pytest.raises(ValueError, match="unknown source class"):
        radio.RadioSource("galaxy", np.zeros((0, 6)))
    with pytest.raises(ValueError, match="lo <= hi"):
        radio.FRIParams(core_snr=(10.0, 1.0))
    with pytest.raises(ValueError, match="size"):
        radio.sample_b1(np.random.default_rng(0), 8, "tiny")
    with pytest.raises(ValueError, match="rms"):
        radio.render_field([], 64, beam, 0.0, np.random.default_rng(0))
