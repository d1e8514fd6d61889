"""The classical source detector behind `detect_sources` until the LVM detection head lands: hysteresis
thresholding of the image against its sigma-clipped background, then connected components.

    detections = detect_threshold(image.data)     # (C, H, W) -> [Detection], brightest first

A pixel seeds a source above `seed_sigma` x noise and the source grows through connected pixels above
`grow_sigma` x noise (scikit-image's hysteresis threshold: compact sources keep their faint wings, noise
peaks need a strong seed). Components smaller than `min_pixels` are dropped. The score maps the peak
signal-to-noise to [0, 1] as snr / (snr + 10): 0.5 at S/N 10, 0.9 at S/N 90. It is not a classifier:
every detection is labelled "source".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

from data_builders.stretch import background_stats

NAME = "threshold+components (classical; not the LVM detection head)"


@dataclass(frozen=True)
class ThresholdConfig:
    seed_sigma: float = 5.0
    grow_sigma: float = 2.5
    min_pixels: int = 4
    max_detections: int = 200


@dataclass
class Detection:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, row 0 at the top, x1/y1 exclusive
    centroid: tuple[float, float]  # flux-weighted x, y
    peak_snr: float
    pixels: int
    score: float
    label: str = "source"


def detect_threshold(image: np.ndarray, config: ThresholdConfig = ThresholdConfig()) -> list[Detection]:
    if image.ndim != 3:
        raise ValueError(f"expected (C, H, W), got shape {image.shape}")
    plane = image.mean(axis=0)
    background, noise = background_stats(plane)
    if not noise > 0:  # a constant image: nothing stands out
        return []
    snr = (plane - background) / noise
    mask = apply_hysteresis_threshold(snr, config.grow_sigma, config.seed_sigma)
    labels, count = ndimage.label(mask)
    detections = []
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        member = labels[window] == index
        pixels = int(member.sum())
        if pixels < config.min_pixels:
            continue
        weights = np.where(member, np.clip(snr[window], 0, None), 0.0)
        ys, xs = np.indices(member.shape)
        total = weights.sum()
        peak = float(snr[window][member].max())
        detections.append(
            Detection(
                box=(window[1].start, window[0].start, window[1].stop, window[0].stop),
                centroid=(
                    float(window[1].start + (weights * xs).sum() / total),
                    float(window[0].start + (weights * ys).sum() / total),
                ),
                peak_snr=peak,
                pixels=pixels,
                score=peak / (peak + 10.0),
            )
        )
    detections.sort(key=lambda d: -d.peak_snr)
    return detections[: config.max_detections]
