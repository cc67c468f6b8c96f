"""The embedded index's approximate search: a usearch HNSW graph over the same keys and vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = "hnsw.usearch"


class Hnsw:
    def __init__(self, dim: int, storage: str, *, connectivity: int, expansion_add: int,
                 expansion_search: int) -> None:
        from usearch.index import Index

        self.graph = Index(ndim=dim, metric="cos", dtype=storage, connectivity=connectivity,
                           expansion_add=expansion_add, expansion_search=expansion_search)

    @classmethod
    def from_manifest(cls, manifest: dict) -> Hnsw:
        return cls(manifest["dim"], manifest["storage"], connectivity=manifest["connectivity"],
                   expansion_add=manifest["expansion_add"], expansion_search=manifest["expansion_search"])

    def load(self, generation: Path, *, view: bool) -> None:
        """The graph of a generation, loaded into memory or (`view`) memory-mapped read-only."""
        if view:
            self.graph.view(str(generation / FILE))
        else:
            self.graph.load(str(generation / FILE))

    def save(self, generation: Path) -> None:
        self.graph.save(str(generation / FILE))

    def __len__(self) -> int:
        return len(self.graph)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self.graph.add(keys, vectors)

    def remove(self, keys) -> None:
        self.graph.remove(keys)

    def candidates(self, query: np.ndarray, count: int) -> np.ndarray:
        """Keys of about the `count` nearest vectors to one query `[D]`."""
        return np.asarray(self.graph.search(query, count).keys, dtype=np.int64)
