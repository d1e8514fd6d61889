"""Folder importer: images or FITS files listed in a CSV or JSON labels file, with optional boxes.

    >>> records = list(read_folder("my_set/", domain="radio", family="radio-b6", classes=("FR-I", "FR-II")))

`path` is the labels file, or a folder holding one `labels.csv` or `labels.json`. File names in it resolve
against the labels file's folder (absolute ones are used as they are); any format `read_image` reads.
- CSV: columns `filename` and `label` (several labels separated by ';' or '|', may be empty), optional
  box columns `x0`, `y0`, `x1`, `y1` (pixels; x right, y down, row 0 at the top) with `box_label`. A file
  with several boxes has several rows: its labels are the union of the rows', its boxes one per row.
  Other columns go to params (from a file's first row).
- JSON: a list of {"filename": ..., "labels": [...] (or "label": "a;b"),
  "boxes": [{"label": ..., "x0": ..., "y0": ..., "x1": ..., "y1": ...}]}; other keys go to params.

The caller names the domain and the family (any name: "custom" by default). With `classes` given, an
image label outside them skips the record (with `strict=True` it raises); box labels are checked
against `box_classes`, or against `classes` when that is None. Single-plane radio images get band "I".
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data_builders.importers.common import (
    DatasetFormatError,
    ImportStats,
    json_value,
    reject,
    slug,
    split_labels,
)
from data_builders.io import ImageReadError, read_image
from data_builders.records import DOMAINS, Box, Record

LABEL_FILES = ("labels.csv", "labels.json")
BOX_COLUMNS = ("x0", "y0", "x1", "y1")


@dataclass
class Entry:
    """One image as the labels file describes it, before its image is read."""

    filename: str
    where: str  # labels file and row or index, for messages
    labels: list[str] = field(default_factory=list)
    boxes: list[dict] = field(default_factory=list)  # {"label", "x0", "y0", "x1", "y1"} as written
    params: dict = field(default_factory=dict)
    problem: str = ""  # why the entry cannot become a record; empty if it can


def read_folder(
    path: str | Path,
    *,
    domain: str,
    family: str = "custom",
    classes: Sequence[str] | None = None,
    box_classes: Sequence[str] | None = None,
    strict: bool = False,
    stats: ImportStats | None = None,
) -> Iterator[Record]:
    """Yield one record per image in the labels file (see the module docstring for the formats)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; valid: {DOMAINS}")
    stats = ImportStats() if stats is None else stats
    labels_file = _labels_file(Path(path))
    entries = _read_csv(labels_file) if labels_file.suffix.lower() == ".csv" else _read_json(labels_file)
    box_classes = classes if box_classes is None else box_classes
    return _records(labels_file, entries, domain, family, classes, box_classes, stats, strict)


def _labels_file(path: Path) -> Path:
    if path.is_dir():
        found = [path / name for name in LABEL_FILES if (path / name).is_file()]
        if len(found) != 1:
            raise DatasetFormatError(path, f"expected one of {LABEL_FILES} in the folder, found {len(found)}")
        return found[0]
    if not path.is_file():
        raise DatasetFormatError(path, "no such file or folder")
    if path.suffix.lower() not in (".csv", ".json"):
        raise DatasetFormatError(path, "a labels file must be .csv or .json")
    return path


def _read_csv(file: Path) -> list[Entry]:
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in ("filename", "label") if c not in columns]
            if missing:
                raise DatasetFormatError(file, f"missing column(s) {missing} (has {columns})")
            box_columns = [c for c in BOX_COLUMNS if c in columns]
            if box_columns and len(box_columns) != 4:
                raise DatasetFormatError(file, f"box columns must be all of {BOX_COLUMNS}, not {box_columns}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetFormatError(file, f"not a readable CSV file ({exc})") from exc
    extra = [c for c in columns if c not in ("filename", "label", "box_label", *BOX_COLUMNS)]
    entries: dict[str, Entry] = {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        name = (row.get("filename") or "").strip()
        entry = entries.setdefault(name, Entry(name, f"{file}:{number}", params={c: row[c] for c in extra}))
        if not name or None in row or None in row.values():  # no name, or more or fewer cells than columns
            entry.problem = entry.problem or f"line {number}: malformed row"
            continue
        entry.labels += [label for label in split_labels(row["label"]) if label not in entry.labels]
        cells = [row[c].strip() for c in box_columns]
        if any(cells):
            box_label = (row.get("box_label") or "").strip() or _only(split_labels(row["label"]))
            entry.boxes.append({"label": box_label, **dict(zip(BOX_COLUMNS, cells, strict=True))})
    return list(entries.values())


def _read_json(file: Path) -> list[Entry]:
    try:
        items = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(file, f"not a readable JSON file ({exc})") from exc
    if not isinstance(items, list):
        raise DatasetFormatError(file, 'expected a JSON list of {"filename", "labels", "boxes"} objects')
    entries, seen = [], set()
    for index, item in enumerate(items):
        entry = Entry(str(item.get("filename") or "") if isinstance(item, dict) else "", f"{file}#{index}")
        entries.append(entry)
        if not isinstance(item, dict) or not entry.filename:
            entry.problem = "expected an object with a 'filename'"
            continue
        if entry.filename in seen:
            entry.problem = f"duplicate entry for {entry.filename}"
            continue
        seen.add(entry.filename)
        labels = item.get("labels", list(split_labels(str(item.get("label") or ""))))
        boxes = item.get("boxes") or []
        if not isinstance(labels, list) or not all(isinstance(v, str) for v in labels):
            entry.problem = "'labels' must be a list of strings"
        elif not isinstance(boxes, list) or not all(isinstance(b, dict) for b in boxes):
            entry.problem = "'boxes' must be a list of objects"
        entry.labels = [v.strip() for v in labels if v.strip()] if not entry.problem else []
        entry.boxes = boxes if not entry.problem else []
        entry.params = {k: v for k, v in item.items() if k not in ("filename", "labels", "label", "boxes")}
    return entries


def _records(
    labels_file: Path,
    entries: list[Entry],
    domain: str,
    family: str,
    classes: Sequence[str] | None,
    box_classes: Sequence[str] | None,
    stats: ImportStats,
    strict: bool,
) -> Iterator[Record]:
    for entry in entries:
        if entry.problem:
            reject(stats, strict, entry.where, "malformed entry", entry.problem)
            continue
        outside = [v for v in entry.labels if classes is not None and v not in classes]
        if outside:
            detail = f"{outside}; valid: {list(classes)}"
            reject(stats, strict, entry.where, "label outside the known set", detail)
            continue
        box_labels = [b.get("label") for b in entry.boxes]
        outside = [v for v in box_labels if box_classes is not None and v not in box_classes]
        if outside:
            detail = f"box label(s) {outside}; valid: {list(box_classes)}"
            reject(stats, strict, entry.where, "label outside the known set", detail)
            continue
        image_path = Path(entry.filename)
        image_path = image_path if image_path.is_absolute() else labels_file.parent / image_path
        try:
            image = read_image(image_path)
        except ImageReadError as exc:
            reason = "unreadable image" if image_path.exists() else "missing image"
            reject(stats, strict, str(image_path), reason, exc.reason)
            continue
        try:
            boxes = tuple(_box(b, image.data.shape[2], image.data.shape[1]) for b in entry.boxes)
        except (TypeError, ValueError) as exc:
            reject(stats, strict, entry.where, "bad box", str(exc))
            continue
        bands = ("I",) if domain == "radio" and len(image.bands) == 1 else image.bands
        stats.read += 1
        yield Record(
            id=f"{slug(labels_file.parent.name)}-{slug(entry.filename)}",
            image=image.data,
            domain=domain,
            family=family,
            labels=tuple(entry.labels),
            bands=bands,
            boxes=boxes,
            params={"filename": entry.filename, **{k: json_value(v) for k, v in entry.params.items()}},
            origin=str(image_path),
            pixel_scale_arcsec=image.pixel_scale_arcsec,
        )


def _box(raw: dict, width: int, height: int) -> Box:
    if not raw.get("label"):
        raise ValueError(f"box {raw} has no label (give box_label, or a single image label)")
    if any(k not in raw for k in BOX_COLUMNS):
        raise ValueError(f"box {raw} lacks one of {BOX_COLUMNS}")
    box = Box(str(raw["label"]), *(float(raw[k]) for k in BOX_COLUMNS))  # ValueError if not numbers or empty
    if box.x0 >= width or box.y0 >= height or box.x1 <= 0 or box.y1 <= 0:
        raise ValueError(f"box {box.to_dict()} lies outside the {width}x{height} image")
    return box


def _only(labels: tuple[str, ...]) -> str:
    return labels[0] if len(labels) == 1 else ""
