"""What every importer shares: the error for a broken dataset file, the skip counter, small helpers.

An importer meets two kinds of trouble. A whole file it cannot use (a labels file that is not JSON,
an HDF5 without `images`, labels and images of different lengths) raises `DatasetFormatError` naming
the file and the reason. A single bad record (a missing or corrupt image, a label outside the known
set) is skipped: counted in the `ImportStats` the caller passed, logged as a warning, and the import
goes on; with `strict=True` it raises `DatasetFormatError` instead.

    >>> stats = ImportStats()
    >>> records = list(import_records("mirabest", "MiraBest_F/", stats=stats))
    >>> stats.summary()        # '... records read, ... skipped (... hybrid (no radio-b6 label))'
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

logger = logging.getLogger("data_builders.importers")

MAX_LISTED_SKIPS = 1000  # skipped records listed one by one; beyond this they are only counted
MAX_UNPACKED_BYTES = 8 * 2**30  # a .gz or .zip member that unpacks to more than this is refused


class DatasetFormatError(ValueError):
    """A dataset file (or, with strict=True, a record) that cannot be imported; names the file and why."""

    def __init__(self, name: str | Path, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = str(name), reason


@dataclass
class ImportStats:
    """What an import read and what it skipped, by reason; the caller creates it and reads it after."""

    read: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, reason: detail), first 1000

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped_by_reason.values())

    def skip(self, where: str, reason: str, detail: str = "", *, warn: bool = True) -> None:
        """Count one skipped record. `warn=False` for records left out by design (e.g. hybrids)."""
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1
        message = f"{reason}: {detail}" if detail else reason
        if len(self.skipped) < MAX_LISTED_SKIPS:
            self.skipped.append((where, message))
        (logger.warning if warn else logger.info)("skipped %s (%s)", where, message)

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped_by_reason.items()))
        return f"{self.read} records read, {self.n_skipped} skipped" + (f" ({reasons})" if reasons else "")


def reject(stats: ImportStats, strict: bool, where: str, reason: str, detail: str = "") -> None:
    """A bad record: raise in strict mode, else skip it with a warning."""
    if strict:
        raise DatasetFormatError(where, f"{reason}: {detail}" if detail else reason)
    stats.skip(where, reason, detail)


def split_labels(text: str) -> tuple[str, ...]:
    """'a; b|c' -> ('a', 'b', 'c'): the multi-label cell format of CSV label files."""
    return tuple(part.strip() for part in re.split(r"[;|]", text) if part.strip())


def slug(text: str) -> str:
    """A string safe inside a record id: runs of anything but [A-Za-z0-9._+-] become '_'."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "_"


def as_float_image(array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) pixels -> float32 (C, H, W), values unchanged."""
    array = np.asarray(array)
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return np.ascontiguousarray(array, dtype=np.float32)


def copy_limited(src: BinaryIO, dst: BinaryIO, name: str | Path, limit: int = MAX_UNPACKED_BYTES) -> None:
    """Copy an unpacking stream, refusing one that grows past `limit` bytes (a decompression bomb)."""
    total = 0
    while chunk := src.read(2**20):
        total += len(chunk)
        if total > limit:
            raise DatasetFormatError(name, f"unpacks to more than {limit} bytes; refused")
        dst.write(chunk)


def open_hdf5(path: Path, stack: contextlib.ExitStack):
    """An open h5py.File of `path`: plain HDF5, `.gz`, or a zip holding one HDF5 member.

    h5py needs a seekable file, so a packed one is unpacked (size-limited) into a temporary folder
    that `stack` removes; anything unreadable raises DatasetFormatError naming `path`.
    """
    import h5py

    local = path
    if path.name.endswith(".gz") or zipfile.is_zipfile(path):
        local = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="astrovlm-h5-"))) / "data.h5"
        with open(local, "wb") as dst:
            if path.name.endswith(".gz"):
                _gunzip(path, dst)
            else:
                _unzip_one_hdf5(path, dst)
    try:
        return stack.enter_context(h5py.File(local, "r"))
    except OSError as exc:
        raise DatasetFormatError(path, f"not a readable HDF5 file ({exc})") from exc


def _gunzip(path: Path, dst: BinaryIO) -> None:
    try:
        with gzip.open(path, "rb") as src:
            copy_limited(src, dst, path)
    except (OSError, EOFError) as exc:
        raise DatasetFormatError(path, f"not a readable gzip file ({exc})") from exc


def _unzip_one_hdf5(path: Path, dst: BinaryIO) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if m.filename.endswith((".h5", ".hdf5"))]
            if len(members) != 1:
                raise DatasetFormatError(path, f"zip holds {len(members)} HDF5 files; expected one")
            with archive.open(members[0]) as src:
                copy_limited(src, dst, path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DatasetFormatError(path, f"not a readable zip file ({exc})") from exc


def json_value(value):
    """numpy scalars and bytes -> plain Python, so that record params serialise as JSON."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value
