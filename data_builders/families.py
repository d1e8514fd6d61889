"""The registry of data families: each a label schema plus the simulator that draws records for it.

A family is what a benchmark or a training set is built from: `radio-b1` ... `radio-b6` follow the
radio-llava benchmarks (seed 003), `optical-gmnist` the four GalaxyMNIST classes and `optical-lsbg`
the LSBG-vs-artefact problem (seed 001). Importers produce records of the same families from real data.

    >>> fam = get_family("radio-b6")
    >>> record = fam.simulate(np.random.default_rng(0), 128, "b6-000001")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from data_builders.records import Domain, Record
from data_builders.sim import optical, radio

LabelType = Literal["single", "multi", "binary"]
Simulator = Callable[[np.random.Generator, int, str], Record]


@dataclass(frozen=True)
class Family:
    name: str
    domain: Domain
    classes: tuple[str, ...]  # in the order the benchmark lists them
    label_type: LabelType
    description: str
    simulate: Simulator | None  # (rng, size px, id) -> Record with labels from `classes`; None: import only
    default_size: int = 128
    box_classes: tuple[str, ...] = ()  # labels that the record's per-source boxes may carry

    def __post_init__(self):
        if self.label_type == "binary" and len(self.classes) != 2:
            raise ValueError(f"{self.name}: a binary family needs two classes, got {self.classes}")


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "radio-b1",
            "radio",
            ("EXTENDED", "DIFFUSE", "DIFFUSE-LARGE", "NONE"),
            "multi",
            "wide radio field; which of extended, diffuse and large diffuse sources it holds (NONE: compact only)",
            radio.sample_b1,
            box_classes=radio.SOURCE_CLASSES,
        ),
        Family(
            "radio-b2",
            "radio",
            ("1C-1P", "1C-2P", "1C-3P", "2C-2P", "2C-3P", "3C-3P"),
            "single",
            "source-zoomed radio image; number of components (C) and of peaks (P) of the central source",
            radio.sample_b2,
            box_classes=radio.SOURCE_CLASSES,
        ),
        Family(
            "radio-b3",
            "radio",
            ("YES", "NO"),
            "binary",
            "wide radio field; is there an extended radio galaxy (FR-I/FR-II with jets or lobes)",
            radio.sample_b3,
            box_classes=radio.SOURCE_CLASSES,
        ),
        Family(
            "radio-b4",
            "radio",
            ("YES", "NO"),
            "binary",
            "wide radio field; is there a ring-shaped imaging artefact around a bright source",
            radio.sample_b4,
            box_classes=radio.SOURCE_CLASSES,
        ),
        Family(
            "radio-b5",
            "radio",
            ("ORDINARY", "COMPLEX", "PECULIAR"),
            "single",
            "wide radio field; ordinary (compact/simple), complex (extended, blended) or peculiar morphology",
            radio.sample_b5,
            box_classes=radio.SOURCE_CLASSES,
        ),
        Family(
            "radio-b6",
            "radio",
            ("FR-I", "FR-II"),
            "single",
            "radio galaxy centred in the image; edge-darkened FR-I or edge-brightened FR-II",
            radio.sample_b6,
            box_classes=radio.SOURCE_CLASSES,
        ),
        Family(
            "radio-first",
            "radio",
            ("FRI", "FRII", "Compact", "Bent"),
            "single",
            "FIRST radio galaxies of the firstgalaxydata package (real data, import only)",
            None,
            default_size=300,
        ),
        Family(
            "optical-gmnist",
            "optical",
            ("smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral"),
            "single",
            "g,r,z galaxy stamp in one of GalaxyMNIST's four classes",
            optical.sample_gmnist,
            default_size=64,
            box_classes=optical.SOURCE_CLASSES,
        ),
        Family(
            "optical-lsbg",
            "optical",
            ("ARTEFACT", "LSBG"),  # seed 001's category 0 (non-LSBG, mostly artefacts) and category 1
            "binary",
            "g,r,z stamp: a low-surface-brightness galaxy, or an artefact (ghost, trail, spike, halo)",
            optical.sample_lsbg,
            default_size=64,
            box_classes=optical.SOURCE_CLASSES,
        ),
        Family(
            "optical-morphology",
            "optical",
            optical.MORPHOLOGIES,
            "single",
            "g,r,z galaxy stamp in the full simulated morphology set (spirals, bars, mergers, lenses, LSBGs)",
            optical.sample_morphology,
            box_classes=optical.SOURCE_CLASSES,
        ),
        Family(
            "optical-field",
            "optical",
            optical.SOURCE_CLASSES,
            "multi",
            "g,r,z survey cutout with several galaxies and stars, one box per source (for detection)",
            optical.sample_field,
            default_size=256,
            box_classes=optical.SOURCE_CLASSES,
        ),
    ]
}


def list_families() -> list[str]:
    return sorted(FAMILIES)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; valid: {list_families()}")
    return FAMILIES[name]
