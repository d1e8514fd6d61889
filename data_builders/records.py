"""The one record schema that every simulator and importer produces.

A `Record` is an image in the internal form (float32, (C, H, W)) with its labels, its per-source
bounding boxes and the physical parameters it was drawn from. Everything downstream (conversation
builders, datasets on disk, benchmarks) reads only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Domain = Literal["optical", "radio"]
DOMAINS: tuple[str, ...] = ("optical", "radio")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates: x to the right, y down, (x0, y0) inclusive corner."""

    label: str
    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self):
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise ValueError(f"empty box {self}")

    def normalised(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) as fractions of the image size, clipped to [0, 1]."""
        clip = lambda v: float(min(max(v, 0.0), 1.0))  # noqa: E731
        return clip(self.x0 / width), clip(self.y0 / height), clip(self.x1 / width), clip(self.y1 / height)

    def to_dict(self) -> dict:
        return {"label": self.label, "x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1}


@dataclass
class Record:
    """One labelled image.

    `image` is in physical-like units (optical: flux per band with sky noise; radio: Jy/beam), not yet
    stretched; `data_builders.stretch.render_rgb` turns it into what a model or a person sees.
    `labels` use the class names of the record's family (see `data_builders.families`).
    `params` holds the physical parameters the image was drawn from (for captions and debugging).
    """

    id: str
    image: np.ndarray  # (C, H, W) float32
    domain: Domain
    family: str
    labels: tuple[str, ...]
    bands: tuple[str, ...]
    boxes: tuple[Box, ...] = ()
    params: dict = field(default_factory=dict)
    origin: str = "sim"
    pixel_scale_arcsec: float | None = None

    def __post_init__(self):
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; valid: {DOMAINS}")
        if self.image.ndim != 3 or self.image.dtype != np.float32:
            raise ValueError(
                f"record {self.id}: image must be float32 (C, H, W), got {self.image.dtype} {self.image.shape}"
            )
        if self.image.shape[0] != len(self.bands):
            raise ValueError(f"record {self.id}: {self.image.shape[0]} channels but bands {self.bands}")
        self.labels = tuple(self.labels)
        self.boxes = tuple(self.boxes)

    @property
    def height(self) -> int:
        return self.image.shape[1]

    @property
    def width(self) -> int:
        return self.image.shape[2]
