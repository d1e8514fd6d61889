"""Simulated detection fields with exact boxes, for training and scoring the detectors of vlm.heads.detect.

    fields = simulate_fields("radio", 1000, split="train")     # [Field]: picture, boxes, class indices

- radio: radio-b1's ASKAP/MeerKAT-like wide fields (seed 002's MGCLS/RGZ-like setting), 128 px: tens
  of compact sources around extended radio galaxies and diffuse emission. Classes: compact; extended
  (FR-I, FR-II, other resolved galaxies, peculiar objects); diffuse (halo/relic-like and large diffuse
  emission). Ring artefacts are not sources and carry no box.
- optical: optical-field g,r,z survey cutouts, 256 px, with strong lenses made four times as common as
  in the default mix (seed 000's lens finding in wide fields). Classes: galaxy (every other
  morphology), lens, star. Satellite trails and ghosts carry no box.

Pictures are rendered as every model here sees them (data_builders.stretch.render_rgb). Train and test
fields come from separate random streams, so no test field is a training field.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from data_builders.sim import optical, radio
from data_builders.stretch import render_rgb
from vlm.heads.detect import OPTICAL_CLASSES, RADIO_CLASSES

RADIO_CLASS_OF = {
    "compact": "compact",
    **dict.fromkeys(("extended", "fr-i", "fr-ii", "peculiar"), "extended"),
    **dict.fromkeys(("diffuse", "diffuse-large"), "diffuse"),
}
OPTICAL_CLASS_OF = {
    "lens": "lens",
    "star": "star",
    # every other galaxy morphology; artefacts (trails, ghosts) are not sources
    **{c: "galaxy" for c in optical.SOURCE_CLASSES if c not in ("lens", "star", "artefact")},
}
DOMAINS = {  # domain -> (family, field size, classes, simulator label -> class)
    "radio": ("radio-b1", 128, RADIO_CLASSES, RADIO_CLASS_OF),
    "optical": ("optical-field", 256, OPTICAL_CLASSES, OPTICAL_CLASS_OF),
}
SPLITS = {"train": 0, "test": 1}
MIN_BOX_SIDE = 2.0  # px: a box clipped to a sliver at the field's edge is not a findable source


def lens_rich_config() -> optical.OpticalSimConfig:
    """The default optical mix with lenses at 20 % of sources instead of 5 % (taken from the stars)."""
    wide = optical.DEFAULT_CONFIG.wide_field
    prob = dict(zip(wide.classes, wide.class_prob, strict=True))
    prob["star"] -= 0.15
    prob["lens"] += 0.15
    return replace(optical.DEFAULT_CONFIG, wide_field=replace(wide, class_prob=tuple(prob.values())))


@dataclass
class Field:
    picture: np.ndarray  # (H, W, 3) uint8
    boxes: np.ndarray  # (n, 4) float32 x0, y0, x1, y1
    labels: np.ndarray  # (n,) int64, 1-based indices into the domain's classes (0 is background)
    masks: np.ndarray | None = None  # (n, H, W) uint8 instance masks (radio), for Mask R-CNN


def simulate_field(
    domain: str, index: int, split: str = "train", seed: int = 0, size: int | None = None
) -> Field:
    """Field `index` of a split; `size` overrides the domain's field size (same sky density, more sky)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown detection domain {domain!r}; valid: {list(DOMAINS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
    _, default_size, classes, class_of = DOMAINS[domain]
    size = size or default_size
    rng = np.random.default_rng([seed, SPLITS[split], index])
    if domain == "optical":
        record = optical.sample_field(rng, size, f"{split}-{index}", lens_rich_config())
        image, bands, boxes, regions = record.image, record.bands, record.boxes, None
    else:  # radio-b1's simulator (family.simulate) taken apart, to keep each source's mask as well
        scene = radio.draw_b1(rng, size)
        rendered = radio.render_field(scene.sources, scene.size, scene.beam, scene.rms, rng, masks=True)
        image, bands, boxes, regions = rendered.image, ("I",), rendered.boxes, rendered.masks
    keep = [
        i
        for i, b in enumerate(boxes)
        if b.label in class_of and b.x1 - b.x0 >= MIN_BOX_SIDE and b.y1 - b.y0 >= MIN_BOX_SIDE
    ]
    return Field(
        picture=render_rgb(image, domain, bands),
        boxes=np.array(
            [[boxes[i].x0, boxes[i].y0, boxes[i].x1, boxes[i].y1] for i in keep], np.float32
        ).reshape(-1, 4),
        labels=np.array([classes.index(class_of[boxes[i].label]) + 1 for i in keep], np.int64),
        masks=None
        if regions is None
        else np.array([regions[i] for i in keep], np.uint8).reshape(-1, size, size),
    )


def simulate_fields(
    domain: str, count: int, split: str = "train", seed: int = 0, progress: bool = True
) -> list[Field]:
    """Fields 0 .. count-1 of a split: the first n of a larger set are the same n fields."""
    indices = tqdm(
        range(count), desc=f"simulating {split} {domain} fields", disable=not progress, leave=False
    )
    return [simulate_field(domain, i, split, seed) for i in indices]
