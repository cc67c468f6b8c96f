"""`MilvusIndex`: the index backend as one collection on a Milvus server or in a milvus-lite file, through
pymilvus's `MilvusClient` only.

    milvus://HOST:PORT/COLLECTION      a Milvus server over gRPC (http:// the same; https:// with TLS);
    milvus://HOST:PORT/DB/COLLECTION   a collection of database DB; port 19530 unless given
    PATH.db, PATH.db#NAME              a milvus-lite file (collection NAME, default "mmserve")

The token (a cluster's "user:password", or an API key) is `token=`, else MMSERVE_MILVUS_TOKEN, else the URI's
user:password. The collection:

    key                INT64 primary key, assigned by mmserve as the embedded index does: ascending, never reused
    vector             FLOAT_VECTOR [dim], unit length; FLOAT16_VECTOR for storage="f16" where the server has it;
                       HNSW, metric IP (inner product of unit vectors: the cosine)
    modality, space    VARCHAR (INVERTED indexes)
    uri, content_hash, caption   VARCHAR, nullable (content_hash with an INVERTED index: incremental indexing)
    tags               ARRAY<VARCHAR>, sorted, each once (an INVERTED index where the server has one for arrays)
    start, end         DOUBLE, nullable: a segment's times
    created, updated   DOUBLE, seconds since the epoch

and its properties: mmserve.format, .dim, .model, .storage, .next_key (keys below it are handed out),
.counts (items per modality and space) and .revision (one more at each save that changed something).

Keys are mmserve's, not Milvus's auto_id: auto_id keys are 19-digit numbers that JavaScript (the search page,
any JSON client in a browser) cannot hold exactly, and they would change in a migration; mmserve's keys stay
small, ascend in the order items were added (what `items()` returns), and survive a copy between backends.
They are reserved in blocks in the collection's properties before they are used, so a crash never reuses one.

Writes are buffered and sent in batches (`add` is called per file while indexing), and always before a read,
so a writer reads its own writes; `save()` sends what is left, publishes the counts and the revision (what
other processes read) and flushes. Exact search scans the vectors here with mmserve's SIMD kernel: an index of
at most `exact_limit` items is mirrored (vectors, modality, space, tags: fetched once, kept current by this
index's own writes, fetched again when another process's save changes the revision); a larger one is streamed
page by page for each exact search. HNSW search runs on the server, filtered there.

One writer per collection at a time (as the embedded index, which has a lock for it; Milvus has none): two
writers could hand out the same keys. A milvus-lite file is served by a server inside the process that opens
it, and only one process may open it (its data directory is locked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmserve.index.backend import IndexUnavailableError, location_string, normalised_rows, stored_rows
from mmserve.index.embedded import EXACT_SCAN_LIMIT, RERANK_FACTOR
from mmserve.index.generations import IndexLockedError
from mmserve.index.records import MAIN_SPACE, Hit, ItemMetadata, Record, check_query_space

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_COLLECTION = "mmserve"
DEFAULT_PORT = 19530
# As the embedded index: exact search up to this many candidates; HNSW expansion 128 at search and build, and
# 4 graph candidates per result.
EXACT_LIMIT = EXACT_SCAN_LIMIT
DEFAULT_EF = 128
CANDIDATES_PER_RESULT = RERANK_FACTOR
# Most bytes (UTF-8) per string field, and tags per item: the VARCHAR and ARRAY limits of the schema.
MAX_BYTES = {"uri": 8192, "content_hash": 256, "caption": 65_535, "modality": 16, "space": 64}
MAX_TAGS, MAX_TAG_BYTES = 1024, 512
RECORD_FIELDS = ["key", "modality", "space", "uri", "content_hash", "caption", "tags", "start", "end", "created",
                 "updated"]
SEND_ROWS = 1024  # rows buffered before they go to the server in one insert
KEY_BLOCK = 1024  # keys reserved per write of the properties
PAGE_ROWS = 4096  # rows per page of a query iterator (Milvus allows 16,384)
ID_CHUNK = 1000  # primary keys (or hashes) per get, delete or `in` filter
MAX_TOP_K = 16_384  # Milvus's largest search limit
PROPERTIES_TTL_S = 1.0  # how long published counts and revision are trusted before they are read again
# Milvus rate-limits flushes per collection and persists an acknowledged insert in its write-ahead log anyway;
# a milvus-lite file is written to disk (and fsynced) at a flush, so it flushes at every save.
SERVER_FLUSH_INTERVAL_S = 10.0
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


class _IteratorNoise(logging.Filter):
    """milvus-lite returns no snapshot timestamp to pymilvus's query iterator, which warns on every iterator and
    then uses the client's clock, as it should."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("failed to get mvccTs")


logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_IteratorNoise())


@dataclasses.dataclass(frozen=True)
class MilvusLocation:
    uri: str  # what MilvusClient connects to: http(s)://HOST:PORT, or a milvus-lite file's absolute path
    collection: str
    database: str = ""
    token: str = dataclasses.field(default="", repr=False)  # from the URI's user:password

    @property
    def lite(self) -> bool:
        return not self.uri.startswith(("http://", "https://"))

    def __str__(self) -> str:
        if self.lite:
            return self.uri if self.collection == DEFAULT_COLLECTION else f"{self.uri}#{self.collection}"
        return f"{self.uri}/{self.database + '/' if self.database else ''}{self.collection}"

    @classmethod
    def parse(cls, location: str | Path) -> MilvusLocation:
        text = location_string(location)
        if "://" not in text:
            path, name = text.rsplit("#", 1) if ".db#" in text else (text, DEFAULT_COLLECTION)
            if not path.endswith(".db"):
                raise ValueError(f"{text!r}: a milvus-lite file's name ends in .db")
            return cls(os.path.abspath(os.path.expanduser(path)), _collection_name(name, text))
        parts = urllib.parse.urlsplit(text)
        if parts.query or parts.fragment or not parts.hostname:
            raise ValueError(f"{text!r}: a Milvus location is milvus://HOST[:PORT]/[DB/]COLLECTION")
        scheme = "https" if parts.scheme.lower() == "https" else "http"
        port = parts.port or (443 if scheme == "https" else DEFAULT_PORT)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        segments = [segment for segment in parts.path.split("/") if segment]
        if len(segments) > 2:
            raise ValueError(f"{text!r}: a Milvus location is milvus://HOST[:PORT]/[DB/]COLLECTION")
        database = segments[0] if len(segments) == 2 else ""
        name = segments[-1] if segments else DEFAULT_COLLECTION
        token = urllib.parse.unquote(parts.username or "")
        if parts.password:
            token += ":" + urllib.parse.unquote(parts.password)
        return cls(f"{scheme}://{host}:{port}", _collection_name(name, text), database, token)


def _collection_name(name: str, location: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{location!r}: {name!r} is not a Milvus collection name (letters, digits and _, not "
                         "starting with a digit)")
    return name


@dataclasses.dataclass(frozen=True)
class _Mirror:
    """What exact search scans: every item's vector as stored, and what the filters read, in key order."""

    revision: int
    keys: np.ndarray  # int64, ascending
    vectors: np.ndarray  # float16 (storage f16) or float32 [N, dim]
    modality: np.ndarray  # str [N]
    space: np.ndarray  # str [N]
    tags: tuple[frozenset[str], ...]

    def rows(self, tags: Sequence[str] | None, modality: str | None, space: str | None) -> np.ndarray | None:
        """The rows these filters keep (None: all)."""
        if not (tags or modality or space):
            return None
        keep = np.ones(len(self.keys), dtype=bool)
        if modality:
            keep &= self.modality == modality
        if space:
            keep &= self.space == space
        if tags:
            wanted = frozenset(tags)
            keep &= np.fromiter((wanted <= row for row in self.tags), dtype=bool, count=len(self.keys))
        return np.flatnonzero(keep)

    def appended(self, keys: np.ndarray, vectors: np.ndarray, rows: list[dict]) -> _Mirror:
        merged = dataclasses.replace(
            self, keys=np.concatenate([self.keys, keys]), vectors=np.concatenate([self.vectors, vectors]),
            modality=np.concatenate([self.modality, np.array([r["modality"] for r in rows], dtype=str)]),
            space=np.concatenate([self.space, np.array([r["space"] for r in rows], dtype=str)]),
            tags=self.tags + tuple(frozenset(r["tags"]) for r in rows))
        order = np.argsort(merged.keys, kind="stable")
        if (order == np.arange(len(order))).all():
            return merged
        return dataclasses.replace(merged, keys=merged.keys[order], vectors=merged.vectors[order],
                                   modality=merged.modality[order], space=merged.space[order],
                                   tags=tuple(merged.tags[i] for i in order))

    def without(self, keys: Sequence[int]) -> _Mirror:
        keep = ~np.isin(self.keys, np.asarray(keys, dtype=np.int64))
        return dataclasses.replace(self, keys=self.keys[keep], vectors=self.vectors[keep],
                                   modality=self.modality[keep], space=self.space[keep],
                                   tags=tuple(t for t, k in zip(self.tags, keep) if k))

    def replaced(self, key: int, vector: np.ndarray, tags: Sequence[str]) -> _Mirror:
        row = int(np.searchsorted(self.keys, key))
        if row >= len(self.keys) or self.keys[row] != key:
            return self
        vectors = self.vectors.copy()
        vectors[row] = vector
        return dataclasses.replace(self, vectors=vectors,
                                   tags=(*self.tags[:row], frozenset(tags), *self.tags[row + 1 :]))


class MilvusIndex:
    """Create with `MilvusIndex.create(location, dim)`, open with `MilvusIndex.open(location)` (or `view=True`
    to read only); or through `mmserve.index.open_index`, which picks the backend from the location."""

    def __init__(self, where: MilvusLocation, client: Any, *, read_only: bool, ef: int = DEFAULT_EF,
                 exact_limit: int = EXACT_LIMIT) -> None:
        if ef < 1 or exact_limit < 0:
            raise ValueError(f"ef must be positive and exact_limit not negative, got {ef} and {exact_limit}")
        self.where = where
        self.location = str(where)
        self.read_only = read_only
        self.ef = ef
        self.exact_limit = exact_limit
        self._client = client
        self._lock = threading.RLock()
        self._pending: list[dict] = []  # rows not yet sent
        self._delta: dict[tuple[str, str], int] = {}  # changes to the counts not yet published
        self._changed = False  # written since the last publish
        self._unflushed = False  # written since the last flush
        self._last_flush = 0.0
        self._mirror: _Mirror | None = None
        description = client.describe_collection(where.collection)
        self._properties: dict[str, str] = dict(description.get("properties") or {})
        self._read_at = time.monotonic()
        if "mmserve.format" not in self._properties:
            raise ValueError(f"{self.location}: the collection is not an mmserve index (no mmserve.format property)")
        if int(self._properties["mmserve.format"]) != FORMAT_VERSION:
            raise ValueError(f"{self.location}: index format {self._properties['mmserve.format']} is not "
                             f"{FORMAT_VERSION}")
        self._dim = int(self._properties["mmserve.dim"])
        self._storage = self._properties.get("mmserve.storage", "f32")
        from pymilvus import DataType

        self._half = any(field["name"] == "vector" and field["type"] == DataType.FLOAT16_VECTOR
                         for field in description["fields"])
        self._next_key = self._reserved = int(self._properties.get("mmserve.next_key", 0))
        self._fixed_counts: dict[tuple[str, str], int] | None = None
        self._check_counts()

    # -- opening -------------------------------------------------------------------------------------------

    @staticmethod
    def runtime_options(options: dict) -> dict:
        """The options that apply to an open index (connection and search), not only to a new one."""
        return {name: options[name] for name in ("token", "timeout", "ef", "exact_limit") if name in options}

    @classmethod
    def create(cls, location: str | Path, dim: int, **options) -> MilvusIndex:
        """A new, empty collection at `location`.

        `storage`: "f32" (default) or "f16" (FLOAT16_VECTOR; where the server has
        none, each vector's float16 values in a FLOAT_VECTOR field, with a note);
        `model`: what to record as the embeddings' model; `connectivity` and
        `expansion_add`: HNSW's M and efConstruction (16, 128); and the options
        of `open`.
        """
        return cls._connected_index(location, dim, options, create=True)

    @classmethod
    def open(cls, location: str | Path, *, view: bool = False, **options) -> MilvusIndex:
        """Open for writing or, with `view=True`, read-only. `token`, `timeout` (seconds per call); `ef`: HNSW's
        expansion at search (at least k); `exact_limit`: up to how many candidates `search(exact=None)` is exact."""
        return cls._connected_index(location, None, options, view=view)

    @classmethod
    def open_or_create(cls, location: str | Path, dim: int, **options) -> MilvusIndex:
        return cls._connected_index(location, dim, options)

    @classmethod
    def exists(cls, location: str | Path, *, token: str | None = None) -> bool:
        where = MilvusLocation.parse(location)
        if where.lite and not Path(where.uri).is_dir():
            return False
        client = _connect(where, token, None)
        try:
            return bool(client.has_collection(where.collection))
        finally:
            _disconnect(where, client)

    @classmethod
    def _connected_index(cls, location: str | Path, dim: int | None, options: dict, *, create: bool = False,
                         view: bool = False) -> MilvusIndex:
        """Connect once; open the collection, or create it when `dim` is given and there is none (`create`: it
        must be new). Options other than the runtime ones are for a new collection only."""
        runtime = cls.runtime_options(options)
        creation = {name: value for name, value in options.items() if name not in runtime}
        if dim is None and creation:
            raise TypeError(f"options for a new index, opening one: {', '.join(sorted(creation))}")
        creation = _creation_options(**creation)
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        where = MilvusLocation.parse(location)
        if where.lite:
            if dim is None and not Path(where.uri).is_dir():
                raise FileNotFoundError(f"no mmserve index at {where} (create one with `mmserve index`)")
            Path(where.uri).parent.mkdir(parents=True, exist_ok=True)
        client = _connect(where, runtime.pop("token", None), runtime.pop("timeout", None))
        try:
            if client.has_collection(where.collection):
                if create:
                    raise FileExistsError(f"{where} already holds an index")
                client.load_collection(where.collection)  # a no-op when loaded; a restarted server may have released it
                index = cls(where, client, read_only=view, **runtime)
                if dim is not None and index.dim != dim:
                    raise ValueError(f"{where} holds {index.dim}-dimensional vectors; the model gives {dim}")
                return index
            if dim is None:
                raise FileNotFoundError(f"no mmserve index at {where} (create one with `mmserve index`)")
            _create_collection(client, where, dim, **creation)
            return cls(where, client, read_only=False, **runtime)
        except BaseException:
            _disconnect(where, client)
            raise

    # -- properties ----------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model(self) -> str:
        return self._properties.get("mmserve.model", "")

    @property
    def storage(self) -> str:
        """"f32", or "f16" (float16 values, in a FLOAT16_VECTOR field where the server has one)."""
        return self._storage

    @property
    def server(self) -> str:
        """The server's version ("milvus_lite-3.2.2" for a file)."""
        return str(self._connected().get_server_version())

    def __len__(self) -> int:
        return sum(self.modality_counts().values())

    def modality_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            counts = dict(self._fixed_counts if self._fixed_counts is not None else _counts(self._published()))
            for kind, change in self._delta.items():
                counts[kind] = counts.get(kind, 0) + change
        return {kind: n for kind, n in sorted(counts.items()) if n > 0}

    # -- writing -------------------------------------------------------------------------------------------

    def add(self, vectors: np.ndarray, metadata: Sequence[ItemMetadata | dict] | None = None) -> np.ndarray:
        """Add `[N, D]` vectors (normalised here) with optional metadata; returns their new keys."""
        self._writable()
        vectors = normalised_rows(vectors, self.dim)
        items = [ItemMetadata.model_validate(m) for m in metadata] if metadata is not None else [
            ItemMetadata() for _ in range(len(vectors))]
        if len(items) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(items)} metadata entries")
        for item in items:
            _check_fields(item)
        if len(items) == 0:
            return np.zeros(0, dtype=np.int64)
        now = time.time()
        with self._lock:
            keys = self._take_keys(len(vectors))
            self._queue(keys, vectors, items, [(now, now)] * len(items))
        return keys

    def restore(self, vectors: np.ndarray, records: Sequence[Record], *, keep_keys: bool = True) -> np.ndarray:
        """Items as another index held them (`items()`): vectors as given (already unit length), the records'
        metadata and times, under their keys (`keep_keys`: ascending, from the next key on) or new ones."""
        self._writable()
        vectors = stored_rows(vectors, self.dim)
        if len(records) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(records)} records")
        for record in records:
            _check_fields(record)
        if len(records) == 0:
            return np.zeros(0, dtype=np.int64)
        with self._lock:
            if keep_keys:
                keys = np.array([record.key for record in records], dtype=np.int64)
                self._claim_keys(keys)
            else:
                keys = self._take_keys(len(vectors))
            self._queue(keys, vectors, list(records), [(r.created, r.updated) for r in records])
        return keys

    def update(self, key: int, *, vector: np.ndarray | None = None, uri: str | None = None,
               caption: str | None = None, tags: Sequence[str] | None = None) -> None:
        """Replace the vector and/or metadata fields of an existing key (an upsert of its whole row)."""
        self._writable()
        new_vector = None if vector is None else normalised_rows(np.asarray(vector).reshape(1, -1), self.dim)[0]
        with self._lock:
            self._send()
            found = self._connected().get(self.where.collection, ids=[int(key)],
                                          output_fields=[*RECORD_FIELDS, "vector"])
            if not found:
                raise KeyError(f"no item with key {key}")
            row = {name: found[0].get(name) for name in RECORD_FIELDS}
            stored = self._stored(self._vectors([found[0]["vector"]]))[0] if new_vector is None else (
                self._stored(new_vector.reshape(1, -1))[0])
            changes = {"uri": uri, "caption": caption, "tags": None if tags is None else sorted(set(tags))}
            row.update({name: value for name, value in changes.items() if value is not None}, updated=time.time())
            _check_fields(ItemMetadata.model_validate({n: row[n] for n in RECORD_FIELDS[1:9]}))
            self._connected().upsert(self.where.collection, [{**row, "vector": self._wire(stored)}])
            if self._mirror is not None:
                self._mirror = self._mirror.replaced(int(key), stored, row["tags"] or [])
            self._changed = self._unflushed = True

    def remove(self, keys: Iterable[int]) -> int:
        """Remove these keys (unknown keys are ignored); returns how many were removed."""
        self._writable()
        wanted = [int(k) for k in dict.fromkeys(int(k) for k in keys)]
        with self._lock:
            self._send()
            present = [row for chunk in _chunks(wanted, ID_CHUNK) for row in self._connected().get(
                self.where.collection, ids=chunk, output_fields=["key", "modality", "space"])]
            if not present:
                return 0
            removed = [int(row["key"]) for row in present]
            for chunk in _chunks(removed, ID_CHUNK):
                self._connected().delete(self.where.collection, ids=chunk)
            for row in present:
                kind = (row["modality"], row["space"])
                self._delta[kind] = self._delta.get(kind, 0) - 1
            if self._mirror is not None:
                self._mirror = self._mirror.without(removed)
            self._changed = self._unflushed = True
        return len(removed)

    def save(self) -> None:
        """Send what is buffered, publish the counts and the revision, and flush (a milvus-lite file at every
        save; a server at most every 10 s)."""
        self._writable()
        with self._lock:
            self._send()
            if self._changed:
                self._publish()
            if self._unflushed and (self.where.lite or time.monotonic() - self._last_flush >= SERVER_FLUSH_INTERVAL_S):
                self._connected().flush(self.where.collection)
                self._last_flush = time.monotonic()
                self._unflushed = False

    def close(self) -> None:
        """Save (a writer: Milvus keeps no older state to fall back to) and disconnect."""
        if self._client is None:
            return
        try:
            if not self.read_only and (self._pending or self._changed or self._unflushed):
                self.save()
        finally:
            client, self._client = self._client, None
            _disconnect(self.where, client)

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self.close()
            return
        try:
            self.close()
        except Exception:  # the error that ended the block is the one to raise
            log.exception("%s: closing after an error failed", self.location)

    # -- reading -------------------------------------------------------------------------------------------

    def get(self, key: int) -> Record:
        records = self.records([int(key)])
        if int(key) not in records:
            raise KeyError(f"no item with key {key}")
        return records[int(key)]

    def records(self, keys: Iterable[int]) -> dict[int, Record]:
        """key -> record, for the keys that exist."""
        self._send()
        wanted = [int(k) for k in keys]
        return {int(row["key"]): _record(row) for chunk in _chunks(wanted, ID_CHUNK)
                for row in self._connected().get(self.where.collection, ids=chunk, output_fields=RECORD_FIELDS)}

    def find_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """content hash -> key, for the hashes already indexed."""
        self._send()
        found: dict[str, int] = {}
        for chunk in _chunks(list(dict.fromkeys(hashes)), ID_CHUNK):
            rows = self._connected().query(self.where.collection, filter=f"content_hash in {_literal(chunk)}",
                                           output_fields=["key", "content_hash"])
            for row in sorted(rows, key=lambda r: r["key"]):
                found.setdefault(row["content_hash"], int(row["key"]))
        return found

    def tags(self) -> dict[str, int]:
        """Each tag and how many items carry it (a scan of every item's tags)."""
        self._send()
        counts: dict[str, int] = {}
        for page in self._pages("", ["tags"]):
            for row in page:
                for tag in row["tags"] or ():
                    counts[tag] = counts.get(tag, 0) + 1
        return dict(sorted(counts.items()))

    def items(self, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, list[Record]]]:
        """Every item in key order, `batch_size` at a time: float32 vectors as stored, and records."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._send()
        for page in self._pages("", [*RECORD_FIELDS, "vector"], batch_size):
            yield self._vectors([row["vector"] for row in page]), [_record(row) for row in page]

    def search(self, vector: np.ndarray, k: int = 10, *, tags: Sequence[str] | None = None,
               modality: str | None = None, space: str = MAIN_SPACE, exact: bool | None = None) -> list[Hit]:
        """The `k` nearest items by cosine similarity, best first (filters and `space` as the embedded index's).

        `exact=True` scans every candidate's vector here (mirrored for an index
        of at most `exact_limit` items, else streamed from the server);
        `False` asks the server's HNSW graph (expansion `ef`, at least 4k) for
        4k candidates and returns the best k;
        `None` is exact when the candidates are at most `exact_limit`.
        """
        query = normalised_rows(np.asarray(vector, dtype=np.float32).reshape(1, -1), self.dim)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self._send()
        counts = self.modality_counts()
        total = sum(counts.values())
        if total == 0:
            return []
        space_filter = check_query_space(space, modality, counts)
        # A modality filter that every item passes is no filter.
        modality_filter = modality if modality is not None and {m for m, _ in counts} != {modality} else None
        expression = _expression(tags, modality_filter, space_filter)
        mirrored = total <= self.exact_limit
        if exact is None:
            exact = mirrored or self._candidates(expression, tags, modality_filter, space_filter,
                                                 counts) <= self.exact_limit
        if exact or min(k, total) > MAX_TOP_K:
            if mirrored:
                scores, keys = self._mirrored_top_k(query, k, tags, modality_filter, space_filter)
            else:
                scores, keys = self._streamed_top_k(query, k, expression)
            records = self.records(keys)
            return [Hit(key=int(key), score=float(score), record=records[int(key)])
                    for key, score in zip(keys, scores) if int(key) in records]
        # As the embedded index, CANDIDATES_PER_RESULT graph candidates per result, the best k of them (the server's
        # scores are exact for the stored vectors: no re-ranking needed).
        limit = min(k * CANDIDATES_PER_RESULT, total, MAX_TOP_K)
        found = self._connected().search(
            self.where.collection, data=[self._wire(query[0].astype(np.float16) if self._half else query[0])],
            limit=limit, filter=expression, output_fields=RECORD_FIELDS[1:], anns_field="vector",
            search_params={"metric_type": "IP", "params": {"ef": max(self.ef, limit)}})
        return [Hit(key=int(hit.id), score=float(hit["distance"]),
                    record=_record({**hit["entity"], "key": hit.id})) for hit in found[0][:k]]

    # -- internals -----------------------------------------------------------------------------------------

    def _connected(self) -> Any:
        if self._client is None:
            raise ValueError(f"{self.location} is closed")
        return self._client

    def _writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"{self.location} is open read-only (view=True)")

    def _published(self, *, fresh: bool = False) -> dict[str, str]:
        """The collection's properties, read again when older than PROPERTIES_TTL_S (or `fresh`)."""
        if fresh or time.monotonic() - self._read_at > PROPERTIES_TTL_S:
            described = self._connected().describe_collection(self.where.collection)
            self._properties = dict(described.get("properties") or {})
            self._read_at = time.monotonic()
        return self._properties

    def _alter(self, properties: dict[str, str]) -> None:
        self._connected().alter_collection_properties(self.where.collection, properties=properties)
        self._properties.update(properties)

    def _check_counts(self) -> None:
        """Published counts that disagree with the collection (a writer that died before its save, or writes not
        made through mmserve) are counted again: published by a writer, kept for itself by a view."""
        published = _counts(self._properties)
        found = self._connected().query(self.where.collection, filter="", output_fields=["count(*)"])
        total = int(found[0]["count(*)"])
        if total == sum(published.values()):
            return
        counts: dict[tuple[str, str], int] = {}
        for page in self._pages("", ["modality", "space"]):
            for row in page:
                kind = (row["modality"], row["space"])
                counts[kind] = counts.get(kind, 0) + 1
        log.warning("%s: its published counts (%d items) disagree with its %d items (a writer did not save?): "
                    "counted again", self.location, sum(published.values()), total)
        if self.read_only:
            self._fixed_counts = counts
        else:
            revision = int(self._properties.get("mmserve.revision", 0)) + 1
            self._alter({"mmserve.counts": _encode_counts(counts), "mmserve.revision": str(revision)})

    def _take_keys(self, count: int) -> np.ndarray:
        """`count` new keys, reserved in the collection first (in blocks) so that no crash can reuse one."""
        if self._next_key + count > self._reserved:
            self._next_key = max(self._next_key, int(self._published(fresh=True).get("mmserve.next_key", 0)))
            self._reserved = self._next_key + max(count, KEY_BLOCK)
            self._alter({"mmserve.next_key": str(self._reserved)})
        start = self._next_key
        self._next_key += count
        return np.arange(start, start + count, dtype=np.int64)

    def _claim_keys(self, keys: np.ndarray) -> None:
        """Restored keys: ascending, and none below a key handed out (here, or by another writer meanwhile)."""
        if keys[-1] + 1 > self._reserved:
            self._next_key = max(self._next_key, int(self._published(fresh=True).get("mmserve.next_key", 0)))
        if keys[0] < self._next_key or (np.diff(keys) <= 0).any():
            raise ValueError(f"{self.location}: restored keys must ascend from {self._next_key}, the next key this "
                             "index hands out (keys are never reused): restore into a new index, or with new keys")
        if keys[-1] + 1 > self._reserved:
            self._reserved = int(keys[-1]) + 1 + KEY_BLOCK
            self._alter({"mmserve.next_key": str(self._reserved)})
        self._next_key = int(keys[-1]) + 1

    def _queue(self, keys: np.ndarray, vectors: np.ndarray, items: Sequence[ItemMetadata],
               times: Sequence[tuple[float, float]]) -> None:
        stored = self._stored(vectors)
        for key, vector, item, (created, updated) in zip(keys, stored, items, times):
            self._pending.append({
                "key": int(key), "vector": vector, "modality": item.modality, "space": item.space, "uri": item.uri,
                "content_hash": item.content_hash, "caption": item.caption, "tags": sorted(set(item.tags)),
                "start": item.start, "end": item.end, "created": float(created), "updated": float(updated)})
            kind = (item.modality, item.space)
            self._delta[kind] = self._delta.get(kind, 0) + 1
        self._changed = self._unflushed = True
        if len(self._pending) >= SEND_ROWS:
            self._send()

    def _send(self) -> None:
        """The buffered rows, to the server (and into the mirror)."""
        with self._lock:
            rows, self._pending = self._pending, []
            for start in range(0, len(rows), SEND_ROWS):
                chunk = rows[start : start + SEND_ROWS]
                try:
                    self._connected().insert(self.where.collection, [{**row, "vector": self._wire(row["vector"])}
                                                                     for row in chunk])
                except BaseException:
                    self._pending = rows[start:] + self._pending
                    raise
            if rows and self._mirror is not None:
                if len(self._mirror.keys) + len(rows) > self.exact_limit:
                    self._mirror = None
                else:
                    self._mirror = self._mirror.appended(np.array([r["key"] for r in rows], dtype=np.int64),
                                                         np.stack([r["vector"] for r in rows]), rows)

    def _publish(self) -> None:
        """This writer's changes to the counts, and a new revision, into the collection's properties (merged
        into what is published: another writer's saves are not undone)."""
        published = self._published(fresh=True)
        counts = _counts(published)
        for kind, change in self._delta.items():
            counts[kind] = counts.get(kind, 0) + change
        revision = int(published.get("mmserve.revision", 0))
        self._alter({"mmserve.counts": _encode_counts(counts), "mmserve.revision": str(revision + 1)})
        if self._mirror is not None:
            # The mirror holds this writer's changes; it stays current only if nobody else saved since it was read.
            self._mirror = (dataclasses.replace(self._mirror, revision=revision + 1)
                            if self._mirror.revision == revision else None)
        self._delta = {}
        self._changed = False

    def _stored(self, vectors: np.ndarray) -> np.ndarray:
        """Unit vectors as this index stores (and mirrors) them: float16 values for storage f16."""
        return vectors.astype(np.float16) if self._storage == "f16" else np.asarray(vectors, dtype=np.float32)

    def _wire(self, vector: np.ndarray) -> np.ndarray:
        """A stored vector as the vector field takes it (a FLOAT_VECTOR holding float16 values takes float32)."""
        return vector.astype(np.float16 if self._half else np.float32)

    def _vectors(self, values: list) -> np.ndarray:
        """Vectors as pymilvus returns them (float lists; float16 ones as bytes) -> float32 [n, dim]."""
        if not values:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._half:
            raw = b"".join(v if isinstance(v, (bytes, bytearray)) else (
                np.asarray(v, dtype=np.float16).tobytes() if not (v and isinstance(v[0], (bytes, bytearray)))
                else b"".join(v)) for v in values)
            return np.frombuffer(raw, dtype=np.float16).reshape(len(values), self.dim).astype(np.float32)
        return np.asarray(values, dtype=np.float32).reshape(len(values), self.dim)

    def _pages(self, expression: str, fields: list[str], batch_size: int = PAGE_ROWS) -> Iterator[list[dict]]:
        """The rows matching `expression`, a page at a time, in key order (pymilvus's query iterator)."""
        iterator = self._connected().query_iterator(self.where.collection, batch_size=min(batch_size, 16_384),
                                                    filter=expression, output_fields=fields)
        try:
            while page := iterator.next():
                yield page
        finally:
            iterator.close()

    def _candidates(self, expression: str, tags, modality: str | None, space: str | None,
                    counts: dict[tuple[str, str], int]) -> int:
        """How many items the filters keep: from the counts, or (tags) counted by the server."""
        if not expression:
            return sum(counts.values())
        if not tags:
            return sum(n for (m, s), n in counts.items() if modality in (None, m) and space in (None, s))
        found = self._connected().query(self.where.collection, filter=expression, output_fields=["count(*)"])
        return int(found[0]["count(*)"])

    def _mirrored(self) -> _Mirror:
        """The mirror, read again from the server when another process saved since it was."""
        with self._lock:
            revision = int(self._published().get("mmserve.revision", 0))
            if self._mirror is None or self._mirror.revision != revision:
                keys: list[int] = []
                vectors: list[np.ndarray] = []
                modality: list[str] = []
                space: list[str] = []
                tags: list[frozenset[str]] = []
                for page in self._pages("", ["vector", "modality", "space", "tags"]):
                    keys.extend(int(row["key"]) for row in page)
                    vectors.append(self._stored(self._vectors([row["vector"] for row in page])))
                    modality.extend(row["modality"] for row in page)
                    space.extend(row["space"] for row in page)
                    tags.extend(frozenset(row["tags"] or ()) for row in page)
                order = np.argsort(np.array(keys, dtype=np.int64), kind="stable")
                matrix = np.concatenate(vectors) if vectors else self._stored(np.zeros((0, self.dim)))
                self._mirror = _Mirror(revision, np.array(keys, dtype=np.int64)[order], matrix[order],
                                       np.array(modality, dtype=str)[order], np.array(space, dtype=str)[order],
                                       tuple(tags[i] for i in order))
            return self._mirror

    def _mirrored_top_k(self, query: np.ndarray, k: int, tags, modality: str | None, space: str | None
                        ) -> tuple[np.ndarray, np.ndarray]:
        from mmserve.similarity import top_k

        mirror = self._mirrored()
        rows = mirror.rows(tags, modality, space)
        if len(mirror.keys) == 0 or (rows is not None and len(rows) == 0):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores, found = top_k(query, mirror.vectors if rows is None else mirror.vectors[rows], k)
        found = found[0] if rows is None else rows[found[0]]
        return scores[0], mirror.keys[found]

    def _streamed_top_k(self, query: np.ndarray, k: int, expression: str) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over every candidate, a page of vectors at a time (ties: the lower key first)."""
        from mmserve.similarity import top_k

        best_scores, best_keys = np.zeros(0, np.float32), np.zeros(0, np.int64)
        for page in self._pages(expression, ["vector"]):
            keys = np.array([row["key"] for row in page], dtype=np.int64)
            scores, found = top_k(query, self._stored(self._vectors([row["vector"] for row in page])), k)
            best_scores = np.concatenate([best_scores, scores[0]])
            best_keys = np.concatenate([best_keys, keys[found[0]]])
            order = np.lexsort((best_keys, -best_scores))[:k]
            best_scores, best_keys = best_scores[order], best_keys[order]
        return best_scores, best_keys


# -- connections --------------------------------------------------------------------------------------------

# The milvus-lite files this process serves (pymilvus starts one server per file, inside the process), and how
# many open indexes use each: the last to close stops it, which releases the file's lock.
_lite_users: dict[str, int] = {}
_lite_lock = threading.Lock()


def _connect(where: MilvusLocation, token: str | None, timeout: float | None) -> Any:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if not where.lite:
        try:
            return MilvusClient(uri=where.uri, token=token or os.environ.get("MMSERVE_MILVUS_TOKEN") or where.token,
                                db_name=where.database, timeout=timeout)
        except MilvusException as error:
            raise IndexUnavailableError(f"cannot reach Milvus at {where}: {error.message}") from None
    with _lite_lock:
        if where.uri not in _lite_users:
            _check_unlocked(where)
        try:
            client = MilvusClient(uri=where.uri, timeout=timeout)
        except MilvusException as error:
            _check_unlocked(where)
            raise IndexUnavailableError(f"cannot open the milvus-lite file {where.uri}: {error.message}") from None
        _lite_users[where.uri] = _lite_users.get(where.uri, 0) + 1
    return client


def _disconnect(where: MilvusLocation, client: Any) -> None:
    client.close()
    if not where.lite:
        return
    with _lite_lock:
        users = _lite_users.pop(where.uri, 1) - 1
        if users > 0:
            _lite_users[where.uri] = users
            return
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(where.uri)


def _check_unlocked(where: MilvusLocation) -> None:
    """IndexLockedError when another process has this milvus-lite file open (its LOCK is held)."""
    try:
        descriptor = os.open(os.path.join(where.uri, "LOCK"), os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise IndexLockedError(
            f"{where.uri} is a milvus-lite file open in another process, and milvus-lite allows one process per "
            "file: stop that one, or serve the file to every process with `milvus-lite server --data-dir "
            f"{where.uri} --host 127.0.0.1 --port 19530` and use http://127.0.0.1:19530/{where.collection}"
        ) from None
    finally:
        os.close(descriptor)  # releases the lock if it was taken here


@contextlib.contextmanager
def _quiet():
    """pymilvus logs every failed call with its traceback; a probe's expected failure is not worth one."""
    logger = logging.getLogger("pymilvus.decorators")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def _creation_options(*, storage: str = "f32", model: str = "", connectivity: int = 16, expansion_add: int = 128
                      ) -> dict:
    if storage not in ("f32", "f16"):
        raise ValueError(f"storage must be 'f32' or 'f16' for a Milvus index, got {storage!r} (int8 storage is the "
                         "embedded index's)")
    if connectivity < 2 or expansion_add < 1:
        raise ValueError(f"HNSW needs connectivity >= 2 and expansion_add >= 1, got {connectivity}, {expansion_add}")
    return {"storage": storage, "model": model, "connectivity": connectivity, "expansion_add": expansion_add}


def _create_collection(client: Any, where: MilvusLocation, dim: int, *, storage: str, model: str, connectivity: int,
                       expansion_add: int) -> None:
    """The collection, its indexes and properties, loaded. Tried with FLOAT16_VECTOR first for storage f16, and
    with an INVERTED index on tags; without what the server refuses."""
    from pymilvus import DataType, MilvusClient
    from pymilvus.exceptions import MilvusException

    properties = {"mmserve.format": str(FORMAT_VERSION), "mmserve.dim": str(dim), "mmserve.model": model,
                  "mmserve.storage": storage, "mmserve.next_key": "0", "mmserve.counts": "[]",
                  "mmserve.revision": "0"}
    kinds = [DataType.FLOAT16_VECTOR, DataType.FLOAT_VECTOR] if storage == "f16" else [DataType.FLOAT_VECTOR]
    for kind in kinds:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description="mmserve index")
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("vector", kind, dim=dim)
        for name in ("modality", "space"):
            schema.add_field(name, DataType.VARCHAR, max_length=MAX_BYTES[name])
        for name in ("uri", "content_hash", "caption"):
            schema.add_field(name, DataType.VARCHAR, max_length=MAX_BYTES[name], nullable=True)
        schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_TAGS,
                         max_length=MAX_TAG_BYTES)
        for name in ("start", "end"):
            schema.add_field(name, DataType.DOUBLE, nullable=True)
        for name in ("created", "updated"):
            schema.add_field(name, DataType.DOUBLE)
        try:
            with _quiet():
                client.create_collection(where.collection, schema=schema, consistency_level="Strong",
                                         properties=properties)
            break
        except MilvusException as error:
            if kind == kinds[-1]:
                raise
            log.warning("%s: the server has no FLOAT16_VECTOR (%s): storage f16 keeps each vector's float16 "
                        "values in a FLOAT_VECTOR field (f16 scores, f32 size)", where,
                        error.message.split(". ")[0])
    indexes = client.prepare_index_params()
    indexes.add_index("vector", index_type="HNSW", metric_type="IP",
                      params={"M": connectivity, "efConstruction": expansion_add})
    for name in ("modality", "space", "content_hash"):
        indexes.add_index(name, index_type="INVERTED")
    # sync=False: pymilvus would poll each new index every 0.5 s until built; an empty collection's are at once.
    client.create_index(where.collection, indexes, sync=False)
    tag_index = client.prepare_index_params()
    tag_index.add_index("tags", index_type="INVERTED")
    try:
        with _quiet():
            client.create_index(where.collection, tag_index, sync=False)
    except MilvusException as error:  # milvus-lite indexes no arrays: array_contains_all scans
        log.debug("%s: no INVERTED index on tags: %s", where, error.message)
    client.load_collection(where.collection)


# -- rows, filters, counts ----------------------------------------------------------------------------------


def _check_fields(item: ItemMetadata) -> None:
    """The schema's limits, said before the server refuses a whole batch for one item."""
    for name, limit in MAX_BYTES.items():
        value = getattr(item, name)
        if value is not None and len(value.encode()) > limit:
            raise ValueError(f"{name} is {len(value.encode())} bytes; a Milvus index holds at most {limit}")
    if len(set(item.tags)) > MAX_TAGS:
        raise ValueError(f"{len(set(item.tags))} tags; a Milvus index holds at most {MAX_TAGS} per item")
    long = [tag for tag in item.tags if len(tag.encode()) > MAX_TAG_BYTES]
    if long:
        raise ValueError(f"tag {long[0][:40]!r}... is {len(long[0].encode())} bytes; a Milvus index holds at most "
                         f"{MAX_TAG_BYTES}")


def _record(row: dict) -> Record:
    return Record(key=int(row["key"]), uri=row.get("uri"), content_hash=row.get("content_hash"),
                  caption=row.get("caption"), tags=list(row.get("tags") or ()), modality=row["modality"],
                  space=row["space"], start=row.get("start"), end=row.get("end"), created=float(row["created"]),
                  updated=float(row["updated"]))


def _literal(value: str | Sequence[str]) -> str:
    """A string (or a list of strings) as a Milvus expression literal (double quotes, backslash escapes)."""
    return json.dumps(value if isinstance(value, str) else list(value), ensure_ascii=False)


def _expression(tags: Sequence[str] | None, modality: str | None, space: str | None) -> str:
    clauses = []
    if tags:
        clauses.append(f"array_contains_all(tags, {_literal(sorted(set(tags)))})")
    if modality:
        clauses.append(f"modality == {_literal(modality)}")
    if space:
        clauses.append(f"space == {_literal(space)}")
    return " and ".join(clauses)


def _counts(properties: dict[str, str]) -> dict[tuple[str, str], int]:
    return {(modality, space): int(n) for modality, space, n in json.loads(properties.get("mmserve.counts", "[]"))}


def _encode_counts(counts: dict[tuple[str, str], int]) -> str:
    return json.dumps([[modality, space, n] for (modality, space), n in sorted(counts.items()) if n > 0])


def _chunks(values: list, size: int) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
