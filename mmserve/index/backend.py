"""The index-backend protocol: what search, folder indexing, the CLI and the API may ask of an index.

A backend stores L2-normalised vectors under integer keys it assigns, with
`ItemMetadata` beside each, and answers cosine top-k with optional tag
filters. Two exist: the embedded backend (`mmserve.index.Index`: usearch +
SQLite in a directory) and the Milvus backend (`mmserve.index.milvus.MilvusIndex`:
a collection on a Milvus server or in a milvus-lite file). `open_index` picks
one from the location alone, so nothing above this module changes:

    photos.index                       a directory: the embedded index
    milvus://HOST:PORT/COLLECTION      a Milvus server (http://, https:// too)
    photos.db, photos.db#NAME          a milvus-lite file
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from mmserve.errors import MmserveError
from mmserve.index.records import MAIN_SPACE, Hit, ItemMetadata, Record

MILVUS_SCHEMES = ("milvus", "http", "https")
# `Path("milvus://h:1/c")` is "milvus:/h:1/c": a URI that went through Path on its way here.
_COLLAPSED_URI = re.compile(r"^(milvus|https?):/(?!/)")
# How far from unit length a restored (already stored, so already normalised) vector may be: float16 storage
# rounds each element by up to 2^-11 of itself, int8 by half a step of the row's scale.
_UNIT_TOLERANCE = 1e-2


class IndexUnavailableError(MmserveError, ConnectionError):
    """The index's server cannot be reached (a Milvus server down, a wrong address or token)."""


@runtime_checkable
class IndexBackend(Protocol):
    @property
    def dim(self) -> int: ...

    @property
    def model(self) -> str:
        """The model whose embeddings this index holds ("" when unknown)."""

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray, metadata: Sequence[ItemMetadata | dict] | None = None) -> np.ndarray:
        """Store `[N, dim]` vectors (normalised by the backend); returns their new keys."""

    def update(self, key: int, *, vector: np.ndarray | None = None, uri: str | None = None,
               caption: str | None = None, tags: Sequence[str] | None = None) -> None:
        """Replace the vector and/or these metadata fields of an existing key (KeyError when there is none)."""

    def remove(self, keys: Iterable[int]) -> int:
        """Remove these keys (unknown ones are ignored); how many were removed."""

    def get(self, key: int) -> Record:
        """The record of `key`; KeyError when there is none."""

    def find_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """content hash -> key, for the hashes already stored."""

    def tags(self) -> dict[str, int]:
        """Each tag and how many items carry it."""

    def modality_counts(self) -> dict[tuple[str, str], int]:
        """How many items of each (modality, space)."""

    def search(self, vector: np.ndarray, k: int = 10, *, tags: Sequence[str] | None = None,
               modality: str | None = None, space: str = MAIN_SPACE) -> list[Hit]:
        """The `k` nearest items by cosine similarity, best first; with `tags`, only items carrying all of them;
        with `modality`, only items of it. `space` is the query vector's: items of other spaces are never
        compared with it, and `SpaceMismatchError` is raised when every item asked for is in another."""

    def items(self, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, list[Record]]]:
        """Every item in key order, `batch_size` at a time: its vectors as stored (float32 `[n, dim]`, unit
        length) and its records (migration, export)."""

    def restore(self, vectors: np.ndarray, records: Sequence[Record], *, keep_keys: bool = True) -> np.ndarray:
        """Store items as another index held them (`items()`): each vector as given, each record's metadata and
        times; under the records' keys (`keep_keys`: ascending, and none below a key this index has handed out)
        or under new ones. Returns the keys."""

    def save(self) -> None:
        """Make everything added so far durable."""

    def close(self) -> None: ...

    def __enter__(self) -> IndexBackend: ...

    def __exit__(self, *exc_info) -> None: ...


def location_string(location: str | os.PathLike) -> str:
    """The location as a string, with a URI's `//` restored if a `Path` collapsed it."""
    return _COLLAPSED_URI.sub(r"\1://", os.fspath(location))


def is_milvus_location(location: str | Path) -> bool:
    """Whether `location` names a Milvus collection (a server URI or a milvus-lite `.db` file) rather than an
    embedded index directory. A directory holding an embedded index stays embedded whatever its name."""
    text = location_string(location)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in MILVUS_SCHEMES:
        return True
    if scheme:
        raise ValueError(f"index location {text!r}: unknown scheme {scheme!r} (milvus://, http://, https://, or a "
                         "path)")
    from mmserve.index.generations import Generations

    path = text.rsplit("#", 1)[0] if ".db#" in text else text
    return path.endswith(".db") and not Generations(Path(path)).exists()


def index_exists(location: str | Path) -> bool:
    if is_milvus_location(location):
        from mmserve.index.milvus import MilvusIndex

        return MilvusIndex.exists(location)
    from mmserve.index.generations import Generations

    return Generations(Path(location)).exists()


def open_index(location: str | Path, dim: int | None = None, *, view: bool = False, **options) -> IndexBackend:
    """The index at `location`: opened, or created when `dim` is given and there is none yet.

    `view=True` opens read-only (for the embedded index: many readers, no
    writer lock). `options` go to the backend's constructor when it creates an
    index (e.g. `storage="i8"`); a Milvus index also takes its connection and
    search options (`token=`, `ef=`, `exact_limit=`) when it opens one.
    """
    if is_milvus_location(location):
        from mmserve.index.milvus import MilvusIndex

        if dim is None:
            return MilvusIndex.open(location, view=view, **MilvusIndex.runtime_options(options))
        if view:
            raise ValueError("a view opens an existing index: give no dim")
        return MilvusIndex.open_or_create(location, dim, **options)
    from mmserve.index.embedded import Index

    if view:
        return Index.open(location, view=True)
    if dim is None:
        return Index.open(location)
    return Index.open_or_create(location, dim, **options)


def normalised_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """`[N, dim]` (or one `[dim]`) vectors as contiguous float32 rows of unit length; ValueError for a wrong shape,
    NaN or infinity, or a zero vector."""
    vectors = _rows(vectors, dim)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("zero vectors have no direction")
    return np.ascontiguousarray(vectors / norms)


def stored_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Vectors that an index already stored (`items()`), kept as they are: checked like `normalised_rows`, and
    each must be of unit length within the rounding of its storage (renormalising would change their bits)."""
    vectors = _rows(vectors, dim)
    norms = np.linalg.norm(vectors, axis=1)
    off = np.flatnonzero(np.abs(norms - 1) > _UNIT_TOLERANCE)
    if len(off):
        raise ValueError(f"restored vectors must be unit length, as an index stores them: row {int(off[0])} has "
                         f"norm {float(norms[off[0]]):.4g} (add() normalises new vectors)")
    return np.ascontiguousarray(vectors)


def _rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors.reshape(1, -1)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must be [N, {dim}], got {list(vectors.shape)}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinity")
    return vectors
