"""The embedded index's metadata: one SQLite database per generation (items and tags by key).

A writer works on an in-memory copy (loaded with SQLite's backup API, written
back the same way at save); a read-only view opens the generation's file
immutable, so readers never take locks.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from mmserve.index.records import ItemMetadata, Record

FILE = "metadata.sqlite"
_SCHEMA = """
    CREATE TABLE items(
        key INTEGER PRIMARY KEY, uri TEXT, content_hash TEXT, caption TEXT,
        created REAL NOT NULL, updated REAL NOT NULL,
        modality TEXT NOT NULL DEFAULT 'image', space TEXT NOT NULL DEFAULT 'main', start_s REAL, end_s REAL);
    CREATE INDEX items_by_hash ON items(content_hash);
    CREATE INDEX items_by_kind ON items(modality, space);
    CREATE TABLE tags(key INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY(tag, key)) WITHOUT ROWID;
    CREATE INDEX tags_by_key ON tags(key);
"""
_CHUNK = 500  # SQLite's bound-parameter limit is far above; keeps statements short
# Columns added after the first format: indices written before them gain them (as images of the main space).
_ADDED_COLUMNS = (
    ("modality", "TEXT NOT NULL DEFAULT 'image'"), ("space", "TEXT NOT NULL DEFAULT 'main'"),
    ("start_s", "REAL"), ("end_s", "REAL"),
)
_COLUMNS = "key, uri, content_hash, caption, created, updated, modality, space, start_s, end_s"


class MetadataStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._counts: dict[tuple[str, str], int] | None = None

    @classmethod
    def empty(cls) -> MetadataStore:
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.executescript(_SCHEMA)
        return cls(db)

    @classmethod
    def load(cls, generation: Path, *, view: bool) -> MetadataStore:
        if view:
            db = sqlite3.connect(f"file:{generation / FILE}?mode=ro&immutable=1", uri=True,
                                 check_same_thread=False)
            if _missing_columns(db):  # an older generation, read-only: upgrade a copy in memory
                memory = sqlite3.connect(":memory:", check_same_thread=False)
                db.backup(memory)
                db.close()
                _add_missing_columns(memory)
                db = memory
            return cls(db)
        db = sqlite3.connect(":memory:", check_same_thread=False)
        disk = sqlite3.connect(generation / FILE)
        try:
            disk.backup(db)
        finally:
            disk.close()
        _add_missing_columns(db)
        return cls(db)

    def save(self, generation: Path) -> None:
        disk = sqlite3.connect(generation / FILE)
        try:
            self._db.backup(disk)
        finally:
            disk.close()

    def close(self) -> None:
        self._db.close()

    def add(self, keys: Iterable[int], metadata: Sequence[ItemMetadata]) -> None:
        """Items added now, or (`Record`s, restored from another index) at their own times."""
        now = time.time()
        with self._db:
            self._db.executemany(
                f"INSERT INTO items({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(int(k), d.uri, d.content_hash, d.caption, *((d.created, d.updated) if isinstance(d, Record)
                                                              else (now, now)), d.modality, d.space, d.start, d.end)
                 for k, d in zip(keys, metadata)],
            )
            self._db.executemany("INSERT OR IGNORE INTO tags(key, tag) VALUES (?, ?)",
                                 [(int(k), tag) for k, d in zip(keys, metadata) for tag in d.tags])
        self._counts = None

    def remove(self, keys: Iterable[int]) -> None:
        rows = [(int(k),) for k in keys]
        with self._db:
            self._db.executemany("DELETE FROM items WHERE key = ?", rows)
            self._db.executemany("DELETE FROM tags WHERE key = ?", rows)
        self._counts = None

    def update(self, key: int, *, uri: str | None = None, caption: str | None = None,
               tags: Sequence[str] | None = None) -> None:
        with self._db:
            for column, value in (("uri", uri), ("caption", caption)):
                if value is not None:
                    self._db.execute(f"UPDATE items SET {column} = ? WHERE key = ?", (value, key))
            if tags is not None:
                self._db.execute("DELETE FROM tags WHERE key = ?", (key,))
                self._db.executemany("INSERT OR IGNORE INTO tags(key, tag) VALUES (?, ?)",
                                     [(key, tag) for tag in tags])
            self._db.execute("UPDATE items SET updated = ? WHERE key = ?", (time.time(), key))

    def records(self, keys: list[int]) -> dict[int, Record]:
        found: dict[int, Record] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            tags: dict[int, list[str]] = {}
            for key, tag in self._db.execute(f"SELECT key, tag FROM tags WHERE key IN ({marks}) ORDER BY tag",
                                             chunk):
                tags.setdefault(key, []).append(tag)
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE key IN ({marks})", chunk)
            found.update({key: Record(key=key, uri=uri, content_hash=h, caption=caption, tags=tags.get(key, []),
                                      created=c, updated=u, modality=modality, space=space, start=start, end=end)
                          for key, uri, h, caption, c, u, modality, space, start, end in rows})
        return found

    def find_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        hashes = list(hashes)
        for start in range(0, len(hashes), _CHUNK):
            chunk = hashes[start : start + _CHUNK]
            rows = self._db.execute(
                f"SELECT content_hash, key FROM items WHERE content_hash IN ({','.join('?' * len(chunk))})", chunk)
            found.update({h: int(k) for h, k in rows})
        return found

    def tags(self) -> dict[str, int]:
        return {tag: int(n) for tag, n in self._db.execute("SELECT tag, COUNT(*) FROM tags GROUP BY tag")}

    def counts(self) -> dict[tuple[str, str], int]:
        """How many items of each (modality, space) (kept between changes: searches consult it)."""
        if self._counts is None:
            self._counts = {(m, s): int(n) for m, s, n in self._db.execute(
                "SELECT modality, space, COUNT(*) FROM items GROUP BY modality, space")}
        return self._counts

    def keys_where(self, *, tags: Sequence[str] | None = None, modality: str | None = None,
                   space: str | None = None) -> list[int]:
        """Keys carrying every one of `tags`, of this modality and in this space (each when given)."""
        clauses, parameters = [], []
        if tags:
            wanted = sorted(set(tags))
            clauses.append(f"key IN (SELECT key FROM tags WHERE tag IN ({','.join('?' * len(wanted))}) "
                           "GROUP BY key HAVING COUNT(DISTINCT tag) = ?)")
            parameters.extend([*wanted, len(wanted)])
        for column, value in (("modality", modality), ("space", space)):
            if value is not None:
                clauses.append(f"{column} = ?")
                parameters.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return [k for (k,) in self._db.execute(f"SELECT key FROM items{where} ORDER BY key", parameters)]


def _missing_columns(db: sqlite3.Connection) -> list[tuple[str, str]]:
    present = {row[1] for row in db.execute("PRAGMA table_info(items)")}
    return [column for column in _ADDED_COLUMNS if column[0] not in present]


def _add_missing_columns(db: sqlite3.Connection) -> None:
    missing = _missing_columns(db)
    with db:
        for name, declaration in missing:
            db.execute(f"ALTER TABLE items ADD COLUMN {name} {declaration}")
        if missing:
            db.execute("CREATE INDEX IF NOT EXISTS items_by_kind ON items(modality, space)")
