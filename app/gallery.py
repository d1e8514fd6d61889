"""The gallery that `find_similar` searches: images with their LVM features, nearest by cosine similarity.

    gallery = Gallery.default(lvm)                      # simulated images of every family + FIRST galaxies
    gallery = Gallery.from_folder("my_cutouts/", lvm)   # your own images (PNG/JPEG/TIFF/FITS/NPY)
    gallery.nearest(rgb, k=5)                            # [Neighbour(id, label, similarity, thumbnail)]

Features are the LVM's bottleneck tokens, flattened (what the VLM's projector reads), standardised over
the gallery and L2-normalised, so similarity is the cosine in that space. The default gallery is built
in a few seconds on first use: `per_family` simulated images of each family (seed 7, none of the
training or benchmark seeds) and `n_first` real FIRST radio galaxies of the literature test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlm.lvm.model import LVM
from vlm.morphology import lvm_features

GALLERY_SEED = 7
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".fits", ".fit", ".fz", ".npy"}


@dataclass
class Neighbour:
    id: str
    label: str
    similarity: float
    thumbnail: np.ndarray  # (size, size, 3) uint8


class Gallery:
    def __init__(self, lvm: LVM, ids: list[str], labels: list[str], thumbnails: np.ndarray):
        if not ids:
            raise ValueError("a gallery needs at least one image")
        self.lvm, self.ids, self.labels, self.thumbnails = lvm.eval(), ids, labels, thumbnails
        features = lvm_features(lvm, list(thumbnails))
        self.mean, self.std = features.mean(0), features.std(0) + 1e-6
        self.features = self._normalise(features)

    def _normalise(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.std
        return z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)

    def __len__(self) -> int:
        return len(self.ids)

    def nearest(self, picture: np.ndarray, k: int = 5) -> list[Neighbour]:
        """The k gallery images most similar to one (H, W, 3) uint8 picture, most similar first."""
        query = self._normalise(lvm_features(self.lvm, [picture]))[0]
        similarity = self.features @ query
        order = np.argsort(-similarity)[:k]
        return [
            Neighbour(self.ids[i], self.labels[i], float(similarity[i]), self.thumbnails[i]) for i in order
        ]

    @classmethod
    def default(cls, lvm: LVM, per_family: int = 24, n_first: int = 60) -> Gallery:
        from data_builders.families import get_family, list_families
        from data_builders.importers import read_first
        from vlm.lvm.data import prepare_image

        size = lvm.config.img_size
        ids, labels, thumbnails = [], [], []
        for name in list_families():
            family = get_family(name)
            if family.simulate is None:  # an import-only family
                continue
            for i in range(per_family):
                record = family.simulate(np.random.default_rng([GALLERY_SEED, i]), family.default_size, "")
                ids.append(f"{name}-sim-{i:03d}")
                labels.append(", ".join(record.labels) or "none")
                thumbnails.append(prepare_image(record.image, record.domain, record.bands, size, crop=False))
        for i, record in enumerate(read_first(family="radio-b6", splits=["test"])):
            if i == n_first:
                break
            ids.append(f"FIRST-{record.id}")
            labels.append(", ".join(record.labels))
            thumbnails.append(
                prepare_image(record.image, "radio", ("I",), size, crop=True)
            )  # small in 300 px
        return cls(lvm, ids, labels, np.stack(thumbnails))

    @classmethod
    def from_folder(cls, folder: str | Path, lvm: LVM) -> Gallery:
        """Every readable image in `folder` (not its subfolders), labelled by file name; unreadable
        files are skipped with a warning naming them."""
        import warnings

        from app.images import ChatImage

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
        ids, thumbnails = [], []
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                thumbnails.append(ChatImage.read(path).model_view(lvm.config.img_size))
            except ValueError as exc:
                warnings.warn(f"gallery: skipped {exc}", stacklevel=2)
                continue
            ids.append(path.name)
        return cls(
            lvm, ids, [path.split(".")[0] for path in ids], np.stack(thumbnails) if ids else np.empty(0)
        )
