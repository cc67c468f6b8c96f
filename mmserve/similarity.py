"""Exact inner-product top-k: float32 queries against float32, float16 or int8 vectors, in C++.

`top_k` scores every database row against every query (a brute-force scan, no
index) with SIMD kernels chosen once for this CPU (`active_kernel()`), on
threads that split the rows, with the GIL released. float16 and int8 elements
are widened to float32 before each multiply-add: accumulation is float32
whatever the storage. An int8 database carries one float32 scale per row
(`quantize_i8`), and a row's score is `dot(query, row) * scale`.

Result order: descending score, ties broken by the lower row index, NaN scores
last. The same row always gets the same score from a given kernel, whatever the
thread count or batch, so results are deterministic.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from mmserve import _C

DATABASE_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.int8))

# Rows quantised per step by quantize_i8, so its float32 temporaries stay small.
_QUANTIZE_CHUNK_ELEMENTS = 1 << 22


class TopK(NamedTuple):
    """Per query, the best rows first: `scores` float32 [Q, k'] and row `indices` int64 [Q, k'],
    where k' = min(k, N)."""

    scores: npt.NDArray[np.float32]
    indices: npt.NDArray[np.int64]


def available_kernels() -> list[str]:
    """Kernel sets this CPU can run ("scalar" first); each can be forced with `kernel=`."""
    return list(_C.available_similarity_kernels())


def active_kernel() -> str:
    """The kernel set `kernel="auto"` uses here: "avx512", "avx2", "neon" or "scalar"."""
    return str(_C.active_similarity_kernel())


def top_k(
    queries: npt.ArrayLike,
    database: np.ndarray,
    k: int,
    *,
    scales: npt.ArrayLike | None = None,
    kernel: str = "auto",
    threads: int = 0,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> TopK:
    """The `k` highest inner products of each query with the rows of `database`.

    queries: [Q, D] or one query [D] (treated as [1, D]); any floating dtype,
        converted to float32 (a copy only when it is not already float32 with
        contiguous elements).
    database: [N, D] float32, float16 or int8, never copied; rows may be strided
        (a slice of a wider array) but each row's elements must be contiguous.
    k: results per query; when the database has fewer than k rows, all N rows
        are returned (the result has min(k, N) columns).
    scales: float [N], required for (and only for) an int8 database.
    kernel: "auto" or a set from `available_kernels()`; forcing one this CPU
        lacks raises LookupError.
    threads: 0 = one per core; fewer are used when the scan is too small to
        gain from them.
    out: optional (float32 [Q, min(k, N)], int64 [Q, min(k, N)]) arrays written
        in place and returned.
    """
    query_matrix = _query_matrix(queries)
    if not isinstance(database, np.ndarray):
        raise TypeError(f"database must be a numpy array, got {type(database).__name__}")
    if database.dtype not in DATABASE_DTYPES:
        raise TypeError(
            f"database must be float32, float16 or int8, got {database.dtype} "
            "(convert once, e.g. database.astype(np.float16), and keep the converted copy)"
        )
    count = operator.index(k)
    if count < 1:
        raise ValueError(f"k must be at least 1, got {count}")
    thread_count = operator.index(threads)
    if thread_count < 0:
        raise ValueError(f"threads must be 0 (all cores) or positive, got {thread_count}")
    scale_vector = None if scales is None else _scale_vector(scales)
    out_scores, out_indices = (None, None) if out is None else out
    scores, indices = _C.top_k(
        query_matrix,
        database,
        count,
        scales=scale_vector,
        kernel=kernel,
        threads=thread_count,
        out_scores=out_scores,
        out_indices=out_indices,
    )
    return TopK(scores, indices)


def quantize_i8(matrix: npt.ArrayLike) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric per-row int8 quantisation: row ~= values * scale with scale = max|row| / 127.

    Values are rounded to nearest (ties to even) and lie in [-127, 127]; an
    all-zero row gets scale 0. Search the result with
    `top_k(queries, values, k, scales=scale)`.
    """
    source = np.asarray(matrix)
    if source.dtype.kind != "f":
        raise TypeError(f"matrix must be floating point, got {source.dtype}")
    if source.ndim != 2:
        raise ValueError(f"matrix must be 2-D [N, D], got shape {source.shape}")
    rows, dim = source.shape
    values = np.empty((rows, dim), dtype=np.int8)
    scales = np.empty(rows, dtype=np.float32)
    step = max(1, _QUANTIZE_CHUNK_ELEMENTS // max(dim, 1))
    for start in range(0, rows, step):
        block = source[start : start + step].astype(np.float32)
        peak = np.abs(block).max(axis=1, initial=0.0)
        if not np.all(np.isfinite(peak)):
            bad = start + int(np.flatnonzero(~np.isfinite(peak))[0])
            raise ValueError(f"matrix row {bad} has a non-finite value")
        scale = (peak / np.float32(127)).astype(np.float32)
        inverse = np.divide(np.float32(1), scale, out=np.zeros_like(scale), where=scale > 0)
        values[start : start + step] = np.clip(np.rint(block * inverse[:, None]), -127, 127)
        scales[start : start + step] = scale
    return values, scales


def _query_matrix(queries: npt.ArrayLike) -> npt.NDArray[np.float32]:
    array = np.asarray(queries)
    if array.dtype.kind != "f":
        raise TypeError(f"queries must be floating point, got {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"queries must be [D] or [Q, D], got shape {array.shape}")
    if array.dtype != np.float32 or (array.shape[1] > 1 and array.strides[1] != array.itemsize):
        array = np.ascontiguousarray(array, dtype=np.float32)
    return array


def _scale_vector(scales: npt.ArrayLike) -> npt.NDArray[np.float32]:
    array = np.asarray(scales)
    if array.dtype.kind != "f":
        raise TypeError(f"scales must be floating point, got {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"scales must be 1-D [N], got shape {array.shape}")
    return array if array.dtype == np.float32 else array.astype(np.float32)
