"""MiraBest / FR-DEEP importer: CIFAR-style pickle batches of FIRST radio galaxies, as `radio-b6` records.

    >>> stats = ImportStats()
    >>> records = list(read_mirabest("MiraBest_F/F_batches", stats=stats))
    >>> records[0].labels, records[0].params["fine_code"]       # ('FR-I',), '100'

`path` is the folder with `data_batch_1` ... `data_batch_N` (split "train"), `test_batch` ("test") and
`batches.meta`. A batch unpickles (latin1) to a dict with `data` (n, 22500) or (n, 150, 150) uint8,
`labels` (or `fine_labels`): indices into the meta's `label_names`, and `filenames`. Label names are
- fine (MiraBest_F): three-digit codes '100' ... '310'. First digit 1 FR-I, 2 FR-II, 3 hybrid; middle
  digit 0 confident, 1 uncertain; last digit the sub-morphology (`SUB_MORPHOLOGY`);
- coarse (FR-DEEP, coarse MiraBest): 'FRI', 'FRII', 'Hybrid', spelt in any of the usual ways.
FR-I and FR-II become the radio-b6 labels "FR-I" and "FR-II". Hybrids have no radio-b6 label: they are
skipped and counted, or kept with the label "hybrid" when `keep_hybrid=True`. Images are single-plane,
0-255, float32 (1, H, W) with band "I".

Unpickling runs whatever code a pickle names, so batches are loaded by `SafeUnpickler`, which builds
numpy arrays, dtypes and scalars and nothing else: any other global raises `UnsafePickleError`.
"""

from __future__ import annotations

import importlib
import io
import math
import pickle
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from data_builders.importers.common import DatasetFormatError, ImportStats, json_value, reject, slug
from data_builders.records import Record

FAMILY = "radio-b6"
CLASSES = ("FR-I", "FR-II")  # the radio-b6 labels; "hybrid" only with keep_hybrid=True
HYBRID = "hybrid"
FINE_CLASS = {"1": "FR-I", "2": "FR-II", "3": HYBRID}  # first digit of a fine code
CONFIDENCE = {"0": "confident", "1": "uncertain"}  # middle digit
SUB_MORPHOLOGY = {  # last digit
    "0": "standard",
    "1": "double-double",
    "2": "wide-angle tail",
    "3": "diffuse",
    "4": "head-tail",
}
# coarse label names, upper-cased with everything but A-Z0-9 removed: "FR-I", "FR I", "fri" are all "FRI"
COARSE_CLASS = {"FRI": "FR-I", "FR1": "FR-I", "FRII": "FR-II", "FR2": "FR-II", "HYBRID": HYBRID}
SPLITS = ("train", "test")
META_FILE = "batches.meta"


class UnsafePickleError(DatasetFormatError):
    """A pickle that asks for something other than numpy arrays; refused before anything runs."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals numpy arrays need (and harmless builtin types)."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),  # ndarray.__reduce__ (protocols 0-4)
        ("numpy._core.multiarray", "scalar"),  # numpy scalars, e.g. np.int64 labels
        ("numpy._core.numeric", "_frombuffer"),  # ndarray.__reduce_ex__ (protocol 5)
        ("_codecs", "encode"),  # how protocol 2 writes bytes
        *(("builtins", t) for t in ("list", "dict", "tuple", "set", "frozenset", "bytearray", "bytes")),
    }

    def __init__(self, file, name: str, **kwargs):
        super().__init__(file, **kwargs)
        self.name = name

    def find_class(self, module: str, name: str):
        modern = {"__builtin__": "builtins"}.get(module, re.sub(r"^numpy\.core\b", "numpy._core", module))
        if (modern, name) not in self.ALLOWED:
            raise UnsafePickleError(
                self.name, f"pickle refers to {module}.{name}; only numpy arrays are loaded from batches"
            )
        try:
            return getattr(importlib.import_module(modern), name)
        except ImportError:  # numpy < 2 without the numpy._core alias
            return getattr(importlib.import_module(module), name)


def safe_load(path: Path) -> object:
    """Unpickle a file with `SafeUnpickler` (latin1, as CIFAR-style batches from Python 2 need)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read ({exc.strerror or exc})") from exc
    try:
        return SafeUnpickler(io.BytesIO(raw), str(path), encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or not a pickle: UnpicklingError, EOFError, ValueError, ...
        raise DatasetFormatError(path, f"not a readable pickle ({type(exc).__name__}: {exc})") from exc


def read_mirabest(
    path: str | Path,
    *,
    splits: Sequence[str] = SPLITS,
    keep_hybrid: bool = False,
    strict: bool = False,
    stats: ImportStats | None = None,
) -> Iterator[Record]:
    """Yield one record per image in the batches of `splits`; hybrids only with `keep_hybrid`."""
    stats = ImportStats() if stats is None else stats
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetFormatError(folder, "not a folder of MiraBest/FR-DEEP batches")
    return _read(
        folder, _label_names(folder / META_FILE), _batch_files(folder, splits), keep_hybrid, stats, strict
    )


def _read(
    folder: Path,
    label_names: list[str],
    batches: list[tuple[str, Path]],
    keep_hybrid: bool,
    stats: ImportStats,
    strict: bool,
) -> Iterator[Record]:
    for split, file in batches:
        data, labels, filenames = _read_batch(file)
        for index, (pixels, label_index, filename) in enumerate(zip(data, labels, filenames, strict=True)):
            where = f"{file}#{index}"
            if not 0 <= label_index < len(label_names):
                detail = f"index {label_index} of {label_names}"
                reject(stats, strict, where, "label outside the known set", detail)
                continue
            label_name = label_names[label_index]
            interpreted = interpret_label(label_name)
            if interpreted is None:
                detail = f"{label_name!r}: neither a fine code 1xx-3xx nor FRI/FRII/Hybrid"
                reject(stats, strict, where, "label outside the known set", detail)
                continue
            label, params = interpreted
            if label == HYBRID and not keep_hybrid:
                stats.skip(where, "hybrid (no radio-b6 label)", label_name, warn=False)
                continue
            stats.read += 1
            yield Record(
                id=f"mirabest-{slug(folder.name)}-{file.name}-{index:05d}",
                image=pixels[None].astype(np.float32),
                domain="radio",
                family=FAMILY,
                labels=(label,),
                bands=("I",),
                params={"split": split, "label_name": label_name, **params, "filename": filename},
                origin=where,
            )


def interpret_label(name: str) -> tuple[str, dict] | None:
    """A label name -> (label, extra params), or None if it is neither a fine code nor a coarse class."""
    if re.fullmatch(r"[123][01]\d", name):
        first, middle, last = name
        sub = SUB_MORPHOLOGY.get(last, f"code {last}")
        return FINE_CLASS[first], {"fine_code": name, "confidence": CONFIDENCE[middle], "sub_morphology": sub}
    coarse = COARSE_CLASS.get(re.sub(r"[^A-Z0-9]", "", name.upper()))
    return (coarse, {}) if coarse else None


def _label_names(meta: Path) -> list[str]:
    if not meta.is_file():
        raise DatasetFormatError(meta, "missing: the label names of the batches are in batches.meta")
    content = _str_keys(safe_load(meta), meta)
    names = content.get("label_names")
    if not isinstance(names, (list, tuple)) or not names:
        raise DatasetFormatError(meta, f"no list 'label_names' (keys: {sorted(content)})")
    return [str(json_value(n)).strip() for n in names]


def _batch_files(folder: Path, splits: Sequence[str]) -> list[tuple[str, Path]]:
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; valid: {SPLITS}")
    train = sorted(folder.glob("data_batch_*"), key=lambda p: (len(p.name), p.name))  # _2 before _10
    test = [folder / "test_batch"] if (folder / "test_batch").is_file() else []
    batches = [("train", f) for f in train] + [("test", f) for f in test]
    batches = [(split, f) for split, f in batches if split in splits]
    if not batches:
        raise DatasetFormatError(folder, f"no data_batch_N or test_batch files for splits {tuple(splits)}")
    return batches


def _read_batch(file: Path) -> tuple[np.ndarray, list[int], list[str | None]]:
    content = _str_keys(safe_load(file), file)
    if "data" not in content:
        raise DatasetFormatError(file, f"batch has no 'data' (keys: {sorted(content)})")
    labels = content.get("labels", content.get("fine_labels"))
    if labels is None:
        raise DatasetFormatError(file, f"batch has no 'labels' or 'fine_labels' (keys: {sorted(content)})")
    data, labels = np.asarray(content["data"]), np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetFormatError(file, f"labels are {labels.dtype} {labels.shape}; expected integers")
    if data.ndim == 2 and math.isqrt(data.shape[1]) ** 2 == data.shape[1]:  # (n, H*W) rows of square images
        side = math.isqrt(data.shape[1])
        data = data.reshape(len(data), side, side)
    elif data.ndim == 4 and data.shape[1] == 1:  # (n, 1, H, W)
        data = data[:, 0]
    if data.ndim != 3 or data.dtype.kind not in "iuf":
        raise DatasetFormatError(file, f"data is {data.dtype} {data.shape}; expected (n, H*W) or (n, H, W)")
    filenames = content.get("filenames")
    filenames = [None] * len(labels) if filenames is None else [str(json_value(f)) for f in filenames]
    if not len(data) == len(labels) == len(filenames):
        raise DatasetFormatError(file, f"{len(data)} images but {len(labels)} labels, {len(filenames)} names")
    return data, [int(v) for v in labels], filenames


def _str_keys(content: object, file: Path) -> dict:
    if not isinstance(content, dict):
        raise DatasetFormatError(file, f"unpickles to a {type(content).__name__}, not a dict")
    return {json_value(k) if isinstance(k, bytes) else k: v for k, v in content.items()}
