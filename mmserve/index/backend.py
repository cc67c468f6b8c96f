"""The index-backend protocol: what search, folder indexing, the CLI and the API may ask of an index.

A backend stores L2-normalised vectors under integer keys it assigns, with
`ItemMetadata` beside each, and answers cosine top-k with optional tag
filters. The embedded backend (`mmserve.index.Index`: usearch + SQLite in a
directory) is the one that exists today; a server backend (Milvus) implements
the same methods and is chosen by `open_index` from the location alone, so
nothing above this module changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from mmserve.index.records import MAIN_SPACE, Hit, ItemMetadata, Record


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

    def save(self) -> None:
        """Make everything added so far durable."""

    def close(self) -> None: ...

    def __enter__(self) -> IndexBackend: ...

    def __exit__(self, *exc_info) -> None: ...


def index_exists(location: str | Path) -> bool:
    from mmserve.index.generations import Generations

    return Generations(Path(location)).exists()


def open_index(location: str | Path, dim: int | None = None, *, view: bool = False, **options) -> IndexBackend:
    """The index at `location`: opened, or created when `dim` is given and there is none yet.

    `view=True` opens read-only (many readers, no writer lock). `options` go to
    the backend's constructor when it creates an index (e.g. `storage="i8"`).
    """
    from mmserve.index.embedded import Index

    if view:
        return Index.open(location, view=True)
    if dim is None:
        return Index.open(location)
    return Index.open_or_create(location, dim, **options)
