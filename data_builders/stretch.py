"""Stretches: from physical pixel values to what a model or a person sees.

Every stretch maps one 2-D plane to float32 in [0, 1]. `render_rgb` picks the right recipe per domain:
optical g,r,z through Lupton et al.'s asinh colour mapping; a radio plane through three different
stretches stacked as three channels, so that both the faint diffuse emission and the bright cores
survive the conversion to 8 bits (a single min-max stretch keeps only the brightest pixels).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from astropy.visualization import ZScaleInterval, make_lupton_rgb

Stretch = Callable[[np.ndarray], np.ndarray]


def _unit(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not hi > lo:
        return np.zeros_like(x, dtype=np.float32)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def background_stats(x: np.ndarray, sigma: float = 3.0, iters: int = 3) -> tuple[float, float]:
    """Median and standard deviation of the background, with sources sigma-clipped away.

    A plain median/MAD loop: astropy's `sigma_clipped_stats` does the same 20x slower on small stamps.
    """
    sample = x.ravel()[:: max(1, x.size // 16384)]  # a strided subsample is plenty for a background level
    med = float(np.median(sample))
    std = float(1.4826 * np.median(np.abs(sample - med)))
    for _ in range(iters):
        keep = sample[np.abs(sample - med) < sigma * max(std, 1e-12)]
        if keep.size < 16:
            break
        med, std = float(np.median(keep)), float(keep.std())
    return med, std


def linear(x: np.ndarray) -> np.ndarray:
    return _unit(x, float(x.min()), float(x.max()))


def percentile(x: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    low, high = np.percentile(x, [lo, hi])
    return _unit(x, float(low), float(high))


def asinh(x: np.ndarray, softening: float = 0.1) -> np.ndarray:
    """asinh of the percentile-normalised plane; `softening` sets where linear turns logarithmic."""
    y = percentile(x, 1.0, 99.9)
    return (np.arcsinh(y / softening) / np.arcsinh(1.0 / softening)).astype(np.float32)


def log(x: np.ndarray, a: float = 1000.0) -> np.ndarray:
    y = percentile(x, 1.0, 99.9)
    return (np.log1p(a * y) / np.log1p(a)).astype(np.float32)


def zscale(x: np.ndarray, contrast: float = 0.25) -> np.ndarray:
    """IRAF's zscale limits (as radio-llava and ds9 use), then linear."""
    lo, hi = ZScaleInterval(contrast=contrast).get_limits(x)
    return _unit(x, float(lo), float(hi))


def sigma_clip(x: np.ndarray, k: float = 3.0) -> np.ndarray:
    """Pixels below k sigma above the background set to zero, the rest linear up to the peak (seed 002)."""
    med, std = background_stats(x)
    floor = med + k * std
    return _unit(np.where(x < floor, floor, x), floor, float(x.max()))


STRETCHES: dict[str, Stretch] = {
    "linear": linear,
    "percentile": percentile,
    "asinh": asinh,
    "log": log,
    "zscale": zscale,
    "sigma_clip": sigma_clip,
}


def get_stretch(name: str) -> Stretch:
    if name not in STRETCHES:
        raise ValueError(f"unknown stretch {name!r}; valid: {sorted(STRETCHES)}")
    return STRETCHES[name]


def radio_to_rgb(plane: np.ndarray) -> np.ndarray:
    """One radio plane -> (3, H, W) in [0, 1]: noise-clipped linear, asinh and log of the same data."""
    med, std = background_stats(plane)
    peak = float(plane.max())
    floor = med + 1.0 * std  # clip the noise but keep faint diffuse emission in the log/asinh channels
    linear_ch = _unit(plane, med + 3.0 * std, peak)
    scaled = _unit(plane, floor, peak)
    asinh_ch = np.arcsinh(scaled / 0.02) / np.arcsinh(1.0 / 0.02)
    log_ch = np.log1p(1000.0 * scaled) / np.log1p(1000.0)
    return np.stack([linear_ch, asinh_ch, log_ch]).astype(np.float32)


def lupton_grz(image: np.ndarray, q: float = 8.0, stretch: float | None = None) -> np.ndarray:
    """(3, H, W) g,r,z fluxes -> (3, H, W) RGB in [0, 1] by Lupton et al. (2004) asinh colour mapping."""
    g, r, z = image
    stats = [background_stats(b) for b in image]
    med = [m for m, _ in stats]
    if stretch is None:
        # Scale to the bright end of the source, but never below ~10 sigma of the sky, so that in a
        # faint stamp the noise does not take the whole colour range.
        stretch = max(float(np.percentile(r - med[1], 99.5)) / 2.0, 10.0 * stats[1][1], 1e-6)
    rgb = make_lupton_rgb(z - med[2], r - med[1], g - med[0], minimum=0.0, stretch=stretch, Q=q)
    return np.moveaxis(rgb, -1, 0).astype(np.float32) / 255.0


DISPLAY_BANDS = ("R", "G", "B")


def render_rgb(
    image: np.ndarray,
    domain: str | None = None,
    bands: tuple[str, ...] | None = None,
    stretch: str | None = None,
) -> np.ndarray:
    """(C, H, W) image -> (H, W, 3) uint8 for display and as the model's input.

    Default recipe: an 8-bit RGB picture (bands R,G,B) passes through; radio (one plane) -> `radio_to_rgb`;
    optical g,r,z -> Lupton asinh; anything else -> the `percentile` stretch per plane.
    A named `stretch` applies that stretch to every plane instead.
    """
    if image.ndim != 3:
        raise ValueError(f"expected (C, H, W), got shape {image.shape}")
    channels = image.shape[0]
    if stretch is None and tuple(bands or ()) == DISPLAY_BANDS and float(image.max()) <= 255.0:
        return np.moveaxis(np.clip(np.round(image), 0, 255).astype(np.uint8), 0, -1)
    if stretch is not None:
        fn = get_stretch(stretch)
        planes = [fn(p) for p in (image if channels == 3 else image[:1])]
        rgb = np.stack(planes * (3 // len(planes)))
    elif channels == 1 and domain != "optical":
        rgb = radio_to_rgb(image[0])
    elif channels == 3 and domain == "optical":
        rgb = lupton_grz(image)
    elif channels in (1, 3):
        rgb = np.stack([percentile(p) for p in image] * (3 // channels))
    else:  # e.g. 2 or 4+ planes: show the first three or repeat the first
        planes = [percentile(p) for p in image[:3]]
        rgb = np.stack(planes if len(planes) == 3 else [planes[0]] * 3)
    return np.round(np.moveaxis(rgb, 0, -1) * 255.0).astype(np.uint8)
