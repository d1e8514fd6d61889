"""Importers: each native format written small into tmp_path, read back, records checked exactly."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from data_builders.importers import (
    IMPORTERS,
    DatasetFormatError,
    ImportStats,
    UnsafePickleError,
    first_galaxy,
    galaxy_mnist,
    import_records,
    mirabest,
    radio_llava,
    read_first,
    read_folder,
    read_galaxy_mnist,
    read_mirabest,
    read_radio_llava,
)
from data_builders.records import Box


def _read(fn, path, **options) -> tuple[list, ImportStats]:
    stats = ImportStats()
    records = list(fn(path, stats=stats, **options))
    for record in records:
        json.dumps(record.params)  # params must serialise
    return records, stats


# ---------------------------------------------------------------- GalaxyMNIST


def _gmnist_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def _write_gmnist(path: Path, images: np.ndarray, labels) -> Path:
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["labels"] = np.asarray(labels, dtype=np.int64)
    return path


def test_galaxy_mnist_hdf5_and_gz(tmp_path):
    images, labels = _gmnist_images(6), [0, 1, 2, 3, 0, 3]
    plain = _write_gmnist(tmp_path / "train_dataset.hdf5", images, labels)
    records, stats = _read(read_galaxy_mnist, plain)
    assert [r.labels for r in records] == [(galaxy_mnist.CLASSES[c],) for c in labels]
    assert [r.id for r in records] == [f"gmnist-train-{i:05d}" for i in range(6)]
    assert records[2].labels == ("edge_on_disk",) and records[3].labels == ("unbarred_spiral",)
    for record, pixels in zip(records, images, strict=True):
        assert record.image.shape == (3, 64, 64) and record.image.dtype == np.float32
        np.testing.assert_array_equal(record.image, np.moveaxis(pixels, -1, 0))  # values stay 0-255
        assert (record.domain, record.family, record.bands) == ("optical", "optical-gmnist", ("R", "G", "B"))
        assert record.params == {"split": "train"}
    assert records[4].origin == f"{plain}#4"
    assert (stats.read, stats.n_skipped) == (6, 0)

    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    with open(plain, "rb") as src, gzip.open(gz_dir / "test_dataset.hdf5.gz", "wb") as dst:
        dst.write(src.read())
    gz_records, _ = _read(read_galaxy_mnist, gz_dir / "test_dataset.hdf5.gz")
    assert [r.id for r in gz_records] == [f"gmnist-test-{i:05d}" for i in range(6)]
    assert all(
        np.array_equal(a.image, b.image) and a.labels == b.labels
        for a, b in zip(records, gz_records, strict=True)
    )
    assert gz_records[0].params == {"split": "test"}

    # a folder: per split the HDF5 file (plain or .gz); `splits` picks them
    (gz_dir / "train_dataset.hdf5").write_bytes(plain.read_bytes())
    assert [r.id for r in _read(read_galaxy_mnist, gz_dir)[0]][::6] == [
        "gmnist-train-00000",
        "gmnist-test-00000",
    ]
    assert len(_read(read_galaxy_mnist, gz_dir, splits=("test",))[0]) == 6


def test_galaxy_mnist_catalogue(tmp_path):
    import pandas as pd

    (tmp_path / "images").mkdir()
    colours = np.array([[10, 100, 200], [50, 60, 70], [200, 30, 90], [0, 0, 0], [9, 9, 9]], np.uint8)
    images = np.broadcast_to(colours[:, None, None], (5, 64, 64, 3))
    for i, pixels in enumerate(images[:3]):  # flat colours survive JPEG almost exactly
        Image.fromarray(pixels).save(tmp_path / "images" / f"g{i}.jpg", quality=95)
    (tmp_path / "images" / "g3.jpg").write_bytes(b"")  # corrupt: empty
    Image.fromarray(images[4, :, :, 0]).save(tmp_path / "images" / "grey.jpg")  # one band only
    table = pd.DataFrame(
        {
            "filename": ["g0.jpg", "g1.jpg", "g2.jpg", "g3.jpg", "gone.jpg", "g0.jpg", "grey.jpg"],
            "label": ["2", "0", "unbarred_spiral", "1", "1", "9", "3"],
        }
    )
    table.to_parquet(tmp_path / "galaxy_mnist_test_catalog.parquet")
    records, stats = _read(read_galaxy_mnist, tmp_path)
    assert [(r.id, r.labels) for r in records] == [
        ("gmnist-test-g0", ("edge_on_disk",)),
        ("gmnist-test-g1", ("smooth_round",)),
        ("gmnist-test-g2", ("unbarred_spiral",)),
    ]
    assert records[0].image.shape == (3, 64, 64) and records[0].bands == ("R", "G", "B")
    assert np.abs(records[2].image - np.moveaxis(images[2], -1, 0)).max() <= 3
    assert records[1].params == {"split": "test", "filename": "g1.jpg"}
    assert records[1].origin == str(tmp_path / "images" / "g1.jpg")
    assert stats.skipped_by_reason == {
        "unreadable image": 1,
        "missing image": 1,
        "label outside the known set": 1,
        "not an RGB image": 1,
    }
    assert stats.summary().startswith("3 records read, 4 skipped")
    pd.DataFrame({"filename": ["g0.jpg"]}).to_parquet(tmp_path / "galaxy_mnist_test_catalog.parquet")
    with pytest.raises(DatasetFormatError, match=r"lacks column\(s\) \['label'\]"):
        list(read_galaxy_mnist(tmp_path))


def test_galaxy_mnist_bad_files(tmp_path):
    with h5py.File(tmp_path / "train_dataset.hdf5", "w") as f:
        f["labels"] = np.zeros(3, dtype=np.int64)
    with pytest.raises(DatasetFormatError, match=r"train_dataset.hdf5: HDF5 file has no images"):
        list(read_galaxy_mnist(tmp_path / "train_dataset.hdf5"))
    _write_gmnist(tmp_path / "test_dataset.hdf5", _gmnist_images(4), [0, 1, 2])
    with pytest.raises(DatasetFormatError, match="4 images but 3 labels"):
        list(read_galaxy_mnist(tmp_path / "test_dataset.hdf5"))
    (tmp_path / "x_dataset.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(DatasetFormatError, match="not a readable HDF5 file"):
        list(read_galaxy_mnist(tmp_path / "x_dataset.hdf5"))
    (tmp_path / "bad.hdf5.gz").write_bytes(b"not gzip")
    with pytest.raises(DatasetFormatError, match="not a readable gzip file"):
        list(read_galaxy_mnist(tmp_path / "bad.hdf5.gz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no GalaxyMNIST file in the folder"):
        list(read_galaxy_mnist(tmp_path / "empty"))
    with pytest.raises(DatasetFormatError, match="no such file or folder"):
        list(read_galaxy_mnist(tmp_path / "nowhere"))

    path = _write_gmnist(tmp_path / "train_dataset.hdf5", _gmnist_images(3), [0, 7, 1])  # 7 is no class
    records, stats = _read(read_galaxy_mnist, path)
    assert [r.id for r in records] == ["gmnist-train-00000", "gmnist-train-00002"]
    assert stats.skipped_by_reason == {"label outside the known set": 1}
    assert stats.skipped[0][0] == f"{path}#1" and "code 7" in stats.skipped[0][1]
    with pytest.raises(DatasetFormatError, match="label outside the known set: code 7"):
        list(read_galaxy_mnist(path, strict=True))


# ---------------------------------------------------------------- MiraBest / FR-DEEP

FINE_NAMES = ["100", "102", "104", "110", "112", "200", "201", "210", "300", "310"]


def _write_batches(folder: Path, label_names, batches: dict, protocol: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": label_names}, protocol=protocol))
    for name, content in batches.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=protocol))
    return folder


def _stamps(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 150, 150), dtype=np.uint8)


def test_mirabest_fine_codes_both_layouts(tmp_path):
    train, test = _stamps(4, 0), _stamps(3, 1)
    folder = _write_batches(
        tmp_path / "F_batches",
        FINE_NAMES,
        {
            "data_batch_1": {
                "data": train.reshape(4, 22500),
                "labels": [0, 3, 6, 8],
                "filenames": list("abcd"),
            },
            "test_batch": {"data": test, "labels": [np.int64(2), 7, 9], "filenames": ["e", "f", "g"]},
        },
    )
    records, stats = _read(read_mirabest, folder)
    assert [(r.id, r.labels) for r in records] == [
        ("mirabest-F_batches-data_batch_1-00000", ("FR-I",)),
        ("mirabest-F_batches-data_batch_1-00001", ("FR-I",)),
        ("mirabest-F_batches-data_batch_1-00002", ("FR-II",)),
        ("mirabest-F_batches-test_batch-00000", ("FR-I",)),
        ("mirabest-F_batches-test_batch-00001", ("FR-II",)),
    ]
    assert records[1].params == {
        "split": "train",
        "label_name": "110",
        "fine_code": "110",
        "confidence": "uncertain",
        "sub_morphology": "standard",
        "filename": "b",
    }
    assert (
        records[2].params["sub_morphology"] == "double-double"
        and records[2].params["confidence"] == "confident"
    )
    assert records[3].params["sub_morphology"] == "head-tail" and records[3].params["split"] == "test"
    assert records[4].params["fine_code"] == "210"
    for record, pixels in zip(records, [train[0], train[1], train[2], test[0], test[1]], strict=True):
        assert (record.domain, record.family, record.bands) == ("radio", "radio-b6", ("I",))
        np.testing.assert_array_equal(record.image, pixels[None].astype(np.float32))
    assert records[0].origin == f"{folder / 'data_batch_1'}#0"
    assert stats.read == 5 and stats.skipped_by_reason == {"hybrid (no radio-b6 label)": 2}

    kept, stats = _read(read_mirabest, folder, keep_hybrid=True)
    hybrids = [r for r in kept if r.labels == ("hybrid",)]
    assert [(r.params["fine_code"], r.params["confidence"]) for r in hybrids] == [
        ("300", "confident"),
        ("310", "uncertain"),
    ]
    assert stats.n_skipped == 0
    assert [r.params["split"] for r in _read(read_mirabest, folder, splits=("test",))[0]] == ["test", "test"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_mirabest_coarse_names_and_protocols(tmp_path, protocol):
    stamps = _stamps(3, 2)
    folder = _write_batches(
        tmp_path / "FRDEEP",
        ["FRI", "FRII", "Hybrid"],
        {
            "data_batch_1": {
                "data": stamps[:, None],
                "labels": np.array([1, 0, 2]),
                "filenames": ["x", "y", "z"],
            }
        },
        protocol=protocol,
    )
    records, stats = _read(read_mirabest, folder)
    assert [r.labels for r in records] == [("FR-II",), ("FR-I",)]
    assert records[0].params == {"split": "train", "label_name": "FRII", "filename": "x"}
    np.testing.assert_array_equal(records[1].image[0], stamps[1])
    assert stats.skipped_by_reason == {"hybrid (no radio-b6 label)": 1}


def test_mirabest_label_spellings():
    assert mirabest.interpret_label("FR-I") == ("FR-I", {})
    assert mirabest.interpret_label("fr2")[0] == "FR-II"
    assert mirabest.interpret_label("102") == (
        "FR-I",
        {"fine_code": "102", "confidence": "confident", "sub_morphology": "wide-angle tail"},
    )
    assert mirabest.interpret_label("Compact") is None and mirabest.interpret_label("410") is None


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_mirabest_refuses_code_in_pickles(tmp_path):
    marker = tmp_path / "pwned"
    folder = _write_batches(tmp_path / "evil", ["FRI", "FRII"], {"data_batch_1": {"data": _Evil(marker)}})
    with pytest.raises(UnsafePickleError, match=r"data_batch_1: pickle refers to (posix|nt)\.system"):
        list(read_mirabest(folder))
    (folder / "batches.meta").write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(UnsafePickleError, match="batches.meta"):
        list(read_mirabest(folder))
    assert not marker.exists()
    assert issubclass(UnsafePickleError, DatasetFormatError)


def test_mirabest_bad_files(tmp_path):
    stamps = _stamps(2, 3)
    folder = _write_batches(tmp_path / "mb", ["FRI", "FRII"], {"data_batch_1": [1, 2, 3]})
    with pytest.raises(DatasetFormatError, match="data_batch_1: unpickles to a list, not a dict"):
        list(read_mirabest(folder))
    _write_batches(folder, ["FRI", "FRII"], {"data_batch_1": {"data": stamps, "labels": [0, 1, 1]}})
    with pytest.raises(DatasetFormatError, match="2 images but 3 labels"):
        list(read_mirabest(folder))
    _write_batches(folder, ["FRI", "FRII"], {"data_batch_1": {"labels": [0, 1]}})
    with pytest.raises(DatasetFormatError, match="batch has no 'data'"):
        list(read_mirabest(folder))
    (folder / "data_batch_1").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DatasetFormatError, match="not a readable pickle"):
        list(read_mirabest(folder))
    (folder / "batches.meta").unlink()
    with pytest.raises(DatasetFormatError, match="batches.meta: missing"):
        list(read_mirabest(folder))

    # labels outside the known set: an index past label_names, or a name that is no FR class
    _write_batches(folder, ["FRI", "Compact"], {"data_batch_1": {"data": _stamps(3, 4), "labels": [0, 1, 5]}})
    records, stats = _read(read_mirabest, folder)
    assert len(records) == 1 and stats.skipped_by_reason == {"label outside the known set": 2}
    assert [where for where, _ in stats.skipped] == [
        f"{folder / 'data_batch_1'}#1",
        f"{folder / 'data_batch_1'}#2",
    ]


# ---------------------------------------------------------------- FIRST (firstgalaxydata)


def test_first_bundled_data():
    """The package's own galaxy_data_h5.zip: 2158 images 300x300, FRI 495, FRII 924, Compact 391, Bent 348."""
    records, stats = _read(read_first, None)
    assert Counter((r.labels[0], r.params["split"]) for r in records) == {
        ("FR-I", "train"): 395,
        ("FR-I", "valid"): 50,
        ("FR-I", "test"): 50,
        ("FR-II", "train"): 824,
        ("FR-II", "valid"): 50,
        ("FR-II", "test"): 50,
    }
    assert stats.skipped_by_reason == {"Compact (no radio-b6 label)": 391, "Bent (no radio-b6 label)": 348}
    assert len({r.id for r in records}) == len(records) == 1419
    first = records[0]
    assert first.image.shape == (1, 300, 300) and first.image.dtype == np.float32 and first.image.max() <= 255
    assert (first.domain, first.family, first.bands) == ("radio", "radio-b6", ("I",))
    assert first.id == "first-116.785_17.291_0_MiraBest" and first.origin.endswith(
        "galaxy_data_h5.zip#data_0"
    )
    assert first.params == {
        "split": "test",
        "literature_label": "FRI",
        "source": "MiraBest",
        "ra_deg": 116.785,
        "dec_deg": 17.291,
        "cdl1_label": "FRI-Sta",
    }


def _write_first_h5(path: Path) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    entries = [(0.0, "train"), (1.0, "test"), (2.0, "valid"), (3.0, "train"), (7.0, "train")]
    images = []
    with h5py.File(path, "w") as f:
        for i, (label, split) in enumerate(entries):
            group = f.create_group(f"data_{i}")
            images.append(rng.integers(0, 256, (300, 300), dtype=np.uint8))
            group["Img"] = images[-1]
            group["Img"].attrs.update({"RA": 10.0 + i, "DEC": -1.5, "Source": "Gendre"})
            group["Img"].attrs["Filepath_literature"] = f"X/{10 + i}.0_-1.5_{int(label)}_Gendre.png"
            group["Label_literature"] = label
            group["Split_literature"] = split
        f.create_group("data_5")  # no Img
    return images


def test_first_hdf5_layout_and_zip(tmp_path):
    images = _write_first_h5(tmp_path / "galaxy_data_h5.h5")
    records, stats = _read(read_first, tmp_path / "galaxy_data_h5.h5", family="radio-first")
    assert [(r.id, r.labels) for r in records] == [
        ("first-10.0_-1.5_0_Gendre", ("FRI",)),
        ("first-11.0_-1.5_1_Gendre", ("FRII",)),
        ("first-12.0_-1.5_2_Gendre", ("Compact",)),
        ("first-13.0_-1.5_3_Gendre", ("Bent",)),
    ]
    np.testing.assert_array_equal(records[3].image[0], images[3])
    assert records[1].params == {
        "split": "test",
        "literature_label": "FRII",
        "source": "Gendre",
        "ra_deg": 11.0,
        "dec_deg": -1.5,
    }
    assert stats.skipped_by_reason == {"label outside the known set": 1, "malformed entry": 1}

    with zipfile.ZipFile(tmp_path / "galaxy_data_h5.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(tmp_path / "galaxy_data_h5.h5", "galaxy_data_h5.h5")
    records, stats = _read(read_first, tmp_path / "galaxy_data_h5.zip", splits=("train", "test"))
    assert [r.labels for r in records] == [("FR-I",), ("FR-II",)]
    assert records[0].origin == f"{tmp_path / 'galaxy_data_h5.zip'}#data_0"
    assert stats.skipped_by_reason == {
        "Bent (no radio-b6 label)": 1,
        "label outside the known set": 1,
        "malformed entry": 1,
    }
    with pytest.raises(ValueError, match="unknown family 'radio-b3'"):
        read_first(tmp_path / "galaxy_data_h5.h5", family="radio-b3")
    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n broken")
    with pytest.raises(DatasetFormatError, match="broken.h5: not a readable HDF5 file"):
        list(read_first(tmp_path / "broken.h5"))


def test_first_png_tree(tmp_path):
    for split, name, stem in [
        ("train", "FRI", "1.5_2.5_0_MiraBest"),
        ("test", "Bent", "3.0_-4.0_3_Proctor_Tab1"),
    ]:
        (tmp_path / split / name).mkdir(parents=True)
        Image.fromarray(np.full((300, 300), 7, np.uint8)).save(tmp_path / split / name / f"{stem}.png")
    (tmp_path / "valid" / "FRII").mkdir(parents=True)
    (tmp_path / "valid" / "FRII" / "0_0_1_x.png").write_bytes(b"\x89PNG broken")
    records, stats = _read(read_first, tmp_path, family="radio-first")
    assert [(r.id, r.labels, r.params["split"]) for r in records] == [
        ("first-1.5_2.5_0_MiraBest", ("FRI",), "train"),
        ("first-3.0_-4.0_3_Proctor_Tab1", ("Bent",), "test"),
    ]
    assert records[1].params["source"] == "Proctor_Tab1" and records[1].params["dec_deg"] == -4.0
    assert (
        records[0].bands == ("I",) and records[0].image.shape == (1, 300, 300) and records[0].image.max() == 7
    )
    assert stats.skipped_by_reason == {"unreadable image": 1}


# ---------------------------------------------------------------- radio-llava datalists


def _write_fits(path: Path, data: np.ndarray) -> np.ndarray:
    fits.PrimaryHDU(data.astype(np.float32)).writeto(path)
    return data


def _datalist(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    rng = np.random.default_rng(6)
    (tmp_path / "cutouts").mkdir()
    images = [
        _write_fits(tmp_path / "cutouts" / f"c{i}.fits", rng.normal(0, 1e-3, (32, 40))) for i in range(3)
    ]
    absolute = str(tmp_path / "cutouts" / "c2.fits")
    (tmp_path / "cutouts" / "empty.fits").write_bytes(b"")
    entries = [
        {"filepaths": ["cutouts/c0.fits"], "sname": "S0", "id": [0], "label": ["COMPACT"]},
        {
            "filepaths": ["cutouts/c1.fits"],
            "sname": "S1",
            "id": [1, 4, 5],
            "label": ["EXTENDED", "RADIO-GALAXY", "ARTEFACT"],
        },
        {"filepaths": [absolute], "sname": "S2", "id": [3, 6], "label": ["DIFFUSE-LARGE", "WTF"]},
        {"filepaths": ["cutouts/gone.fits"], "sname": "S3", "id": [0], "label": ["COMPACT"]},
        {"filepaths": ["cutouts/empty.fits"], "sname": "S4", "id": [0], "label": "COMPACT"},
        {"filepaths": ["cutouts/c0.fits"], "sname": "S5", "id": [0], "label": ["SPIRAL"]},
        {"sname": "S6", "label": ["COMPACT"]},
    ]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"data": entries}))
    return path, images


@pytest.mark.parametrize(
    "family, expected",
    [
        ("radio-b1", [("NONE",), ("EXTENDED",), ("DIFFUSE-LARGE",)]),
        ("radio-b3", [("NO",), ("YES",), ("NO",)]),
        ("radio-b4", [("NO",), ("YES",), ("NO",)]),
        ("radio-b5", [("ORDINARY",), ("COMPLEX",), ("PECULIAR",)]),
    ],
)
def test_radio_llava_families(tmp_path, family, expected):
    path, images = _datalist(tmp_path)
    records, stats = _read(read_radio_llava, path, family=family)
    assert [r.labels for r in records] == expected
    assert [r.id for r in records] == ["radio-llava-S0", "radio-llava-S1", "radio-llava-S2"]
    for record, data in zip(records, images, strict=True):
        assert (record.domain, record.family, record.bands) == ("radio", family, ("I",))
        assert record.image.shape == (1, 32, 40)
        np.testing.assert_allclose(record.image[0], data[::-1].astype(np.float32))  # FITS rows run bottom-up
    assert records[1].params == {
        "raw_labels": ["EXTENDED", "RADIO-GALAXY", "ARTEFACT"],
        "sname": "S1",
        "class_id": [1, 4, 5],
        "filepaths": ["cutouts/c1.fits"],
    }
    assert records[0].origin == str(tmp_path / "cutouts" / "c0.fits")
    assert stats.skipped_by_reason == {
        "missing image": 1,
        "unreadable image": 1,
        "label outside the known set": 1,
        "malformed entry": 1,
    }


def test_radio_llava_b1_is_multi_label_and_b2_uses_component_classes(tmp_path):
    _write_fits(tmp_path / "a.fits", np.ones((8, 8)))
    entries = [{"filepaths": ["a.fits"], "sname": "A", "label": ["DIFFUSE-LARGE", "RADIO-GALAXY", "DIFFUSE"]}]
    (tmp_path / "smorph.json").write_text(json.dumps({"data": entries}))
    records, _ = _read(read_radio_llava, tmp_path / "smorph.json", family="radio-b1")
    assert records[0].labels == ("EXTENDED", "DIFFUSE", "DIFFUSE-LARGE")

    entries = [
        {"filepaths": ["a.fits"], "sname": "A", "label": "1C-2P"},
        {"filepaths": ["a.fits"], "label": "2C-3P"},
    ]
    (tmp_path / "rgz.json").write_text(json.dumps({"data": entries}))
    records, stats = _read(read_radio_llava, tmp_path / "rgz.json", family="radio-b2")
    assert [(r.id, r.labels) for r in records] == [
        ("radio-llava-A", ("1C-2P",)),
        ("radio-llava-a", ("2C-3P",)),
    ]
    records, stats = _read(read_radio_llava, tmp_path / "smorph.json", family="radio-b2")
    assert records == [] and stats.skipped_by_reason == {"label outside the known set": 1}


def test_radio_llava_bad_files(tmp_path):
    (tmp_path / "broken.json").write_text('{"data": [')
    with pytest.raises(DatasetFormatError, match="broken.json: not a readable JSON datalist"):
        read_radio_llava(tmp_path / "broken.json", family="radio-b3")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DatasetFormatError, match=r'expected a JSON object \{"data": \[entries\]\}'):
        read_radio_llava(tmp_path / "list.json", family="radio-b3")
    with pytest.raises(DatasetFormatError, match="no such file"):
        read_radio_llava(tmp_path / "none.json", family="radio-b3")
    with pytest.raises(
        ValueError, match="valid: \\['radio-b1', 'radio-b2', 'radio-b3', 'radio-b4', 'radio-b5'\\]"
    ):
        read_radio_llava(tmp_path / "list.json", family="radio-b6")
    path, _ = _datalist(tmp_path)
    with pytest.raises(DatasetFormatError, match="missing image"):
        list(read_radio_llava(path, family="radio-b3", strict=True))


# ---------------------------------------------------------------- folders with a labels file


def _folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    root = tmp_path / "myset"
    root.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / "grey.png")
    _write_fits(root / "b.fits", rng.normal(size=(16, 16)))
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(root / "c.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


CSV_ROWS = """filename,label,x0,y0,x1,y1,box_label,survey
a.png,FR-I;FR-II,1,2,11,12,FR-I,vlass
a.png,FR-II,20,5,30,15,,vlass
b.fits,FR-II|FR-I,,,,,,first
grey.png,,,,,,,first
missing.png,FR-I,,,,,,first
corrupt.png,FR-I,,,,,,first
c.png,Spiral,,,,,,first
"""


def test_folder_csv_with_boxes(tmp_path):
    root = _folder(tmp_path)
    (root / "labels.csv").write_text(CSV_ROWS)
    records, stats = _read(read_folder, root, domain="radio", family="radio-b6", classes=("FR-I", "FR-II"))
    assert [(r.id, r.labels) for r in records] == [
        ("myset-a.png", ("FR-I", "FR-II")),
        ("myset-b.fits", ("FR-II", "FR-I")),
        ("myset-grey.png", ()),
    ]
    a, b, grey = records
    assert a.boxes == (Box("FR-I", 1, 2, 11, 12), Box("FR-II", 20, 5, 30, 15))
    assert (
        a.image.shape == (3, 40, 50)
        and a.bands == ("R", "G", "B")
        and a.params == {"filename": "a.png", "survey": "vlass"}
    )
    assert (
        b.boxes == () and b.bands == ("I",) and b.image.shape == (1, 16, 16) and b.params["survey"] == "first"
    )
    assert grey.bands == ("I",) and grey.origin == str(root / "grey.png")  # single-plane radio image: band I
    assert all((r.domain, r.family) == ("radio", "radio-b6") for r in records)
    assert stats.skipped_by_reason == {
        "missing image": 1,
        "unreadable image": 1,
        "label outside the known set": 1,
    }
    assert any("Spiral" in why for _, why in stats.skipped)

    # without a class list every label is taken; the family is the caller's
    records, stats = _read(read_folder, root / "labels.csv", domain="optical")
    assert [r.labels for r in records][-1] == ("Spiral",) and records[0].family == "custom"
    assert records[1].bands == ("I",)  # the FITS file's own band name
    assert stats.skipped_by_reason == {"missing image": 1, "unreadable image": 1}


def test_folder_json_with_boxes(tmp_path):
    root = _folder(tmp_path)
    items = [
        {
            "filename": "a.png",
            "labels": ["galaxy"],
            "boxes": [{"label": "star", "x0": 0, "y0": 0, "x1": 5, "y1": 4}],
        },
        {"filename": "b.fits", "label": "galaxy;star", "exposure": 30},
        {
            "filename": "grey.png",
            "labels": ["galaxy"],
            "boxes": [{"label": "star", "x0": 5, "y0": 5, "x1": 5, "y1": 9}],
        },
        {"filename": "a.png", "labels": ["galaxy"]},
        {"labels": ["galaxy"]},
        {"filename": "corrupt.png", "labels": ["planet"]},
    ]
    (root / "labels.json").write_text(json.dumps(items))
    records, stats = _read(read_folder, root, domain="optical", family="custom", classes=("galaxy", "star"))
    assert [(r.id, r.labels, r.boxes) for r in records] == [
        ("myset-a.png", ("galaxy",), (Box("star", 0, 0, 5, 4),)),
        ("myset-b.fits", ("galaxy", "star"), ()),
    ]
    assert records[1].params == {"filename": "b.fits", "exposure": 30}
    assert stats.skipped_by_reason == {"bad box": 1, "malformed entry": 2, "label outside the known set": 1}
    with pytest.raises(DatasetFormatError, match="bad box: empty box"):
        list(read_folder(root, domain="optical", strict=True))


def test_folder_bad_label_files(tmp_path):
    root = _folder(tmp_path)
    (root / "labels.csv").write_text("name,label\na.png,x\n")
    with pytest.raises(DatasetFormatError, match=r"labels.csv: missing column\(s\) \['filename'\]"):
        read_folder(root, domain="optical")
    (root / "labels.csv").write_text("filename,label,x0,y0\na.png,x,1,2\n")
    with pytest.raises(DatasetFormatError, match="box columns must be all of"):
        read_folder(root, domain="optical")
    (root / "labels.csv").write_text("filename,label,x0,y0,x1,y1\na.png,x,1,2,oops,4\nb.fits,x,1,2\n")
    records, stats = _read(read_folder, root, domain="optical")
    assert records == [] and stats.skipped_by_reason == {"bad box": 1, "malformed entry": 1}
    (root / "labels.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match="expected one of"):
        read_folder(root, domain="optical")  # two labels files: which one is meant?
    with pytest.raises(DatasetFormatError, match="labels.json: not a readable JSON file"):
        read_folder(root / "labels.json", domain="optical")
    (root / "labels.json").write_text('{"filename": "a.png"}')
    with pytest.raises(DatasetFormatError, match="expected a JSON list"):
        read_folder(root / "labels.json", domain="optical")
    with pytest.raises(ValueError, match="unknown domain 'infrared'"):
        read_folder(root / "labels.json", domain="infrared")


# ---------------------------------------------------------------- registry and class lists


def test_registry(tmp_path):
    assert sorted(IMPORTERS) == ["first", "folder", "galaxy-mnist", "mirabest", "radio-llava"]
    with pytest.raises(ValueError, match=r"unknown import format 'cifar'; valid: \['first', 'folder', "):
        import_records("cifar", tmp_path)
    path = _write_gmnist(tmp_path / "test_dataset.hdf5", _gmnist_images(2), [1, 2])
    stats = ImportStats()
    assert [r.labels for r in import_records("galaxy-mnist", path, stats=stats)] == [
        ("smooth_cigar",),
        ("edge_on_disk",),
    ]
    assert stats.summary() == "2 records read, 0 skipped"


def test_class_lists_match_families():
    try:  # the simulators behind data_builders.families may be mid-change; their own tests cover them
        from data_builders import families
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"data_builders.families does not import: {exc}")
    classes = {name: families.get_family(name).classes for name in families.list_families()}
    assert classes[galaxy_mnist.FAMILY] == galaxy_mnist.CLASSES
    assert classes[mirabest.FAMILY] == mirabest.CLASSES
    assert set(classes["radio-b6"]) == set(first_galaxy.FAMILY_LABELS["radio-b6"].values())
    for name, mapping in radio_llava.MAPPINGS.items():
        outputs = {label for label, _ in mapping.rules} | ({mapping.default} - {None})
        assert set(classes[name]) == outputs, name
