"""radio-llava datalist importer: radio FITS cutouts with morphology tags, as records of one radio-b* family.

    >>> records = list(read_radio_llava("smorph/datalist.json", family="radio-b5"))
    >>> records[0].labels, records[0].params["raw_labels"]       # ('COMPLEX',), ['COMPACT', 'EXTENDED']

A datalist (the format of SKA-INAF/radio-llava) is JSON:
`{"data": [{"filepaths": ["img.fits"], "sname": "...", "id": ..., "label": "..." or ["...", ...]}, ...]}`.
The first of `filepaths` is the image (relative paths resolve against the datalist's folder), read from
its first image HDU (the primary one in these files) with `data_builders.io.read_image`, values as
stored. `id` holds class ids, not an image id: it is kept as params["class_id"]; `sname` names the source.

The raw labels are morphology tags (`TAGS`: COMPACT, EXTENDED, DIFFUSE, DIFFUSE-LARGE, RADIO-GALAXY,
ARTEFACT, WTF for peculiar, FILAMENT, RING, ARC, BORDER, MOSAICING, DUBIOUS, BACKGROUND), or for the
source-morphology set one of `COMPONENT_CLASSES` (1C-1P ... 3C-3P). `MAPPINGS` turns them into the
family's labels exactly as radio-llava derives its benchmark answers (radio_llava/inference_utils.py:
filter_smorph_label, filter_galaxy_label, filter_artefact_label, filter_anomaly_label):
- radio-b1: EXTENDED if EXTENDED or RADIO-GALAXY, DIFFUSE, DIFFUSE-LARGE (all that apply), else NONE;
- radio-b2: the 1C-1P ... 3C-3P label itself (entries without one are skipped);
- radio-b3: YES if RADIO-GALAXY, else NO;
- radio-b4: YES if ARTEFACT (rings around bright sources), else NO;
- radio-b5: PECULIAR if WTF, else COMPLEX if EXTENDED, DIFFUSE or RADIO-GALAXY, else ORDINARY.
The raw tags stay in params["raw_labels"].
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from data_builders.importers.common import DatasetFormatError, ImportStats, json_value, reject, slug
from data_builders.io import ImageReadError, read_image
from data_builders.records import Record

TAGS = (
    "COMPACT", "EXTENDED", "DIFFUSE", "DIFFUSE-LARGE", "RADIO-GALAXY", "ARTEFACT", "WTF",
    "FILAMENT", "RING", "ARC", "BORDER", "MOSAICING", "DUBIOUS", "BACKGROUND",
)  # fmt: skip
COMPONENT_CLASSES = ("1C-1P", "1C-2P", "1C-3P", "2C-2P", "2C-3P", "3C-3P")


@dataclass(frozen=True)
class LabelMapping:
    """How one family's labels follow from an entry's raw labels."""

    raw_labels: tuple[str, ...]  # the raw labels a datalist for this family may hold
    rules: tuple[tuple[str, frozenset[str]], ...]  # (family label, raw labels that give it), by priority
    default: str | None  # the label when no rule fires; None: such an entry has no label and is skipped
    multi: bool = False  # every rule that fires adds its label (else the first one wins)

    def apply(self, raw: Collection[str]) -> tuple[str, ...] | None:
        fired = tuple(label for label, given_by in self.rules if given_by & set(raw))
        if fired:
            return fired if self.multi else fired[:1]
        return None if self.default is None else (self.default,)


MAPPINGS: dict[str, LabelMapping] = {
    "radio-b1": LabelMapping(
        TAGS,
        (
            ("EXTENDED", frozenset({"EXTENDED", "RADIO-GALAXY"})),
            ("DIFFUSE", frozenset({"DIFFUSE"})),
            ("DIFFUSE-LARGE", frozenset({"DIFFUSE-LARGE"})),
        ),
        "NONE",
        multi=True,
    ),
    "radio-b2": LabelMapping(COMPONENT_CLASSES, tuple((c, frozenset({c})) for c in COMPONENT_CLASSES), None),
    "radio-b3": LabelMapping(TAGS, (("YES", frozenset({"RADIO-GALAXY"})),), "NO"),
    "radio-b4": LabelMapping(TAGS, (("YES", frozenset({"ARTEFACT"})),), "NO"),
    "radio-b5": LabelMapping(
        TAGS,
        (("PECULIAR", frozenset({"WTF"})), ("COMPLEX", frozenset({"EXTENDED", "DIFFUSE", "RADIO-GALAXY"}))),
        "ORDINARY",
    ),
}


def read_radio_llava(
    path: str | Path, *, family: str, strict: bool = False, stats: ImportStats | None = None
) -> Iterator[Record]:
    """Yield one `family` record per datalist entry (see `MAPPINGS` for the families and their rules)."""
    if family not in MAPPINGS:
        raise ValueError(f"no radio-llava label mapping for family {family!r}; valid: {sorted(MAPPINGS)}")
    stats = ImportStats() if stats is None else stats
    path = Path(path)
    return _read(path, _load_entries(path), family, MAPPINGS[family], stats, strict)


def _load_entries(path: Path) -> list:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetFormatError(path, "no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(path, f"not a readable JSON datalist ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DatasetFormatError(path, 'expected a JSON object {"data": [entries]}')
    return document["data"]


def _read(
    path: Path, entries: list, family: str, mapping: LabelMapping, stats: ImportStats, strict: bool
) -> Iterator[Record]:
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{path}#{index}"
        filepaths = entry.get("filepaths") if isinstance(entry, dict) else None
        filepaths = [filepaths] if isinstance(filepaths, str) else filepaths
        raw = entry.get("label") if isinstance(entry, dict) else None
        raw = [raw] if isinstance(raw, str) else raw
        if not filepaths or not all(isinstance(p, str) and p for p in filepaths):
            reject(stats, strict, where, "malformed entry", "expected 'filepaths': a list of file names")
            continue
        if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
            reject(stats, strict, where, "malformed entry", "expected 'label': a string or a list of strings")
            continue
        raw = [r.strip().upper() for r in raw]
        unknown = [r for r in raw if r not in mapping.raw_labels]
        if unknown:
            detail = f"{unknown} (valid for {family}: {', '.join(mapping.raw_labels)})"
            reject(stats, strict, where, "label outside the known set", detail)
            continue
        labels = mapping.apply(raw)
        if labels is None:
            stats.skip(where, f"no {family} label", str(raw), warn=False)
            continue
        image_path = Path(filepaths[0]) if Path(filepaths[0]).is_absolute() else path.parent / filepaths[0]
        try:
            image = read_image(image_path)
        except ImageReadError as exc:
            reason = "missing image" if not image_path.exists() else "unreadable image"
            reject(stats, strict, where, reason, exc.reason if image_path.exists() else str(image_path))
            continue
        sname = entry.get("sname")
        record_id = f"radio-llava-{slug(str(sname) if sname else Path(filepaths[0]).stem)}"
        record_id = f"{record_id}-{index}" if record_id in seen else record_id
        seen.add(record_id)
        params = {"raw_labels": raw, "sname": json_value(sname), "class_id": entry.get("id")}
        params["filepaths"] = filepaths
        stats.read += 1
        yield Record(
            id=record_id,
            image=image.data,
            domain="radio",
            family=family,
            labels=labels,
            bands=image.bands,
            params=params,
            origin=str(image_path),
            pixel_scale_arcsec=image.pixel_scale_arcsec,
        )
