"""Simulated radio continuum images with exact labels: ASKAP/MeerKAT-like wide fields, FIRST-like cutouts.

Every source is a set of analytic primitives in pixel coordinates (x to the right, y down, pixel i
covering [i, i+1)): elliptical Gaussian components, rings, and optionally a multiplicative log-normal
texture for diffuse emission. A Gaussian component convolved with a Gaussian restoring beam is again a
Gaussian whose covariance is the sum of the two, so the beam-convolved (restored) model is drawn
directly on the grid, without any FFT; only the noise -- white noise convolved with the beam, hence
correlated on the beam scale as in a real radio map -- costs one convolution per field. Images are in
Jy/beam: a point source of flux S peaks at S.

Source models (the `SOURCE_CLASSES` a box may carry): compact sources with a power-law flux
distribution; FR-I (bright core, two-sided jets that fade and widen into plumes, straight or bent into
wide- or narrow-angle tails); FR-II (faint or no core, faint narrow jets, edge-brightened lobes ending
in hotspots); other resolved ("extended") sources; diffuse halo/relic-like emission; large diffuse
emission spanning more than a third of the field; ring artefacts (alternating-sign rings, sometimes
radial spokes, around a very bright source); peculiar objects (odd radio circles, X- and S-shaped,
head-tail). The Radio Galaxy Zoo C/P morphologies of radio-b2 (C components above 3 sigma, P peaks)
are drawn, counted on the noiseless model, and redrawn until the counts match the label.

The samplers `sample_b1` ... `sample_b6` draw records of the families `radio-b1` ... `radio-b6`
(`data_builders.families`); each is `draw_bN` (the scene: beam, noise, sources, labels) followed by
`simulate` (render, add noise, box every source). The lower-level API serves detection training and
the app:

    >>> rng = np.random.default_rng(0)
    >>> record = sample_b6(rng, 128, "b6-000001")           # an FR-I or FR-II at the centre
    >>> beam, rms = Beam(6.0), 30e-6                          # 12" beam at 2"/px, 30 uJy/beam
    >>> sources = compact_population(rng, 128, beam, rms) + [fr2_source(rng, 64, 64, 80, beam, rms)]
    >>> field = render_field(sources, 128, beam, rms, rng)    # .image (1, H, W), .model, .boxes
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import numpy as np
import scipy.fft
from scipy import ndimage

from data_builders.records import Box, Record
from data_builders.sim.psf import correlated_noise, gaussian_kernel

SOURCE_CLASSES: tuple[str, ...] = (
    "compact",
    "extended",
    "diffuse",
    "diffuse-large",
    "fr-i",
    "fr-ii",
    "ring-artefact",
    "peculiar",
)
CP_CLASSES: tuple[str, ...] = ("1C-1P", "1C-2P", "1C-3P", "2C-2P", "2C-3P", "3C-3P")
DETECTION_SNR = 3.0  # boxes, components and peaks are all defined on the noiseless model above 3 sigma
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
MIN_SIZE, MAX_SIZE = 32, 2048

Range = tuple[float, float]


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1]))


def _loguniform(rng: np.random.Generator, r: Range) -> float:
    return float(np.exp(rng.uniform(np.log(r[0]), np.log(r[1]))))


class _Ranges:
    """Mixin for parameter dataclasses: every (lo, hi) field must have lo <= hi."""

    def __post_init__(self):
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, tuple) and len(v) == 2 and not v[0] <= v[1]:
                raise ValueError(f"{type(self).__name__}.{f.name}: need lo <= hi, got {v}")


# ----------------------------------------------------------------------------- surveys, beams, noise


@dataclass(frozen=True)
class Beam:
    """Elliptical Gaussian restoring beam in pixels; position angle from the x axis towards +y."""

    fwhm_major_px: float
    fwhm_minor_px: float | None = None
    pa_deg: float = 0.0

    def __post_init__(self):
        minor = self.fwhm_minor_px or self.fwhm_major_px
        if not 0 < minor <= self.fwhm_major_px:
            raise ValueError(f"need 0 < fwhm_minor <= fwhm_major, got {self}")

    @property
    def minor(self) -> float:
        return self.fwhm_minor_px or self.fwhm_major_px

    @property
    def cov(self) -> tuple[float, float, float]:
        """(cxx, cyy, cxy) in px^2."""
        return _cov(self.fwhm_major_px / FWHM_PER_SIGMA, self.minor / FWHM_PER_SIGMA, np.deg2rad(self.pa_deg))

    @property
    def sigma(self) -> float:
        """Geometric-mean sigma in px (for the approximately circular parts: rings, ridges)."""
        return float(np.sqrt(self.fwhm_major_px * self.minor)) / FWHM_PER_SIGMA

    @property
    def area_px(self) -> float:
        """Beam solid angle 2 pi sigma_maj sigma_min in px: Jy/beam = Jy/px * area_px."""
        return float(2.0 * np.pi * self.fwhm_major_px * self.minor / FWHM_PER_SIGMA**2)

    def kernel(self) -> np.ndarray:
        return gaussian_kernel(self.fwhm_major_px, self.minor, self.pa_deg)


@dataclass(frozen=True)
class Survey(_Ranges):
    """Pixel scale, restoring beam and noise of a survey; beam and rms are drawn per image."""

    name: str
    pixel_scale_arcsec: float
    beam_fwhm_px: Range
    beam_axis_ratio: Range  # minor / major
    rms_ujy: Range  # log-uniform, uJy/beam

    def draw_beam(self, rng: np.random.Generator) -> Beam:
        major = _uniform(rng, self.beam_fwhm_px)
        return Beam(major, major * _uniform(rng, self.beam_axis_ratio), _uniform(rng, (0.0, 180.0)))

    def draw_rms(self, rng: np.random.Generator) -> float:
        return _loguniform(rng, self.rms_ujy) * 1e-6


SURVEYS: dict[str, Survey] = {
    # ASKAP EMU: ~12-15" restoring beam, 2"/px cells, ~25-30 uJy/beam; MeerKAT (MGCLS, SMGPS) ~7.5" at
    # 1.1-1.5"/px and ~5-20 uJy/beam: together ~5-8 px beams and 15-60 uJy/beam at 2"/px.
    "askap": Survey("askap", 2.0, (5.0, 8.0), (0.8, 1.0), (15.0, 60.0)),
    # VLA FIRST: 5.4" beam at 1.8"/px is a 3 px FWHM (6.4" x 5.4" in the south), rms ~0.15 mJy/beam.
    "first": Survey("first", 1.8, (3.0, 3.6), (0.85, 1.0), (120.0, 200.0)),
}


# ----------------------------------------------------------------------------- source primitives


def _cov(sig_major, sig_minor, pa_rad):
    """Covariance (cxx, cyy, cxy) of a Gaussian with the given sigmas and position angle (broadcasts)."""
    c, s = np.cos(pa_rad), np.sin(pa_rad)
    a2, b2 = np.square(sig_major), np.square(sig_minor)
    return a2 * c * c + b2 * s * s, a2 * s * s + b2 * c * c, (a2 - b2) * c * s


def gaussians(x, y, flux, fwhm_major=0.0, fwhm_minor=None, pa_rad=0.0) -> np.ndarray:
    """Intrinsic (unconvolved) Gaussian components as a (K, 6) array: x, y [px], flux [Jy], cxx, cyy, cxy."""
    fwhm_minor = fwhm_major if fwhm_minor is None else fwhm_minor
    x, y, flux, a, b, pa = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(v, float)) for v in (x, y, flux, fwhm_major, fwhm_minor, pa_rad))
    )
    cxx, cyy, cxy = _cov(a / FWHM_PER_SIGMA, b / FWHM_PER_SIGMA, pa)
    return np.stack([x, y, flux, cxx, cyy, cxy], axis=1)


def blobs(x, y, peak, beam: Beam, fwhm_major=0.0, fwhm_minor=None, pa_rad=0.0) -> np.ndarray:
    """Like `gaussians`, but each component's flux set so that its beam-convolved peak is `peak` Jy/beam."""
    g = gaussians(x, y, 1.0, fwhm_major, fwhm_minor, pa_rad)
    g[:, 2] = np.asarray(peak, float) / _peak_per_flux(g, beam)
    return g


def _peak_per_flux(g: np.ndarray, beam: Beam) -> np.ndarray:
    """Convolved peak (Jy/beam) per Jy: sqrt(det B / det(C + B))."""
    bxx, byy, bxy = beam.cov
    det = (g[:, 3] + bxx) * (g[:, 4] + byy) - (g[:, 5] + bxy) ** 2
    return np.sqrt((bxx * byy - bxy**2) / det)


@dataclass(frozen=True)
class Ring:
    """A ring with a Gaussian radial profile, as seen through the beam (an ORC, one ripple of an artefact).

    The radial sigma after convolution is sqrt(width^2 + beam sigma^2) and `peak` (Jy/beam, may be
    negative) is the convolved ridge brightness. The azimuthal factor is
    a0 + m1 cos(t - phi1) + mn cos(n (t - phin)), each harmonic damped by the beam at small radii;
    a0 = 0, n > 0 gives radial spokes. `axis_ratio` < 1 squashes the ring along `pa_deg` + 90.
    """

    x: float
    y: float
    radius: float
    width: float
    peak: float
    axis_ratio: float = 1.0
    pa_deg: float = 0.0
    a0: float = 1.0
    m1: float = 0.0
    phi1_deg: float = 0.0
    n: int = 0
    mn: float = 0.0
    phin_deg: float = 0.0


@dataclass(frozen=True)
class Texture:
    """Multiplicative log-normal texture exp(s g - s^2/2), g a power-law Gaussian random field smoothed
    by the beam (so the product stays beam-smooth); `seed` makes it reproducible from the description."""

    seed: int
    slope: float  # power spectrum P(k) ~ k^-slope; larger is smoother
    strength: float  # s: standard deviation of the log-brightness


@dataclass
class RadioSource:
    """One labelled source: Gaussian components, rings and an optional texture, all in pixels."""

    label: str
    gaussians: np.ndarray  # (K, 6): x, y, flux [Jy], cxx, cyy, cxy of the intrinsic components
    rings: tuple[Ring, ...] = ()
    texture: Texture | None = None
    params: dict = field(default_factory=dict)  # what was drawn, e.g. {"morphology": "wat", ...}

    def __post_init__(self):
        if self.label not in SOURCE_CLASSES:
            raise ValueError(f"unknown source class {self.label!r}; valid: {SOURCE_CLASSES}")
        self.gaussians = np.asarray(self.gaussians, float).reshape(-1, 6)
        self.rings = tuple(self.rings)

    @property
    def is_single_gaussian(self) -> bool:
        return len(self.gaussians) == 1 and not self.rings and self.texture is None


# ----------------------------------------------------------------------------- rendering

# Stamp half-sizes grow geometrically so that components of similar size are evaluated in one batch.
_HALF_SIZES = np.unique(np.round(2.0 * 1.25 ** np.arange(40)).astype(int))


def _add_gaussians(plane: np.ndarray, g: np.ndarray, beam: Beam, floor: float) -> None:
    """Add the beam-convolved components to `plane` (H, W), each on a stamp reaching down to `floor`."""
    if len(g) == 0:
        return
    height, width = plane.shape
    bxx, byy, bxy = beam.cov
    cxx, cyy, cxy = g[:, 3] + bxx, g[:, 4] + byy, g[:, 5] + bxy
    det = cxx * cyy - cxy**2
    peak = g[:, 2] * np.sqrt((bxx * byy - bxy**2) / det)
    # exponent of each convolved component: a dx^2 + b dx dy + c dy^2 (inverse covariance)
    a, bb, c = (v.astype(np.float32)[:, None, None] for v in (-0.5 * cyy / det, cxy / det, -0.5 * cxx / det))
    reach = np.sqrt(2.0 * np.log(np.maximum(np.abs(peak) / floor, np.e**4.5)))  # in sigmas, >= 3
    half = np.ceil(reach * np.sqrt(np.maximum(cxx, cyy)))
    bucket = _HALF_SIZES[np.minimum(np.searchsorted(_HALF_SIZES, half), len(_HALF_SIZES) - 1)]
    peak32 = peak.astype(np.float32)[:, None, None]
    for h in np.unique(bucket):
        k = np.flatnonzero(bucket == h)
        if 2 * h + 1 >= max(height, width):  # a stamp as large as the image: use the whole grid
            dx = (np.arange(width) + 0.5 - g[k, 0:1]).astype(np.float32)[:, None, :]
            dy = (np.arange(height) + 0.5 - g[k, 1:2]).astype(np.float32)[:, :, None]
            plane += (peak32[k] * np.exp(a[k] * dx * dx + bb[k] * dx * dy + c[k] * dy * dy)).sum(0)
            continue
        ix, iy = np.floor(g[k, 0]).astype(int) - h, np.floor(g[k, 1]).astype(int) - h  # stamp corners
        off = np.arange(2 * h + 1)
        dx = (ix[:, None] + off + 0.5 - g[k, 0:1]).astype(np.float32)[:, None, :]  # (k, 1, S)
        dy = (iy[:, None] + off + 0.5 - g[k, 1:2]).astype(np.float32)[:, :, None]  # (k, S, 1)
        val = peak32[k] * np.exp(a[k] * dx * dx + bb[k] * dx * dy + c[k] * dy * dy)  # (k, S, S)
        for v, x0, y0 in zip(val, ix, iy, strict=True):  # add each stamp, clipped to the image
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + 2 * h + 1, width), min(y0 + 2 * h + 1, height)
            if xa < xb and ya < yb:
                plane[ya:yb, xa:xb] += v[ya - y0 : yb - y0, xa - x0 : xb - x0]


def _add_rings(plane: np.ndarray, rings: tuple[Ring, ...], beam: Beam) -> None:
    height, width = plane.shape
    sb = beam.sigma
    for r in rings:
        sig = np.hypot(r.width, sb)
        reach = r.radius / min(r.axis_ratio, 1.0) + 5.0 * sig
        x0, x1 = max(int(r.x - reach), 0), min(int(r.x + reach) + 1, width)
        y0, y1 = max(int(r.y - reach), 0), min(int(r.y + reach) + 1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - r.x)[None, :]
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - r.y)[:, None]
        c, s = np.cos(np.deg2rad(r.pa_deg)), np.sin(np.deg2rad(r.pa_deg))
        u, v = c * dx + s * dy, (-s * dx + c * dy) / r.axis_ratio
        rad = np.sqrt(u * u + v * v) + 1e-3
        value = np.exp(-0.5 * ((rad - r.radius) / sig) ** 2)
        if r.m1 or r.mn:
            theta = np.arctan2(v, u)
            angular = np.full_like(rad, r.a0)
            if r.m1:
                angular += r.m1 * np.cos(theta - np.deg2rad(r.phi1_deg)) * np.exp(-0.5 * (sb / rad) ** 2)
            if r.mn:
                damp = np.exp(-0.5 * (r.n * sb / rad) ** 2)  # the beam smooths harmonic n at radius rad
                angular += r.mn * np.cos(r.n * (theta - np.deg2rad(r.phin_deg))) * damp
            value *= angular
        elif r.a0 != 1.0:
            value *= r.a0
        plane[y0:y1, x0:x1] += (r.peak * value).astype(np.float32)


@functools.lru_cache(maxsize=8)  # a source is rendered twice when it is built to a size, then in its field
def _texture(texture: Texture, shape: tuple[int, int], beam: Beam) -> np.ndarray:
    """The texture's multiplicative field on a grid (read-only): white noise drawn directly in Fourier
    space, shaped by the power law and the beam's transfer function (so it is smooth on the beam scale)."""
    height, width = shape
    spec = np.random.default_rng(texture.seed).standard_normal((2, height, width // 2 + 1), dtype=np.float32)
    ky = np.fft.fftfreq(height).astype(np.float32)[:, None]
    kx = np.fft.rfftfreq(width).astype(np.float32)[None, :]
    k2 = kx * kx + ky * ky + np.float32(1.0 / max(shape)) ** 2
    amplitude = k2 ** np.float32(-texture.slope / 4.0) * np.exp(
        np.float32(-2.0 * np.pi**2 * beam.sigma**2) * k2
    )
    amplitude[0, 0] = 0.0  # zero mean: the envelope sets the brightness
    g = scipy.fft.irfft2((spec[0] + 1j * spec[1]).astype(np.complex64) * amplitude, s=shape)
    g *= np.float32(1.0 / max(float(g.std()), 1e-30))
    s = np.float32(texture.strength)
    out = np.exp(s * g - 0.5 * s * s)
    out.setflags(write=False)
    return out


def render_source(source: RadioSource, size: int, beam: Beam, floor: float = 1e-9) -> np.ndarray:
    """Noiseless beam-convolved image (size, size) of one source in Jy/beam; stamps cut below `floor`."""
    plane = np.zeros((size, size), np.float32)
    _add_gaussians(plane, source.gaussians, beam, floor)
    _add_rings(plane, source.rings, beam)
    if source.texture is not None:
        plane *= _texture(source.texture, (size, size), beam)
    return plane


def render_model(sources: list[RadioSource], size: int, beam: Beam, floor: float = 1e-9) -> np.ndarray:
    """Noiseless beam-convolved image of all sources (Jy/beam)."""
    plane = np.zeros((size, size), np.float32)
    simple = [s.gaussians for s in sources if s.is_single_gaussian]
    if simple:
        _add_gaussians(plane, np.concatenate(simple), beam, floor)
    for s in sources:
        if not s.is_single_gaussian:
            plane += render_source(s, size, beam, floor)
    return plane


@dataclass
class RenderedField:
    """What `render_field` returns: the image, the noiseless model, and per boxed source its box, size
    and peak."""

    image: np.ndarray  # (1, H, W) float32, Jy/beam, with noise
    model: np.ndarray  # (H, W) float32, noiseless
    boxes: tuple[Box, ...]  # one per source whose model exceeds 3 sigma somewhere, in source order
    box_source: tuple[int, ...]  # index into `sources` of each box
    las_px: tuple[float, ...]  # largest extent (Feret diameter) of each boxed source above 3 sigma
    peak: tuple[float, ...]  # peak of each boxed source's model, Jy/beam
    masks: tuple[
        np.ndarray, ...
    ] = ()  # with masks=True: (H, W) bool, where each boxed source is above 3 sigma


_FERET_DIRS = np.stack(
    [np.cos(np.linspace(0, np.pi, 16, endpoint=False)), np.sin(np.linspace(0, np.pi, 16, endpoint=False))]
)


def _feret(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    proj = np.stack([xs, ys], axis=1).astype(np.float32) @ _FERET_DIRS
    return float((proj.max(0) - proj.min(0)).max() + 1.0)


def render_field(
    sources: list[RadioSource],
    size: int,
    beam: Beam,
    rms: float,
    rng: np.random.Generator,
    masks: bool = False,
) -> RenderedField:
    """Render sources (beam-convolved), add beam-correlated noise of std `rms`, and box every source.

    A box is tight around where the source's own noiseless model exceeds 3 rms in absolute value (ring
    artefacts are negative in places), clipped to the image; with `masks`, that region itself is kept
    too (instance masks for segmentation; pixel centres inside a compact source's 3-sigma ellipse).
    """
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    if not rms > 0:
        raise ValueError(f"rms must be positive (Jy/beam), got {rms}")
    floor, thresh = 0.01 * rms, DETECTION_SNR * rms
    model = np.zeros((size, size), np.float32)
    found: dict[int, tuple[Box, float, float]] = {}
    regions: dict[int, np.ndarray] = {}
    simple = [i for i, s in enumerate(sources) if s.is_single_gaussian]
    if simple:
        g = np.concatenate([sources[i].gaussians for i in simple])
        _add_gaussians(model, g, beam, floor)
        bxx, byy, bxy = beam.cov
        peak = g[:, 2] * _peak_per_flux(g, beam)
        k2 = 2.0 * np.log(np.maximum(np.abs(peak) / thresh, 1.0))  # the 3-sigma ellipse is q <= k2
        hx, hy = np.sqrt(k2 * (g[:, 3] + bxx)), np.sqrt(k2 * (g[:, 4] + byy))
        cxx, cyy, cxy = g[:, 3] + bxx, g[:, 4] + byy, g[:, 5] + bxy
        major = np.sqrt(0.5 * (cxx + cyy) + np.sqrt(0.25 * (cxx - cyy) ** 2 + cxy**2))
        for j, i in enumerate(simple):
            x0, x1 = max(g[j, 0] - hx[j], 0.0), min(g[j, 0] + hx[j], float(size))
            y0, y1 = max(g[j, 1] - hy[j], 0.0), min(g[j, 1] + hy[j], float(size))
            if k2[j] > 0 and x1 > x0 and y1 > y0:
                label = sources[i].label
                found[i] = (Box(label, x0, y0, x1, y1), float(2 * np.sqrt(k2[j]) * major[j]), float(peak[j]))
                if masks:
                    regions[i] = _ellipse_mask(size, g[j, 0], g[j, 1], cxx[j], cyy[j], cxy[j], k2[j])
    for i, s in enumerate(sources):
        if s.is_single_gaussian:
            continue
        plane = render_source(s, size, beam, floor)
        model += plane
        mask = np.abs(plane) > thresh
        if not mask.any():
            continue
        cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
        box = Box(s.label, float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        found[i] = (box, _feret(mask), float(plane.max()))
        if masks:
            regions[i] = mask
    image = model + correlated_noise(rng, (size, size), beam.kernel(), rms)
    order = sorted(found)
    return RenderedField(
        image=image[None].astype(np.float32),
        model=model,
        boxes=tuple(found[i][0] for i in order),
        box_source=tuple(order),
        las_px=tuple(found[i][1] for i in order),
        peak=tuple(found[i][2] for i in order),
        masks=tuple(regions[i] for i in order) if masks else (),
    )


def _ellipse_mask(size: int, x: float, y: float, cxx: float, cyy: float, cxy: float, k2: float) -> np.ndarray:
    """Pixels whose centre lies in {d : d' C^-1 d <= k2} around (x, y); at least the pixel holding (x, y)."""
    mask = np.zeros((size, size), bool)
    reach_x, reach_y = np.sqrt(k2 * cxx), np.sqrt(k2 * cyy)
    cols = np.arange(max(int(x - reach_x), 0), min(int(x + reach_x) + 1, size))
    rows = np.arange(max(int(y - reach_y), 0), min(int(y + reach_y) + 1, size))
    dx, dy = cols[None, :] + 0.5 - x, rows[:, None] + 0.5 - y
    q = (cyy * dx**2 - 2 * cxy * dx * dy + cxx * dy**2) / (cxx * cyy - cxy**2)
    if rows.size and cols.size:
        mask[np.ix_(rows, cols)] = q <= k2
    mask[min(max(int(y), 0), size - 1), min(max(int(x), 0), size - 1)] = True
    return mask


# ----------------------------------------------------------------------------- building blocks


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _path(x0: float, y0: float, angle: float, length: float, turn: np.ndarray):
    """A curve from (x0, y0) leaving at `angle` (rad) and turning by `turn` (rad, sampled uniformly along it).

    Returns x, y and the arc length s at each of len(turn) samples.
    """
    n = len(turn)
    ds = length / (n - 1)
    a = angle + turn
    x = x0 + np.concatenate([[0.0], np.cumsum(np.cos(a[:-1]) * ds)])
    y = y0 + np.concatenate([[0.0], np.cumsum(np.sin(a[:-1]) * ds)])
    return x, y, np.linspace(0.0, length, n)


def _chain(x, y, s, fwhm, ridge, beam: Beam, spacing: float = 1.0) -> np.ndarray:
    """Gaussian components along a path whose beam-convolved ridge brightness is `ridge` (Jy/beam).

    `fwhm` is the intrinsic width along the path. Components sit `spacing` convolved sigmas apart: the
    ripple of a sum of Gaussians spaced d apart is ~2 exp(-2 pi^2 sigma^2 / d^2), 5e-9 at one sigma, so
    the ridge is smooth (no spurious peaks). A line of flux density lam (Jy/px) and
    convolved width sigma_t has a ridge of lam * beam_area / (sqrt(2 pi) sigma_t) Jy/beam.
    """
    sig_t = np.sqrt((np.asarray(fwhm) / FWHM_PER_SIGMA) ** 2 + beam.sigma**2)
    steps = np.diff(s) / (spacing * 0.5 * (sig_t[1:] + sig_t[:-1]))
    n = np.concatenate([[0.0], np.cumsum(steps)])
    at = np.arange(0.0, n[-1] + 1e-9)
    at = np.append(at, n[-1]) if n[-1] - at[-1] > 0.25 else at  # reach the end of the path
    sk = np.interp(at, n, s)
    xk, yk, fk, rk, tk = (np.interp(sk, s, v) for v in (x, y, fwhm, ridge, sig_t))
    flux = rk * np.sqrt(2.0 * np.pi) * tk * (spacing * tk) / beam.area_px
    keep = flux > 0
    return gaussians(xk[keep], yk[keep], flux[keep], fk[keep])


def _angle_between(a: float, b: float) -> float:
    """Angle in degrees between two directions given as angles in radians."""
    return float(np.rad2deg(np.arccos(np.clip(np.cos(a - b), -1.0, 1.0))))


# ----------------------------------------------------------------------------- compact sources


@dataclass(frozen=True)
class CompactParams(_Ranges):
    # Peak S/N from a detection limit of 5 sigma to bright sources of thousands of sigma. Source counts
    # N(>S) ~ S^-slope: Euclidean (1.5) for bright sources, flatter (~0.8-1.0) in the sub-mJy regime.
    snr: Range = (5.0, 5000.0)
    count_slope: float = 0.9
    # Sources per (128 px)^2 at 2"/px (256" x 256" = 0.005 deg^2): EMU, ~1300 deg^-2 above 5 sigma,
    # gives ~6.5; deeper MeerKAT fields more.
    density: Range = (3.0, 12.0)
    size_beams: float = 0.35  # intrinsic FWHM ~ |N(0, this)| beams: most are unresolved


def compact_source(x, y, peak, beam: Beam, fwhm=0.0, axis_ratio=1.0, pa_rad=0.0) -> RadioSource:
    """A point-like or barely resolved Gaussian with the given convolved peak (Jy/beam)."""
    g = blobs(x, y, peak, beam, fwhm, fwhm * axis_ratio, pa_rad)
    return RadioSource("compact", g, params={"morphology": "compact"})


def compact_population(
    rng: np.random.Generator,
    size: int,
    beam: Beam,
    rms: float,
    p: CompactParams = CompactParams(),
    n: int | None = None,
    snr: Range | None = None,
) -> list[RadioSource]:
    """Background compact sources, uniform on the field; `n` defaults to a Poisson draw from the density
    (at least one)."""
    if n is None:
        n = max(1, int(rng.poisson(_loguniform(rng, p.density) * (size / 128.0) ** 2)))
    lo, hi = snr or p.snr
    u = rng.random(n)
    peak = lo * (1.0 - u * (1.0 - (hi / lo) ** -p.count_slope)) ** (-1.0 / p.count_slope) * rms
    x, y = rng.uniform(0, size, n), rng.uniform(0, size, n)
    fwhm = np.abs(rng.normal(0.0, p.size_beams, n)) * beam.fwhm_major_px
    g = blobs(x, y, peak, beam, fwhm, fwhm * rng.uniform(0.5, 1.0, n), rng.uniform(0, np.pi, n))
    return [RadioSource("compact", g[i : i + 1], params={"morphology": "compact"}) for i in range(n)]


# ----------------------------------------------------------------------------- radio galaxies


@dataclass(frozen=True)
class FRIParams(_Ranges):
    core_snr: Range = (20.0, 3000.0)  # core peak S/N (log-uniform): FR-I cores are the brightest part
    jet_to_core: Range = (0.15, 0.6)  # brightest jet ridge / core peak
    sidedness: Range = (1.0, 3.0)  # jet / counter-jet brightness (relativistic beaming near the core)
    arm_asymmetry: Range = (0.75, 1.0)  # shorter / longer jet
    opening_deg: Range = (15.0, 45.0)  # full opening angle: the jets widen with distance
    decay_scale: Range = (0.15, 0.5)  # ridge ~ (1 + s / (scale L))^-index beyond the flaring point
    decay_index: Range = (0.8, 1.5)
    plume_snr: Range = (6.0, 30.0)  # ridge S/N of the outer plumes, at most 60 % of the inner jet
    flare: Range = (0.0, 1.5)  # extra widening of the outer half (plumes)
    wat_angle_deg: Range = (70.0, 150.0)  # angle between the tails of a wide-angle tail (180: straight)
    nat_angle_deg: Range = (10.0, 60.0)  # ... of a narrow-angle tail
    wiggle_deg: Range = (0.0, 8.0)


# Per bend: range of the fraction of the jet where it starts to bend, of the fraction over which it
# bends, jet length / LAS (tails fold back, so they are longer than half the LAS), and a factor on the
# opening angle and flaring (tailed sources keep narrower tails).
_BENDS: dict[str, tuple[Range, Range, float, float]] = {
    "straight": ((0.1, 0.35), (0.3, 0.6), 0.5, 1.0),
    "wat": ((0.1, 0.35), (0.3, 0.6), 0.55, 0.6),
    "nat": ((0.03, 0.15), (0.15, 0.35), 0.85, 0.35),
}


def fr1_source(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    las_px: float,
    beam: Beam,
    rms: float,
    bend: str = "straight",
    p: FRIParams = FRIParams(),
    label: str = "fr-i",
) -> RadioSource:
    """Edge-darkened FR-I: a bright core and two jets that fade and widen; `bend` straight, wat or nat."""
    angles = {"straight": 180.0, "wat": _uniform(rng, p.wat_angle_deg), "nat": _uniform(rng, p.nat_angle_deg)}
    if bend not in angles:
        raise ValueError(f"unknown bend {bend!r}; valid: {sorted(angles)}")
    b = beam.fwhm_major_px
    core = _loguniform(rng, p.core_snr) * rms
    theta = rng.uniform(0, 2 * np.pi)
    tail_side = rng.choice([-1.0, 1.0])  # the tails bend towards theta + tail_side * 90 deg
    turn_each = np.deg2rad(180.0 - angles[bend]) / 2.0
    onset, ramp, reach, widen = _BENDS[bend]
    onset, ramp = _uniform(rng, onset), _uniform(rng, ramp)
    jet = core * _uniform(rng, p.jet_to_core)
    side = np.array([1.0, 1.0 / _uniform(rng, p.sidedness)])[rng.permutation(2)]
    length = max(reach * las_px, 2.0 * b)  # the plumes fade out before the end
    lengths = np.array([length, length * _uniform(rng, p.arm_asymmetry)])[rng.permutation(2)]
    open_half = widen * np.deg2rad(_uniform(rng, p.opening_deg)) / 2.0
    scale, index, flare = (
        _uniform(rng, p.decay_scale),
        _uniform(rng, p.decay_index),
        widen * _uniform(rng, p.flare),
    )
    wiggle = np.deg2rad(_uniform(rng, p.wiggle_deg))
    parts = [blobs(x0, y0, core, beam)]
    ends = []
    for j in range(2):
        t = np.linspace(0.0, 1.0, 96)
        # jet j leaves at theta + j pi; turning by +-turn_each makes both tails lean towards the same side
        sign = tail_side * (1.0 if j == 0 else -1.0)
        turn = sign * turn_each * _smoothstep((t - onset) / ramp)
        turn = turn + wiggle * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 2 * np.pi))
        x, y, s = _path(x0, y0, theta + j * np.pi, lengths[j], turn)
        fwhm = (0.3 * b + 2.0 * s * np.tan(open_half)) * (1.0 + flare * _smoothstep((t - 0.5) / 0.5))
        rise = 1.0 - np.exp(-((s / (0.06 * lengths[j] + b)) ** 2))  # jets brighten at a flaring point
        inner = jet * side[j] * rise * (1.0 + s / (scale * lengths[j])) ** -index
        plume = min(_uniform(rng, p.plume_snr) * rms, 0.6 * jet * side[j]) * _smoothstep((t - 0.25) / 0.5)
        ridge = (inner + plume) * (1.0 - _smoothstep((t - 0.8) / 0.2))  # plumes fade out: edge-darkened
        parts.append(_chain(x, y, s, fwhm, ridge, beam))
        ends.append(theta + j * np.pi + turn[-1])
    params = {
        "morphology": {"straight": "fr-i", "wat": "wide-angle tail", "nat": "narrow-angle tail"}[bend],
        "bent_angle_deg": round(_angle_between(ends[0], ends[1]), 1),
        "core_snr": round(core / rms, 1),
    }
    return RadioSource(label, np.concatenate(parts), params=params)


@dataclass(frozen=True)
class FRIIParams(_Ranges):
    hotspot_snr: Range = (20.0, 2000.0)  # brighter hotspot's peak S/N (log-uniform)
    hotspot_ratio: Range = (0.3, 1.0)  # fainter / brighter hotspot
    hotspot_fwhm_beams: Range = (0.0, 0.7)  # intrinsic size: compact or barely resolved
    arm_asymmetry: Range = (0.7, 1.0)  # shorter / longer arm
    misalign_deg: Range = (0.0, 15.0)  # deviation of the two arms from a straight line
    curvature_deg: Range = (-10.0, 10.0)  # gentle bending of each arm
    lobe_length: Range = (0.35, 0.8)  # lobe length / arm length (the lobe grows back from the hotspot)
    lobe_width: Range = (0.2, 0.55)  # lobe FWHM / arm length
    lobe_fraction: Range = (0.1, 0.5)  # lobe-head ridge / hotspot peak ...
    lobe_snr: Range = (6.0, 20.0)  # ... but at least this S/N (and at most half the hotspot)
    core_prob: float = 0.6
    core_to_hotspot: Range = (0.02, 0.5)  # core peak / fainter hotspot: FR-II cores are faint
    jet_prob: float = 0.4
    jet_snr: Range = (1.5, 5.0)  # ridge S/N of the narrow jets (often invisible)
    double_hotspot_prob: float = 0.2


def _lobe(rng, x, y, s, head: float, width: float, ridge0: float, beam: Beam) -> np.ndarray:
    """A lobe grown back from the hotspot at the end of the path (x, y, s) over arm fraction 1 - head."""
    length = s[-1]
    u = np.clip((length - s) / max(length * (1.0 - head), 1e-6), 0.0, None)[::-1]  # 0 at the hotspot
    keep = u <= 1.0
    xs, ys, ss = x[::-1][keep], y[::-1][keep], (length - s[::-1])[keep]
    u = u[keep]
    dx, dy = np.gradient(xs), np.gradient(ys)
    norm = np.hypot(dx, dy) + 1e-9
    wobble = width * 0.12 * np.sin(np.pi * u * rng.uniform(1.0, 3.0) + rng.uniform(0, 2 * np.pi))
    xs, ys = xs - dy / norm * wobble, ys + dx / norm * wobble
    fwhm = width * (0.45 + 0.55 * _smoothstep(u / 0.35)) * (1.0 - 0.4 * _smoothstep((u - 0.6) / 0.4))
    ridge = ridge0 * (1.0 - 0.7 * u) * (1.0 - _smoothstep((u - 0.75) / 0.25))
    return _chain(xs, ys, ss, fwhm, ridge, beam)


def fr2_source(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    las_px: float,
    beam: Beam,
    rms: float,
    p: FRIIParams = FRIIParams(),
    label: str = "fr-ii",
    s_turn_deg: float = 0.0,
    theta: float | None = None,
) -> RadioSource:
    """Edge-brightened FR-II: hotspots at the outer ends of two lobes, a faint or absent core and jets.

    `s_turn_deg` bends both arms the same way round (an S/Z-shaped source, for the peculiar class);
    `theta` (rad) is the direction of the first arm, random by default.
    """
    b = beam.fwhm_major_px
    hs = _loguniform(rng, p.hotspot_snr) * rms
    peaks = np.array([hs, hs * _uniform(rng, p.hotspot_ratio)])[rng.permutation(2)]
    length = max(las_px / 2.0 - 0.5 * b, 1.5 * b)
    lengths = np.array([length, length * _uniform(rng, p.arm_asymmetry)])[rng.permutation(2)]
    theta = rng.uniform(0, 2 * np.pi) if theta is None else theta
    misalign = np.deg2rad(_uniform(rng, p.misalign_deg)) * rng.choice([-1.0, 1.0])
    width = _uniform(rng, p.lobe_width) * length
    head = 1.0 - _uniform(rng, p.lobe_length)
    parts, paths = [], []
    t = np.linspace(0.0, 1.0, 96)
    for j in range(2):
        turn = np.deg2rad(_uniform(rng, p.curvature_deg) + s_turn_deg) * t**2
        x, y, s = _path(x0, y0, theta + j * (np.pi + misalign), lengths[j], turn)
        paths.append((x, y, s))
        end_angle = theta + j * (np.pi + misalign) + turn[-1]
        hs_fwhm = _uniform(rng, p.hotspot_fwhm_beams) * b
        parts.append(blobs(x[-1], y[-1], peaks[j], beam, hs_fwhm, hs_fwhm * rng.uniform(0.5, 1.0), end_angle))
        lobe_peak = min(
            max(_uniform(rng, p.lobe_fraction) * peaks[j], _uniform(rng, p.lobe_snr) * rms), 0.5 * peaks[j]
        )
        parts.append(_lobe(rng, x, y, s, head, width * rng.uniform(0.8, 1.2), lobe_peak, beam))
        if rng.random() < p.double_hotspot_prob:  # a secondary hotspot behind and beside the primary
            back, aside = _uniform(rng, (0.08, 0.2)) * lengths[j], rng.choice([-1, 1]) * 0.15 * width
            hx = x[-1] - back * np.cos(end_angle) - aside * np.sin(end_angle)
            hy = y[-1] - back * np.sin(end_angle) + aside * np.cos(end_angle)
            parts.append(blobs(hx, hy, peaks[j] * _uniform(rng, (0.25, 0.6)), beam, 0.3 * b))
    params: dict = {"morphology": "fr-ii", "hotspot_snr": round(hs / rms, 1)}
    if rng.random() < p.core_prob:
        core = min(peaks) * _loguniform(rng, p.core_to_hotspot)
        if core > 3.0 * rms:
            parts.append(blobs(x0, y0, core, beam))
            params["core_snr"] = round(core / rms, 1)
    if rng.random() < p.jet_prob:
        jet = _uniform(rng, p.jet_snr) * rms
        for x, y, s in paths:
            ridge = jet * _smoothstep(s / (1.5 * b)) * (1.0 - _smoothstep((s / s[-1] - 0.75) / 0.2))
            parts.append(_chain(x, y, s, np.full_like(s, 0.2 * b), ridge, beam))
    return RadioSource(label, np.concatenate(parts), params=params)


@dataclass(frozen=True)
class ExtendedParams(_Ranges):
    peak_snr: Range = (8.0, 500.0)  # brightest part, log-uniform
    las_beams: Range = (1.5, 5.0)  # resolved but small: a few beams


def extended_source(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    beam: Beam,
    rms: float,
    p: ExtendedParams = ExtendedParams(),
) -> RadioSource:
    """A resolved source that is not a classical FR-I/II: a resolved disc, a core-jet, a small blended
    double or an irregular clump."""
    b = beam.fwhm_major_px
    peak = _loguniform(rng, p.peak_snr) * rms
    las = _uniform(rng, p.las_beams) * b
    pa = rng.uniform(0, np.pi)
    kind = str(rng.choice(["resolved", "core-jet", "double", "irregular"]))
    if kind == "resolved":
        g = blobs(x0, y0, peak, beam, las / 2, las / 2 * rng.uniform(0.3, 1.0), pa)
        if rng.random() < 0.5:
            g = np.concatenate([g, blobs(x0, y0, peak * rng.uniform(0.3, 1.0), beam)])
    elif kind == "core-jet":
        x, y, s = _path(x0, y0, pa, las, np.deg2rad(rng.uniform(-20, 20)) * np.linspace(0, 1, 48) ** 2)
        ridge = peak * rng.uniform(0.15, 0.5) * (1.0 - _smoothstep((s / las - 0.7) / 0.3))
        jet = _chain(x, y, s, 0.3 * b + 0.25 * s, ridge, beam)
        g = np.concatenate([blobs(x0, y0, peak, beam), jet])
    elif kind == "double":
        d = np.array([-0.5, 0.5]) * las
        f = rng.uniform(0.3, 1.0, 2) * peak
        f[rng.integers(2)] = peak
        g = blobs(x0 + d * np.cos(pa), y0 + d * np.sin(pa), f, beam, rng.uniform(0.3, 1.0, 2) * b)
    else:
        n = int(rng.integers(3, 7))
        r, a = rng.uniform(0, las / 2, n), rng.uniform(0, 2 * np.pi, n)
        f = peak * rng.uniform(0.3, 1.0, n)
        g = blobs(x0 + r * np.cos(a), y0 + r * np.sin(a), f, beam, rng.uniform(0.3, 1.2, n) * b)
    return RadioSource("extended", g, params={"morphology": f"extended {kind}"})


# ----------------------------------------------------------------------------- diffuse emission


@dataclass(frozen=True)
class DiffuseParams(_Ranges):
    # Halo- or relic-like: "a few to tens of beams across", at most 0.3 of the field (larger is
    # diffuse-large), low surface brightness.
    size_beams: Range = (3.0, 20.0)
    max_field_fraction: float = 0.3
    peak_snr: Range = (4.0, 12.0)
    texture_strength: Range = (0.2, 0.5)
    texture_slope: Range = (2.5, 3.5)
    relic_prob: float = 0.4


def diffuse_source(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    size: int,
    beam: Beam,
    rms: float,
    p: DiffuseParams = DiffuseParams(),
) -> RadioSource:
    """A halo-like (round, patchy) or relic-like (elongated arc, filamentary) low-brightness source."""
    b = beam.fwhm_major_px
    extent = min(_loguniform(rng, p.size_beams) * b, p.max_field_fraction * size)
    extent = max(extent, 2.5 * b)
    peak = _uniform(rng, p.peak_snr) * rms
    texture = Texture(
        int(rng.integers(2**31)), _uniform(rng, p.texture_slope), _uniform(rng, p.texture_strength)
    )
    if rng.random() < p.relic_prob:
        radius = extent * rng.uniform(0.6, 2.0)  # curvature radius of the arc
        span = extent / radius
        a = rng.uniform(0, 2 * np.pi) + np.linspace(-span / 2, span / 2, 64)
        cx, cy = x0 - radius * np.cos(a[32]), y0 - radius * np.sin(a[32])
        x, y = cx + radius * np.cos(a), cy + radius * np.sin(a)
        s = radius * (a - a[0])
        u = s / s[-1]
        fwhm = extent * rng.uniform(0.08, 0.2) * (0.6 + 0.4 * np.sin(np.pi * u))
        ridge = peak * (0.3 + 0.7 * np.sin(np.pi * u) ** 0.5)
        g = _chain(x, y, s, fwhm, ridge, beam)
        kind = "relic"
    else:
        n = int(rng.integers(3, 7))
        r, a = rng.uniform(0, extent / 4, n), rng.uniform(0, 2 * np.pi, n)
        sizes = extent * rng.uniform(0.3, 0.6, n)
        g = blobs(
            x0 + r * np.cos(a),
            y0 + r * np.sin(a),
            1.0,
            beam,
            sizes,
            sizes * rng.uniform(0.6, 1.0, n),
            rng.uniform(0, np.pi, n),
        )
        g = _scale_to_peak(g, peak, beam, x0, y0, extent)
        kind = "halo"
    src = RadioSource("diffuse", g, texture=texture, params={"morphology": f"diffuse {kind}"})
    return _brighten_to_span(src, 2.0 * b, size, beam, rms)  # the texture must not hide it


def _scale_to_peak(g: np.ndarray, peak: float, beam: Beam, x0: float, y0: float, extent: float) -> np.ndarray:
    """Rescale the fluxes so that the convolved sum peaks at `peak`, measured on a coarse local grid."""
    r = np.linspace(-extent / 2, extent / 2, 24)
    gx, gy = np.meshgrid(x0 + r, y0 + r)
    bxx, byy, bxy = beam.cov
    cxx, cyy, cxy = g[:, 3] + bxx, g[:, 4] + byy, g[:, 5] + bxy
    det = cxx * cyy - cxy**2
    dx, dy = gx[None] - g[:, 0, None, None], gy[None] - g[:, 1, None, None]
    q = (cyy[:, None, None] * dx**2 - 2 * cxy[:, None, None] * dx * dy + cxx[:, None, None] * dy**2) / det[
        :, None, None
    ]
    model = np.einsum("k,kij->ij", g[:, 2] * _peak_per_flux(g, beam), np.exp(-0.5 * q))
    out = g.copy()
    out[:, 2] *= peak / max(float(model.max()), 1e-30)
    return out


@dataclass(frozen=True)
class LargeDiffuseParams(_Ranges):
    extent: Range = (0.45, 0.9)  # extent / field size: more than a third of the field
    peak_snr: Range = (3.0, 6.0)  # of the smooth envelope: very faint per beam, visible by its area
    n_blobs: Range = (3, 7)
    texture_strength: Range = (0.4, 0.8)  # patchy and filamentary
    texture_slope: Range = (2.2, 3.0)
    shell_prob: float = 0.3  # a large arc/shell (supernova-remnant-like) instead of patchy emission


def large_diffuse_source(
    rng: np.random.Generator, size: int, beam: Beam, rms: float, p: LargeDiffuseParams = LargeDiffuseParams()
) -> RadioSource:
    """Very faint emission spanning a large part of the field (patchy cloud or a partial shell)."""
    extent = _uniform(rng, p.extent) * size
    x0, y0 = rng.uniform(0.3, 0.7, 2) * size
    peak = _uniform(rng, p.peak_snr) * rms
    texture = Texture(
        int(rng.integers(2**31)), _uniform(rng, p.texture_slope), _uniform(rng, p.texture_strength)
    )
    if rng.random() < p.shell_prob:
        radius = extent / 2
        ring = Ring(
            x0, y0, radius, radius * rng.uniform(0.08, 0.2), peak, rng.uniform(0.7, 1.0), rng.uniform(0, 180),
            a0=0.6, m1=0.6, phi1_deg=rng.uniform(0, 360),
        )  # fmt: skip
        inner = blobs(x0, y0, 0.35 * peak, beam, radius * 1.2)
        src = RadioSource("diffuse-large", inner, (ring,), texture, {"morphology": "large diffuse shell"})
    else:
        n = int(rng.integers(p.n_blobs[0], p.n_blobs[1] + 1))
        r, a = rng.uniform(0, extent / 2.5, n), rng.uniform(0, 2 * np.pi, n)
        sizes = extent * rng.uniform(0.35, 0.6, n)
        x, y = x0 + r * np.cos(a), y0 + r * np.sin(a)
        g = blobs(x, y, 1.0, beam, sizes, sizes * rng.uniform(0.5, 1.0, n), rng.uniform(0, np.pi, n))
        g = _scale_to_peak(g, peak, beam, x0, y0, extent)  # the texture is tied to the grid: built in place
        src = RadioSource("diffuse-large", g, texture=texture, params={"morphology": "large diffuse cloud"})
    return _brighten_to_span(src, size / 3.0, size, beam, rms)


def _brighten_to_span(src: RadioSource, span: float, size: int, beam: Beam, rms: float) -> RadioSource:
    """Scale `src` up (in steps of 20 %) until its 3-sigma region spans at least `span` px (measured at
    3.5 sigma, so that moving the source by a fraction of a pixel keeps it true)."""
    plane = render_source(src, size, beam, floor=0.02 * rms)
    factor = 1.0
    for factor in 1.2 ** np.arange(15):
        mask = plane * factor > (DETECTION_SNR + 0.5) * rms
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if len(rows) and max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 >= span:
            break
    src.gaussians[:, 2] *= factor
    src.rings = tuple(replace(r, peak=r.peak * factor) for r in src.rings)
    src.params.update({k: round(v * factor, 1) for k, v in src.params.items() if k.endswith("_snr")})
    return src


# ----------------------------------------------------------------------------- artefacts


@dataclass(frozen=True)
class RingArtefactParams(_Ranges):
    # Calibration/deconvolution errors around a very bright source: concentric ripples of alternating
    # sign, a few per cent of the source peak, sometimes with radial spokes (ASKAP/MeerKAT sidelobes).
    ring_snr: Range = (6.0, 40.0)  # |brightest ripple| / rms (log-uniform)
    ring_fraction: Range = (0.003, 0.03)  # |brightest ripple| / source peak
    min_source_snr: float = 300.0
    first_radius_beams: Range = (1.3, 2.5)
    wavelength_beams: Range = (2.0, 4.0)  # distance between rings of the same sign
    decay_wavelengths: Range = (0.5, 2.0)  # e-folding of the ripple amplitude
    max_rings: int = 10
    axis_ratio: Range = (0.8, 1.0)
    spoke_prob: float = 0.5
    n_spokes: Range = (3, 8)


def ring_artefact(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    beam: Beam,
    rms: float,
    p: RingArtefactParams = RingArtefactParams(),
) -> tuple[RadioSource, RadioSource]:
    """A very bright compact source and the ring artefact around it: (source, artefact)."""
    b = beam.fwhm_major_px
    amp = _loguniform(rng, p.ring_snr) * rms
    source_peak = max(amp / _loguniform(rng, p.ring_fraction), p.min_source_snr * rms)
    wavelength = _uniform(rng, p.wavelength_beams) * b
    r1 = _uniform(rng, p.first_radius_beams) * b
    decay = _uniform(rng, p.decay_wavelengths) * wavelength
    q, pa = _uniform(rng, p.axis_ratio), rng.uniform(0, 180)
    sign = -1.0 if rng.random() < 0.7 else 1.0  # the first ripple is usually a negative bowl
    radii = r1 + 0.5 * wavelength * np.arange(p.max_rings)
    amps = sign * (-1.0) ** np.arange(p.max_rings) * np.exp(-(radii - r1) / decay)
    amps = amps[: max(3, int(np.sum(np.abs(amps) * amp > rms)))]
    width = wavelength / 6.0
    # the rings overlap once convolved: scale so that the brightest ripple of the sum is `amp`
    sig = np.hypot(width, beam.sigma)
    r = np.linspace(0, radii[len(amps) - 1] + 3 * sig, 256)
    profile = (amps[:, None] * np.exp(-0.5 * ((r[None] - radii[: len(amps), None]) / sig) ** 2)).sum(0)
    amps *= amp / max(float(np.abs(profile).max()), 1e-30)
    rings = [Ring(x0, y0, radii[k], width, amps[k], q, pa) for k in range(len(amps))]
    n_spokes = 0
    if rng.random() < p.spoke_prob:
        n_spokes = int(rng.integers(p.n_spokes[0], p.n_spokes[1] + 1))
        extent = radii[len(amps) - 1]
        rings.append(
            Ring(x0, y0, 0.5 * extent, 0.3 * extent, amp * rng.uniform(0.4, 0.9), q, pa, a0=0.0,
                 n=n_spokes, mn=1.0, phin_deg=rng.uniform(0, 360))
        )  # fmt: skip
    source = compact_source(x0, y0, source_peak, beam, rng.uniform(0, 0.3) * b)
    params = {
        "morphology": "ring artefact",
        "ring_snr": round(amp / rms, 1),
        "n_rings": float(len(amps)),
        "n_spokes": float(n_spokes),
        "ring_spacing_px": round(wavelength / 2, 2),
    }
    return source, RadioSource("ring-artefact", np.zeros((0, 6)), tuple(rings), params=params)


# ----------------------------------------------------------------------------- peculiar objects


@dataclass(frozen=True)
class PeculiarParams(_Ranges):
    kinds: tuple[str, ...] = ("orc", "x-shaped", "s-shaped", "head-tail")
    # Odd radio circles: ~70-80" rings (ORC 1: 80" across at EMU's 13" beam), faint and thick-edged.
    orc_radius_beams: Range = (2.0, 6.0)
    orc_width: Range = (0.1, 0.25)  # intrinsic ring sigma / radius
    orc_snr: Range = (5.0, 20.0)
    wing_snr: Range = (5.0, 15.0)  # X-shaped: ridge S/N of the wings (no hotspots) ...
    wing_fraction: Range = (0.03, 0.15)  # ... or this fraction of the hotspot peak if brighter
    wing_angle_deg: Range = (35.0, 90.0)  # between the wings and the active lobes
    s_turn_deg: Range = (60.0, 110.0)  # S/Z-shaped: how far each arm turns, the same way round
    tail_angle_deg: Range = (0.0, 30.0)  # head-tail: angle between the two tails


def peculiar_source(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    las_px: float,
    beam: Beam,
    rms: float,
    kind: str | None = None,
    p: PeculiarParams = PeculiarParams(),
) -> RadioSource:
    """A rare morphology, boxed as "peculiar": odd radio circle, X- or S-shaped, or a head-tail."""
    kind = kind or str(rng.choice(p.kinds))
    b = beam.fwhm_major_px
    if kind == "orc":
        radius = min(_uniform(rng, p.orc_radius_beams) * b, 0.45 * las_px)
        peak = _uniform(rng, p.orc_snr) * rms
        q, pa = rng.uniform(0.75, 1.0), rng.uniform(0, 180)
        ring = Ring(
            x0,
            y0,
            radius,
            _uniform(rng, p.orc_width) * radius,
            peak,
            q,
            pa,
            m1=rng.uniform(0, 0.5),
            phi1_deg=rng.uniform(0, 360),
        )
        rings = [ring]
        if rng.random() < 0.25:  # ORC 1 has an inner ring
            rings.append(
                Ring(
                    x0,
                    y0,
                    radius * rng.uniform(0.4, 0.6),
                    ring.width * 0.7,
                    peak * rng.uniform(0.4, 0.8),
                    q,
                    pa,
                )
            )
        g = np.zeros((0, 6))
        if rng.random() < 0.5:  # the host galaxy
            g = blobs(x0, y0, rng.uniform(5, 30) * rms, beam)
        texture = Texture(int(rng.integers(2**31)), 3.0, rng.uniform(0.15, 0.35))
        return RadioSource("peculiar", g, tuple(rings), texture, {"morphology": "odd radio circle"})
    if kind == "x-shaped":
        theta = rng.uniform(0, 2 * np.pi)
        src = fr2_source(rng, x0, y0, las_px, beam, rms, theta=theta, label="peculiar")
        wing_angle = theta + np.deg2rad(_uniform(rng, p.wing_angle_deg)) * rng.choice([-1.0, 1.0])
        hotspot = src.params["hotspot_snr"] * rms
        ridge0 = max(_uniform(rng, p.wing_snr) * rms, _uniform(rng, p.wing_fraction) * hotspot)
        parts = [src.gaussians]
        for j in range(2):
            length = las_px / 2 * rng.uniform(0.5, 0.9)
            x, y, s = _path(
                x0,
                y0,
                wing_angle + j * np.pi,
                length,
                np.deg2rad(rng.uniform(-15, 15)) * np.linspace(0, 1, 64) ** 2,
            )
            u = s / length
            ridge = ridge0 * _smoothstep(u / 0.2) * (1.0 - _smoothstep((u - 0.6) / 0.4))
            parts.append(_chain(x, y, s, 0.15 * las_px * (0.5 + u), ridge, beam))
        return RadioSource("peculiar", np.concatenate(parts), params={"morphology": "x-shaped radio galaxy"})
    if kind == "s-shaped":
        turn = _uniform(rng, p.s_turn_deg) * rng.choice([-1.0, 1.0])
        # narrow lobes along the whole arm and visible jets trace the S
        fr2 = FRIIParams(lobe_width=(0.1, 0.25), lobe_length=(0.6, 0.95), jet_prob=1.0, jet_snr=(4.0, 10.0))
        src = fr2_source(rng, x0, y0, las_px * 1.15, beam, rms, p=fr2, label="peculiar", s_turn_deg=turn)
        src.params = {"morphology": "s-shaped radio galaxy", "bent_angle_deg": round(abs(turn), 1)}
        return src
    if kind == "head-tail":
        fr1 = FRIParams(nat_angle_deg=p.tail_angle_deg, opening_deg=(5.0, 20.0), plume_snr=(4.0, 12.0))
        src = fr1_source(rng, x0, y0, las_px * 1.6, beam, rms, bend="nat", p=fr1, label="peculiar")
        src.params = {**src.params, "morphology": "head-tail radio galaxy"}
        return src
    raise ValueError(f"unknown peculiar kind {kind!r}; valid: {p.kinds}")


# ----------------------------------------------------------------------------- C/P morphologies (radio-b2)


@dataclass(frozen=True)
class CPParams(_Ranges):
    peak_snr: Range = (15.0, 400.0)  # brightest peak, log-uniform
    min_peak_snr: float = 10.0  # every counted peak at least this bright
    blob_fwhm_beams: Range = (0.3, 2.5)  # intrinsic size of each peaked blob (lobe, hotspot)
    single_fwhm_beams: Range = (0.0, 5.0)  # 1C-1P: unresolved to a few beams
    # Margins so that noise does not change the counts: inside a component the model stays above
    # `connect_snr`; between components it drops below `gap_snr`; two peaks of one component are at
    # least `min_separation_beams` apart with a dip to below `max_dip` of the lower one and at least
    # `min_dip_snr` deep.
    connect_snr: float = 5.5
    gap_snr: float = 1.5
    max_dip: float = 0.75
    min_dip_snr: float = 4.0
    min_separation_beams: float = 1.5
    max_tries: int = 500


_EIGHT = np.ones((3, 3), bool)


def _islands_and_peaks(model: np.ndarray, threshold: float):
    """8-connected islands above `threshold` (labels, count) and the local maxima (ys, xs) inside them."""
    labels, n = ndimage.label(model > threshold, structure=_EIGHT)
    ys, xs = np.nonzero((model == ndimage.maximum_filter(model, size=3)) & (labels > 0))
    return labels, n, ys, xs


def count_components_and_peaks(model: np.ndarray, threshold: float) -> tuple[int, int]:
    """Radio Galaxy Zoo counts: C islands above `threshold` (8-connected) and P local maxima inside them."""
    _, n, ys, _ = _islands_and_peaks(model, threshold)
    return n, len(ys)


def _cp_robust(snr: np.ndarray, beam: Beam, n_c: int, n_p: int, p: CPParams) -> bool:
    """Counts are (n_c, n_p) at 3 sigma and stay so within the noise margins of `p`."""
    rows, cols = np.flatnonzero((snr > p.gap_snr).any(1)), np.flatnonzero((snr > p.gap_snr).any(0))
    height, width = snr.shape
    if len(rows) == 0 or min(rows[0], cols[0]) == 0 or rows[-1] == height - 1 or cols[-1] == width - 1:
        return False  # empty, or touching the border
    snr = snr[rows[0] - 1 : rows[-1] + 2, cols[0] - 1 : cols[-1] + 2]
    labels, n, ys, xs = _islands_and_peaks(snr, DETECTION_SNR)
    if n != n_c or any(
        ndimage.label(snr > t, structure=_EIGHT)[1] != n_c for t in (p.gap_snr, p.connect_snr)
    ):
        return False
    if len(ys) != n_p or snr[ys, xs].min() < p.min_peak_snr:
        return False
    for i in range(n_p):
        for j in range(i + 1, n_p):
            if np.hypot(ys[i] - ys[j], xs[i] - xs[j]) < p.min_separation_beams * beam.fwhm_major_px:
                return False
            if labels[ys[i], xs[i]] == labels[ys[j], xs[j]]:
                t = np.linspace(0.0, 1.0, 64)
                line = ndimage.map_coordinates(
                    snr, [ys[i] + t * (ys[j] - ys[i]), xs[i] + t * (xs[j] - xs[i])], order=1
                )
                low = min(snr[ys[i], xs[i]], snr[ys[j], xs[j]])
                if line.min() > p.max_dip * low or low - line.min() < p.min_dip_snr:
                    return False
    return True


def _cp_layout(
    rng: np.random.Generator, n_c: int, n_p: int, size: int, unit: float
) -> tuple[list[float], list[tuple[int, int]], str]:
    """Offsets along the source axis (px from the centre) of the n_p peaked blobs, the pairs of blobs to
    join with a bridge, and the morphology. `unit` is a blob's convolved FWHM: blobs closer than ~2 units
    blend into one component, farther ones need a bridge, and 2.5 units apart they stay separate."""
    arm_max, span_max = 0.36 * size, 0.72 * size

    def draw(lo: float, hi: float, cap: float) -> float:
        return rng.uniform(lo * unit, max(min(hi * unit, cap), lo * unit * 1.01))

    def split(d: float) -> list[float]:
        f = rng.uniform(0.35, 0.65)
        return [d * f, -d * (1.0 - f)]

    if n_p == 1:
        return [0.0], [], "single"
    if (n_c, n_p) == (1, 2):
        d = draw(1.3, 6.0, span_max)
        bridged = d > 2.0 * unit
        return split(d), [(0, 1)] if bridged else [], "bridged double" if bridged else "blended double"
    if (n_c, n_p) == (2, 2):
        return split(draw(2.5, 100.0, span_max)), [], "double"
    if (n_c, n_p) == (1, 3):
        a1, a2 = draw(1.3, 5.0, arm_max), draw(1.3, 5.0, arm_max)
        return [0.0, a1, -a2], [(0, k) for k, a in ((1, a1), (2, a2)) if a > 2.0 * unit], "triple"
    if (n_c, n_p) == (3, 3):
        return [0.0, draw(2.5, 100.0, arm_max), -draw(2.5, 100.0, arm_max)], [], "triple with a detached core"
    if (n_c, n_p) == (2, 3):
        if rng.random() < 0.5:
            a1 = draw(1.3, 4.0, arm_max)
            bridge = [(0, 1)] if a1 > 2.0 * unit else []
            return [0.0, a1, -draw(2.5, 100.0, arm_max)], bridge, "triple with the core joined to one lobe"
        pos = split(draw(4.0, 100.0, span_max))
        return pos + [pos[0] - draw(1.3, 2.0, arm_max)], [], "double with a double-peaked lobe"
    raise ValueError(f"no C/P layout for {n_c}C-{n_p}P")


def cp_source(
    rng: np.random.Generator,
    label: str,
    x0: float,
    y0: float,
    size: int,
    beam: Beam,
    rms: float,
    p: CPParams = CPParams(),
) -> RadioSource:
    """A source with exactly C components and P peaks above 3 rms in its noiseless model ("2C-3P" ...).

    Layouts are drawn per class (blended or bridged doubles, triples with joined or detached cores,
    doubles with a double-peaked lobe), then counted; draws whose counts differ, or would flip under
    noise (see `CPParams`), are redrawn.
    """
    if label not in CP_CLASSES:
        raise ValueError(f"unknown C/P class {label!r}; valid: {CP_CLASSES}")
    n_c, n_p = int(label[0]), int(label[3])
    b = beam.fwhm_major_px
    for _ in range(p.max_tries):
        if n_p == 1:
            fwhm = np.array([_uniform(rng, p.single_fwhm_beams) * b])
        else:  # lobes and hotspots; the first blob of a triple is its core, compact
            fwhm = rng.uniform(*p.blob_fwhm_beams, n_p) * b
            fwhm[0] = rng.uniform(0.0, 0.7) * b if n_p == 3 else fwhm[0]
        pos, bridges, morphology = _cp_layout(rng, n_c, n_p, size, float(np.hypot(fwhm.mean(), b)))
        theta, bend = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.normal(0.0, 12.0))
        d = np.array(pos)
        angle = np.where(d >= 0, theta, theta + bend)
        x, y = x0 + d * np.cos(angle), y0 + d * np.sin(angle)
        top = _loguniform(rng, p.peak_snr) * rms
        peak = np.maximum(top * rng.uniform(0.3, 1.0, n_p), p.min_peak_snr * rms)
        peak[rng.integers(n_p)] = top
        ratio = rng.uniform(0.3, 1.0) if n_p == 1 else rng.uniform(0.4, 1.0, n_p)
        g = blobs(x, y, peak, beam, fwhm, fwhm * ratio, rng.uniform(0, np.pi, n_p))
        if n_p == 1:
            morphology = "compact" if fwhm[0] < 0.5 * b else "resolved single"
        parts = [g]
        for i, j in bridges:  # a ridge that is faintest half-way, so that it adds no peak of its own
            u = np.linspace(0.0, 1.0, 32)
            level = max(rng.uniform(0.25, 0.5) * min(peak[i], peak[j]), (p.connect_snr + 2.0) * rms)
            end = np.where(u < 0.5, peak[i], peak[j]) * 0.6  # rising to 60 % of each blob's peak
            ridge = level + (end - level) * (2.0 * u - 1.0) ** 2
            s = u * np.hypot(x[j] - x[i], y[j] - y[i])
            width = np.full_like(u, rng.uniform(0.2, 0.8) * b)
            parts.append(_chain(x[i] + u * (x[j] - x[i]), y[i] + u * (y[j] - y[i]), s, width, ridge, beam))
        src = RadioSource("compact" if morphology == "compact" else "extended", np.concatenate(parts))
        if _cp_robust(render_source(src, size, beam, floor=0.01 * rms) / rms, beam, n_c, n_p, p):
            src.params = {"morphology": morphology, "n_components": float(n_c), "n_peaks": float(n_p)}
            return src
    raise RuntimeError(
        f"could not draw a robust {label} source in {p.max_tries} tries (size {size}, beam {b:.1f} px)"
    )


# ----------------------------------------------------------------------------- scenes and samplers


@dataclass(frozen=True)
class FieldParams(_Ranges):
    galaxy_las_beams: Range = (8.0, 20.0)  # FR-I/II largest angular size in wide fields, beams (log-uniform)
    max_las_fraction: Range = (0.5, 0.85)  # ... and at most this fraction of the field
    bright_snr: Range = (300.0, 20000.0)  # bright compact sources (with or without ring artefacts)
    zoom_las_fraction: Range = (0.45, 0.9)  # source-zoomed images (radio-b6): LAS / image size
    compact: CompactParams = CompactParams()


@dataclass
class Scene:
    """What a record is drawn from: the survey, beam, noise, sources and the labels that follow from them."""

    family: str
    labels: tuple[str, ...]
    size: int
    survey: Survey
    beam: Beam
    rms: float
    sources: list[RadioSource]
    params: dict = field(default_factory=dict)


def _scene(rng: np.random.Generator, family: str, size: int, survey: str) -> Scene:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be in [{MIN_SIZE}, {MAX_SIZE}], got {size}")
    s = SURVEYS[survey]
    return Scene(family, (), size, s, s.draw_beam(rng), s.draw_rms(rng), [])


def _place(rng: np.random.Generator, size: int, radius: float, taken: list) -> tuple[float, float]:
    """A centre that keeps a disc of `radius` inside the field and apart from the discs in `taken`."""
    lo, hi = min(radius, size / 2), max(size - radius, size / 2)
    best, best_gap = (size / 2, size / 2), -np.inf
    for _ in range(30):
        x, y = rng.uniform(lo, hi, 2)
        gap = min((np.hypot(x - tx, y - ty) - 0.7 * (radius + tr) for tx, ty, tr in taken), default=np.inf)
        if gap > best_gap:
            best, best_gap = (float(x), float(y)), gap
        if gap >= 0:
            break
    taken.append((*best, radius))
    return best


def _extent(src: RadioSource) -> tuple[float, float, float]:
    """Centre (x, y) and half-size of the box around a source's component centres and rings."""
    pts = [src.gaussians[:, :2]] + [
        np.array([[r.x - r.radius, r.y - r.radius], [r.x + r.radius, r.y + r.radius]]) for r in src.rings
    ]
    pts = np.concatenate(pts)
    lo, hi = pts.min(0), pts.max(0)
    return float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2, float((hi - lo).max()) / 2


def _move(src: RadioSource, x: float, y: float) -> RadioSource:
    """Shift a source (in place) so that the centre of its extent lands on (x, y)."""
    cx, cy, _ = _extent(src)
    src.gaussians[:, 0] += x - cx
    src.gaussians[:, 1] += y - cy
    src.rings = tuple(replace(r, x=r.x + x - cx, y=r.y + y - cy) for r in src.rings)
    return src


def _place_source(rng: np.random.Generator, scene: Scene, src: RadioSource, taken: list) -> RadioSource:
    """Move a source built anywhere to a free place in the field where it fits, and add it to the scene."""
    radius = _extent(src)[2] + 0.75 * scene.beam.fwhm_major_px
    scene.sources.append(_move(src, *_place(rng, scene.size, radius, taken)))
    return src


def _galaxy_las(rng: np.random.Generator, scene: Scene, p: FieldParams) -> float:
    b = scene.beam.fwhm_major_px
    return min(_loguniform(rng, p.galaxy_las_beams) * b, _uniform(rng, p.max_las_fraction) * scene.size)


def _add_galaxy(
    rng: np.random.Generator, scene: Scene, kind: str, taken: list, p: FieldParams
) -> RadioSource:
    """An FR-I ("fr-i", "wat", "nat"), FR-II ("fr-ii") or other resolved source ("extended")."""
    beam, rms, c = scene.beam, scene.rms, scene.size / 2
    if kind == "extended":
        src = extended_source(rng, c, c, beam, rms)
    elif kind == "fr-ii":
        src = fr2_source(rng, c, c, _galaxy_las(rng, scene, p), beam, rms)
    else:
        bend = {"fr-i": "straight"}.get(kind, kind)
        src = fr1_source(rng, c, c, _galaxy_las(rng, scene, p), beam, rms, bend=bend)
    return _place_source(rng, scene, _visible(src, scene), taken)


def _visible(src: RadioSource, scene: Scene) -> RadioSource:
    """Centre a resolved source and brighten it if needed until its 3-sigma region spans 80 % of its
    extent, so that a faint galaxy labelled extended does not look like a compact source."""
    _move(src, scene.size / 2, scene.size / 2)
    return _brighten_to_span(src, 1.6 * _extent(src)[2], scene.size, scene.beam, scene.rms)


def _add_diffuse(
    rng: np.random.Generator, scene: Scene, taken: list, p: DiffuseParams = DiffuseParams()
) -> None:
    """A diffuse source, built in place (its texture is tied to the grid) where its largest size fits."""
    reach = min(p.size_beams[1] * scene.beam.fwhm_major_px, p.max_field_fraction * scene.size) / 2
    x, y = _place(rng, scene.size, reach, taken)
    scene.sources.append(diffuse_source(rng, x, y, scene.size, scene.beam, scene.rms, p))


def _add_background(rng: np.random.Generator, scene: Scene, p: FieldParams) -> None:
    scene.sources.extend(compact_population(rng, scene.size, scene.beam, scene.rms, p.compact))


def _add_bright(rng: np.random.Generator, scene: Scene, taken: list, p: FieldParams) -> None:
    x, y = _place(rng, scene.size, 4 * scene.beam.fwhm_major_px, taken)
    scene.sources.append(compact_source(x, y, _loguniform(rng, p.bright_snr) * scene.rms, scene.beam))


def _describe(scene: Scene) -> str:
    """The morphologies in the scene other than isolated compact sources, e.g. "fr-ii, diffuse halo"."""
    names = [s.params.get("morphology", s.label) for s in scene.sources]
    names = list(dict.fromkeys(n for n in names if n != "compact"))
    return ", ".join(names) if names else "compact sources only"


WIDE = FieldParams()
GALAXY_KINDS, GALAXY_P = ("fr-i", "wat", "nat", "fr-ii"), (0.25, 0.2, 0.15, 0.4)


def draw_b1(rng: np.random.Generator, size: int = 128, p: FieldParams = WIDE) -> Scene:
    """Wide field with extended, diffuse and/or large diffuse sources (multi-label), or compact only (NONE).

    NONE in 20 % of fields; otherwise each of the three is present with probability 0.4, redrawn until
    at least one is: each label ends up in ~41 % of fields.
    """
    scene = _scene(rng, "radio-b1", size, "askap")
    present = np.zeros(3, bool)
    if rng.random() >= 0.2:
        while not present.any():
            present = rng.random(3) < 0.4
    taken: list = []
    if present[2]:
        scene.sources.append(large_diffuse_source(rng, size, scene.beam, scene.rms))
    if present[0]:
        for _ in range(1 + int(rng.random() < 0.3)):
            kind = str(rng.choice(["fr-i", "wat", "fr-ii", "extended"], p=[0.25, 0.1, 0.35, 0.3]))
            _add_galaxy(rng, scene, kind, taken, p)
    if present[1]:
        _add_diffuse(rng, scene, taken)
    scene.labels = tuple(
        c for c, k in zip(("EXTENDED", "DIFFUSE", "DIFFUSE-LARGE"), present, strict=True) if k
    ) or ("NONE",)
    scene.params = {"morphology": _describe(scene)}
    _add_background(rng, scene, p)
    return scene


def draw_b2(rng: np.random.Generator, size: int = 128, p: CPParams = CPParams()) -> Scene:
    """FIRST-like source-zoomed image of one source of a uniformly drawn C/P class, at the centre."""
    scene = _scene(rng, "radio-b2", size, "first")
    label = CP_CLASSES[int(rng.integers(len(CP_CLASSES)))]
    x0, y0 = size / 2 + rng.uniform(-2, 2, 2)
    src = cp_source(rng, label, x0, y0, size, scene.beam, scene.rms, p)
    scene.sources, scene.labels, scene.params = [src], (label,), dict(src.params)
    return scene


def draw_b3(rng: np.random.Generator, size: int = 128, p: FieldParams = WIDE) -> Scene:
    """Wide field with (YES) or without (NO) an extended radio galaxy: FR-I, bent FR-I (WAT/NAT), FR-II.

    NO fields still hold bright compact sources (40 %) or diffuse emission (20 %), so that the task is
    about radio-galaxy morphology, not about brightness or extent alone.
    """
    scene = _scene(rng, "radio-b3", size, "askap")
    taken: list = []
    yes = rng.random() < 0.5
    if yes:
        for _ in range(1 + int(rng.random() < 0.15)):
            _add_galaxy(rng, scene, str(rng.choice(GALAXY_KINDS, p=GALAXY_P)), taken, p)
    else:
        if rng.random() < 0.4:
            _add_bright(rng, scene, taken, p)
        if rng.random() < 0.2:
            _add_diffuse(rng, scene, taken)
    scene.labels = ("YES",) if yes else ("NO",)
    galaxies = [s for s in scene.sources if s.label in ("fr-i", "fr-ii")]
    scene.params = {"morphology": _describe(scene), "n_radio_galaxies": float(len(galaxies))}
    if galaxies and "bent_angle_deg" in galaxies[0].params:
        scene.params["bent_angle_deg"] = galaxies[0].params["bent_angle_deg"]
    _add_background(rng, scene, p)
    return scene


def draw_b4(rng: np.random.Generator, size: int = 128, p: FieldParams = WIDE) -> Scene:
    """Wide field with (YES) or without (NO) a ring artefact around a bright source; half of the NO
    fields hold an equally bright source without rings."""
    scene = _scene(rng, "radio-b4", size, "askap")
    taken: list = []
    yes = rng.random() < 0.5
    if yes:
        x, y = _place(rng, size, 0.25 * size, taken)  # well inside, so that rings show on all sides
        scene.sources.extend(ring_artefact(rng, x, y, scene.beam, scene.rms))
    elif rng.random() < 0.5:
        _add_bright(rng, scene, taken, p)
    if rng.random() < 0.2:
        _add_galaxy(rng, scene, str(rng.choice(GALAXY_KINDS, p=GALAXY_P)), taken, p)
    scene.labels = ("YES",) if yes else ("NO",)
    scene.params = {"morphology": _describe(scene)}
    rings = [s for s in scene.sources if s.label == "ring-artefact"]
    if rings:
        scene.params.update({k: rings[0].params[k] for k in ("ring_snr", "n_rings", "n_spokes")})
    _add_background(rng, scene, p)
    return scene


def draw_b5(rng: np.random.Generator, size: int = 128, p: FieldParams = WIDE) -> Scene:
    """Wide field that is ORDINARY (compact sources only, 40 %), COMPLEX (extended, blended or diffuse
    structures, 40 %) or PECULIAR (a peculiar object, 20 %)."""
    scene = _scene(rng, "radio-b5", size, "askap")
    taken: list = []
    u = rng.random()
    label = "ORDINARY" if u < 0.4 else "COMPLEX" if u < 0.8 else "PECULIAR"
    if label == "PECULIAR":
        src = peculiar_source(rng, 0.0, 0.0, _galaxy_las(rng, scene, p), scene.beam, scene.rms)
        _place_source(rng, scene, _visible(src, scene), taken)
    if label == "COMPLEX" or (label == "PECULIAR" and rng.random() < 0.3):
        for _ in range(1 + int(rng.random() < 0.35)):
            kind = str(rng.choice(["fr-i", "wat", "fr-ii", "extended", "diffuse", "diffuse-large", "blend"]))
            if kind == "diffuse":
                _add_diffuse(rng, scene, taken)
            elif kind == "diffuse-large":
                scene.sources.append(large_diffuse_source(rng, size, scene.beam, scene.rms))
            elif kind == "blend":  # a chain of 2-4 compact sources 1-1.6 beams apart, blended together
                b = scene.beam.fwhm_major_px
                x, y = _place(rng, size, 3 * b, taken)
                for _ in range(int(rng.integers(2, 5))):
                    peak = _loguniform(rng, (10.0, 300.0)) * scene.rms
                    src = compact_source(x, y, peak, scene.beam, rng.uniform(0, 0.6) * b)
                    src.params["morphology"] = "blended compact sources"
                    scene.sources.append(src)
                    step, a = rng.uniform(1.0, 1.6) * b, rng.uniform(0, 2 * np.pi)
                    x, y = np.clip([x + step * np.cos(a), y + step * np.sin(a)], 1.0, size - 1.0)
            else:
                _add_galaxy(rng, scene, kind, taken, p)
    scene.labels = (label,)
    scene.params["morphology"] = _describe(scene)
    _add_background(rng, scene, p)
    return scene


def draw_b6(rng: np.random.Generator, size: int = 128, p: FieldParams = WIDE) -> Scene:
    """FIRST-like image centred on an FR-I (straight, or bent into a wide/narrow-angle tail) or an FR-II."""
    scene = _scene(rng, "radio-b6", size, "first")
    label = "FR-I" if rng.random() < 0.5 else "FR-II"
    x0, y0 = size / 2 + rng.uniform(-1.5, 1.5, 2)
    las = _uniform(rng, p.zoom_las_fraction) * size
    if label == "FR-I":
        bend = str(rng.choice(["straight", "wat", "nat"], p=[0.6, 0.3, 0.1]))
        src = fr1_source(rng, x0, y0, las, scene.beam, scene.rms, bend=bend)
    else:
        src = fr2_source(rng, x0, y0, las, scene.beam, scene.rms)
    _move(_visible(src, scene), x0, y0)  # centre the source's extent (a tailed source's core is off-centre)
    scene.sources, scene.labels, scene.params = [src], (label,), dict(src.params)
    radius = _extent(src)[2]
    for _ in range(int(rng.integers(0, 3))):  # unrelated faint compact sources away from the galaxy
        a, r = rng.uniform(0, 2 * np.pi), rng.uniform(radius + 3 * scene.beam.fwhm_major_px, size)
        x, y = x0 + r * np.cos(a), y0 + r * np.sin(a)
        brightest = max(src.params.get("core_snr", 0.0), src.params.get("hotspot_snr", 0.0))
        snr = min(_loguniform(rng, (5.0, 50.0)), 0.3 * brightest)  # fainter than the galaxy
        if 0 < x < size and 0 < y < size and snr >= 5.0:
            scene.sources.append(compact_source(x, y, snr * scene.rms, scene.beam))
    return scene


def simulate(scene: Scene, rng: np.random.Generator, record_id: str) -> Record:
    """Render a scene (noise from `rng`) into a Record with one box per source and caption parameters."""
    f = render_field(scene.sources, scene.size, scene.beam, scene.rms, rng)
    scale = scene.survey.pixel_scale_arcsec
    resolved = [
        las for b, las in zip(f.boxes, f.las_px, strict=True) if b.label not in ("compact", "ring-artefact")
    ]
    params = {
        "survey": scene.survey.name,
        "n_sources": float(len(f.boxes)),
        "n_compact": float(sum(b.label == "compact" for b in f.boxes)),
        "rms_ujy": round(scene.rms * 1e6, 2),
        "beam_fwhm_px": round(scene.beam.fwhm_major_px, 2),
        "beam_fwhm_arcsec": round(scene.beam.fwhm_major_px * scale, 2),
        "peak_snr": round(float(f.model.max()) / scene.rms, 1),
        "largest_angular_size_arcsec": round(max(resolved or f.las_px or [0.0]) * scale, 1),
        "has_ring": "yes" if any(s.label == "ring-artefact" for s in scene.sources) else "no",
        **scene.params,
    }
    return Record(
        id=record_id,
        image=f.image,
        domain="radio",
        family=scene.family,
        labels=scene.labels,
        bands=("I",),
        boxes=f.boxes,
        params=params,
        pixel_scale_arcsec=scale,
    )


def sample(
    draw: Callable[[np.random.Generator, int], Scene], rng: np.random.Generator, size: int, record_id: str
) -> Record:
    """One record of a family: the scene `draw(rng, size)` observed (a family's simulator, bound by partial)."""
    return simulate(draw(rng, size), rng, record_id)


sample_b1, sample_b2, sample_b3, sample_b4, sample_b5, sample_b6 = (
    functools.partial(sample, draw) for draw in (draw_b1, draw_b2, draw_b3, draw_b4, draw_b5, draw_b6)
)
