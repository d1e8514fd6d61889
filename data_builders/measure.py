"""Measurements on an image in the internal form that people and tools ask for."""

from __future__ import annotations

import numpy as np

from data_builders.stretch import background_stats


def significant(value: float, digits: int = 4) -> float:
    """`value` to `digits` significant figures: a radio noise of 4.6e-05 Jy stays 4.6e-05, not 0.0."""
    return float(f"{value:.{digits}g}")


def image_stats(image: np.ndarray, bands: tuple[str, ...] = ()) -> dict:
    """Size, bands, sigma-clipped background noise, peak and dynamic range (peak / noise) of (C, H, W)."""
    if image.ndim != 3:
        raise ValueError(f"expected (C, H, W), got shape {image.shape}")
    plane = image.mean(axis=0)
    background, noise = background_stats(plane)
    peak = float(plane.max())
    return {
        "width": int(image.shape[2]),
        "height": int(image.shape[1]),
        "bands": list(bands) or [f"b{i}" for i in range(image.shape[0])],
        "background": background,
        "noise": noise,
        "peak": peak,
        "dynamic_range": (peak - background) / noise if noise > 0 else float("inf"),
    }
