"""`mmserve.Index`: a usearch HNSW index of embeddings with a SQLite metadata store.

On disk an index is a directory of immutable generations plus a pointer:

    INDEX/
      CURRENT              "gen-000007": the generation readers open
      gen-000007/
        manifest.json      dimensions, storage dtype, count, next key, model
        hnsw.usearch       the usearch graph (f16 or i8 storage)
        vectors.npy        the same vectors as a plain matrix, for exact scans and re-ranking
        scales.npy         per-row scales (i8 storage only)
        keys.npy           int64 key of each matrix row (ascending)
        metadata.sqlite    key, source URI, content hash, caption, tags, timestamps

`save()` writes a complete new generation, fsyncs it, then atomically replaces
CURRENT (write, fsync, rename, fsync the directory). A crash at any point
leaves CURRENT naming the previous complete generation, so the graph, the
matrix and the metadata always come from the same save. One writer at a time
(an exclusive lock on INDEX/LOCK); any number of read-only `view`s, which
memory-map the files instead of loading them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

FORMAT_VERSION = 1
CURRENT = "CURRENT"
# Below this many candidate rows, search scans every vector exactly (the SIMD kernel) instead of the graph.
EXACT_SCAN_LIMIT = 20_000
# HNSW candidates fetched per result before exact re-ranking.
RERANK_FACTOR = 4

Storage = Literal["f16", "i8"]


class ItemMetadata(BaseModel):
    """What is stored with each vector. All optional."""

    uri: str | None = Field(default=None, description="Where the item came from (a path or URL).")
    content_hash: str | None = Field(default=None, description="Hash of the source bytes (incremental indexing).")
    caption: str | None = None
    tags: list[str] = Field(default_factory=list)


class Record(ItemMetadata):
    key: int
    created: float
    updated: float


class Hit(BaseModel):
    key: int
    score: float  # cosine similarity
    record: Record


@dataclasses.dataclass
class _Matrix:
    keys: np.ndarray  # int64 [N], ascending
    vectors: np.ndarray  # float16 or int8 [N, D]
    scales: np.ndarray | None  # float32 [N] for int8


class IndexLockedError(RuntimeError):
    """Another process has this index open for writing."""


class Index:
    """Create with `Index.create(path, dim)`, open with `Index.open(path)` (or `view=True` to read only)."""

    def __init__(self, path: Path, manifest: dict, hnsw, matrix: _Matrix, db: sqlite3.Connection, *,
                 read_only: bool, lock_file=None) -> None:
        self.path = path
        self._manifest = manifest
        self._hnsw = hnsw
        self._stored = matrix
        self._pending: list[_Matrix] = []  # added since the last consolidation (amortises appends)
        self._db = db
        self.read_only = read_only
        self._lock_file = lock_file
        self._dirty = False

    # -- opening -------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, dim: int, *, storage: Storage = "f16", model: str = "",
               connectivity: int = 16, expansion_add: int = 128, expansion_search: int = 128) -> Index:
        """A new, empty index at `path` (saved at once, so it can be opened)."""
        if storage not in ("f16", "i8"):
            raise ValueError(f"storage must be 'f16' or 'i8', got {storage!r}")
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        path = Path(path)
        if (path / CURRENT).exists():
            raise FileExistsError(f"{path} already holds an index")
        path.mkdir(parents=True, exist_ok=True)
        lock = _lock(path)
        manifest = {
            "format": FORMAT_VERSION, "dim": dim, "storage": storage, "model": model, "count": 0, "next_key": 0,
            "generation": 0, "connectivity": connectivity, "expansion_add": expansion_add,
            "expansion_search": expansion_search,
        }
        dtype = np.float16 if storage == "f16" else np.int8
        matrix = _Matrix(np.zeros(0, np.int64), np.zeros((0, dim), dtype),
                         np.zeros(0, np.float32) if storage == "i8" else None)
        db = sqlite3.connect(":memory:", check_same_thread=False)
        _create_schema(db)
        index = cls(path, manifest, _new_hnsw(manifest), matrix, db, read_only=False, lock_file=lock)
        index._dirty = True
        index.save()
        return index

    @classmethod
    def open(cls, path: str | Path, *, view: bool = False) -> Index:
        """Open for writing (loaded into memory, one writer) or, with `view=True`, read-only memory-mapped."""
        path = Path(path)
        if not (path / CURRENT).is_file():
            raise FileNotFoundError(f"no mmserve index at {path} (create one with `mmserve index`)")
        lock = None if view else _lock(path)
        generation = path / (path / CURRENT).read_text().strip()
        manifest = json.loads((generation / "manifest.json").read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: index format {manifest.get('format')} is not {FORMAT_VERSION}")
        mmap = "r" if view and manifest["count"] else None  # numpy cannot map a zero-row array
        scales_file = generation / "scales.npy"
        matrix = _Matrix(
            np.load(generation / "keys.npy", mmap_mode=mmap),
            np.load(generation / "vectors.npy", mmap_mode=mmap),
            np.load(scales_file, mmap_mode=mmap) if scales_file.is_file() else None,
        )
        hnsw = _new_hnsw(manifest)
        if manifest["count"]:
            if view:
                hnsw.view(str(generation / "hnsw.usearch"))
            else:
                hnsw.load(str(generation / "hnsw.usearch"))
        if view:
            db = sqlite3.connect(f"file:{generation / 'metadata.sqlite'}?mode=ro&immutable=1", uri=True,
                                 check_same_thread=False)
        else:
            db = sqlite3.connect(":memory:", check_same_thread=False)
            disk = sqlite3.connect(generation / "metadata.sqlite")
            try:
                disk.backup(db)
            finally:
                disk.close()
        return cls(path, manifest, hnsw, matrix, db, read_only=view, lock_file=lock)

    @classmethod
    def open_or_create(cls, path: str | Path, dim: int, **options) -> Index:
        path = Path(path)
        if (path / CURRENT).is_file():
            index = cls.open(path)
            if index.dim != dim:
                index.close()
                raise ValueError(f"{path} holds {index.dim}-dimensional vectors; the model gives {dim}")
            return index
        return cls.create(path, dim, **options)

    # -- properties ----------------------------------------------------------------------------------------

    @property
    def _matrix(self) -> _Matrix:
        if self._pending:
            parts = [self._stored, *self._pending]
            self._stored = _Matrix(
                np.concatenate([p.keys for p in parts]), np.concatenate([p.vectors for p in parts]),
                None if self._stored.scales is None else np.concatenate([p.scales for p in parts]),
            )
            self._pending = []
        return self._stored

    @_matrix.setter
    def _matrix(self, matrix: _Matrix) -> None:
        self._stored, self._pending = matrix, []

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def storage(self) -> Storage:
        return self._manifest["storage"]

    @property
    def model(self) -> str:
        return self._manifest.get("model", "")

    def __len__(self) -> int:
        return len(self._stored.keys) + sum(len(p.keys) for p in self._pending)

    def __contains__(self, key: int) -> bool:
        return self._row(key) is not None

    def keys(self) -> np.ndarray:
        return np.array(self._matrix.keys, dtype=np.int64)

    # -- writing -------------------------------------------------------------------------------------------

    def add(self, vectors: np.ndarray, metadata: Sequence[ItemMetadata | dict] | None = None) -> np.ndarray:
        """Add `[N, D]` vectors (normalised here) with optional metadata; returns their new keys."""
        self._writable()
        vectors = self._check_vectors(vectors)
        metadata = [ItemMetadata.model_validate(m) for m in metadata] if metadata is not None else [
            ItemMetadata() for _ in range(len(vectors))]
        if len(metadata) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(metadata)} metadata entries")
        start = int(self._manifest["next_key"])
        keys = np.arange(start, start + len(vectors), dtype=np.int64)
        if len(keys) == 0:
            return keys
        stored, scales = self._encode(vectors)
        self._hnsw.add(keys, vectors)
        self._pending.append(_Matrix(keys, stored, scales))
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT INTO items(key, uri, content_hash, caption, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                [(int(k), d.uri, d.content_hash, d.caption, now, now) for k, d in zip(keys, metadata)],
            )
            self._db.executemany("INSERT OR IGNORE INTO tags(key, tag) VALUES (?, ?)",
                                 [(int(k), tag) for k, d in zip(keys, metadata) for tag in d.tags])
        self._manifest["next_key"] = start + len(keys)
        self._dirty = True
        return keys

    def remove(self, keys: Iterable[int]) -> int:
        """Remove these keys (unknown keys are ignored); returns how many were removed."""
        self._writable()
        keys = np.unique(np.asarray(list(keys), dtype=np.int64))
        present = keys[np.isin(keys, self._matrix.keys)]
        if len(present) == 0:
            return 0
        self._hnsw.remove(present)
        keep = ~np.isin(self._matrix.keys, present)
        m = self._matrix
        self._matrix = _Matrix(m.keys[keep], m.vectors[keep], None if m.scales is None else m.scales[keep])
        with self._db:
            self._db.executemany("DELETE FROM items WHERE key = ?", [(int(k),) for k in present])
            self._db.executemany("DELETE FROM tags WHERE key = ?", [(int(k),) for k in present])
        self._dirty = True
        return len(present)

    def update(self, key: int, *, vector: np.ndarray | None = None, uri: str | None = None,
               caption: str | None = None, tags: Sequence[str] | None = None) -> None:
        """Replace the vector and/or metadata fields of an existing key."""
        self._writable()
        row = self._row(key)
        if row is None:
            raise KeyError(f"no item with key {key}")
        if vector is not None:
            vectors = self._check_vectors(np.asarray(vector).reshape(1, -1))
            stored, scales = self._encode(vectors)
            self._hnsw.remove(key)
            self._hnsw.add(np.array([key], dtype=np.int64), vectors)
            self._matrix.vectors[row] = stored[0]
            if self._matrix.scales is not None:
                self._matrix.scales[row] = scales[0]
        with self._db:
            for column, value in (("uri", uri), ("caption", caption)):
                if value is not None:
                    self._db.execute(f"UPDATE items SET {column} = ? WHERE key = ?", (value, key))
            if tags is not None:
                self._db.execute("DELETE FROM tags WHERE key = ?", (key,))
                self._db.executemany("INSERT OR IGNORE INTO tags(key, tag) VALUES (?, ?)",
                                     [(key, tag) for tag in tags])
            self._db.execute("UPDATE items SET updated = ? WHERE key = ?", (time.time(), key))
        self._dirty = True

    def save(self) -> None:
        """Write a new generation and switch CURRENT to it atomically; older generations are deleted."""
        self._writable()
        if not self._dirty:
            return
        generation_number = int(self._manifest["generation"]) + 1
        name = f"gen-{generation_number:06d}"
        staging = self.path / f".{name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        manifest = dict(self._manifest, count=len(self), generation=generation_number)
        if len(self):
            self._hnsw.save(str(staging / "hnsw.usearch"))
        np.save(staging / "keys.npy", self._matrix.keys)
        np.save(staging / "vectors.npy", self._matrix.vectors)
        if self._matrix.scales is not None:
            np.save(staging / "scales.npy", self._matrix.scales)
        disk = sqlite3.connect(staging / "metadata.sqlite")
        try:
            self._db.backup(disk)
        finally:
            disk.close()
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for file in staging.iterdir():
            _fsync_file(file)
        _fsync_dir(staging)
        # A writer killed after this rename but before the commit below leaves an uncommitted `name` behind;
        # CURRENT never pointed at it, so no reader can have it open.
        shutil.rmtree(self.path / name, ignore_errors=True)
        staging.rename(self.path / name)
        _fsync_dir(self.path)
        pointer = self.path / f".{CURRENT}.tmp"
        pointer.write_text(name + "\n")
        _fsync_file(pointer)
        os.replace(pointer, self.path / CURRENT)  # the commit point
        _fsync_dir(self.path)
        self._manifest = manifest
        self._dirty = False
        for old in self.path.iterdir():
            if old.name != name and (old.name.startswith("gen-") or old.name.endswith(".tmp")):
                shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------------------

    def get(self, key: int) -> Record:
        records = self._records([int(key)])
        if int(key) not in records:
            raise KeyError(f"no item with key {key}")
        return records[int(key)]

    def find_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """content hash -> key, for the hashes already indexed."""
        found: dict[str, int] = {}
        hashes = list(hashes)
        for start in range(0, len(hashes), 500):
            chunk = hashes[start : start + 500]
            rows = self._db.execute(
                f"SELECT content_hash, key FROM items WHERE content_hash IN ({','.join('?' * len(chunk))})", chunk)
            found.update({h: int(k) for h, k in rows})
        return found

    def tags(self) -> dict[str, int]:
        return {tag: int(n) for tag, n in self._db.execute("SELECT tag, COUNT(*) FROM tags GROUP BY tag")}

    def search(self, vector: np.ndarray, k: int = 10, *, tags: Sequence[str] | None = None,
               exact: bool | None = None) -> list[Hit]:
        """The `k` nearest items by cosine similarity, best first.

        `tags`: only items carrying every one of these tags. `exact=None` picks:
        an exact scan for small collections and filtered searches, otherwise
        HNSW candidates re-ranked exactly; `True` / `False` force one.
        """
        query = self._check_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if len(self) == 0:
            return []
        rows = None
        if tags:
            rows = self._rows_with_tags(tags)
            if len(rows) == 0:
                return []
        if exact is None:
            exact = rows is not None or len(self) <= EXACT_SCAN_LIMIT
        if exact:
            scores, found = self._exact(query, k, rows)
        else:
            scores, found = self._approximate(query, k, rows)
        keys = [int(self._matrix.keys[r]) for r in found]
        records = self._records(keys)
        return [Hit(key=key, score=float(score), record=records[key]) for key, score in zip(keys, scores)]

    # -- internals -----------------------------------------------------------------------------------------

    def _exact(self, query: np.ndarray, k: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        from mmserve.similarity import top_k

        m = self._matrix
        vectors = m.vectors if rows is None else m.vectors[rows]
        scales = None if m.scales is None else (m.scales if rows is None else m.scales[rows])
        scores, found = top_k(query, vectors, k, scales=scales)
        found = found[0]
        return scores[0], (found if rows is None else rows[found])

    def _approximate(self, query: np.ndarray, k: int, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        count = min(len(self), k * RERANK_FACTOR)
        matches = self._hnsw.search(query[0], count)
        candidates = np.searchsorted(self._matrix.keys, np.asarray(matches.keys, dtype=np.int64))
        candidates = candidates[candidates < len(self._matrix.keys)]
        if rows is not None:
            candidates = np.intersect1d(candidates, rows)
        return self._exact(query, k, np.sort(candidates))

    def _rows_with_tags(self, tags: Sequence[str]) -> np.ndarray:
        wanted = sorted(set(tags))
        keys = [k for (k,) in self._db.execute(
            f"SELECT key FROM tags WHERE tag IN ({','.join('?' * len(wanted))}) GROUP BY key "
            "HAVING COUNT(DISTINCT tag) = ?", (*wanted, len(wanted)))]
        return np.sort(np.searchsorted(self._matrix.keys, np.asarray(keys, dtype=np.int64)))

    def _records(self, keys: list[int]) -> dict[int, Record]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        tags: dict[int, list[str]] = {}
        for key, tag in self._db.execute(f"SELECT key, tag FROM tags WHERE key IN ({marks}) ORDER BY tag", keys):
            tags.setdefault(key, []).append(tag)
        rows = self._db.execute(
            f"SELECT key, uri, content_hash, caption, created, updated FROM items WHERE key IN ({marks})", keys)
        return {
            key: Record(key=key, uri=uri, content_hash=h, caption=caption, tags=tags.get(key, []), created=c,
                        updated=u)
            for key, uri, h, caption, c, u in rows
        }

    def _row(self, key: int) -> int | None:
        keys = self._matrix.keys
        row = int(np.searchsorted(keys, key))
        return row if row < len(keys) and keys[row] == key else None

    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors.reshape(1, -1)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be [N, {self.dim}], got {list(vectors.shape)}")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinity")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError("zero vectors have no direction")
        return np.ascontiguousarray(vectors / norms)

    def _encode(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.storage == "f16":
            return vectors.astype(np.float16), None
        from mmserve.similarity import quantize_i8

        return quantize_i8(vectors)

    def _writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"{self.path} is open read-only (view=True)")


def _new_hnsw(manifest: dict):
    from usearch.index import Index as Hnsw

    return Hnsw(ndim=manifest["dim"], metric="cos", dtype=manifest["storage"],
                connectivity=manifest["connectivity"], expansion_add=manifest["expansion_add"],
                expansion_search=manifest["expansion_search"])


def _create_schema(db: sqlite3.Connection) -> None:
    db.executescript("""
        CREATE TABLE items(
            key INTEGER PRIMARY KEY, uri TEXT, content_hash TEXT, caption TEXT,
            created REAL NOT NULL, updated REAL NOT NULL);
        CREATE INDEX items_by_hash ON items(content_hash);
        CREATE TABLE tags(key INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY(tag, key)) WITHOUT ROWID;
        CREATE INDEX tags_by_key ON tags(key);
    """)


def _lock(path: Path):
    lock_file = open(path / "LOCK", "a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        lock_file.close()
        raise IndexLockedError(f"{path} is open for writing by another process") from error
    return lock_file


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync_file(path)
