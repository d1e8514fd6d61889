"""A human-in-the-loop labelling session, from Python or Jupyter (the chat's tools and tab use the same).

    session = HITLSession.create("hitl.sqlite", "spirals", pool="cutouts/", target="face-on spiral")
    session.label(12, True); session.label(40, False)        # a few seeds: indices into the pool
    for pick in session.next_round():                        # round_size images, by the alpha rule
        session.label(pick.idx, is_target(pick.item))        # each label is saved at once
    session.export("spirals.csv")                            # or .parquet: item, label, round, score
    HITLSession.open("hitl.sqlite", "spirals")               # later, or after a crash: nothing lost

The pool is a folder or a list of image files (unreadable ones are skipped and listed in `failed`), or
an (N, H, W, 3) uint8 array for experiments. Its LVM features are computed once and cached beside the
database (features-<key>.npy, the key from the files' names, sizes and times, or the array's bytes), so
reopening a session and every round read them from disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from app.hitl.store import HITLStore
from vlm.heads.hitl import HITLConfig, fit_scorer, recommend

FEATURES = "moments"  # the LVM features the MLP reads (vlm.lvm.fewshot.lvm_features)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".fits", ".fit", ".fz", ".npy"}


@dataclass
class Pick:
    idx: int
    item: str
    score: float


@dataclass
class HITLSession:
    store: HITLStore
    name: str
    items: list[str]
    readable: np.ndarray  # (N,) bool
    features: np.ndarray  # (N, D); rows of unreadable images are zeros and never used
    config: HITLConfig
    target: str = "target"
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)

    # ------------------------------------------------------------------------- opening

    @classmethod
    def create(
        cls, db: str | Path, name: str, pool, target: str = "target", alpha: float = 0.5, round_size: int = 10,
        lvm=None, progress: bool = True, item_names: list[str] | None = None,
    ) -> HITLSession:  # fmt: skip
        """`item_names` name the images of an array pool (default "array:i")."""
        store = HITLStore(db)
        HITLConfig(alpha=alpha, round_size=round_size)  # bad settings fail before any work
        items, pictures, reasons = _load_pool(pool, progress)
        if item_names is not None:
            if len(item_names) != len(items) or not isinstance(pool, np.ndarray):
                raise ValueError(f"item_names: one name per image of an array pool ({len(items)})")
            items = list(item_names)
        key = _pool_key(pool, items)
        features = _features(store.path.parent / f"features-{key}.npy", pictures, lvm, progress)
        store.create_session(name, target, alpha, round_size, key)
        store.add_pool(name, [(item, reason is None, reason) for item, reason in zip(items, reasons)])
        return cls.open(db, name, features=features)

    @classmethod
    def open(cls, db: str | Path, name: str, features: np.ndarray | None = None) -> HITLSession:
        store = HITLStore(db)
        info = store.session(name)
        pool = store.pool(name)
        if features is None:
            cache = store.path.parent / f"features-{info.pool_key}.npy"
            if not cache.is_file():
                raise FileNotFoundError(
                    f"{cache}: the pool's cached features are gone; create the session again"
                )
            features = np.load(cache)
        return cls(
            store=store,
            name=name,
            items=[item for item, _, _ in pool],
            readable=np.array([ok for _, ok, _ in pool], dtype=bool),
            features=features,
            config=HITLConfig(alpha=info.alpha, round_size=info.round_size),
            target=info.target,
            failed=[(item, reason) for item, ok, reason in pool if not ok],
        )

    # ------------------------------------------------------------------------- labelling

    @property
    def round(self) -> int:
        """The round being labelled: 0 while seeding, then the number of the latest recommended round."""
        return len(self.store.rounds(self.name))

    def label(self, idx: int, is_target: bool) -> None:
        self.store.set_label(self.name, int(idx), bool(is_target), self.round)

    def labels(self) -> dict[int, bool]:
        return {idx: label for idx, (label, _) in self.store.labels(self.name).items()}

    def next_round(self, force: bool = False) -> list[Pick]:
        """The images to label next. While the latest round still has unlabelled images, those (several
        tabs share a round); otherwise a new round by the alpha rule (`force`: a new one regardless)."""
        labels = self.store.labels(self.name)
        rounds = self.store.rounds(self.name)
        if rounds and not force:
            pending = [i for i in rounds[-1] if i not in labels]
            if pending:
                scores = self.scores()
                return [Pick(i, self.items[i], float(scores[i])) for i in pending]
        scores = self.scores()
        labelled = ~self.readable.copy()
        labelled[list(labels)] = True
        last = len(rounds)
        last_round = [label for label, round_ in labels.values() if round_ == last]
        picks = recommend(scores, labelled, last_round, self.config).tolist()
        if not self.store.add_round(self.name, last + 1, picks):  # another tab was first: take theirs
            return self.next_round()
        return [Pick(i, self.items[i], float(scores[i])) for i in picks]

    def scores(self) -> np.ndarray:
        """P(target) for every pool image (NaN for unreadable ones), from the MLP on the labels so far."""
        labels = self.store.labels(self.name)
        if not any(label for label, _ in labels.values()):
            raise ValueError("label at least one target image first (session.label(idx, True))")
        idx = np.array(sorted(labels))
        y = np.array([labels[i][0] for i in idx])
        usable = np.flatnonzero(self.readable)
        scorer = fit_scorer(self.features[usable], np.searchsorted(usable, idx), y, self.config)
        scores = np.full(len(self.items), np.nan, dtype=np.float32)
        scores[usable] = scorer.scores(self.features[usable])
        return scores

    def progress(self) -> dict:
        labels = self.labels()
        positives = sum(labels.values())
        return {
            "pool": len(self.items),
            "unreadable": len(self.failed),
            "labelled": len(labels),
            "positives": positives,
            "negatives": len(labels) - positives,
            "round": self.round,
        }

    def export(self, path: str | Path) -> Path:
        """Every pool image with its label (empty if none), round and current score: CSV or Parquet."""
        import pandas as pd

        path = Path(path)
        labels = self.store.labels(self.name)
        scores = (
            self.scores() if any(label for label, _ in labels.values()) else np.full(len(self.items), np.nan)
        )
        frame = pd.DataFrame(
            {
                "idx": np.arange(len(self.items)),
                "item": self.items,
                "readable": self.readable,
                "label": pd.array(
                    [labels[i][0] if i in labels else None for i in range(len(self.items))], "boolean"
                ),
                "round": pd.array(
                    [labels[i][1] if i in labels else None for i in range(len(self.items))], "Int64"
                ),
                "score": scores,
            }
        )
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        elif path.suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            raise ValueError(f"export to .csv or .parquet, not {path.suffix or 'no suffix'!r}")
        return path


# ----------------------------------------------------------------------------- the pool


def _load_pool(pool, progress: bool) -> tuple[list[str], list[np.ndarray | None], list[str | None]]:
    """(items, 64 px pictures or None, reason or None) for a folder, a list of files or an image array."""
    if isinstance(pool, np.ndarray):
        if pool.ndim != 4 or pool.shape[-1] != 3 or pool.dtype != np.uint8:
            raise ValueError(f"an array pool must be (N, H, W, 3) uint8, got {pool.shape} {pool.dtype}")
        return [f"array:{i}" for i in range(len(pool))], list(pool), [None] * len(pool)
    from app.images import ChatImage

    if isinstance(pool, (str, Path)):
        folder = Path(pool)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        files = [Path(p) for p in pool]
    if not files:
        raise ValueError("the pool holds no images")
    pictures, reasons = [], []
    for path in tqdm(files, desc="reading the pool", disable=not progress):
        try:
            pictures.append(ChatImage.read(path).model_view(64))
            reasons.append(None)
        except ValueError as exc:  # skipped and listed, never blocking the session
            pictures.append(None)
            reasons.append(" ".join(str(exc).split()))
    return [str(p) for p in files], pictures, reasons


def _pool_key(pool, items: list[str]) -> str:
    # the kind of features is part of the key: a new kind is a new cache, and old sessions keep theirs
    digest = hashlib.sha256(FEATURES.encode())
    if isinstance(pool, np.ndarray):
        digest.update(pool.tobytes())
    else:
        for item in items:
            stat = Path(item).stat() if Path(item).exists() else None
            digest.update(
                f"{Path(item).resolve()}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()[:16]


def _features(cache: Path, pictures: list, lvm, progress: bool) -> np.ndarray:
    if cache.is_file():
        return np.load(cache)
    from vlm.lvm.fewshot import lvm_features
    from vlm.lvm.shipped import load_default

    lvm = lvm or load_default()
    ok = [i for i, p in enumerate(pictures) if p is not None]
    if not ok:
        raise ValueError("no image of the pool could be read")
    batches = range(0, len(ok), 512)
    chunks = [
        lvm_features(lvm, np.stack([pictures[i] for i in ok[s : s + 512]]), FEATURES)
        for s in tqdm(batches, desc="LVM features", disable=not progress)
    ]
    features = np.zeros((len(pictures), chunks[0].shape[1]), np.float32)
    features[ok] = np.concatenate(chunks)
    temporary = cache.with_suffix(".tmp.npy")
    np.save(temporary, features)
    temporary.replace(cache)  # atomic: a kill never leaves half a cache
    return features
