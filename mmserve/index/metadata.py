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
        created REAL NOT NULL, updated REAL NOT NULL);
    CREATE INDEX items_by_hash ON items(content_hash);
    CREATE TABLE tags(key INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY(tag, key)) WITHOUT ROWID;
    CREATE INDEX tags_by_key ON tags(key);
"""
_CHUNK = 500  # SQLite's bound-parameter limit is far above; keeps statements short


class MetadataStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    @classmethod
    def empty(cls) -> MetadataStore:
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.executescript(_SCHEMA)
        return cls(db)

    @classmethod
    def load(cls, generation: Path, *, view: bool) -> MetadataStore:
        if view:
            return cls(sqlite3.connect(f"file:{generation / FILE}?mode=ro&immutable=1", uri=True,
                                       check_same_thread=False))
        db = sqlite3.connect(":memory:", check_same_thread=False)
        disk = sqlite3.connect(generation / FILE)
        try:
            disk.backup(db)
        finally:
            disk.close()
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
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT INTO items(key, uri, content_hash, caption, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                [(int(k), d.uri, d.content_hash, d.caption, now, now) for k, d in zip(keys, metadata)],
            )
            self._db.executemany("INSERT OR IGNORE INTO tags(key, tag) VALUES (?, ?)",
                                 [(int(k), tag) for k, d in zip(keys, metadata) for tag in d.tags])

    def remove(self, keys: Iterable[int]) -> None:
        rows = [(int(k),) for k in keys]
        with self._db:
            self._db.executemany("DELETE FROM items WHERE key = ?", rows)
            self._db.executemany("DELETE FROM tags WHERE key = ?", rows)

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
            rows = self._db.execute(
                f"SELECT key, uri, content_hash, caption, created, updated FROM items WHERE key IN ({marks})", chunk)
            found.update({key: Record(key=key, uri=uri, content_hash=h, caption=caption, tags=tags.get(key, []),
                                      created=c, updated=u) for key, uri, h, caption, c, u in rows})
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

    def keys_with_tags(self, tags: Sequence[str]) -> list[int]:
        """Keys carrying every one of `tags`."""
        wanted = sorted(set(tags))
        return [k for (k,) in self._db.execute(
            f"SELECT key FROM tags WHERE tag IN ({','.join('?' * len(wanted))}) GROUP BY key "
            "HAVING COUNT(DISTINCT tag) = ?", (*wanted, len(wanted)))]
