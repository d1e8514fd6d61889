"""Importers: real data sets in their native formats -> `Record`s of the project's families.

    >>> stats = ImportStats()
    >>> for record in import_records("mirabest", "MiraBest_F/F_batches", keep_hybrid=False, stats=stats):
    ...     ...
    >>> print(stats.summary())          # what was read, and what was skipped and why

One module per format; each returns an iterator of records (large sets stream) and takes `strict`
(raise on a bad record instead of skipping it) and `stats` (an `ImportStats` it fills). A bad argument,
a missing path or an unreadable index file (labels file, datalist, batches.meta) raises
`DatasetFormatError` at the call; a bad data file (an HDF5 file, a batch) raises when iteration gets to it.

| name         | function                         | reads                                          |
| ------------ | -------------------------------- | ---------------------------------------------- |
| galaxy-mnist | `galaxy_mnist.read_galaxy_mnist` | GalaxyMNIST HDF5 (.hdf5/.hdf5.gz) or catalogue |
| mirabest     | `mirabest.read_mirabest`         | MiraBest / FR-DEEP CIFAR-style pickle batches  |
| first        | `first_galaxy.read_first`        | firstgalaxydata HDF5/zip (bundled) or PNG tree |
| radio-llava  | `radio_llava.read_radio_llava`   | radio-llava JSON datalists of FITS cutouts     |
| folder       | `folder.read_folder`             | images/FITS with a CSV or JSON labels file     |
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from data_builders.importers.common import DatasetFormatError, ImportStats
from data_builders.importers.first_galaxy import read_first
from data_builders.importers.folder import read_folder
from data_builders.importers.galaxy_mnist import read_galaxy_mnist
from data_builders.importers.mirabest import UnsafePickleError, read_mirabest
from data_builders.importers.radio_llava import read_radio_llava
from data_builders.records import Record

IMPORTERS: dict[str, Callable[..., Iterator[Record]]] = {
    "galaxy-mnist": read_galaxy_mnist,
    "mirabest": read_mirabest,
    "first": read_first,
    "radio-llava": read_radio_llava,
    "folder": read_folder,
}


def list_importers() -> list[str]:
    return sorted(IMPORTERS)


def import_records(format: str, path: str | Path | None, **options) -> Iterator[Record]:
    """Records from `path` read by the importer named `format`; `options` go to that importer."""
    if format not in IMPORTERS:
        raise ValueError(f"unknown import format {format!r}; valid: {list_importers()}")
    return IMPORTERS[format](path, **options)


__all__ = [
    "IMPORTERS",
    "DatasetFormatError",
    "ImportStats",
    "UnsafePickleError",
    "import_records",
    "list_importers",
    "read_first",
    "read_folder",
    "read_galaxy_mnist",
    "read_mirabest",
    "read_radio_llava",
]
