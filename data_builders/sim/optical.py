"""Simulated DESI-Legacy-like optical g,r,z images with exact labels and one box per source.

Every image is drawn from physical parameters: galaxies are sums of analytic light profiles (Sérsic
bulges, exponential disks, logarithmic spiral arms, bars, edge-on disks with dust lanes, tidal tails),
strong lenses map a background Sérsic source through a singular isothermal sphere plus external
shear, and artefacts (ghosts, satellite trails, diffraction spikes, bright-star halos) are drawn the
way they look in DECam coadds. Fluxes are in nanomaggies per pixel (m = 22.5 - 2.5 log10 f), each
band is convolved with its own Moffat PSF and gets Gaussian sky noise, at 0.262 arcsec per pixel.

    rng = np.random.default_rng(0)
    rec = sample_morphology(rng, 128, "morph-000001")  # one of MORPHOLOGIES, centred: rec.boxes[0]
    rgb = render_rgb(rec.image, "optical")  # from data_builders.stretch: (H, W, 3) uint8, Lupton asinh
    lens = render_galaxy(rng, "lens", 128, theta_e_px=9.0)  # a given class; fix any parameter by name
    clean = render_galaxy(rng, "barred_spiral", 128, background=False, noise=False)  # a reference
    field = sample_field(rng, 256, "field-000001")  # 3-12 sources, one Box each

The four samplers (`sample_gmnist`, `sample_lsbg`, `sample_morphology`, `sample_field`) are what
`data_builders.families` registers; `render_galaxy` and `render_artefact` draw one named class.
All randomness comes from the `np.random.Generator` passed in: same seed, same image.

How an image is made: each source draws its parameters (recorded in `Record.params`), renders its
light into a patch of the image before the PSF, the patch is convolved with the per-band Moffat PSF
(stars and bright-star artefacts are drawn already convolved, analytically), the box is where the
source's own noiseless light exceeds 1 sigma of the sky noise in any band, the patches are summed
and sky noise is added. Parameter ranges live in the `*Ranges` dataclasses below, with where their
numbers come from; stamp lengths are given for a 128 px stamp and scale as (size / 128)^0.75.
Position angles are in degrees from the +x axis (image right) towards +y (image down).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from data_builders.records import Box, Record
from data_builders.sim.psf import moffat_kernel

BANDS: tuple[str, ...] = ("g", "r", "z")
PIXEL_SCALE_ARCSEC = 0.262  # DESI Legacy Surveys coadds (DECam, 90Prime and Mosaic-3 resampled)
ZEROPOINT_MAG = 22.5  # nanomaggies: m_AB = 22.5 - 2.5 log10(flux)
WAVELENGTH_NM = (477.0, 623.0, 913.0)  # effective wavelengths of DECam g, r, z
# optical depth of dust in each band relative to r, for extinction ~ 1 / wavelength
DUST_TAU_RATIO = np.array([623.0 / 477.0, 1.0, 623.0 / 913.0], np.float32)
REFERENCE_SIZE = 128  # stamp lengths in the *Ranges below are for this stamp size
STAMP_SCALE_POWER = 0.75  # stamp lengths scale as (size / 128)^0.75: small stamps are tighter crops
SOFTENING_PX2 = 0.3  # px^2 added to R^2 of disks and tails: keeps 1/R finite at their centre

SOURCE_CLASSES: tuple[str, ...] = (
    "smooth_round",
    "smooth_cigar",
    "edge_on_disk",
    "unbarred_spiral",
    "barred_spiral",
    "merger",
    "lens",
    "lsbg",
    "star",
    "artefact",
)
MORPHOLOGIES: tuple[str, ...] = SOURCE_CLASSES[:8]
GMNIST_CLASSES: tuple[str, ...] = ("smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral")
LSBG_LABELS: tuple[str, ...] = ("ARTEFACT", "LSBG")
ARTEFACT_KINDS: tuple[str, ...] = (
    "ghost",
    "satellite_trail",
    "diffraction_spikes",
    "star_halo",
    "offcentre_lsbg",
)

Range = tuple[float, float]


# ----------------------------------------------------------------------------------------------------
# Parameter ranges. Lengths marked "stamp" are in px for a 128 px stamp and scale with the stamp size.


@dataclass(frozen=True)
class Colours:
    """AB colour ranges (mag) of one stellar population."""

    g_r: Range
    r_z: Range


@dataclass(frozen=True)
class ObservingRanges:
    """Seeing and depth of DESI Legacy Surveys DR9/DR10 coadds."""

    # r-band seeing FWHM in px (1.0-1.6 arcsec): the DECaLS median is ~1.1-1.3" (Dey et al. 2019), worse
    # in g than in z since seeing scales as wavelength^-0.2 and g is often observed in worse conditions.
    psf_fwhm_px: Range = (1.0 / PIXEL_SCALE_ARCSEC, 1.6 / PIXEL_SCALE_ARCSEC)
    psf_g_over_r: Range = (1.0, 1.15)
    psf_z_over_r: Range = (0.88, 1.0)
    psf_beta: Range = (3.0, 4.0)  # Moffat wing index; ~3.5 for ground-based seeing (Trujillo et al. 2001)
    # Per-pixel sky noise in nanomaggies. r: 5-sigma point-source depths r ~ 23.4-24.3 (noise-equivalent
    # area ~60 px^2; recorded as depth_r_mag). The g:r:z ratios follow legacypipe's per-band display
    # scales (0.0066, 0.01, 0.025 nmgy), which are set near the typical pixel noise of each band.
    sky_sigma_r: Range = (0.005, 0.012)
    sky_g_over_r: Range = (0.6, 0.75)
    sky_z_over_r: Range = (2.0, 2.6)


@dataclass(frozen=True)
class EllipticalRanges:
    """Smooth early types: de Vaucouleurs-like Sérsic profiles, red (smooth_round, smooth_cigar)."""

    # n ~ 4 (de Vaucouleurs 1948), higher for brighter ellipticals (Caon et al. 1993)
    round_sersic_n: Range = (3.0, 5.5)
    cigar_sersic_n: Range = (2.0, 4.0)  # flattened E5-E7 and S0s seen edge-on have lower n
    round_axis_ratio: Range = (0.75, 1.0)  # E0-E2
    cigar_axis_ratio: Range = (0.22, 0.45)  # E5-E7 and S0s seen edge-on
    r_eff_px: Range = (4.0, 14.0)  # stamp; BGS galaxies have r_eff 1.5-10" (6-38 px)
    mu_eff_r: Range = (19.8, 21.3)  # r-band surface brightness at r_eff, mag/arcsec^2 (Kormendy relation)
    colours: Colours = Colours(g_r=(0.70, 0.90), r_z=(0.35, 0.55))  # red sequence at z < 0.15


@dataclass(frozen=True)
class DiskRanges:
    """Disk galaxies: exponential disk + Sérsic bulge + spiral arms (+ bar); edge-on disks."""

    r_eff_px: Range = (13.0, 26.0)  # stamp; disk half-light radius, scale length h = r_eff / 1.678
    # r-band SB of the disk at r_eff: Freeman's mu_0,B = 21.65 gives mu_eff,r ~ 22.5 (B - r ~ 1); the
    # bright nearby disks of Galaxy Zoo and BGS stamps run up to ~2 mag brighter
    mu_eff_r: Range = (20.6, 22.0)
    face_on_axis_ratio: Range = (0.5, 1.0)  # cos(inclination) of the spirals that show their arms
    disk_colours: Colours = Colours(g_r=(0.35, 0.60), r_z=(0.15, 0.40))  # Sb-Sd disks at z < 0.1
    bulge_colours: Colours = Colours(g_r=(0.65, 0.85), r_z=(0.30, 0.50))  # old, nearly as red as ellipticals
    arm_colours: Colours = Colours(g_r=(-0.10, 0.20), r_z=(-0.25, 0.10))  # young stars and HII regions
    bulge_fraction: Range = (0.05, 0.35)  # B/T of Sb-Sd spirals (e.g. Gadotti 2009)
    bulge_sersic_n: Range = (1.0, 3.5)  # pseudo-bulges n ~ 1-2, classical bulges n ~ 3-4
    bulge_r_eff_frac: Range = (0.10, 0.25)  # bulge r_eff / disk r_eff
    bulge_axis_ratio: Range = (0.7, 1.0)
    n_arms: tuple[float, ...] = (2.0, 3.0, 4.0)
    n_arms_prob: tuple[float, ...] = (0.5, 0.25, 0.25)  # grand-design two-armed spirals are the commonest
    pitch_deg: Range = (10.0, 35.0)  # Sa ~10 deg to Sc ~30 deg (Kennicutt 1981; Davis et al. 2012)
    arm_fraction: Range = (0.45, 0.75)  # share of disk light in the arms (arm/interarm contrast ~2-4 in r)
    arm_sharpness: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0, 6.0)  # power on (1 + cos): high = thin arms
    clump_fraction: Range = (0.02, 0.07)  # share of light in unresolved star-forming knots along the arms
    n_clumps: Range = (8.0, 30.0)
    bar_length_h: Range = (1.0, 2.0)  # bar semi-major axis / disk scale length (Erwin 2005; Gadotti 2011)
    bar_axis_ratio: Range = (0.2, 0.35)  # bar ellipticity 0.65-0.8
    bar_fraction: Range = (0.10, 0.25)  # bar/total 0.1-0.2 in strongly barred galaxies (Gadotti 2011)
    bar_colours: Colours = Colours(g_r=(0.60, 0.80), r_z=(0.30, 0.45))
    edge_on_r_eff_px: Range = (18.0, 34.0)  # stamp; edge-on disks look long: r_eff along the major axis
    edge_on_thickness: Range = (0.10, 0.25)  # sech^2 scale height z0 / scale length h (Kregel et al. 2002)
    edge_on_bulge_fraction: Range = (0.0, 0.3)
    dust_lane_prob: float = 0.6
    # r-band optical depth along the mid-plane seen edge-on: face-on tau_V ~ 0.5-1 (Xilouris et al. 1999)
    # times the path length ratio makes the lane nearly opaque
    dust_tau_r: Range = (3.0, 10.0)
    dust_height: Range = (0.4, 0.7)  # dust scale height / stellar z0 (Xilouris et al. 1999: ~0.5)


@dataclass(frozen=True)
class MergerRanges:
    """Two galaxies close together with tidal distortion and tails (Toomre & Toomre 1972)."""

    separation_r_eff: Range = (1.2, 2.6)  # centre distance in units of the sum of the two r_eff
    flux_ratio: Range = (1.0, 4.0)  # major mergers: primary / secondary flux 1:1-1:4
    size_factor: Range = (0.55, 0.8)  # r_eff relative to an isolated galaxy of the stamp, so both fit
    elliptical_prob: float = 0.35  # chance that each member is an early type
    tail_prob: float = 0.9  # chance that each member has a tidal tail
    tail_sharpness: Range = (20.0, 50.0)  # power on the (1 + cos) pattern: tails 10-20 deg wide
    tail_fraction: Range = (0.15, 0.35)  # share of a member's light in its tail
    tail_pitch_deg: Range = (20.0, 50.0)  # open: a tail is a long, gently curved arc
    tail_length_r_eff: Range = (1.5, 3.0)  # radius where the tail's light peaks, in r_eff of its galaxy
    stretch: Range = (0.1, 0.4)  # elongation of each member towards the other
    tail_colours: Colours = Colours(g_r=(0.25, 0.55), r_z=(0.05, 0.35))  # tails hold young stars


@dataclass(frozen=True)
class LensRanges:
    """Galaxy-galaxy strong lenses as found in DESI Legacy imaging (Huang et al. 2020, 2021)."""

    theta_e_px: Range = (5.0, 12.0)  # stamp; Einstein radius 1.3-3.1" (DESI candidates have ~1-3")
    deflector_sersic_n: Range = (3.5, 5.0)
    deflector_axis_ratio: Range = (0.65, 1.0)
    deflector_r_eff_theta_e: Range = (0.5, 1.1)  # deflector r_eff / theta_E
    # luminous red galaxies at z ~ 0.3-0.7; like the source, brighter by 5 log10(scale) in bigger stamps,
    # whose lengths are scaled up, so that surface brightness does not depend on the stamp size
    deflector_mag_r: Range = (18.3, 20.3)
    deflector_colours: Colours = Colours(g_r=(1.2, 1.8), r_z=(0.7, 1.2))  # DESI LRG colours at 0.3 < z < 0.7
    source_mag_r: Range = (21.0, 23.0)  # unlensed; magnification 5-30 brings the arcs to r ~ 18.5-21
    source_r_eff_px: Range = (0.8, 2.0)  # stamp; 0.2-0.5" star-forming galaxies at z ~ 1-3
    source_sersic_n: Range = (0.5, 1.5)
    source_axis_ratio: Range = (0.4, 1.0)
    source_offset_theta_e: Range = (0.0, 0.75)  # |beta| / theta_E: ~0 ring; larger: arc + counter-image
    # star-forming sources at z ~ 1-3 have flat or rising UV spectra in f_nu: blue arcs
    source_colours: Colours = Colours(g_r=(-0.2, 0.3), r_z=(-0.3, 0.2))
    shear: Range = (0.0, 0.08)  # external shear from the environment


@dataclass(frozen=True)
class LsbgRanges:
    """Low-surface-brightness galaxies as selected in DES (Tanoglidis et al. 2021, seed 001)."""

    # mean g-band SB within r_eff, mag/arcsec^2: the selection is > 24.2, and most lie below 26
    mu_mean_eff_g: Range = (24.2, 26.0)
    r_eff_px: Range = (14.0, 28.0)  # stamp; at 64 px this is 8-17 px = 2.2-4.4" (selection r_eff > 2.5")
    sersic_n: Range = (0.5, 1.5)
    axis_ratio: Range = (0.45, 1.0)
    # red and blue LSBG populations, split at g - i = 0.6
    colours: Colours = Colours(g_r=(0.30, 0.75), r_z=(0.10, 0.45))
    nucleus_prob: float = 0.2  # nucleated dwarfs
    nucleus_fraction: Range = (0.02, 0.08)
    offcentre_frac: Range = (0.3, 0.6)  # "parts or off-centred LSBGs": centre distance / stamp size


@dataclass(frozen=True)
class PointSourceRanges:
    """Field stars and faint compact background galaxies."""

    star_mag_r: Range = (17.0, 22.5)  # in stamps: faint field stars
    field_star_mag_r: Range = (15.5, 22.0)  # in fields: some bright enough to show the PSF wings
    star_g_r: Range = (-0.1, 1.5)  # stellar locus from F to M dwarfs; r - z follows from g - r
    galaxy_mag_r: Range = (19.5, 23.0)
    galaxy_r_eff_px: Range = (1.0, 4.0)  # absolute: faint galaxies at z ~ 0.3-1 are 0.3-1" across
    galaxy_sersic_n: Range = (0.8, 4.0)
    galaxy_axis_ratio: Range = (0.35, 1.0)
    # blue star-formers to red galaxies at z ~ 0.5
    galaxy_colours: Colours = Colours(g_r=(0.3, 1.6), r_z=(0.2, 1.1))
    stamp_count_per_128: float = 1.5  # Poisson mean of background sources in a 128 px stamp


@dataclass(frozen=True)
class ArtefactRanges:
    """Imaging artefacts that masquerade as diffuse sources (Tanoglidis et al. 2021's category 0)."""

    # stamp; DECam pupil ghosts are large out-of-focus doughnuts; drawn so that their rims cross the stamp
    ghost_radius_px: Range = (25.0, 75.0)
    ghost_hole_frac: Range = (0.3, 0.6)  # inner radius / outer radius: the shadow of the central obscuration
    # per-pixel signal-to-noise in the band where the ghost is brightest: as faint as an LSBG (in SB this
    # is ~23.5-25.5 mag/arcsec^2, recorded as ghost_mu), yet plain to the eye over its large area
    ghost_snr: Range = (1.0, 3.5)
    ghost_colours: Colours = Colours(g_r=(-1.0, 0.8), r_z=(-0.8, 1.0))  # reflections differ per filter
    trail_snr: Range = (4.0, 30.0)  # peak signal-to-noise of the trail after the PSF
    trail_width_px: Range = (0.4, 1.2)  # Gaussian sigma before the PSF: satellites are near point-like
    trail_single_band_prob: float = 0.65  # a trail is in one exposure, so usually in one band of a coadd
    spikes_star_mag_r: Range = (9.5, 13.0)  # saturated in DECam (r < ~16 saturates)
    halo_star_mag_r: Range = (6.5, 9.5)  # very bright star just off the stamp
    saturation_nmgy: Range = (8.0, 25.0)  # per-pixel level where the coadd clips saturated cores
    halo_fraction: Range = (0.03, 0.10)  # share of the star's light in the broad scattered-light halo
    halo_radius_px: Range = (6.0, 20.0)
    spike_strength: Range = (0.5e-3, 2.0e-3)  # spike SB at 1 px from the core / star flux
    spike_length_px: Range = (20.0, 60.0)  # exponential length in r; scales with wavelength


@dataclass(frozen=True)
class FieldRanges:
    """Wider survey cutouts with several sources at absolute pixel scales."""

    n_sources: Range = (3.0, 12.0)
    classes: tuple[str, ...] = SOURCE_CLASSES
    class_prob: tuple[float, ...] = (0.12, 0.07, 0.08, 0.12, 0.07, 0.05, 0.05, 0.06, 0.30, 0.08)
    galaxy_scale: Range = (0.3, 0.85)  # galaxy sizes relative to their 128 px stamp ranges
    min_separation_frac: float = 0.1  # minimum centre distance / field size (tried, not forced)


@dataclass(frozen=True)
class OpticalSimConfig:
    """Every range the simulator draws from; pass a modified copy to change them."""

    observing: ObservingRanges = field(default_factory=ObservingRanges)
    elliptical: EllipticalRanges = field(default_factory=EllipticalRanges)
    disk: DiskRanges = field(default_factory=DiskRanges)
    merger: MergerRanges = field(default_factory=MergerRanges)
    lens: LensRanges = field(default_factory=LensRanges)
    lsbg: LsbgRanges = field(default_factory=LsbgRanges)
    points: PointSourceRanges = field(default_factory=PointSourceRanges)
    artefact: ArtefactRanges = field(default_factory=ArtefactRanges)
    wide_field: FieldRanges = field(default_factory=FieldRanges)

    def __post_init__(self):
        fr = self.wide_field
        if len(fr.classes) != len(fr.class_prob) or not math.isclose(sum(fr.class_prob), 1.0):
            raise ValueError("field.class_prob must give one probability per class, summing to 1")
        unknown = set(fr.classes) - set(SOURCE_CLASSES)
        if unknown:
            raise ValueError(f"unknown field classes {sorted(unknown)}; valid: {SOURCE_CLASSES}")


DEFAULT_CONFIG = OpticalSimConfig()


# ----------------------------------------------------------------------------------------------------
# Drawing named parameters


def _pick(rng: np.random.Generator, options: tuple, p: tuple[float, ...] | None = None):
    """One of `options` (uniformly, or with probabilities p); Generator.choice costs 20 us a call."""
    u = rng.random()
    i = int(u * len(options)) if p is None else bisect.bisect_right(list(itertools.accumulate(p)), u)
    return options[min(i, len(options) - 1)]


class _Draw:
    """Draws named parameters, lets overrides replace them and records every value for `Record.params`.

    The generator is always advanced, overridden or not, so an override changes only its own value.
    """

    def __init__(self, rng: np.random.Generator, overrides: dict | None = None, prefix: str = ""):
        self.rng = rng
        self.overrides = dict(overrides or {})
        self.used: set[str] = set()
        self.drawn: set[str] = set()
        self.params: dict[str, float | str] = {}
        self.prefix = prefix

    def _take(self, name: str, value):
        key = self.prefix + name
        self.drawn.add(key)
        if key in self.overrides:
            self.used.add(key)
            value = self.overrides[key]
        self.params[key] = value if isinstance(value, str) else float(value)
        return value

    def uniform(self, name: str, lo: float, hi: float, floor: float = -math.inf) -> float:
        return float(self._take(name, max(lo + (hi - lo) * self.rng.random(), floor)))

    def colours(self, name: str, colours: Colours) -> tuple[float, float]:
        return self.uniform(f"{name}g_r", *colours.g_r), self.uniform(f"{name}r_z", *colours.r_z)

    def choice(self, name: str, options: tuple, p: tuple[float, ...] | None = None):
        return self._take(name, _pick(self.rng, options, p))

    def flag(self, name: str, prob: float) -> bool:
        return self._take(name, "yes" if self.rng.random() < prob else "no") == "yes"

    def set(self, name: str, value: float | str) -> None:
        self.params[self.prefix + name] = value if isinstance(value, str) else float(value)

    def child(self, prefix: str) -> _Draw:
        """A drawer for a sub-object (a merger's companion): its names get `prefix`, overrides are shared."""
        sub = _Draw(self.rng, self.overrides, self.prefix + prefix)
        sub.used, sub.drawn, sub.params = self.used, self.drawn, self.params
        return sub

    def check_overrides(self) -> None:
        unused = sorted(set(self.overrides) - self.used)
        if unused:
            raise ValueError(f"unknown parameter override(s) {unused}; drawn here: {sorted(self.drawn)}")


# ----------------------------------------------------------------------------------------------------
# Photometry and profiles


def flux_from_mag(mag: float) -> float:
    """AB magnitude -> nanomaggies."""
    return 10.0 ** (-0.4 * (mag - ZEROPOINT_MAG))


def mag_from_flux(flux: float) -> float:
    return ZEROPOINT_MAG - 2.5 * math.log10(max(flux, 1e-12))


def sb_to_pixel(mu: float) -> float:
    """Surface brightness in mag/arcsec^2 -> nanomaggies per pixel."""
    return flux_from_mag(mu) * PIXEL_SCALE_ARCSEC**2


def sed(flux_r: float, g_r: float, r_z: float) -> np.ndarray:
    """(3,) g, r, z fluxes of a population with r-band flux `flux_r` and the given colours."""
    return np.array([flux_r * 10 ** (-0.4 * g_r), flux_r, flux_r * 10 ** (0.4 * r_z)], np.float32)


def sersic_b(n: float) -> float:
    """b_n such that r_eff encloses half the light (Ciotti & Bertin 1999 expansion)."""
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def sersic_total(n: float, r_eff: float, q: float) -> float:
    """Total flux of a Sérsic profile with unit surface brightness at r_eff and axis ratio q."""
    b = sersic_b(n)
    return 2.0 * math.pi * n * r_eff**2 * q * math.exp(b) * b ** (-2.0 * n) * math.gamma(2.0 * n)


def sersic_radius(n: float, r_eff: float, i_e: float, threshold: float) -> float:
    """Major-axis radius where a Sérsic profile with SB i_e at r_eff falls to `threshold`."""
    if i_e <= threshold:
        return r_eff
    return r_eff * (1.0 + math.log(i_e / threshold) / sersic_b(n)) ** n


@dataclass(frozen=True)
class _Patch:
    """The part of the image a source is drawn into: offsets of pixel centres from the source centre."""

    x: np.ndarray  # (1, w) float32
    y: np.ndarray  # (h, 1) float32
    x0: int
    y0: int


def _patch(cx: float, cy: float, radius: float, size: int, margin: int = 0) -> _Patch | None:
    """Pixels within `radius` of (cx, cy), inside the image grown by `margin` on every side: light just
    outside the image still reaches it through the PSF."""
    x0, x1 = max(math.floor(cx - radius), -margin), min(math.ceil(cx + radius) + 1, size + margin)
    y0, y1 = max(math.floor(cy - radius), -margin), min(math.ceil(cy + radius) + 1, size + margin)
    if x1 <= 0 or y1 <= 0 or x0 >= size or y0 >= size:  # nothing inside the image
        return None
    x = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
    y = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
    return _Patch(x, y, x0, y0)


def _rotate(x: np.ndarray, y: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along (u) and across (v) the direction `angle_deg`."""
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    return x * c + y * s, y * c - x * s


def _ellipse(x, y, pa_deg: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Major-axis frame with the minor axis stretched by 1/q: circular radius = elliptical radius."""
    u, v = _rotate(x, y, pa_deg)
    return u, v * np.float32(1.0 / q)


def _sersic_uv(u: np.ndarray, v: np.ndarray, n: float, r_eff: float, q: float, flux: float) -> np.ndarray:
    """Sérsic surface brightness (flux per px) at elliptical-frame coordinates, total flux `flux`."""
    b = sersic_b(n)
    scale = flux / sersic_total(n, r_eff, q) * math.exp(b)
    r2 = (u * u + v * v + np.float32(1e-6)) * np.float32(1.0 / r_eff**2)
    # (r / r_eff)^(1/n) as exp(ln(r^2) / 2n): a log and an exp are cheaper than a float power
    x = np.sqrt(r2) if n == 1.0 else np.exp(np.log(r2) * np.float32(0.5 / n))
    return np.float32(scale) * np.exp(np.float32(-b) * x)


_SUB = (np.arange(5, dtype=np.float32) - 2.0) / 5.0  # 5 x 5 sub-pixel offsets
_SUB_X, _SUB_Y = np.meshgrid(_SUB, _SUB)


def _sersic(
    x: np.ndarray, y: np.ndarray, n: float, r_eff: float, q: float, pa: float, flux: float
) -> np.ndarray:
    """Sérsic profile at offsets (x, y) from its centre; the pixels at the cusp are averaged over a
    5 x 5 sub-grid, so that the image holds the profile's flux even for small, concentrated galaxies."""
    u, v = _ellipse(x, y, pa, q)
    image = _sersic_uv(u, v, n, r_eff, q, flux)
    if x.shape[0] == 1 and y.shape[1] == 1:  # a patch's (1, w) and (h, 1) offsets: find the centre cheaply
        ix, iy = np.flatnonzero(np.abs(x[0]) < 1.6), np.flatnonzero(np.abs(y[:, 0]) < 1.6)
        near = (np.repeat(iy, ix.size), np.tile(ix, iy.size))
    else:
        near = np.nonzero(x * x + y * y < 2.5)
    if near[0].size:
        xs = np.broadcast_to(x, image.shape)[near][:, None] + _SUB_X.ravel()
        ys = np.broadcast_to(y, image.shape)[near][:, None] + _SUB_Y.ravel()
        us, vs = _ellipse(xs, ys, pa, q)
        image[near] = _sersic_uv(us, vs, n, r_eff, q, flux).mean(axis=1)
    return image


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _ipow(x: np.ndarray, k: int) -> np.ndarray:
    """x^k for a positive integer k by repeated squaring (several times faster than a float power)."""
    out, base = None, x
    while k:
        if k & 1:
            out = base if out is None else out * base
        k >>= 1
        if k:
            base = base * base
    return out


def _spiral_pattern(
    u: np.ndarray,
    v: np.ndarray,
    radius: np.ndarray,
    n_arms: int,
    pitch_deg: float,
    r_start: float,
    phase0: float,
    winding: float,
    sharpness: int,
) -> np.ndarray:
    """Logarithmic spiral arms with mean 1 over azimuth: ((1 + cos(m theta - psi(R))) / 2)^k with
    psi = m (phase0 + winding ln(R / r_start) / tan(pitch)); (u, v) in the disk plane, radius = |(u, v)|.

    cos(m theta) and sin(m theta) come from (u, v) / R by the angle-addition recurrence: no arctan2.
    """
    inv_r = 1.0 / radius
    c1, s1 = u * inv_r, v * inv_r
    cm, sm = c1, s1
    for _ in range(n_arms - 1):
        cm, sm = cm * c1 - sm * s1, sm * c1 + cm * s1
    psi = np.log(radius * np.float32(1.0 / r_start)) * np.float32(
        n_arms * winding / math.tan(math.radians(pitch_deg))
    )
    psi += np.float32(n_arms * phase0)
    pattern = (cm * np.cos(psi) + sm * np.sin(psi) + 1.0) * 0.5
    mean = math.gamma(sharpness + 0.5) / (math.sqrt(math.pi) * math.gamma(sharpness + 1.0))
    return _ipow(pattern, sharpness) * np.float32(1.0 / mean)


def _splat(cube: np.ndarray, p: _Patch, xs: np.ndarray, ys: np.ndarray, fluxes: np.ndarray) -> None:
    """Add point fluxes (n, 3) at offsets (xs, ys) from the patch's centre, bilinearly: unresolved knots."""
    _, h, w = cube.shape
    fx, fy = xs - float(p.x[0, 0]), ys - float(p.y[0, 0])
    ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    ax, ay = fx - ix, fy - iy
    jx = np.concatenate([ix, ix + 1, ix, ix + 1])
    jy = np.concatenate([iy, iy, iy + 1, iy + 1])
    wgt = np.concatenate([(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay])
    ok = (jx >= 0) & (jx < w) & (jy >= 0) & (jy < h)
    flat = (jy * w + jx)[ok]
    wgt = wgt[ok]
    f = np.tile(fluxes, (4, 1))[ok]
    for b in range(3):
        cube[b] += np.bincount(flat, wgt * f[:, b], minlength=h * w).reshape(h, w).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Observing conditions


@dataclass(frozen=True)
class Observation:
    """Seeing and sky noise of one image, per band (g, r, z)."""

    psf_fwhm_px: tuple[float, float, float]
    psf_beta: float
    sky_sigma: tuple[float, float, float]  # nanomaggies per pixel

    @property
    def kernel_size(self) -> int:
        """Side of the PSF kernels: odd, out to 2.5 FWHM of the widest band."""
        return int(2 * math.ceil(2.5 * max(self.psf_fwhm_px)) + 1)

    def kernels(self) -> np.ndarray:
        """(3, k, k) normalised Moffat kernels, one per band, all the same size."""
        return np.stack([moffat_kernel(f, self.psf_beta, size=self.kernel_size) for f in self.psf_fwhm_px])

    def alpha(self) -> np.ndarray:
        """Moffat core widths per band: FWHM = 2 alpha sqrt(2^(1/beta) - 1)."""
        return np.array(self.psf_fwhm_px, np.float32) / (2.0 * math.sqrt(2.0 ** (1.0 / self.psf_beta) - 1.0))


def _draw_observation(d: _Draw, ranges: ObservingRanges) -> Observation:
    fwhm = d.uniform("psf_fwhm_px", *ranges.psf_fwhm_px)
    fwhm_g = fwhm * d.uniform("psf_g_over_r", *ranges.psf_g_over_r)
    fwhm_z = fwhm * d.uniform("psf_z_over_r", *ranges.psf_z_over_r)
    beta = d.uniform("psf_beta", *ranges.psf_beta)
    sigma = d.uniform("sky_sigma", *ranges.sky_sigma_r)
    sigma_g = sigma * d.uniform("sky_g_over_r", *ranges.sky_g_over_r)
    sigma_z = sigma * d.uniform("sky_z_over_r", *ranges.sky_z_over_r)
    d.set("psf_fwhm_arcsec", fwhm * PIXEL_SCALE_ARCSEC)
    d.set("sky_sigma_g", sigma_g)
    d.set("sky_sigma_z", sigma_z)
    # 5-sigma depth for a point source (noise-equivalent area 4 pi sigma_psf^2 of a Gaussian of the same FWHM)
    nea = 4.0 * math.pi * (fwhm / 2.3548) ** 2
    d.set("depth_r_mag", mag_from_flux(5.0 * sigma * math.sqrt(nea)))
    return Observation((fwhm_g, fwhm, fwhm_z), beta, (sigma_g, sigma, sigma_z))


def _convolve_bands(cube: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Each band of a (3, h, w) patch convolved with its own kernel, by one batched FFT.

    The convolution is cyclic on the patch (padded only to a fast FFT length): a source's patch reaches
    half a kernel beyond its light (and beyond the image edge, see `_patch`), so nothing that wraps
    around lands where it is kept.
    """
    _, h, w = cube.shape
    k = kernels.shape[-1]
    c = k // 2
    shape = (scipy.fft.next_fast_len(max(h, k), real=True), scipy.fft.next_fast_len(max(w, k), real=True))
    centred = np.zeros((3, *shape), np.float32)  # the kernel with its centre at [0, 0], wrapped around
    for dy, ky in ((slice(0, k - c), slice(c, k)), (slice(shape[0] - c, shape[0]), slice(0, c))):
        for dx, kx in ((slice(0, k - c), slice(c, k)), (slice(shape[1] - c, shape[1]), slice(0, c))):
            centred[:, dy, dx] = kernels[:, ky, kx]
    spec = scipy.fft.rfft2(cube, s=shape)
    spec *= scipy.fft.rfft2(centred, overwrite_x=True)
    return scipy.fft.irfft2(spec, s=shape, overwrite_x=True)[:, :h, :w]


# ----------------------------------------------------------------------------------------------------
# Galaxy models: drawn parameters plus a function that draws the light on any coordinate grid

Parts = list[tuple[np.ndarray, np.ndarray]]  # [(map (h, w) or (3, h, w), sed (3,))]: light = sum of map * sed


@dataclass
class _Galaxy:
    """A drawn galaxy: how far its light reaches, and how to draw it at offsets (x, y) from its centre."""

    radius: float  # px from the centre where its light falls below a tenth of the sky noise
    r_eff: float
    flux: np.ndarray  # (3,) g, r, z nanomaggies of its body (a lens: the deflector; mergers scale by it)
    parts: Callable[[np.ndarray, np.ndarray], Parts]  # maps are per unit flux, seds carry the flux
    # unresolved knots: x and y offsets from the centre and (n, 3) fluxes
    knots: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class _Ctx:
    """What every renderer needs: the ranges, the image size, the scale of stamp lengths, the seeing."""

    cfg: OpticalSimConfig
    size: int
    scale: float  # multiplies the "stamp" lengths of the ranges
    obs: Observation

    @property
    def margin(self) -> int:
        """How far a source's light is drawn beyond its own reach and the image: half a PSF kernel."""
        return self.obs.kernel_size // 2

    @property
    def faint(self) -> float:
        """SB (nmgy/px) below which a profile is not drawn: a tenth of the r-band sky noise."""
        return 0.1 * self.obs.sky_sigma[1]

    def length(self, d: _Draw, name: str, bounds: Range, floor: float, factor: float = 1.0) -> float:
        """A length in px drawn from "stamp" bounds scaled to this image, at least `floor`."""
        lo, hi = bounds
        return d.uniform(name, lo * self.scale * factor, hi * self.scale * factor, floor)


def _record_photometry(d: _Draw, flux: np.ndarray) -> None:
    d.set("mag_r", mag_from_flux(float(flux[1])))
    d.set("g_r", -2.5 * math.log10(float(flux[0]) / float(flux[1])))
    d.set("r_z", -2.5 * math.log10(float(flux[1]) / float(flux[2])))


def _elliptical_model(d: _Draw, ctx: _Ctx, cigar: bool, size_factor: float = 1.0) -> _Galaxy:
    """Smooth early type: one red Sérsic profile, round (n ~ 4, q > 0.75) or cigar-shaped (q < 0.45)."""
    e = ctx.cfg.elliptical
    n = d.uniform("sersic_n", *(e.cigar_sersic_n if cigar else e.round_sersic_n))
    q = d.uniform("axis_ratio", *(e.cigar_axis_ratio if cigar else e.round_axis_ratio))
    r_eff = ctx.length(d, "r_eff_px", e.r_eff_px, 2.0, size_factor)
    pa = d.uniform("pa_deg", 0.0, 180.0)
    mu = d.uniform("mu_eff_r", *e.mu_eff_r)
    colour = sed(sb_to_pixel(mu) * sersic_total(n, r_eff, q), *d.colours("", e.colours))
    _record_photometry(d, colour)
    d.set("r_eff_arcsec", r_eff * PIXEL_SCALE_ARCSEC)

    def parts(x: np.ndarray, y: np.ndarray) -> Parts:
        return [(_sersic(x, y, n, r_eff, q, pa, 1.0), colour)]

    return _Galaxy(sersic_radius(n, r_eff, sb_to_pixel(mu), ctx.faint) + 2.0, r_eff, colour, parts)


def _disk_model(d: _Draw, ctx: _Ctx, barred: bool, arms: bool = True, size_factor: float = 1.0) -> _Galaxy:
    """Disk galaxy seen at inclination acos(q): Sérsic bulge + exponential disk + log-spiral arms with
    blue star-forming knots (+ a boxy bar from whose ends the arms start)."""
    c = ctx.cfg.disk
    r_eff = ctx.length(d, "r_eff_px", c.r_eff_px, 3.0, size_factor)
    q = d.uniform("axis_ratio", *c.face_on_axis_ratio)
    pa = d.uniform("pa_deg", 0.0, 180.0)
    mu = d.uniform("mu_eff_r", *c.mu_eff_r)
    bt = d.uniform("bulge_fraction", *c.bulge_fraction)
    n_b = d.uniform("bulge_sersic_n", *c.bulge_sersic_n)
    re_b = max(r_eff * d.uniform("bulge_r_eff_frac", *c.bulge_r_eff_frac), 1.0)
    q_b = max(d.uniform("bulge_axis_ratio", *c.bulge_axis_ratio), q)  # a bulge is rounder than its disk
    disk_col = d.colours("disk_", c.disk_colours)
    bulge_col = d.colours("bulge_", c.bulge_colours)
    h = r_eff / 1.678
    d.set("r_eff_arcsec", r_eff * PIXEL_SCALE_ARCSEC)
    d.set("disk_scale_length_px", h)
    d.set("inclination_deg", math.degrees(math.acos(q)))
    bar_frac = bar_len = bar_q = bar_angle = 0.0
    if barred:
        bar_frac = d.uniform("bar_fraction", *c.bar_fraction)
        bar_len = h * d.uniform("bar_length_h", *c.bar_length_h)
        bar_q = d.uniform("bar_axis_ratio", *c.bar_axis_ratio)
        bar_angle = d.uniform("bar_angle_deg", 0.0, 180.0)  # in the disk plane, from the major axis
        bar_col = d.colours("bar_", c.bar_colours)
        d.set("bar_length_px", bar_len)
    arm_frac = clump_frac = 0.0
    if arms:
        n_arms = int(d.choice("n_arms", c.n_arms, c.n_arms_prob))
        pitch = d.uniform("pitch_deg", *c.pitch_deg)
        arm_frac = d.uniform("arm_fraction", *c.arm_fraction)
        sharp = int(d.choice("arm_sharpness", c.arm_sharpness))
        winding = 1.0 if d.choice("winding", ("clockwise", "anticlockwise")) == "clockwise" else -1.0
        phase0 = math.radians(bar_angle if barred else d.uniform("arm_phase_deg", 0.0, 360.0))
        arm_col = d.colours("arm_", c.arm_colours)
        clump_frac = d.uniform("clump_fraction", *c.clump_fraction)
        n_clumps = int(d.uniform("n_clumps", *c.n_clumps))
        r_start = bar_len if barred else max(2.0 * re_b, 0.6 * h)  # arms leave the bar ends or the bulge
        # knots: along the arms, exponentially distributed in radius like the disk light
        k_r = r_start + d.rng.exponential(1.2 * h, n_clumps)
        k_th = phase0 + winding * np.log(k_r / r_start) / math.tan(math.radians(pitch))
        k_th = k_th + 2.0 * math.pi * d.rng.integers(0, int(n_arms), n_clumps) / n_arms
        k_th = k_th + d.rng.normal(0.0, 0.12, n_clumps)
        k_w = d.rng.exponential(1.0, n_clumps)

    total = sb_to_pixel(mu) * sersic_total(1.0, r_eff, q) / (1.0 - bt)  # mu_eff is the disk's own
    f_bulge, f_bar, f_clumps = total * bt, total * bar_frac, total * clump_frac
    f_disk = total - f_bulge - f_bar - f_clumps
    bulge_sed, disk_sed = sed(f_bulge, *bulge_col), sed(f_disk * (1 - arm_frac), *disk_col)
    seds = [bulge_sed, disk_sed]
    if barred:
        bar_sed = sed(f_bar, *bar_col)
        seds.append(bar_sed)
    knots = None
    if arms:
        arm_sed = sed(f_disk * arm_frac, *arm_col)
        knot_sed = sed(f_clumps, arm_col[0] - 0.15, arm_col[1] - 0.1)
        seds += [arm_sed, knot_sed]
        # knots back from the disk plane to the image: squash by q, rotate by pa
        cu, cv = k_r * np.cos(k_th), k_r * np.sin(k_th) * q
        t = math.radians(pa)
        kx, ky = cu * math.cos(t) - cv * math.sin(t), cu * math.sin(t) + cv * math.cos(t)
        knots = (kx, ky, np.outer(k_w / k_w.sum(), knot_sed))
    flux = np.sum(seds, axis=0)
    _record_photometry(d, flux)

    def parts(x: np.ndarray, y: np.ndarray) -> Parts:
        u, v = _ellipse(x, y, pa, q)  # disk-plane coordinates
        rad = np.sqrt(u * u + v * v + np.float32(SOFTENING_PX2))
        disk = np.exp(rad * np.float32(-1.0 / h)) * np.float32(1.0 / (2.0 * math.pi * h * h * q))
        out = [(_sersic(x, y, n_b, re_b, q_b, pa, 1.0), bulge_sed)]
        if barred:
            bu, bv = _rotate(u, v, bar_angle)
            bv = bv * np.float32(1.0 / bar_q)
            rb3 = np.abs(bu * bu * bu) + np.abs(bv * bv * bv)  # boxy isophotes
            bar = np.exp(-rb3 * np.float32(1.0 / bar_len**3))
            out.append((bar * np.float32(1.0 / max(float(bar.sum()), 1e-12)), bar_sed))
        if not arms:
            out.append((disk, disk_sed))
            return out
        pattern = _spiral_pattern(u, v, rad, n_arms, pitch, r_start, phase0, winding, sharp)
        onset = _smoothstep((rad - np.float32(0.7 * r_start)) * np.float32(1.0 / (0.6 * r_start)))
        # between the onset radius and the centre the arm light stays in the smooth disk
        out.append((disk * (1.0 + np.float32(arm_frac / (1 - arm_frac)) * (1.0 - onset)), disk_sed))
        out.append((disk * onset * pattern, arm_sed))
        return out

    radius = sersic_radius(1.0, r_eff, 2.0 * sb_to_pixel(mu), ctx.faint) + 2.0
    return _Galaxy(radius, r_eff, flux, parts, knots)


def _edge_on_model(d: _Draw, ctx: _Ctx) -> _Galaxy:
    """Edge-on disk: projected exponential (t K1(t)) times sech^2 vertically, a small bulge and, for
    some, a dust lane that dims g more than r and z."""
    c = ctx.cfg.disk
    r_eff = ctx.length(d, "r_eff_px", c.edge_on_r_eff_px, 3.0)
    thick = d.uniform("thickness", *c.edge_on_thickness)
    pa = d.uniform("pa_deg", 0.0, 180.0)
    mu = d.uniform("mu_eff_r", *c.mu_eff_r)
    bt = d.uniform("bulge_fraction", *c.edge_on_bulge_fraction)
    n_b = d.uniform("bulge_sersic_n", 1.0, 2.5)
    re_b = max(r_eff * d.uniform("bulge_r_eff_frac", 0.12, 0.3), 1.0)
    q_b = d.uniform("bulge_axis_ratio", 0.5, 0.8)
    disk_col = d.colours("disk_", c.disk_colours)
    bulge_col = d.colours("bulge_", c.bulge_colours)
    dusty = d.flag("dust_lane", c.dust_lane_prob)
    tau = d.uniform("dust_tau_r", *c.dust_tau_r) if dusty else 0.0
    lane_offset = d.uniform("dust_lane_offset", -0.5, 0.5) if dusty else 0.0  # in z0: not exactly edge-on
    lane_height = d.uniform("dust_height", *c.dust_height) if dusty else 0.0
    h = r_eff / 1.678
    z0 = max(thick * h, 0.6)
    d.set("axis_ratio", z0 / h)
    d.set("r_eff_arcsec", r_eff * PIXEL_SCALE_ARCSEC)
    d.set("scale_height_px", z0)
    f_disk = sb_to_pixel(mu) * sersic_total(1.0, r_eff, 1.0)  # mu_eff of the same disk seen face-on
    disk_sed, bulge_sed = sed(f_disk, *disk_col), sed(f_disk * bt / (1.0 - bt), *bulge_col)
    flux = disk_sed + bulge_sed
    _record_photometry(d, flux)  # intrinsic; drawing through the dust lane records what is seen

    def parts(x: np.ndarray, y: np.ndarray) -> Parts:
        u, v = _rotate(x, y, pa)
        t = np.abs(u) * np.float32(1.0 / h)
        radial = np.sqrt(1.0 + np.float32(math.pi / 2) * t) * np.exp(-t)  # ~ t K1(t) to 2 %
        e = np.exp(np.abs(v) * np.float32(-2.0 / z0))
        vertical = 4.0 * e / (1.0 + e) ** 2  # sech^2(v / z0) without overflow
        disk = radial * vertical * np.float32(1.0 / (2.0 * math.pi * h * z0))
        bulge = _sersic(x, y, n_b, re_b, q_b, pa, 1.0)
        if not dusty:
            return [(disk, disk_sed), (bulge, bulge_sed)]
        light = disk_sed[:, None, None] * disk + bulge_sed[:, None, None] * bulge
        seen = light.copy()
        w = (v - np.float32(lane_offset * z0)) * np.float32(1.0 / (lane_height * z0))
        lane = np.nonzero(w * w < 8.0)  # the dust column falls as exp(-w^2): elsewhere it is transparent
        column = np.exp(-np.square(w[lane]) - 0.5 * t[lane])  # and it reaches further out than the stars
        seen[:, lane[0], lane[1]] *= np.exp(-(DUST_TAU_RATIO * np.float32(tau))[:, None] * column)
        kept = seen.sum(axis=(1, 2)) / np.maximum(light.sum(axis=(1, 2)), 1e-12)
        d.set("dust_attenuation_r", -2.5 * math.log10(max(float(kept[1]), 1e-12)))
        _record_photometry(d, flux * kept)
        return [(seen, np.ones(3, np.float32))]

    peak = f_disk / (2.0 * math.pi * h * z0)
    radius = max(h * (math.log(max(peak / ctx.faint, 1.0)) + 1.0), 4.0 * re_b) + 2.0
    return _Galaxy(radius, r_eff, flux, parts)


def _tidal_coords(x: np.ndarray, y: np.ndarray, toward_deg: float, stretch: float, r_scale: float):
    """Stretch a galaxy's outer parts along the direction to its companion (tidal elongation)."""
    a, b = _rotate(x, y, toward_deg)
    r = np.sqrt(a * a + b * b)
    ramp = r * np.float32(1.0 / (2.0 * r_scale))
    a = a / (1.0 + np.float32(stretch) * ramp / (1.0 + ramp))  # the outer parts stretch most
    t = math.radians(toward_deg)
    return a * math.cos(t) - b * math.sin(t), a * math.sin(t) + b * math.cos(t)


def _merger_model(d: _Draw, ctx: _Ctx) -> _Galaxy:
    """Two galaxies (early or late type) close together, each stretched towards the other, with tails."""
    m = ctx.cfg.merger
    size_factor = d.uniform("size_factor", *m.size_factor)
    ratio = d.uniform("flux_ratio", *m.flux_ratio)
    members = []
    for prefix in ("", "companion_"):
        sub = d.child(prefix)
        f = size_factor if not prefix else size_factor / ratio**0.25  # fainter companions are smaller
        early = sub.flag("early_type", m.elliptical_prob)
        gal = (
            _elliptical_model(sub, ctx, cigar=False, size_factor=f)
            if early
            else _disk_model(sub, ctx, barred=False, arms=False, size_factor=f)
        )
        members.append((gal, sub))
    dim = float(members[0][0].flux[1]) / (ratio * float(members[1][0].flux[1]))
    members[1][1].set("mag_r", mag_from_flux(float(members[1][0].flux[1]) * dim))
    members[1][1].set("mu_eff_r", d.params["companion_mu_eff_r"] - 2.5 * math.log10(dim))
    d.set("primary_mag_r", d.params["mag_r"])
    sep = d.uniform("separation_r_eff", *m.separation_r_eff) * (members[0][0].r_eff + members[1][0].r_eff)
    angle = d.uniform("separation_angle_deg", 0.0, 360.0)
    d.set("separation_px", sep)
    t = math.radians(angle)
    # light-weighted centre on the stamp centre
    w2 = 1.0 / (1.0 + ratio)
    centres = [(-w2 * sep * math.cos(t), -w2 * sep * math.sin(t))]
    centres.append((centres[0][0] + sep * math.cos(t), centres[0][1] + sep * math.sin(t)))
    tails = []
    for i, (gal, sub) in enumerate(members):
        toward = angle if i == 0 else angle + 180.0
        stretch = sub.uniform("stretch", *m.stretch)
        tail = None
        if sub.flag("tidal_tail", m.tail_prob):
            tail = (
                sub.uniform("tail_fraction", *m.tail_fraction),
                sub.uniform("tail_pitch_deg", *m.tail_pitch_deg),
                round(sub.uniform("tail_sharpness", *m.tail_sharpness)),
                sub.uniform("tail_length_r_eff", *m.tail_length_r_eff) * gal.r_eff,
                toward + 180.0 + sub.uniform("tail_angle_deg", -60.0, 60.0),  # away from the other
                1.0 if sub.choice("tail_winding", ("clockwise", "anticlockwise")) == "clockwise" else -1.0,
                sub.colours("tail_", m.tail_colours),
            )
        tails.append((toward, stretch, tail))
    gains = (1.0, dim)
    flux = members[0][0].flux + members[1][0].flux * np.float32(dim)
    for (gal, _), (_, _, tail), gain in zip(members, tails, gains, strict=True):
        if tail is not None:
            flux = flux + sed(tail[0] * float(gal.flux[1]) * gain, *tail[-1])
    _record_photometry(d, flux)

    def parts(x: np.ndarray, y: np.ndarray) -> Parts:
        out = []
        for (gal, _), (dx, dy), (toward, stretch, tail), gain in zip(
            members, centres, tails, gains, strict=True
        ):
            xm, ym = _tidal_coords(x - np.float32(dx), y - np.float32(dy), toward, stretch, gal.r_eff)
            out += [(image, colour * np.float32(gain)) for image, colour in gal.parts(xm, ym)]
            if tail is None:
                continue
            frac, pitch, sharp, length, direction, winding, colours = tail
            rad = np.sqrt(xm * xm + ym * ym + np.float32(SOFTENING_PX2))
            pattern = _spiral_pattern(
                xm, ym, rad, 1, pitch, gal.r_eff, math.radians(direction), winding, sharp
            )
            ramp = rad * np.float32(1.0 / length)
            tail_map = pattern * ramp * ramp * np.exp(-2.0 * ramp)  # peaks at R = length, beyond the body
            tail_map *= np.float32(1.0 / max(float(tail_map.sum()), 1e-12))
            out.append((tail_map, sed(frac * float(gal.flux[1]) * gain, *colours)))
        return out

    radius = max(members[0][0].radius, members[1][0].radius) * 1.1 + sep
    return _Galaxy(radius, sep + members[0][0].r_eff, flux, parts)


def _lens_model(d: _Draw, ctx: _Ctx) -> _Galaxy:
    """Red deflector whose singular isothermal sphere (+ external shear) maps a blue background Sérsic
    source into arcs, an Einstein ring, or an arc with a counter-image."""
    L = ctx.cfg.lens
    theta_e = ctx.length(d, "theta_e_px", L.theta_e_px, 4.0)
    n = d.uniform("sersic_n", *L.deflector_sersic_n)
    q = d.uniform("axis_ratio", *L.deflector_axis_ratio)
    r_eff = d.uniform("r_eff_px", *(theta_e * f for f in L.deflector_r_eff_theta_e), 2.0)
    pa = d.uniform("pa_deg", 0.0, 180.0)
    brighter = 5.0 * math.log10(ctx.scale)
    mag = d.uniform("mag_r", *(m - brighter for m in L.deflector_mag_r))
    defl_sed = sed(flux_from_mag(mag), *d.colours("", L.deflector_colours))
    i_e = float(defl_sed[1]) / sersic_total(n, r_eff, q)
    src_mag = d.uniform("source_mag_r", *(m - brighter for m in L.source_mag_r))
    src_re = ctx.length(d, "source_r_eff_px", L.source_r_eff_px, 0.7)
    src_n = d.uniform("source_sersic_n", *L.source_sersic_n)
    src_q = d.uniform("source_axis_ratio", *L.source_axis_ratio)
    src_pa = d.uniform("source_pa_deg", 0.0, 180.0)
    offset = d.uniform("source_offset_theta_e", *L.source_offset_theta_e) * theta_e
    offset_angle = math.radians(d.uniform("source_offset_angle_deg", 0.0, 360.0))
    src_sed = sed(flux_from_mag(src_mag), *d.colours("source_", L.source_colours))
    gamma = d.uniform("shear", *L.shear)
    gamma_angle = math.radians(d.uniform("shear_angle_deg", 0.0, 180.0))
    sx, sy = offset * math.cos(offset_angle), offset * math.sin(offset_angle)
    g1, g2 = gamma * math.cos(2 * gamma_angle), gamma * math.sin(2 * gamma_angle)
    d.set("theta_e_arcsec", theta_e * PIXEL_SCALE_ARCSEC)
    d.set("source_offset_px", offset)
    d.set("r_eff_arcsec", r_eff * PIXEL_SCALE_ARCSEC)

    def arcs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Source SB seen through the lens (SB is conserved, so arcs hold magnification x source flux)."""
        inv_r = np.float32(theta_e) / np.sqrt(x * x + y * y + np.float32(1e-4))
        bx = x - x * inv_r - (g1 * x + g2 * y) - np.float32(sx)
        by = y - y * inv_r - (g2 * x - g1 * y) - np.float32(sy)
        us, vs = _ellipse(bx, by, src_pa, src_q)
        return _sersic_uv(us, vs, src_n, src_re, src_q, 1.0)

    def parts(x: np.ndarray, y: np.ndarray) -> Parts:
        lensed = arcs(x, y)
        magnification = float(lensed.sum())  # what the image holds of the unit-flux source
        d.set("magnification", magnification)
        d.set("mag_arc_r", mag_from_flux(float(src_sed[1]) * magnification))
        return [(_sersic(x, y, n, r_eff, q, pa, 1.0), defl_sed), (lensed, src_sed)]

    radius = max(sersic_radius(n, r_eff, i_e, ctx.faint), theta_e + offset + 4.0 * src_re) + 3.0
    return _Galaxy(radius, theta_e, defl_sed, parts)


def _lsbg_model(d: _Draw, ctx: _Ctx) -> _Galaxy:
    """Low-surface-brightness galaxy: large, faint, shallow Sérsic (n ~ 0.5-1.5), sometimes nucleated."""
    s = ctx.cfg.lsbg
    r_eff = ctx.length(d, "r_eff_px", s.r_eff_px, 6.0)
    n = d.uniform("sersic_n", *s.sersic_n)
    q = d.uniform("axis_ratio", *s.axis_ratio)
    pa = d.uniform("pa_deg", 0.0, 180.0)
    mu_g = d.uniform("mu_mean_eff_g", *s.mu_mean_eff_g)
    g_r, r_z = d.colours("", s.colours)
    nucleated = d.flag("nucleus", s.nucleus_prob)
    nuc_frac = d.uniform("nucleus_fraction", *s.nucleus_fraction) if nucleated else 0.0
    # half the light lies within the r_eff ellipse, at the mean SB mu_mean_eff
    body = sed(2.0 * sb_to_pixel(mu_g - g_r) * math.pi * r_eff**2 * q, g_r, r_z)
    i_e_r = float(body[1]) / sersic_total(n, r_eff, q)
    nucleus = body * np.float32(nuc_frac)
    flux = body + nucleus
    d.set("mu_eff_r", mag_from_flux(i_e_r / PIXEL_SCALE_ARCSEC**2))
    d.set("r_eff_arcsec", r_eff * PIXEL_SCALE_ARCSEC)
    _record_photometry(d, flux)

    def parts(x: np.ndarray, y: np.ndarray) -> Parts:
        out = [(_sersic(x, y, n, r_eff, q, pa, 1.0), body)]
        if nucleated:
            out.append((_sersic(x, y, 1.0, 0.8, 1.0, 0.0, 1.0), nucleus))
        return out

    return _Galaxy(sersic_radius(n, r_eff, i_e_r, ctx.faint) + 2.0, r_eff, flux, parts)


def _compact_model(d: _Draw, ctx: _Ctx) -> _Galaxy:
    """Faint, barely resolved background galaxy."""
    p = ctx.cfg.points
    mag = d.uniform("mag_r", *p.galaxy_mag_r)
    r_eff = d.uniform("r_eff_px", *p.galaxy_r_eff_px)
    n = d.uniform("sersic_n", *p.galaxy_sersic_n)
    q = d.uniform("axis_ratio", *p.galaxy_axis_ratio)
    pa = d.uniform("pa_deg", 0.0, 180.0)
    colour = sed(flux_from_mag(mag), *d.colours("", p.galaxy_colours))

    def parts(x: np.ndarray, y: np.ndarray) -> Parts:
        return [(_sersic(x, y, n, r_eff, q, pa, 1.0), colour)]

    i_e = float(colour[1]) / sersic_total(n, r_eff, q)
    return _Galaxy(sersic_radius(n, r_eff, i_e, ctx.faint) + 2.0, r_eff, colour, parts)


GALAXY_MODELS: dict[str, Callable[[_Draw, _Ctx], _Galaxy]] = {
    "smooth_round": lambda d, ctx: _elliptical_model(d, ctx, cigar=False),
    "smooth_cigar": lambda d, ctx: _elliptical_model(d, ctx, cigar=True),
    "edge_on_disk": _edge_on_model,
    "unbarred_spiral": lambda d, ctx: _disk_model(d, ctx, barred=False),
    "barred_spiral": lambda d, ctx: _disk_model(d, ctx, barred=True),
    "merger": _merger_model,
    "lens": _lens_model,
    "lsbg": _lsbg_model,
}
assert tuple(GALAXY_MODELS) == MORPHOLOGIES


# ----------------------------------------------------------------------------------------------------
# Sources: light in a patch of the image, before the PSF (galaxies, ghosts, trails) or after (stars)


@dataclass
class _Source:
    label: str
    flux: np.ndarray  # (3, h, w) nanomaggies per pixel
    x0: int
    y0: int
    params: dict
    convolved: bool = False  # drawn analytically through the PSF already (stars, bright-star artefacts)


def _galaxy_source(label: str, gal: _Galaxy, d: _Draw, ctx: _Ctx, cx: float, cy: float) -> _Source | None:
    p = _patch(cx, cy, min(gal.radius, 2.0 * ctx.size) + ctx.margin, ctx.size, ctx.margin)
    if p is None:
        return None
    cube = np.zeros((3, p.y.shape[0], p.x.shape[1]), np.float32)
    for image, colour in gal.parts(p.x, p.y):
        for b in range(3):  # band by band: smaller temporaries than one (3, h, w) product
            cube[b] += colour[b] * (image if image.ndim == 2 else image[b])
    if gal.knots is not None:
        _splat(cube, p, *gal.knots)
    d.set("x_px", cx)
    d.set("y_px", cy)
    return _Source(label, cube, p.x0, p.y0, d.params)


def _stellar_r_z(g_r: float) -> float:
    """r - z along the stellar locus from A to M dwarfs (approximately, after Covey et al. 2007)."""
    return float(np.interp(g_r, [-0.3, 0.44, 1.2, 1.45, 1.6], [-0.3, 0.14, 0.7, 1.5, 2.0]))


def _moffat_star(
    ctx: _Ctx, cx: float, cy: float, flux: np.ndarray, radius: float
) -> tuple[np.ndarray, _Patch] | None:
    """A point source seen through each band's Moffat PSF, evaluated analytically (no pixelised delta)."""
    p = _patch(cx, cy, radius, ctx.size)
    if p is None:
        return None
    alpha = ctx.obs.alpha()
    beta = ctx.obs.psf_beta
    r2 = p.x * p.x + p.y * p.y
    peak = flux * (beta - 1.0) / (math.pi * alpha**2)
    cube = np.empty((3, *r2.shape), np.float32)
    for b in range(3):  # peak (1 + r^2 / alpha^2)^-beta as exp(-beta log(.)): a float power is slower
        np.log(r2 * np.float32(1.0 / alpha[b] ** 2) + np.float32(1.0), out=cube[b])
        cube[b] *= np.float32(-beta)
        np.exp(cube[b], out=cube[b])
        cube[b] *= np.float32(peak[b])
    return cube, p


def _star_source(d: _Draw, ctx: _Ctx, cx: float, cy: float, mag_range: Range) -> _Source | None:
    mag = d.uniform("mag_r", *mag_range)
    g_r = d.uniform("g_r", *ctx.cfg.points.star_g_r)
    r_z = _stellar_r_z(g_r) + d.uniform("r_z_scatter", -0.05, 0.05)
    d.set("r_z", r_z)
    flux = sed(flux_from_mag(mag), g_r, r_z)
    alpha, beta = float(ctx.obs.alpha().max()), ctx.obs.psf_beta
    peak = float(flux.max()) * (beta - 1.0) / (math.pi * alpha**2)
    radius = alpha * math.sqrt(max((peak / ctx.faint) ** (1.0 / beta) - 1.0, 1.0)) + 1.0
    out = _moffat_star(ctx, cx, cy, flux, radius)
    if out is None:
        return None
    d.set("x_px", cx)
    d.set("y_px", cy)
    return _Source("star", out[0], out[1].x0, out[1].y0, d.params, convolved=True)


def _bright_star_source(d: _Draw, ctx: _Ctx, cx: float, cy: float, mag_range: Range) -> _Source | None:
    """Saturated star: clipped core, broad scattered-light halo and four diffraction spikes (longer in z)."""
    a = ctx.cfg.artefact
    mag = d.uniform("star_mag_r", *mag_range)
    g_r = d.uniform("star_g_r", *ctx.cfg.points.star_g_r)
    flux = sed(flux_from_mag(mag), g_r, _stellar_r_z(g_r))
    sat = d.uniform("saturation_nmgy", *a.saturation_nmgy)
    halo_frac = d.uniform("halo_fraction", *a.halo_fraction)
    halo_r = d.uniform("halo_radius_px", *a.halo_radius_px)
    spike_k = d.uniform("spike_strength", *a.spike_strength)
    spike_len = d.uniform("spike_length_px", *a.spike_length_px)
    spike_angle = float(d.choice("spike_angle_deg", (0.0, 45.0)))
    spike_angle += d.uniform("spike_angle_jitter_deg", -2.0, 2.0)
    d.set("x_px", cx)
    d.set("y_px", cy)
    out = _moffat_star(ctx, cx, cy, flux * np.float32(1.0 - halo_frac), 2.0 * ctx.size)
    if out is None:
        return None
    cube, p = out
    t = 1.0 + (p.x * p.x + p.y * p.y) * np.float32(1.0 / halo_r**2)
    halo = np.float32(0.5 / (math.pi * halo_r**2)) / (t * np.sqrt(t))  # (1 + r^2/a^2)^-1.5, unit flux
    cube += (flux * np.float32(halo_frac))[:, None, None] * halo
    width = np.maximum(0.25 * np.array(ctx.obs.psf_fwhm_px), 0.8)
    for axis in (spike_angle, spike_angle + 90.0):  # two axes: four spikes
        along, across = _rotate(p.x, p.y, axis)
        along = np.abs(along)
        for b in range(3):
            length = spike_len * WAVELENGTH_NM[b] / WAVELENGTH_NM[1]  # diffraction grows with wavelength
            profile = np.exp(-0.5 * np.square(across * np.float32(1.0 / width[b])))
            cube[b] += (
                np.float32(spike_k * flux[b])
                * profile
                * np.exp(along * np.float32(-1.0 / length))
                / (1.0 + along)
            )
    np.minimum(cube, np.float32(sat), out=cube)
    return _Source("artefact", cube, p.x0, p.y0, d.params, convolved=True)


def _ghost_source(d: _Draw, ctx: _Ctx, cx: float, cy: float) -> _Source | None:
    """Out-of-focus reflection: a large faint doughnut (pupil image with the secondary's shadow)."""
    a = ctx.cfg.artefact
    r_out = ctx.length(d, "ghost_radius_px", a.ghost_radius_px, 10.0)
    r_in = r_out * d.uniform("ghost_hole_frac", *a.ghost_hole_frac)
    edge = d.uniform("ghost_edge_px", 1.0, 4.0)
    snr = d.uniform("ghost_snr", *a.ghost_snr)
    colour = sed(1.0, *d.colours("ghost_", a.ghost_colours))
    colour *= np.float32(snr / float((colour / np.array(ctx.obs.sky_sigma)).max()))
    d.set("ghost_mu", mag_from_flux(float(colour.max()) / PIXEL_SCALE_ARCSEC**2))
    rim = d.uniform("ghost_rim_brightening", 0.0, 0.8)
    d.set("x_px", cx)
    d.set("y_px", cy)
    p = _patch(cx, cy, r_out + 3.0 * edge + ctx.margin, ctx.size, ctx.margin)
    if p is None:
        return None
    r = np.sqrt(p.x * p.x + p.y * p.y)
    ring = (1.0 + np.tanh((r - np.float32(r_in)) * np.float32(1.0 / edge))) * (
        1.0 + np.tanh((np.float32(r_out) - r) * np.float32(1.0 / edge))
    )
    ring *= np.float32(0.25) * (1.0 + np.float32(rim) * (r * np.float32(1.0 / r_out)) ** 4)
    return _Source("artefact", colour[:, None, None] * ring, p.x0, p.y0, d.params)


def _trail_source(d: _Draw, ctx: _Ctx) -> _Source:
    """Satellite or aircraft trail: a straight line across the image, usually in a single band."""
    a = ctx.cfg.artefact
    angle = d.uniform("trail_angle_deg", 0.0, 180.0)
    offset = d.uniform("trail_offset_px", -0.3 * ctx.size, 0.3 * ctx.size)  # from the image centre
    width = d.uniform("trail_width_px", *a.trail_width_px)
    snr = d.uniform("trail_snr", *a.trail_snr)
    single = d.flag("trail_single_band", a.trail_single_band_prob)
    band = BANDS.index(d.choice("trail_band", BANDS))
    colour = sed(1.0, d.uniform("trail_g_r", -0.5, 0.5), d.uniform("trail_r_z", -0.5, 0.5))
    glint = d.uniform("trail_glint", 0.0, 0.4)
    period = d.uniform("trail_glint_period_px", 8.0, 60.0)
    if single:
        colour = np.eye(3, dtype=np.float32)[band]
    # a line of Gaussian width w seen through a PSF of width s peaks at w / sqrt(w^2 + s^2) of its height
    psf_sigma = np.array(ctx.obs.psf_fwhm_px) / 2.3548
    snr_per_unit = colour * width / np.sqrt(width**2 + psf_sigma**2) / np.array(ctx.obs.sky_sigma)
    amp = (colour * (snr / snr_per_unit.max())).astype(np.float32)
    c = (ctx.size - 1) / 2.0
    p = _patch(c, c, ctx.size, ctx.size, ctx.margin)
    along, across = _rotate(p.x, p.y, angle)
    line = np.exp(-0.5 * ((across - np.float32(offset)) * np.float32(1.0 / width)) ** 2)
    line *= 1.0 + np.float32(glint) * np.sin(along * np.float32(2.0 * math.pi / period))
    return _Source("artefact", amp[:, None, None] * line, p.x0, p.y0, d.params)


# ----------------------------------------------------------------------------------------------------
# Composition: PSF, boxes, noise


def _box(label: str, snr: np.ndarray, x0: int, y0: int, threshold: float = 1.0) -> Box | None:
    """Tight box around the pixels where a source's own noiseless light exceeds `threshold` sky sigmas."""
    mask = snr > threshold
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return Box(
        label, float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1)
    )


def _compose(
    rng: np.random.Generator,
    ctx: _Ctx,
    sources: list[_Source],
    psf: bool = True,
    noise: bool = True,
    box_first: bool = True,
) -> tuple[np.ndarray, list[Box | None]]:
    """Sum the sources (each through the PSF), box each one where it beats 1 sky sigma, add sky noise.

    With `box_first` the first source (a stamp's main object) always gets a box: at half its peak if
    it never beats the noise. Other sources that never do are invisible and get None.
    """
    size = ctx.size
    kernels = ctx.obs.kernels() if psf else None
    inv_sigma = [np.float32(1.0 / s) for s in ctx.obs.sky_sigma]
    image = np.zeros((3, size, size), np.float32)
    boxes: list[Box | None] = []
    for i, s in enumerate(sources):
        flux = s.flux if (s.convolved or kernels is None) else _convolve_bands(s.flux, kernels)
        # keep the part inside the image: a patch may reach beyond it by the PSF margin
        ya, xa = max(-s.y0, 0), max(-s.x0, 0)
        flux = flux[:, ya : size - s.y0, xa : size - s.x0]
        y0, x0 = s.y0 + ya, s.x0 + xa
        image[:, y0 : y0 + flux.shape[1], x0 : x0 + flux.shape[2]] += flux
        snr = np.maximum(np.maximum(flux[0] * inv_sigma[0], flux[1] * inv_sigma[1]), flux[2] * inv_sigma[2])
        box = _box(s.label, snr, x0, y0)
        if box is None and i == 0 and box_first:
            box = _box(s.label, snr, x0, y0, threshold=0.5 * float(snr.max()))
        boxes.append(box)
    if noise:
        sky = rng.standard_normal(image.shape, dtype=np.float32)
        sky *= np.array(ctx.obs.sky_sigma, np.float32)[:, None, None]
        image += sky
    return image, boxes


def _background(d: _Draw, ctx: _Ctx, avoid: float) -> list[_Source]:
    """A few faint stars and compact galaxies, kept `avoid` px away from the stamp centre."""
    pts = ctx.cfg.points
    n = int(d.rng.poisson(pts.stamp_count_per_128 * (ctx.size / REFERENCE_SIZE) ** 2))
    sources = []
    c = (ctx.size - 1) / 2.0
    for _ in range(n):
        for _try in range(20):
            x, y = d.rng.uniform(2.0, ctx.size - 3.0, 2)
            if math.hypot(x - c, y - c) > avoid:
                break
        sub = _Draw(d.rng)
        if sub.rng.random() < 0.5:
            src = _star_source(sub, ctx, x, y, pts.star_mag_r)
        else:
            gal = _compact_model(sub, ctx)
            label = "smooth_round" if sub.params["axis_ratio"] >= 0.6 else "smooth_cigar"
            src = _galaxy_source(label, gal, sub, ctx, x, y)
        if src is not None:
            sources.append(src)
    return sources


def _record(
    record_id: str,
    family: str,
    labels: tuple[str, ...],
    image: np.ndarray,
    boxes: list[Box | None],
    params: dict,
) -> Record:
    return Record(
        id=record_id,
        image=image,
        domain="optical",
        family=family,
        labels=labels,
        bands=BANDS,
        boxes=tuple(b for b in boxes if b is not None),
        params=params,
        pixel_scale_arcsec=PIXEL_SCALE_ARCSEC,
    )


def _stamp(
    rng: np.random.Generator,
    kind: str,
    size: int,
    build: Callable[[_Draw, _Ctx, float, float], _Source | None],
    record_id: str,
    family: str,
    labels: tuple[str, ...],
    config: OpticalSimConfig,
    overrides: dict,
    *,
    background: bool,
    psf: bool,
    noise: bool,
) -> Record:
    """One stamp: observing conditions, the main source from `build` near the centre, a few faint
    background sources, then PSF, boxes and noise."""
    if size < 16:
        raise ValueError(f"stamp size must be at least 16 px, got {size}")
    d = _Draw(rng, overrides)
    obs = _draw_observation(d, config.observing)
    ctx = _Ctx(config, size, stamp_scale(size), obs)
    c = (size - 1) / 2.0
    cx, cy = c + d.uniform("x_offset_px", -1.0, 1.0), c + d.uniform("y_offset_px", -1.0, 1.0)
    main = build(d, ctx, cx, cy)
    if main is None:
        raise ValueError(f"{kind}: the main source fell outside the {size} px stamp")
    extra = _background(_Draw(rng), ctx, avoid=0.2 * size) if background else []
    d.check_overrides()
    image, boxes = _compose(rng, ctx, [main, *extra], psf, noise)
    params = {"class": kind, **d.params, "n_background": float(len(extra))}
    return _record(record_id, family, labels, image, boxes, params)


def stamp_scale(size: int) -> float:
    """Factor on the "stamp" lengths of the ranges for a stamp of `size` px.

    Sub-linear, so that a 64 px stamp is a tighter crop of a somewhat smaller galaxy (as GalaxyMNIST's
    stamps are), while the PSF stays 4-6 px: spiral arms stay resolved down to 48 px stamps.
    """
    return (size / REFERENCE_SIZE) ** STAMP_SCALE_POWER


def _galaxy_builder(cls: str) -> Callable[[_Draw, _Ctx, float, float], _Source | None]:
    return lambda d, ctx, cx, cy: _galaxy_source(cls, GALAXY_MODELS[cls](d, ctx), d, ctx, cx, cy)


def _offcentre_lsbg(d: _Draw, ctx: _Ctx, cx: float, cy: float) -> _Source | None:
    dist = d.uniform("offcentre_frac", *ctx.cfg.lsbg.offcentre_frac) * ctx.size
    angle = math.radians(d.uniform("offcentre_angle_deg", 0.0, 360.0))
    return _galaxy_source(
        "lsbg", _lsbg_model(d, ctx), d, ctx, cx + dist * math.cos(angle), cy + dist * math.sin(angle)
    )


def _halo_star(d: _Draw, ctx: _Ctx, cx: float, cy: float) -> _Source | None:
    """A very bright star just outside (or at the edge of) the stamp: only its halo and spikes show."""
    dist = d.uniform("star_distance_frac", 0.45, 0.8) * ctx.size
    angle = math.radians(d.uniform("star_angle_deg", 0.0, 360.0))
    x, y = cx + dist * math.cos(angle), cy + dist * math.sin(angle)
    return _bright_star_source(d, ctx, x, y, ctx.cfg.artefact.halo_star_mag_r)


def _spikes_star(d: _Draw, ctx: _Ctx, cx: float, cy: float) -> _Source | None:
    dist = d.uniform("star_distance_frac", 0.0, 0.3) * ctx.size
    angle = math.radians(d.uniform("star_angle_deg", 0.0, 360.0))
    x, y = cx + dist * math.cos(angle), cy + dist * math.sin(angle)
    return _bright_star_source(d, ctx, x, y, ctx.cfg.artefact.spikes_star_mag_r)


def _ghost(d: _Draw, ctx: _Ctx, cx: float, cy: float) -> _Source | None:
    dist = d.uniform("ghost_offset_frac", 0.0, 0.5) * ctx.size
    angle = math.radians(d.uniform("ghost_offset_angle_deg", 0.0, 360.0))
    return _ghost_source(d, ctx, cx + dist * math.cos(angle), cy + dist * math.sin(angle))


ARTEFACT_BUILDERS: dict[str, Callable[[_Draw, _Ctx, float, float], _Source | None]] = {
    "ghost": _ghost,
    "satellite_trail": lambda d, ctx, cx, cy: _trail_source(d, ctx),
    "diffraction_spikes": _spikes_star,
    "star_halo": _halo_star,
    "offcentre_lsbg": _offcentre_lsbg,
}
assert tuple(ARTEFACT_BUILDERS) == ARTEFACT_KINDS


# ----------------------------------------------------------------------------------------------------
# Public API


def render_galaxy(
    rng: np.random.Generator,
    cls: str,
    size: int = REFERENCE_SIZE,
    *,
    record_id: str = "galaxy",
    family: str = "optical-morphology",
    labels: tuple[str, ...] | None = None,
    background: bool = True,
    psf: bool = True,
    noise: bool = True,
    config: OpticalSimConfig = DEFAULT_CONFIG,
    **overrides: float | str,
) -> Record:
    """A stamp with one galaxy of class `cls` (one of MORPHOLOGIES) at its centre.

    Any drawn parameter can be fixed by name (`r_eff_px=20`, `axis_ratio=0.3`, `theta_e_px=9`,
    `psf_fwhm_px=5`, `sky_sigma=0.008`, ...; see `Record.params` for the names); an unknown name raises.
    `background=False` leaves out the faint field sources, `psf=False` / `noise=False` give the
    unconvolved / noiseless image (the references a restoration task degrades).
    """
    if cls not in GALAXY_MODELS:
        raise ValueError(f"unknown galaxy class {cls!r}; valid: {MORPHOLOGIES}")
    return _stamp(
        rng, cls, size, _galaxy_builder(cls), record_id, family, labels or (cls,), config, overrides,
        background=background, psf=psf, noise=noise,
    )  # fmt: skip


def render_artefact(
    rng: np.random.Generator,
    kind: str,
    size: int = 64,
    *,
    record_id: str = "artefact",
    family: str = "optical-lsbg",
    labels: tuple[str, ...] = ("ARTEFACT",),
    background: bool = True,
    psf: bool = True,
    noise: bool = True,
    config: OpticalSimConfig = DEFAULT_CONFIG,
    **overrides: float | str,
) -> Record:
    """A stamp dominated by one artefact of `kind` (one of ARTEFACT_KINDS); options as `render_galaxy`."""
    if kind not in ARTEFACT_BUILDERS:
        raise ValueError(f"unknown artefact kind {kind!r}; valid: {ARTEFACT_KINDS}")
    return _stamp(
        rng, kind, size, ARTEFACT_BUILDERS[kind], record_id, family, labels, config, overrides,
        background=background, psf=psf, noise=noise,
    )  # fmt: skip


def sample_gmnist(rng: np.random.Generator, size: int, record_id: str) -> Record:
    """GalaxyMNIST's four classes, uniformly: smooth round, smooth cigar, edge-on disk, unbarred spiral."""
    cls = _pick(rng, GMNIST_CLASSES)
    return render_galaxy(rng, cls, size, record_id=record_id, family="optical-gmnist")


def sample_morphology(rng: np.random.Generator, size: int, record_id: str) -> Record:
    """One of MORPHOLOGIES, uniformly, centred in the stamp."""
    cls = _pick(rng, MORPHOLOGIES)
    return render_galaxy(rng, cls, size, record_id=record_id, family="optical-morphology")


def sample_lsbg(rng: np.random.Generator, size: int, record_id: str) -> Record:
    """Seed 001's LSBG-vs-artefact problem, 50/50: a well-centred LSBG (with some compact sources about),
    or an artefact: ghost, satellite trail, diffraction spikes, bright-star halo or an off-centre LSBG."""
    if rng.random() < 0.5:
        return render_galaxy(rng, "lsbg", size, record_id=record_id, family="optical-lsbg", labels=("LSBG",))
    kind = _pick(rng, ARTEFACT_KINDS)
    return render_artefact(rng, kind, size, record_id=record_id, family="optical-lsbg", labels=("ARTEFACT",))


def _field_source(d: _Draw, ctx: _Ctx, cls: str, x: float, y: float) -> _Source | None:
    """One source of a field at (x, y): galaxies at a random absolute scale, lenses at their stamp scale."""
    if cls == "star":
        return _star_source(d, ctx, x, y, ctx.cfg.points.field_star_mag_r)
    if cls == "artefact":
        kind = d.choice("artefact_kind", ("ghost", "satellite_trail", "diffraction_spikes"))
        if kind == "ghost":
            return _ghost_source(d, ctx, x, y)
        if kind == "satellite_trail":
            return _trail_source(d, ctx)
        return _bright_star_source(d, ctx, x, y, ctx.cfg.artefact.spikes_star_mag_r)
    scale = 1.0 if cls == "lens" else d.uniform("scale", *ctx.cfg.wide_field.galaxy_scale)
    gal = GALAXY_MODELS[cls](d, _Ctx(ctx.cfg, ctx.size, scale, ctx.obs))
    return _galaxy_source(cls, gal, d, ctx, x, y)


def sample_field(
    rng: np.random.Generator, size: int, record_id: str, config: OpticalSimConfig = DEFAULT_CONFIG
) -> Record:
    """A wider survey cutout (typically 256 px) with 3-12 sources of mixed SOURCE_CLASSES at absolute
    pixel scales, one Box per visible source; labels = the sorted set of classes that are visible."""
    fr = config.wide_field
    d = _Draw(rng)
    obs = _draw_observation(d, config.observing)
    ctx = _Ctx(config, size, 1.0, obs)
    n = int(d.uniform("n_sources", fr.n_sources[0], fr.n_sources[1] + 1.0))
    d.set("n_sources", n)
    placed: list[tuple[float, float]] = []
    sources, described = [], []
    for _ in range(n):
        cls = _pick(rng, fr.classes, fr.class_prob)
        for _try in range(30):
            x, y = rng.uniform(0.06 * size, 0.94 * size, 2)
            if all(math.hypot(x - px, y - py) > fr.min_separation_frac * size for px, py in placed):
                break
        placed.append((x, y))
        sub = _Draw(rng)
        src = _field_source(sub, ctx, cls, x, y)
        if src is not None:
            sources.append(src)
            described.append({"class": cls, **sub.params})
    image, boxes = _compose(rng, ctx, sources, box_first=False)
    visible = [(b, desc) for b, desc in zip(boxes, described, strict=True) if b is not None]
    labels = tuple(sorted({b.label for b, _ in visible}))
    params: dict = {"class": "field", **d.params}
    for cls in SOURCE_CLASSES:
        params[f"n_{cls}"] = float(sum(b.label == cls for b, _ in visible))
    params["sources"] = json.dumps([desc for _, desc in visible])
    return _record(record_id, "optical-field", labels, image, [b for b, _ in visible], params)
