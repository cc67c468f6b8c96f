"""`mmserve.Index`: the embedded index backend, a directory on this machine.

    INDEX/
      CURRENT              "gen-000007": the generation readers open (`generations`)
      gen-000007/
        manifest.json      dimensions, storage dtype, count, next key, model
        hnsw.usearch       the usearch graph, f16 or i8 storage (`ann`)
        vectors.npy        the same vectors as a plain matrix, for exact scans and re-ranking (`exact`)
        scales.npy         per-row scales (i8 storage only)
        keys.npy           int64 key of each matrix row (ascending)
        metadata.sqlite    key, source URI, content hash, caption, tags, modality, space, segment times,
                           timestamps (`metadata`)

`save()` writes a complete new generation and switches CURRENT atomically, so
the graph, the matrix and the metadata always come from the same save. One
writer at a time (an exclusive lock on INDEX/LOCK); any number of read-only
`view`s, which memory-map the files instead of loading them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mmserve.index.ann import Hnsw
from mmserve.index.backend import normalised_rows, stored_rows
from mmserve.index.exact import Storage, VectorMatrix
from mmserve.index.generations import Generations
from mmserve.index.metadata import MetadataStore
from mmserve.index.records import MAIN_SPACE, Hit, ItemMetadata, Record, check_query_space

FORMAT_VERSION = 1
# Below this many candidate rows, search scans every vector exactly (the SIMD kernel) instead of the graph.
EXACT_SCAN_LIMIT = 20_000
# HNSW candidates fetched per result before exact re-ranking.
RERANK_FACTOR = 4


class Index:
    """Create with `Index.create(path, dim)`, open with `Index.open(path)` (or `view=True` to read only)."""

    def __init__(self, path: Path, manifest: dict, ann: Hnsw, matrix: VectorMatrix, metadata: MetadataStore, *,
                 read_only: bool, lock_file=None) -> None:
        self.path = path
        self._generations = Generations(path)
        self._manifest = manifest
        self.ann = ann
        self.matrix = matrix
        self.metadata = metadata
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
        generations = Generations(Path(path))
        if generations.exists():
            raise FileExistsError(f"{path} already holds an index")
        lock = generations.lock()
        manifest = {
            "format": FORMAT_VERSION, "dim": dim, "storage": storage, "model": model, "count": 0, "next_key": 0,
            "generation": 0, "connectivity": connectivity, "expansion_add": expansion_add,
            "expansion_search": expansion_search,
        }
        index = cls(Path(path), manifest, Hnsw.from_manifest(manifest), VectorMatrix.empty(dim, storage),
                    MetadataStore.empty(), read_only=False, lock_file=lock)
        index._dirty = True
        index.save()
        return index

    @classmethod
    def open(cls, path: str | Path, *, view: bool = False) -> Index:
        """Open for writing (loaded into memory, one writer) or, with `view=True`, read-only memory-mapped."""
        generations = Generations(Path(path))
        directory, manifest = generations.current()
        lock = None if view else generations.lock()
        if manifest.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: index format {manifest.get('format')} is not {FORMAT_VERSION}")
        ann = Hnsw.from_manifest(manifest)
        if manifest["count"]:
            ann.load(directory, view=view)
        # numpy cannot map a zero-row array
        matrix = VectorMatrix.load(directory, manifest["storage"], mmap=view and manifest["count"] > 0)
        return cls(Path(path), manifest, ann, matrix, MetadataStore.load(directory, view=view), read_only=view,
                   lock_file=lock)

    @classmethod
    def open_or_create(cls, path: str | Path, dim: int, **options) -> Index:
        if Generations(Path(path)).exists():
            index = cls.open(path)
            if index.dim != dim:
                index.close()
                raise ValueError(f"{path} holds {index.dim}-dimensional vectors; the model gives {dim}")
            return index
        return cls.create(path, dim, **options)

    # -- properties ----------------------------------------------------------------------------------------

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
        return len(self.matrix)

    def __contains__(self, key: int) -> bool:
        return self.matrix.row(key) is not None

    def keys(self) -> np.ndarray:
        return np.array(self.matrix.keys, dtype=np.int64)

    # -- writing -------------------------------------------------------------------------------------------

    def add(self, vectors: np.ndarray, metadata: Sequence[ItemMetadata | dict] | None = None) -> np.ndarray:
        """Add `[N, D]` vectors (normalised here) with optional metadata; returns their new keys."""
        self._writable()
        vectors = self._check_vectors(vectors)
        records = [ItemMetadata.model_validate(m) for m in metadata] if metadata is not None else [
            ItemMetadata() for _ in range(len(vectors))]
        if len(records) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(records)} metadata entries")
        start = int(self._manifest["next_key"])
        return self._append(np.arange(start, start + len(vectors), dtype=np.int64), vectors, records)

    def restore(self, vectors: np.ndarray, records: Sequence[Record], *, keep_keys: bool = True) -> np.ndarray:
        """Items as another index held them (`items()`): vectors as given (already unit length), the records'
        metadata and times, under their keys (`keep_keys`: ascending, from the next key on) or new ones."""
        self._writable()
        vectors = stored_rows(vectors, self.dim)
        if len(records) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(records)} records")
        start = int(self._manifest["next_key"])
        if keep_keys:
            keys = np.array([record.key for record in records], dtype=np.int64)
            if len(keys) and (keys[0] < start or (np.diff(keys) <= 0).any()):
                raise ValueError(f"{self.path}: restored keys must ascend from {start}, the next key this index "
                                 "hands out (keys are never reused): restore into a new index, or with new keys")
        else:
            keys = np.arange(start, start + len(vectors), dtype=np.int64)
        return self._append(keys, vectors, records)

    def _append(self, keys: np.ndarray, vectors: np.ndarray, records: Sequence[ItemMetadata]) -> np.ndarray:
        """Store unit `vectors` with their records under `keys` (ascending, from the next key on)."""
        if len(keys) == 0:
            return keys
        self.ann.add(keys, vectors)
        self.matrix.append(keys, vectors)
        self.metadata.add(keys, records)
        self._manifest["next_key"] = int(keys[-1]) + 1
        self._dirty = True
        return keys

    def remove(self, keys: Iterable[int]) -> int:
        """Remove these keys (unknown keys are ignored); returns how many were removed."""
        self._writable()
        present = self.matrix.remove(np.unique(np.asarray(list(keys), dtype=np.int64)))
        if len(present) == 0:
            return 0
        self.ann.remove(present)
        self.metadata.remove(present)
        self._dirty = True
        return len(present)

    def update(self, key: int, *, vector: np.ndarray | None = None, uri: str | None = None,
               caption: str | None = None, tags: Sequence[str] | None = None) -> None:
        """Replace the vector and/or metadata fields of an existing key."""
        self._writable()
        if key not in self:
            raise KeyError(f"no item with key {key}")
        if vector is not None:
            vectors = self._check_vectors(np.asarray(vector).reshape(1, -1))
            self.matrix.replace(key, vectors[0])
            self.ann.remove(key)
            self.ann.add(np.array([key], dtype=np.int64), vectors)
        self.metadata.update(key, uri=uri, caption=caption, tags=tags)
        self._dirty = True

    def save(self) -> None:
        """Write a new generation and switch CURRENT to it atomically; older generations are deleted."""
        self._writable()
        if not self._dirty:
            return
        manifest = dict(self._manifest, count=len(self), generation=int(self._manifest["generation"]) + 1)

        def write(directory: Path) -> None:
            if len(self):
                self.ann.save(directory)
            self.matrix.save(directory)
            self.metadata.save(directory)

        self._generations.commit(manifest["generation"], manifest, write)
        self._manifest = manifest
        self._dirty = False

    def close(self) -> None:
        self.metadata.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------------------

    def get(self, key: int) -> Record:
        records = self.metadata.records([int(key)])
        if int(key) not in records:
            raise KeyError(f"no item with key {key}")
        return records[int(key)]

    def records(self, keys: Iterable[int]) -> dict[int, Record]:
        """key -> record, for the keys that exist."""
        return self.metadata.records([int(k) for k in keys])

    def find_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """content hash -> key, for the hashes already indexed."""
        return self.metadata.find_hashes(hashes)

    def items(self, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, list[Record]]]:
        """Every item in key order, `batch_size` at a time: float32 vectors as stored (float16 widened, int8
        times its row's scale) and records."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        keys = self.keys()
        for start in range(0, len(keys), batch_size):
            chunk = [int(key) for key in keys[start : start + batch_size]]
            records = self.metadata.records(chunk)
            yield self.matrix.decoded(start, start + len(chunk)), [records[key] for key in chunk]

    def tags(self) -> dict[str, int]:
        return self.metadata.tags()

    def modality_counts(self) -> dict[tuple[str, str], int]:
        return dict(self.metadata.counts())

    def search(self, vector: np.ndarray, k: int = 10, *, tags: Sequence[str] | None = None,
               modality: str | None = None, space: str = MAIN_SPACE, exact: bool | None = None) -> list[Hit]:
        """The `k` nearest items by cosine similarity, best first.

        `tags`: only items carrying every one of these tags; `modality`: only
        items of it; `space`: the query vector's embedding space (items of other
        spaces are never compared with it; `SpaceMismatchError` when all those
        asked for are in another). `exact=None` picks: an exact scan for small
        collections and filtered searches, otherwise HNSW candidates re-ranked
        exactly; `True` / `False` force one.
        """
        query = self._check_vectors(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if len(self) == 0:
            return []
        counts = self.metadata.counts()
        space_filter = check_query_space(space, modality, counts)
        # A modality filter that every item passes needs no scan of the metadata.
        modality_filter = modality if modality is not None and {m for m, _ in counts} != {modality} else None
        rows = None
        if tags or modality_filter or space_filter:
            rows = self.matrix.rows_of(self.metadata.keys_where(tags=tags, modality=modality_filter,
                                                                space=space_filter))
            if len(rows) == 0:
                return []
        if exact is None:
            exact = rows is not None or len(self) <= EXACT_SCAN_LIMIT
        if not exact:
            candidates = self.matrix.rows_of(self.ann.candidates(query[0], min(len(self), k * RERANK_FACTOR)))
            rows = candidates if rows is None else np.intersect1d(candidates, rows)
        scores, keys = self.matrix.top_k(query, k, rows)
        records = self.metadata.records([int(key) for key in keys])
        return [Hit(key=int(key), score=float(score), record=records[int(key)]) for key, score in zip(keys, scores)]

    # -- internals -----------------------------------------------------------------------------------------

    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return normalised_rows(vectors, self.dim)

    def _writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"{self.path} is open read-only (view=True)")
