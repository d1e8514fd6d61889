"""FIRST radio galaxy importer: the `firstgalaxydata` data set (FRI/FRII/Compact/Bent, Griese et al. 2023).

    >>> records = read_first()                                     # the copy inside the installed package
    >>> records = read_first("galaxy_data_h5.h5", family="radio-first", splits=("test",))

The PyPI package ships its data offline, as zip files beside its code: `galaxy_data_h5.zip` (one HDF5
file: 2158 images 300x300, 1758 train / 200 valid / 200 test), `galaxy_data_crossvalid_{0..4}_h5.zip`
and `galaxy_data_crossvalid_test_h5.zip` (5-fold train/valid splits of the same images and a 400-image
test set), and `galaxy_data.zip` (the same images as PNG files).

`path` is one of
- an HDF5 file: a group per image with `Img` (300, 300) uint8 (attributes RA, DEC, Source,
  Filepath_literature), `Label_literature` (0 FRI, 1 FRII, 2 Compact, 3 Bent) and `Split_literature`
  (train/valid/test); the package's files also hold `Label_CDL1` (`CDL1_CLASSES`, which splits Bent into
  FRI-WAT and FRI-NAT), kept in params;
- a zip holding one HDF5 file, as the package ships them (unpacked to a temporary folder while read);
- the unpacked PNG tree of `galaxy_data.zip`:
  `{train,valid,test}/{FRI,FRII,Compact,Bent}/RA_DEC_code_Source.png`;
- None: the package's own `galaxy_data_h5.zip`.

`family="radio-b6"` (default) keeps FRI as "FR-I" and FRII as "FR-II" and skips Compact and Bent
(counted in the stats); `family="radio-first"` keeps all four classes under their own names. Images
stay 0-255, float32 (1, 300, 300) with band "I".
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from data_builders.importers.common import (
    DatasetFormatError,
    ImportStats,
    as_float_image,
    json_value,
    open_hdf5,
    reject,
    slug,
)
from data_builders.io import ImageReadError, read_image
from data_builders.records import Record

CLASSES = ("FRI", "FRII", "Compact", "Bent")  # Label_literature code = index
CDL1_CLASSES = ("FRI-Sta", "FRII", "Compact", "FRI-WAT", "FRI-NAT")  # Label_CDL1 code = index
FAMILY_LABELS = {  # family -> {data set class: family label}; classes missing from a family are skipped
    "radio-b6": {"FRI": "FR-I", "FRII": "FR-II"},
    "radio-first": {name: name for name in CLASSES},
}
SPLITS = ("train", "valid", "test")
BUNDLED = "galaxy_data_h5.zip"


def bundled_path(name: str = BUNDLED) -> Path:
    """Where the installed `firstgalaxydata` keeps `name`, found without importing it (it imports torch)."""
    spec = importlib.util.find_spec("firstgalaxydata")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetFormatError("firstgalaxydata", "package not installed: pip install firstgalaxydata")
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.is_file():
        raise DatasetFormatError(path, "not in the installed firstgalaxydata package")
    return path


def read_first(
    path: str | Path | None = None,
    *,
    family: str = "radio-b6",
    splits: Sequence[str] | None = None,
    strict: bool = False,
    stats: ImportStats | None = None,
) -> Iterator[Record]:
    """Yield one record per image of the `splits` (None: all) whose class has a label in `family`."""
    if family not in FAMILY_LABELS:
        raise ValueError(f"unknown family {family!r} for FIRST data; valid: {sorted(FAMILY_LABELS)}")
    if splits is not None and set(splits) - set(SPLITS):
        raise ValueError(f"unknown split(s) {sorted(set(splits) - set(SPLITS))}; valid: {SPLITS}")
    stats = ImportStats() if stats is None else stats
    path = bundled_path() if path is None else Path(path)
    if path.is_dir():
        return _read_png_tree(path, family, splits or SPLITS, stats, strict)
    if not path.is_file():
        raise DatasetFormatError(path, "no such file or folder")
    return _read_hdf5(path, family, splits, stats, strict)


def _read_hdf5(
    path: Path, family: str, splits: Sequence[str] | None, stats: ImportStats, strict: bool
) -> Iterator[Record]:
    import h5py

    with contextlib.ExitStack() as stack:
        h5 = open_hdf5(path, stack)
        for key in sorted(h5, key=_natural):
            where = f"{path}#{key}"
            group = h5[key]
            if not isinstance(group, h5py.Group) or "Img" not in group or "Label_literature" not in group:
                detail = "expected a group with Img and Label_literature"
                reject(stats, strict, where, "malformed entry", detail)
                continue
            split = _text(group["Split_literature"][()]) if "Split_literature" in group else None
            if splits is not None and split not in splits:
                continue
            name = _class_name(group["Label_literature"][()], CLASSES)
            if name is None:
                detail = f"Label_literature {group['Label_literature'][()]!r}; valid 0-3 {CLASSES}"
                reject(stats, strict, where, "label outside the known set", detail)
                continue
            if name not in FAMILY_LABELS[family]:
                stats.skip(where, f"{name} (no {family} label)", warn=False)
                continue
            pixels = group["Img"][()]
            if pixels.ndim != 2 or min(pixels.shape) < 2:
                detail = f"Img has shape {pixels.shape}; expected (H, W)"
                reject(stats, strict, where, "unreadable image", detail)
                continue
            attrs = {k: json_value(v) for k, v in group["Img"].attrs.items()}
            params = {"split": split, "literature_label": name, "source": attrs.get("Source")}
            params |= {"ra_deg": attrs.get("RA"), "dec_deg": attrs.get("DEC")}
            if "Label_CDL1" in group:
                params["cdl1_label"] = _class_name(group["Label_CDL1"][()], CDL1_CLASSES)
            stem = Path(str(attrs["Filepath_literature"])).stem if "Filepath_literature" in attrs else None
            stats.read += 1
            yield Record(
                id=f"first-{slug(stem)}" if stem else f"first-{slug(path.stem)}-{key}",
                image=as_float_image(pixels),
                domain="radio",
                family=family,
                labels=(FAMILY_LABELS[family][name],),
                bands=("I",),
                params=params,
                origin=where,
            )


def _read_png_tree(
    root: Path, family: str, splits: Sequence[str], stats: ImportStats, strict: bool
) -> Iterator[Record]:
    folders = [(split, name) for split in splits for name in CLASSES]
    files = [(split, name, png) for split, name in folders for png in (root / split / name).glob("*.png")]
    if not files:
        raise DatasetFormatError(root, f"no {{{','.join(splits)}}}/{{{','.join(CLASSES)}}}/*.png images")
    for split, name, png in sorted(files, key=lambda f: (SPLITS.index(f[0]), CLASSES.index(f[1]), f[2].name)):
        if name not in FAMILY_LABELS[family]:
            stats.skip(str(png), f"{name} (no {family} label)", warn=False)
            continue
        try:
            image = read_image(png)
        except ImageReadError as exc:
            reject(stats, strict, str(png), "unreadable image", exc.reason)
            continue
        if image.data.shape[0] != 1:
            reject(stats, strict, str(png), "not a single-plane image", f"bands {image.bands}")
            continue
        params = {"split": split, "literature_label": name}
        parts = re.fullmatch(r"(-?[\d.]+)_(-?[\d.]+)_\d_(.+)", png.stem)
        if parts:
            params |= {"source": parts[3], "ra_deg": float(parts[1]), "dec_deg": float(parts[2])}
        stats.read += 1
        yield Record(
            id=f"first-{slug(png.stem)}",
            image=image.data,
            domain="radio",
            family=family,
            labels=(FAMILY_LABELS[family][name],),
            bands=("I",),
            params=params,
            origin=str(png),
        )


def _natural(key: str) -> tuple:
    """'data_10' after 'data_9'."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _class_name(value, classes: tuple[str, ...]) -> str | None:
    """A stored class code (a float scalar in these files) -> its name, None if not a valid code."""
    try:
        code = float(np.asarray(value).item())
    except (TypeError, ValueError):
        return None
    return classes[int(code)] if code.is_integer() and 0 <= code < len(classes) else None
