"""Exact top-k against a float64 numpy reference, every kernel this CPU runs, every storage type."""

import numpy as np
import pytest

from mmserve import _C
from mmserve.similarity import TopK, active_kernel, available_kernels, quantize_i8, top_k

KERNELS = available_kernels()
ALL_KERNELS = ("scalar", "avx2", "avx512", "neon")
DTYPES = ("float32", "float16", "int8")
RTOL = 1e-4  # relative to the size of the dot product's terms, sum |q_i * x_i|


def make_database(rng, rows, dim, dtype):
    """Rows of `dtype` and, for int8, positive per-row scales."""
    if dtype == "int8":
        values = rng.integers(-127, 128, (rows, dim), dtype=np.int8)
        return values, rng.uniform(0.001, 0.02, rows).astype(np.float32)
    return rng.standard_normal((rows, dim)).astype(dtype), None


def reference(queries, database, scales=None):
    """float64 scores of the stored values and the tolerance each score is held to."""
    q = np.asarray(queries, dtype=np.float64).reshape(-1, database.shape[1])
    x = database.astype(np.float64)
    scores = q @ x.T
    magnitude = np.abs(q) @ np.abs(x).T
    if scales is not None:
        scores *= scales.astype(np.float64)
        magnitude *= scales.astype(np.float64)
    return scores, RTOL * magnitude + 1e-30


def assert_top_k(result, queries, database, k, scales=None):
    scores, indices = result
    want, tolerance = reference(queries, database, scales)
    kept = min(k, database.shape[0])
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert scores.shape == indices.shape == (want.shape[0], kept)
    for i in range(want.shape[0]):
        order = np.argsort(-want[i], kind="stable")[:kept]  # stable: equal scores keep the lower row first
        got = indices[i]
        assert len(set(got.tolist())) == kept
        np.testing.assert_array_less(np.abs(scores[i] - want[i, got]), tolerance[i, got] * 1.000001)
        assert np.all(np.diff(scores[i]) <= 0), "scores must be descending"
        differ = got != order  # allowed only where the reference itself ties within tolerance
        gap = np.abs(want[i, got[differ]] - want[i, order[differ]])
        assert np.all(gap <= tolerance[i, got[differ]] + tolerance[i, order[differ]]), (i, got, order)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [1, 7, 33, 129, 511])
def test_matches_float64_reference_at_odd_dimensions(kernel, dtype, dim):
    rng = np.random.default_rng(dim * 31 + DTYPES.index(dtype))
    database, scales = make_database(rng, 301, dim, dtype)
    for count in (1, 3, 7):  # one query, a partial group of four, more than one group
        queries = rng.standard_normal((count, dim)).astype(np.float32)
        result = top_k(queries, database, 10, scales=scales, kernel=kernel)
        assert_top_k(result, queries, database, 10, scales)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_k_of_one_all_rows_and_more_than_all_rows(kernel, dtype):
    rng = np.random.default_rng(5)
    database, scales = make_database(rng, 37, 19, dtype)
    queries = rng.standard_normal((2, 19)).astype(np.float32)
    for k in (1, 37, 100):  # k > N returns every row: min(k, N) columns
        result = top_k(queries, database, k, scales=scales, kernel=kernel)
        assert result.scores.shape == (2, min(k, 37))
        assert_top_k(result, queries, database, k, scales)
    assert sorted(top_k(queries, database, 100, scales=scales, kernel=kernel).indices[0]) == list(range(37))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_go_to_the_lower_row_index(kernel, dtype):
    rng = np.random.default_rng(11)
    database, scales = make_database(rng, 200, 45, dtype)
    best = rng.integers(-127, 128, 45) if dtype == "int8" else rng.standard_normal(45) * 4
    for row in (150, 3, 77, 199):  # inserted out of order: the result must still be ascending
        database[row] = best.astype(dtype)
        if scales is not None:
            scales[row] = 0.05
    query = best.astype(np.float32)
    result = top_k(query, database, 6, scales=scales, kernel=kernel)
    assert result.indices[0, :4].tolist() == [3, 77, 150, 199]
    assert len(set(result.scores[0, :4].tolist())) == 1
    zeros = np.zeros((50, 9), dtype=dtype)
    unit_scales = np.ones(50, np.float32) if dtype == "int8" else None
    flat = top_k(np.ones(9, np.float32), zeros, 5, scales=unit_scales, kernel=kernel)
    assert flat.indices.tolist() == [[0, 1, 2, 3, 4]] and np.all(flat.scores == 0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_database_queries_and_scales(kernel, dtype):
    rng = np.random.default_rng(17)
    wide, wide_scales = make_database(rng, 2 * 150, 80, dtype)
    database = wide[::2, 5:5 + 67]  # row stride 160 elements, rows of 67
    scales = None if wide_scales is None else wide_scales[::2]
    queries = rng.standard_normal((9, 100)).astype(np.float32)[1::3, 11:11 + 67]
    assert not database.flags.c_contiguous and not queries.flags.c_contiguous
    result = top_k(queries, database, 12, scales=scales, kernel=kernel)
    assert_top_k(result, queries, database, 12, scales)
    contiguous = top_k(np.ascontiguousarray(queries), np.ascontiguousarray(database), 12,
                       scales=None if scales is None else np.ascontiguousarray(scales), kernel=kernel)
    assert np.array_equal(result.scores, contiguous.scores)
    assert np.array_equal(result.indices, contiguous.indices)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_and_batching_do_not_change_results(kernel, dtype):
    # 20000 rows x 5 queries x 65 dims is enough work for two threads to be used.
    rng = np.random.default_rng(23)
    database, scales = make_database(rng, 20000, 65, dtype)
    queries = rng.standard_normal((5, 65)).astype(np.float32)
    one = top_k(queries, database, 20, scales=scales, kernel=kernel, threads=1)
    for threads in (2, 0):
        other = top_k(queries, database, 20, scales=scales, kernel=kernel, threads=threads)
        assert np.array_equal(one.scores, other.scores) and np.array_equal(one.indices, other.indices)
    for i in range(len(queries)):  # each query alone takes another tile shape: same scores
        alone = top_k(queries[i], database, 20, scales=scales, kernel=kernel, threads=2)
        assert np.array_equal(alone.scores[0], one.scores[i])
        assert np.array_equal(alone.indices[0], one.indices[i])
    assert_top_k(one, queries, database, 20, scales)


@pytest.mark.parametrize("kernel", KERNELS)
def test_reversed_rows_and_empty_inputs(kernel):
    rng = np.random.default_rng(19)
    database = rng.standard_normal((40, 21)).astype(np.float16)[::-1]  # negative row stride
    queries = rng.standard_normal((2, 21)).astype(np.float32)
    assert_top_k(top_k(queries, database, 7, kernel=kernel), queries, database, 7)
    no_rows = top_k(queries, np.zeros((0, 21), np.float16), 7, kernel=kernel)
    assert no_rows.scores.shape == no_rows.indices.shape == (2, 0)
    no_queries = top_k(np.zeros((0, 21), np.float32), database, 7, kernel=kernel)
    assert no_queries.scores.shape == (0, 7)


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_finite_float16_value_converts_exactly(kernel):
    # One-dimensional rows score exactly 1.0 * value: covers subnormals, signed zeros and the extremes.
    bits = np.arange(1 << 16, dtype=np.uint16)
    values = bits.view(np.float16)
    values = values[np.isfinite(values)].reshape(-1, 1)
    result = top_k(np.ones(1, np.float32), values, len(values), kernel=kernel)
    want = np.sort(values[:, 0].astype(np.float32))[::-1]
    assert np.array_equal(result.scores[0], want)


@pytest.mark.parametrize("kernel", KERNELS)
def test_nan_scores_rank_last(kernel):
    database = np.arange(12, dtype=np.float32).reshape(6, 2)
    database[1, 0] = np.nan
    result = top_k(np.ones(2, np.float32), database, 6, kernel=kernel)
    assert result.indices[0].tolist() == [5, 4, 3, 2, 0, 1]
    assert np.isnan(result.scores[0, -1])


@pytest.mark.parametrize("kernel", KERNELS)
def test_out_buffers_are_written_in_place(kernel):
    rng = np.random.default_rng(29)
    database = rng.standard_normal((500, 33)).astype(np.float16)
    queries = rng.standard_normal((3, 33)).astype(np.float32)
    scores = np.full((3, 8), -1.0, np.float32)
    wide_indices = np.zeros((3, 20), np.int64)
    indices = wide_indices[:, 4:12]  # strided rows are fine for outputs too
    result = top_k(queries, database, 8, kernel=kernel, out=(scores, indices))
    assert result.scores is scores and result.indices is indices
    fresh = top_k(queries, database, 8, kernel=kernel)
    assert np.array_equal(scores, fresh.scores) and np.array_equal(indices, fresh.indices)
    assert np.all(wide_indices[:, :4] == 0) and np.all(wide_indices[:, 12:] == 0)


def test_kernels_reported_for_this_cpu():
    assert KERNELS[0] == "scalar" and active_kernel() == KERNELS[-1]
    assert set(KERNELS) <= set(ALL_KERNELS)
    assert _C.active_similarity_kernel() == active_kernel()


def test_forcing_a_kernel_this_cpu_lacks_raises_lookup_error():
    missing = [k for k in ALL_KERNELS if k not in KERNELS]
    if not missing:
        pytest.skip("this CPU runs every kernel set")
    database = np.zeros((4, 8), np.float32)
    for kernel in missing:
        with pytest.raises(LookupError, match=kernel):
            top_k(np.zeros(8, np.float32), database, 1, kernel=kernel)
        with pytest.raises(_C.UnsupportedKernelError):
            _C.top_k(np.zeros((1, 8), np.float32), database, 1, kernel=kernel)


def test_bad_inputs_raise_precise_errors():
    rng = np.random.default_rng(31)
    database = rng.standard_normal((10, 8)).astype(np.float32)
    query = np.ones(8, np.float32)
    with pytest.raises(TypeError, match="float64"):
        top_k(query, database.astype(np.float64), 3)
    with pytest.raises(TypeError, match="int32"):
        top_k(query, database.astype(np.int32), 3)
    with pytest.raises(TypeError, match="queries"):
        top_k(np.ones(8, np.int64), database, 3)
    with pytest.raises(TypeError, match="float32"):
        _C.top_k(np.ones((1, 8)), database, 3)  # the C++ boundary checks dtypes too
    with pytest.raises(ValueError, match="dimensions"):
        top_k(np.ones(7, np.float32), database, 3)
    with pytest.raises(ValueError, match="2-D"):
        top_k(query, database[None], 3)
    with pytest.raises(ValueError, match="contiguous"):
        top_k(query[:4], database[:, ::2], 3)
    with pytest.raises(ValueError, match="k must be"):
        top_k(query, database, 0)
    with pytest.raises(ValueError, match="threads"):
        top_k(query, database, 3, threads=-1)
    with pytest.raises(ValueError, match="unknown kernel set"):
        top_k(query, database, 3, kernel="sse9")
    int8 = database.astype(np.int8)
    with pytest.raises(ValueError, match="scales"):
        top_k(query, int8, 3)
    with pytest.raises(ValueError, match="one per database row"):
        top_k(query, int8, 3, scales=np.ones(9, np.float32))
    with pytest.raises(TypeError, match="scales"):
        top_k(query, int8, 3, scales=np.ones(10, np.int32))
    with pytest.raises(ValueError, match="only to an int8"):
        top_k(query, database, 3, scales=np.ones(10, np.float32))
    with pytest.raises(TypeError, match="out_scores"):
        top_k(query, database, 3, out=(np.empty((1, 3), np.float64), np.empty((1, 3), np.int64)))
    with pytest.raises(TypeError, match="out_indices"):
        top_k(query, database, 3, out=(np.empty((1, 3), np.float32), np.empty((1, 3), np.int32)))
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        top_k(query, database, 3, out=(np.empty((1, 4), np.float32), np.empty((1, 3), np.int64)))
    readonly = np.empty((1, 3), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        top_k(query, database, 3, out=(readonly, np.empty((1, 3), np.int64)))


def test_quantize_i8_round_trips_within_half_a_step():
    rng = np.random.default_rng(37)
    matrix = rng.standard_normal((300, 70)).astype(np.float32)
    matrix[5] = 0.0
    values, scales = quantize_i8(matrix)
    assert values.dtype == np.int8 and scales.dtype == np.float32 and scales.shape == (300,)
    assert scales[5] == 0 and np.all(values[5] == 0)
    assert np.abs(values).max() == 127 and values.min() >= -127
    np.testing.assert_allclose(scales, np.abs(matrix).max(axis=1) / 127, rtol=1e-6)
    error = np.abs(values.astype(np.float64) * scales[:, None] - matrix)
    assert np.all(error <= scales[:, None] * 0.5 * (1 + 1e-5) + 1e-12)
    queries = rng.standard_normal((2, 70)).astype(np.float32)
    assert_top_k(top_k(queries, values, 5, scales=scales), queries, values, 5, scales)
    with pytest.raises(TypeError):
        quantize_i8(np.ones((2, 3), np.int16))
    with pytest.raises(ValueError, match="2-D"):
        quantize_i8(np.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        quantize_i8(np.array([[1.0, np.inf]]))


def test_returns_a_named_pair():
    result = top_k([0.5, 0.25], np.eye(2, dtype=np.float32), 2)
    assert isinstance(result, TopK)
    scores, indices = result
    assert indices.tolist() == [[0, 1]] and scores.tolist() == [[0.5, 0.25]]
