"""The embedded index's vectors as a plain matrix: exact top-k (the C++ SIMD kernel) and the re-ranking of
approximate candidates.

Rows are sorted by key, stored as float16 or as int8 with a scale per row,
and memory-mapped by read-only views. Appends are buffered and joined on the
next read, so adding in small batches stays linear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

Storage = Literal["f16", "i8"]


@dataclasses.dataclass
class _Rows:
    keys: np.ndarray  # int64 [N], ascending
    vectors: np.ndarray  # float16 or int8 [N, D]
    scales: np.ndarray | None  # float32 [N] for int8


class VectorMatrix:
    def __init__(self, rows: _Rows, storage: Storage) -> None:
        self._stored = rows
        self._pending: list[_Rows] = []  # appended since the last read
        self.storage = storage

    @classmethod
    def empty(cls, dim: int, storage: Storage) -> VectorMatrix:
        dtype = np.float16 if storage == "f16" else np.int8
        return cls(_Rows(np.zeros(0, np.int64), np.zeros((0, dim), dtype),
                         np.zeros(0, np.float32) if storage == "i8" else None), storage)

    @classmethod
    def load(cls, generation: Path, storage: Storage, *, mmap: bool) -> VectorMatrix:
        mode: Literal["r"] | None = "r" if mmap else None
        scales = generation / "scales.npy"
        return cls(_Rows(np.load(generation / "keys.npy", mmap_mode=mode),
                         np.load(generation / "vectors.npy", mmap_mode=mode),
                         np.load(scales, mmap_mode=mode) if scales.is_file() else None), storage)

    def save(self, generation: Path) -> None:
        rows = self._rows
        np.save(generation / "keys.npy", rows.keys)
        np.save(generation / "vectors.npy", rows.vectors)
        if rows.scales is not None:
            np.save(generation / "scales.npy", rows.scales)

    def __len__(self) -> int:
        return len(self._stored.keys) + sum(len(p.keys) for p in self._pending)

    @property
    def keys(self) -> np.ndarray:
        return self._rows.keys

    def append(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Normalised float32 vectors under keys above every stored one."""
        stored, scales = self._encode(vectors)
        self._pending.append(_Rows(keys, stored, scales))

    def remove(self, keys: np.ndarray) -> np.ndarray:
        """Drop these keys; returns the ones that were present."""
        rows = self._rows
        present = keys[np.isin(keys, rows.keys)]
        if len(present):
            keep = ~np.isin(rows.keys, present)
            self._stored = _Rows(rows.keys[keep], rows.vectors[keep], None if rows.scales is None else rows.scales[keep])
        return present

    def replace(self, key: int, vector: np.ndarray) -> None:
        row = self.row(key)
        if row is None:
            raise KeyError(f"no item with key {key}")
        stored, scales = self._encode(vector.reshape(1, -1))
        rows = self._rows
        rows.vectors[row] = stored[0]
        if rows.scales is not None and scales is not None:
            rows.scales[row] = scales[0]

    def row(self, key: int) -> int | None:
        keys = self.keys
        row = int(np.searchsorted(keys, key))
        return row if row < len(keys) and keys[row] == key else None

    def decoded(self, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` as float32 (int8 rows times their scales)."""
        rows = self._rows
        vectors = np.asarray(rows.vectors[start:stop], dtype=np.float32)
        return vectors if rows.scales is None else vectors * rows.scales[start:stop, None]

    def rows_of(self, keys: np.ndarray | Sequence[int]) -> np.ndarray:
        """Sorted row numbers of these (present) keys."""
        rows = np.searchsorted(self.keys, np.asarray(keys, dtype=np.int64))
        return np.sort(rows[rows < len(self.keys)])

    def top_k(self, query: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and keys of the `k` best rows (of `rows`, when given) for one normalised query `[1, D]`."""
        from mmserve.similarity import top_k

        m = self._rows
        vectors = m.vectors if rows is None else m.vectors[rows]
        scales = None if m.scales is None else (m.scales if rows is None else m.scales[rows])
        scores, found = top_k(query, vectors, k, scales=scales)
        found = found[0] if rows is None else rows[found[0]]
        return scores[0], m.keys[found]

    @property
    def _rows(self) -> _Rows:
        if self._pending:
            parts = [self._stored, *self._pending]
            self._stored = _Rows(
                np.concatenate([p.keys for p in parts]), np.concatenate([p.vectors for p in parts]),
                None if self._stored.scales is None else np.concatenate([p.scales for p in parts]),
            )
            self._pending = []
        return self._stored

    def _encode(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.storage == "f16":
            return vectors.astype(np.float16), None
        from mmserve.similarity import quantize_i8

        return quantize_i8(vectors)
