"""Adaptive crop around the main source (seed 000's effective-area crop).

The main source is the connected region above `k` sigma of the background that contains the centre (or,
failing that, the brightest such region). The crop is the square around it with a margin, resized to
`out_size`, so small and large galaxies fill the stamp alike.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from data_builders.stretch import background_stats


def main_source_box(image: np.ndarray, k: float = 2.0) -> tuple[int, int, int, int] | None:
    """(y0, x0, y1, x1) of the main source in a (C, H, W) image, or None when nothing stands out."""
    plane = image.mean(axis=0)
    med, std = background_stats(plane)
    mask = ndimage.binary_opening(plane > med + k * std, iterations=1)
    regions, count = ndimage.label(mask)
    if count == 0:
        return None
    h, w = plane.shape
    label = regions[h // 2, w // 2]
    if label == 0:
        sums = ndimage.sum_labels(plane - med, regions, index=np.arange(1, count + 1))
        label = int(np.argmax(sums)) + 1
    ys, xs = np.nonzero(regions == label)
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def adaptive_crop(
    image: np.ndarray, out_size: int, margin: float = 0.25, k: float = 2.0, min_fraction: float = 0.25
) -> np.ndarray:
    """Square crop around the main source, `margin` of its size on each side, resized to out_size."""
    if image.ndim != 3:
        raise ValueError(f"expected (C, H, W), got shape {image.shape}")
    _, h, w = image.shape
    box = main_source_box(image, k)
    if box is None:
        y0, x0, y1, x1 = 0, 0, h, w
    else:
        y0, x0, y1, x1 = box
    side = max(y1 - y0, x1 - x0) * (1 + 2 * margin)
    side = int(np.clip(side, min_fraction * min(h, w), min(h, w)))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top = int(np.clip(round(cy - side / 2), 0, h - side))
    left = int(np.clip(round(cx - side / 2), 0, w - side))
    crop = image[:, top : top + side, left : left + side]
    return resize(
        crop,
        (image.shape[0], out_size, out_size),
        order=1,
        anti_aliasing=side > out_size,
        preserve_range=True,
    ).astype(np.float32)
