"""GalaxyMNIST importer: the HDF5 files or the catalogue form, as `optical-gmnist` records.

    >>> stats = ImportStats()
    >>> for record in read_galaxy_mnist("galaxy_mnist/", stats=stats):   # or one file
    ...     record.image.shape, record.labels                              # (3, 64, 64), ('edge_on_disk',)

`path` is one of
- `train_dataset.hdf5` / `test_dataset.hdf5`, or the `.hdf5.gz` downloads: `images` (N, 64, 64, 3) uint8
  and `labels` (N,) with 0 smooth_round, 1 smooth_cigar, 2 edge_on_disk, 3 unbarred_spiral;
- `galaxy_mnist_{train,test}_catalog.parquet` (columns `filename`, `label`: a code or a class name),
  with the JPEGs beside it or in `images/`;
- a folder holding them: per split the HDF5 file is read if there is one, else the catalogue.

The images are colour JPEG-derived RGB cutouts, already display-ready: they stay 0-255, as float32
(3, H, W) with bands ("R", "G", "B").
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from data_builders.importers.common import (
    DatasetFormatError,
    ImportStats,
    as_float_image,
    open_hdf5,
    reject,
    slug,
)
from data_builders.io import ImageReadError, read_image
from data_builders.records import Record

CLASSES = ("smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral")  # label code = index
FAMILY = "optical-gmnist"
BANDS = ("R", "G", "B")
SPLITS = ("train", "test")
FILE_PATTERNS = ("{}_dataset.hdf5", "{}_dataset.hdf5.gz", "galaxy_mnist_{}_catalog.parquet")  # by preference
BLOCK = 1024  # images read from the HDF5 file at a time


def read_galaxy_mnist(
    path: str | Path,
    *,
    splits: Sequence[str] = SPLITS,
    strict: bool = False,
    stats: ImportStats | None = None,
) -> Iterator[Record]:
    """Yield one record per GalaxyMNIST image; `splits` picks the files when `path` is a folder."""
    stats = ImportStats() if stats is None else stats
    return _read(_dataset_files(Path(path), splits), stats, strict)


def _read(files: list[Path], stats: ImportStats, strict: bool) -> Iterator[Record]:
    for file in files:
        if file.name.endswith(".parquet"):
            yield from _read_catalog(file, stats, strict)
        else:
            yield from _read_hdf5(file, stats, strict)


def _dataset_files(path: Path, splits: Sequence[str]) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetFormatError(path, "no such file or folder")
    files = []
    for split in splits:
        candidates = [path / pattern.format(split) for pattern in FILE_PATTERNS]
        files += [next(c for c in candidates if c.is_file())] if any(c.is_file() for c in candidates) else []
    if not files:
        expected = ", ".join(p.format(s) for s in splits for p in FILE_PATTERNS)
        raise DatasetFormatError(path, f"no GalaxyMNIST file in the folder (looked for {expected})")
    return files


def _split_of(name: str) -> str | None:
    match = re.search(r"(?:^|_)(train|test)_", name)
    return match.group(1) if match else None


def _read_hdf5(file: Path, stats: ImportStats, strict: bool) -> Iterator[Record]:
    split = _split_of(file.name)
    tag = split or slug(file.name.split(".")[0])
    with contextlib.ExitStack() as stack:
        h5 = open_hdf5(file, stack)
        images, labels = _checked_datasets(h5, file)
        for start in range(0, len(labels), BLOCK):
            block = images[start : start + BLOCK]
            for index, (pixels, code) in enumerate(
                zip(block, labels[start : start + BLOCK], strict=True), start
            ):
                where = f"{file}#{index}"
                if not 0 <= code < len(CLASSES):
                    detail = f"code {code}; valid 0-3 {CLASSES}"
                    reject(stats, strict, where, "label outside the known set", detail)
                    continue
                stats.read += 1
                yield Record(
                    id=f"gmnist-{tag}-{index:05d}",
                    image=as_float_image(pixels),
                    domain="optical",
                    family=FAMILY,
                    labels=(CLASSES[code],),
                    bands=BANDS,
                    params={"split": split} if split else {},
                    origin=where,
                )


def _checked_datasets(h5, file: Path):
    missing = [key for key in ("images", "labels") if key not in h5]
    if missing:
        raise DatasetFormatError(file, f"HDF5 file has no {' or '.join(missing)} (keys: {sorted(h5)})")
    images, labels = h5["images"], np.asarray(h5["labels"][()])
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DatasetFormatError(file, f"images have shape {images.shape}; expected (N, H, W, 3)")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetFormatError(file, f"labels are {labels.dtype} {labels.shape}; expected (N,) integers")
    if len(labels) != images.shape[0]:
        raise DatasetFormatError(file, f"{images.shape[0]} images but {len(labels)} labels")
    return images, labels.astype(np.int64)


def _read_catalog(file: Path, stats: ImportStats, strict: bool) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as exc:  # pyarrow raises several kinds on a corrupt or non-Parquet file
        raise DatasetFormatError(file, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in ("filename", "label") if c not in table.column_names]
    if missing:
        raise DatasetFormatError(file, f"catalogue lacks column(s) {missing} (has {table.column_names})")
    split = _split_of(file.name)
    tag = split or slug(file.stem)
    names, values = table.column("filename").to_pylist(), table.column("label").to_pylist()
    for index, (name, value) in enumerate(zip(names, values, strict=True)):
        where = f"{file}#{index}"
        label = _class_of(value)
        if label is None:
            reject(stats, strict, where, "label outside the known set", f"{value!r}; valid 0-3 or {CLASSES}")
            continue
        if not name:
            reject(stats, strict, where, "no filename")
            continue
        candidates = [file.parent / name, file.parent / "images" / name]
        image_path = next((c for c in candidates if c.is_file()), None)
        if image_path is None:
            reject(stats, strict, where, "missing image", f"{name} (looked in {file.parent} and images/)")
            continue
        try:
            image = read_image(image_path)
        except ImageReadError as exc:
            reject(stats, strict, str(image_path), "unreadable image", exc.reason)
            continue
        if image.data.shape[0] != 3:
            reject(stats, strict, str(image_path), "not an RGB image", f"bands {image.bands}")
            continue
        stats.read += 1
        yield Record(
            id=f"gmnist-{tag}-{slug(Path(name).stem)}",
            image=image.data,
            domain="optical",
            family=FAMILY,
            labels=(label,),
            bands=BANDS,
            params={"split": split, "filename": name} if split else {"filename": name},
            origin=str(image_path),
        )


def _class_of(value) -> str | None:
    """A catalogue label: an integer code (also as text or a whole float) or a class name."""
    if isinstance(value, str):
        if value.strip() in CLASSES:
            return value.strip()
        value = int(value) if value.strip().isdigit() else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < len(CLASSES):
        return CLASSES[int(value)]
    return None
