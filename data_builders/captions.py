"""Captions from labels, boxes and the physical parameters a record was drawn from.

`caption(record, rng)` writes two to four sentences an astronomer would accept as a description of the
image: the main object or the content of the field, where things are, and the observing conditions.
Wording varies with `rng`; facts come only from the record.
"""

from __future__ import annotations

import random
from collections import Counter

from data_builders.records import Record

MAIN_OBJECT = {
    "FR-I": "an edge-darkened FR-I radio galaxy: a bright core with two-sided jets that fade and widen with distance",
    "FR-II": "an edge-brightened FR-II radio galaxy: two lobes that end in bright hotspots far from a faint core",
    "smooth_round": "a smooth, round galaxy with no sign of spiral structure",
    "smooth_cigar": "a smooth, cigar-shaped galaxy, elongated and without spiral structure",
    "edge_on_disk": "a disk galaxy seen edge-on, thin and elongated",
    "unbarred_spiral": "a spiral galaxy without a bar, its arms winding out from a compact bulge",
    "barred_spiral": "a barred spiral galaxy whose arms start at the ends of a central bar",
    "merger": "two galaxies in the process of merging, distorted and close together",
    "lens": "a strong gravitational lens: a red elliptical galaxy surrounded by blue lensed arcs",
    "lsbg": "a faint, diffuse low-surface-brightness galaxy",
    "LSBG": "a well-centred, faint and diffuse low-surface-brightness galaxy",
    "ARTEFACT": "an imaging artefact rather than a genuine low-surface-brightness galaxy",
}

SINGULAR = {
    "compact": ("compact source", "compact sources"),
    "extended": ("extended source", "extended sources"),
    "diffuse": ("diffuse emission region", "diffuse emission regions"),
    "diffuse-large": ("large-scale diffuse emission region", "large-scale diffuse emission regions"),
    "fr-i": ("FR-I radio galaxy", "FR-I radio galaxies"),
    "fr-ii": ("FR-II radio galaxy", "FR-II radio galaxies"),
    "ring-artefact": ("ring-shaped imaging artefact", "ring-shaped imaging artefacts"),
    "peculiar": ("peculiar source", "peculiar sources"),
    "star": ("star", "stars"),
    "artefact": ("imaging artefact", "imaging artefacts"),
    "smooth_round": ("smooth round galaxy", "smooth round galaxies"),
    "smooth_cigar": ("cigar-shaped galaxy", "cigar-shaped galaxies"),
    "edge_on_disk": ("edge-on disk galaxy", "edge-on disk galaxies"),
    "unbarred_spiral": ("spiral galaxy", "spiral galaxies"),
    "barred_spiral": ("barred spiral galaxy", "barred spiral galaxies"),
    "merger": ("merging pair", "merging pairs"),
    "lens": ("strong lens", "strong lenses"),
    "lsbg": ("low-surface-brightness galaxy", "low-surface-brightness galaxies"),
}

NUMBERS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def count_phrase(label: str, n: int) -> str:
    one, many = SINGULAR.get(label, (label, label))
    return f"{NUMBERS[n] if n < len(NUMBERS) else n} {one if n == 1 else many}"


def join_phrases(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def where(record: Record, box) -> str:
    """Coarse position of a box centre: 'the centre', 'the upper left', ..."""
    cx = (box.x0 + box.x1) / 2 / record.width
    cy = (box.y0 + box.y1) / 2 / record.height
    if abs(cx - 0.5) < 1 / 6 and abs(cy - 0.5) < 1 / 6:
        return "the centre"
    vertical = "upper" if cy < 1 / 3 else "lower" if cy > 2 / 3 else "middle"
    horizontal = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    return f"the {vertical} {horizontal}".replace("middle centre", "centre")


def caption(record: Record, rng: random.Random) -> str:
    sentences = [_content_sentence(record, rng)]
    sentences += _detail_sentences(record)
    sentences.append(_conditions_sentence(record))
    return " ".join(s for s in sentences if s)


def _content_sentence(record: Record, rng: random.Random) -> str:
    kind = "radio" if record.domain == "radio" else "optical g,r,z"
    main = next((MAIN_OBJECT[label] for label in record.labels if label in MAIN_OBJECT), None)
    if main is not None:
        opener = rng.choice(
            [
                "This {kind} image shows {main}.",
                "The {kind} image is centred on {main}.",
                "A {kind} cutout of {main}.",
            ]
        )
        return opener.format(kind=kind, main=main)
    if record.family == "radio-b2" and record.labels:
        c, p = record.labels[0].split("-")
        return (
            f"This radio image is centred on a source with {NUMBERS[int(c[0])]} separate component(s) "
            f"and {NUMBERS[int(p[0])]} intensity peak(s), class {record.labels[0]}."
        )
    counts = Counter(box.label for box in record.boxes)
    if counts:
        parts = [count_phrase(label, n) for label, n in counts.most_common()]
        return f"This {kind} field contains {join_phrases(parts)}."
    return f"This {kind} image is labelled {', '.join(record.labels) or 'with no class'}."


def _detail_sentences(record: Record) -> list[str]:
    p, out = record.params, []
    notable = [b for b in record.boxes if b.label not in ("compact", "star")]
    if record.boxes and notable and record.family not in ("radio-b2",):
        first = max(notable, key=lambda b: (b.x1 - b.x0) * (b.y1 - b.y0))
        out.append(
            f"The most prominent {SINGULAR.get(first.label, (first.label,))[0]} lies in {where(record, first)}."
        )
    if "ring-artefact" in {b.label for b in record.boxes}:
        out.append("Concentric ring-shaped artefacts surround the brightest source.")
    if "PECULIAR" in record.labels:
        out.append("Its morphology is unusual for a radio source.")
    size = p.get("largest_angular_size_arcsec")
    if isinstance(size, (int, float)) and size > 0 and p.get("morphology") != "compact sources only":
        out.append(f"The main source spans about {size:.0f} arcsec.")
    if isinstance(p.get("g_r"), (int, float)):
        out.append(f"Its colour is {'red' if p['g_r'] > 0.6 else 'blue'} (g-r = {p['g_r']:.2f}).")
    if isinstance(p.get("axis_ratio"), (int, float)):
        out.append(f"The axis ratio is {p['axis_ratio']:.2f}.")
    if isinstance(p.get("n_arms"), (int, float)) and p["n_arms"] > 0:
        out.append(f"It has {NUMBERS[int(p['n_arms'])]} spiral arms.")
    return out


def _conditions_sentence(record: Record) -> str:
    p = record.params
    if record.domain == "radio" and isinstance(p.get("rms_ujy"), (int, float)):
        beam = p.get("beam_fwhm_px")
        beam_text = f", with a restoring beam of {beam:.1f} pixels" if isinstance(beam, (int, float)) else ""
        return f"The noise is about {p['rms_ujy']:.0f} microJy/beam{beam_text}."
    if record.domain == "optical" and isinstance(p.get("psf_fwhm_px"), (int, float)):
        return f"The seeing FWHM is {p['psf_fwhm_px']:.1f} pixels."
    return ""
