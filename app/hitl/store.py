"""The HITL sessions on disk: one SQLite file (WAL), one transaction per label, so that a crash or a kill
loses no label given before it and two tabs labelling the same session never lose or double one.

    store = HITLStore("hitl.sqlite")
    store.create_session("spirals", target="face-on spiral", alpha=0.5, round_size=10, pool_key=key)
    store.add_pool("spirals", [("a.fits", True, None), ("b.png", False, "corrupt PNG")])
    store.set_label("spirals", idx=3, label=True, round_=1)
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    name TEXT PRIMARY KEY, target TEXT NOT NULL, alpha REAL NOT NULL, round_size INTEGER NOT NULL,
    pool_key TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pool (
    session TEXT NOT NULL REFERENCES sessions(name), idx INTEGER NOT NULL, item TEXT NOT NULL,
    ok INTEGER NOT NULL, reason TEXT, PRIMARY KEY (session, idx)
);
CREATE TABLE IF NOT EXISTS labels (
    session TEXT NOT NULL REFERENCES sessions(name), idx INTEGER NOT NULL, label INTEGER NOT NULL,
    round INTEGER NOT NULL, labelled_at REAL NOT NULL, PRIMARY KEY (session, idx)
);
CREATE TABLE IF NOT EXISTS rounds (
    session TEXT NOT NULL REFERENCES sessions(name), round INTEGER NOT NULL, recommended TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (session, round)
);
"""


@dataclass(frozen=True)
class SessionInfo:
    name: str
    target: str
    alpha: float
    round_size: int
    pool_key: str


class HITLStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, a kill loses nothing
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _connect(self):
        """A connection per operation: safe from any thread (each browser tab runs in its own)."""
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # ------------------------------------------------------------------------- sessions

    def create_session(self, name: str, target: str, alpha: float, round_size: int, pool_key: str) -> None:
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                    (name, target, alpha, round_size, pool_key, time.time()),
                )
        except sqlite3.IntegrityError:
            raise ValueError(
                f"a session named {name!r} exists in {self.path}; open it or pick another name"
            ) from None

    def session(self, name: str) -> SessionInfo:
        with self._connect() as db:
            row = db.execute(
                "SELECT name, target, alpha, round_size, pool_key FROM sessions WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise ValueError(f"no session named {name!r} in {self.path}; sessions: {self.sessions()}")
        return SessionInfo(*row)

    def sessions(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM sessions ORDER BY created")]

    # ------------------------------------------------------------------------- the pool

    def add_pool(self, session: str, items: list[tuple[str, bool, str | None]]) -> None:
        """(item, readable, reason if not) per pool image, in pool order."""
        with self._connect() as db:
            db.executemany(
                "INSERT INTO pool VALUES (?, ?, ?, ?, ?)",
                [(session, i, item, int(ok), reason) for i, (item, ok, reason) in enumerate(items)],
            )

    def pool(self, session: str) -> list[tuple[str, bool, str | None]]:
        with self._connect() as db:
            rows = db.execute("SELECT item, ok, reason FROM pool WHERE session = ? ORDER BY idx", (session,))
            return [(item, bool(ok), reason) for item, ok, reason in rows]

    # ------------------------------------------------------------------------- labels and rounds

    def set_label(self, session: str, idx: int, label: bool, round_: int) -> None:
        """One transaction; labelling an image again replaces its label (never a second row)."""
        with self._connect() as db:
            ok = db.execute("SELECT ok FROM pool WHERE session = ? AND idx = ?", (session, idx)).fetchone()
            if ok is None:
                raise ValueError(f"image {idx} is not in the pool of session {session!r}")
            if not ok[0]:
                raise ValueError(
                    f"image {idx} of session {session!r} could not be read and cannot be labelled"
                )
            db.execute(
                "INSERT INTO labels VALUES (?, ?, ?, ?, ?) ON CONFLICT (session, idx) DO UPDATE SET "
                "label = excluded.label, round = excluded.round, labelled_at = excluded.labelled_at",
                (session, idx, int(label), round_, time.time()),
            )

    def labels(self, session: str) -> dict[int, tuple[bool, int]]:
        """{idx: (label, round)}."""
        with self._connect() as db:
            rows = db.execute("SELECT idx, label, round FROM labels WHERE session = ?", (session,))
            return {idx: (bool(label), round_) for idx, label, round_ in rows}

    def add_round(self, session: str, round_: int, recommended: list[int]) -> bool:
        """Record round `round_`; False if another tab recorded it first (theirs stands)."""
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO rounds VALUES (?, ?, ?, ?)",
                    (session, round_, json.dumps(recommended), time.time()),
                )
            return True
        except sqlite3.IntegrityError:
            return False

    def rounds(self, session: str) -> list[list[int]]:
        """The recommended indices of rounds 1, 2, ... (round 0 is the seeds)."""
        with self._connect() as db:
            rows = db.execute("SELECT recommended FROM rounds WHERE session = ? ORDER BY round", (session,))
            return [json.loads(r[0]) for r in rows]
