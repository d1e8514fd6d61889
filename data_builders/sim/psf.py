"""Point-spread functions and the convolution the simulators share.

Optical seeing is a Moffat profile (seed 000 uses FWHM 2-8 px for its restoration task); a radio
interferometer's restoring beam is an elliptical Gaussian, and its noise is white noise convolved with
that beam (so noise is correlated on the beam scale, as in real radio maps).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def moffat_kernel(fwhm: float, beta: float = 3.5, size: int | None = None) -> np.ndarray:
    """Normalised circular Moffat PSF: (1 + (r/alpha)^2)^-beta with alpha set by the FWHM."""
    if fwhm <= 0 or beta <= 1:
        raise ValueError(f"need fwhm > 0 and beta > 1, got fwhm={fwhm}, beta={beta}")
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    size = size or int(2 * np.ceil(2.5 * fwhm) + 1)
    r = np.arange(size, dtype=np.float32) - (size - 1) / 2
    rr2 = r[None, :] ** 2 + r[:, None] ** 2
    kernel = (1.0 + rr2 / alpha**2) ** (-beta)
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_kernel(fwhm_major: float, fwhm_minor: float | None = None, pa_deg: float = 0.0) -> np.ndarray:
    """Normalised elliptical Gaussian (a restoring beam); position angle from the x axis, anticlockwise."""
    fwhm_minor = fwhm_minor or fwhm_major
    sx, sy = fwhm_major / 2.3548, fwhm_minor / 2.3548
    half = int(np.ceil(3.0 * max(sx, sy)))
    r = np.arange(-half, half + 1, dtype=np.float32)
    x, y = np.meshgrid(r, r)
    c, s = np.cos(np.deg2rad(pa_deg)), np.sin(np.deg2rad(pa_deg))
    u, v = c * x + s * y, -s * x + c * y
    kernel = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return (kernel / kernel.sum()).astype(np.float32)


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Same-size FFT convolution of a (H, W) plane or a (C, H, W) stack with one 2-D kernel."""
    kernel = kernel[None] if image.ndim == 3 else kernel
    return fftconvolve(image, kernel, mode="same", axes=(-2, -1)).astype(np.float32)


def correlated_noise(
    rng: np.random.Generator, shape: tuple[int, int], beam: np.ndarray, rms: float
) -> np.ndarray:
    """White noise convolved with the beam, rescaled so that its standard deviation is `rms`."""
    noise = convolve(rng.standard_normal(shape, dtype=np.float32), beam)
    return (noise * (rms / max(float(noise.std()), 1e-12))).astype(np.float32)
