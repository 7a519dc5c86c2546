"""The search kernel against a naive float64 reference (hypothesis), plus its validation helpers.

The reference scores every candidate row on its own in float64 and sorts by (-score, id). With
small-integer vectors every dot product and squared distance is exact in float32 too, so for
``dot_product`` and ``euclidean`` the kernel must return exactly the reference order, exact ties
broken by id. Cosine (and real-valued data) involves rounding: there the results must be sorted
by (score desc, id asc) by the kernel's own scores, and match the reference up to permutations
among candidates whose reference keys are within a small tolerance.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dk_vector_plugins import AsyncDatabaseFactory, DatabaseFactory, Record, VectorField
from dk_vector_plugins.errors import ConfigError, DimensionMismatchError, InvalidVectorError
from dk_vector_plugins.index import VectorIndex
from dk_vector_plugins.kernel import exact_scores, rank_ids, top_k
from dk_vector_plugins.vectors import (
    METRIC_ALIASES,
    METRICS,
    as_vector,
    as_vector_batch,
    normalize_metric,
    squared_norms,
    unique_ints,
    unique_inverse,
)

# --- the reference ---------------------------------------------------------------------------


def ref_key(metric: str, x: np.ndarray, q: np.ndarray) -> float:
    """The ranking key in float64: higher is better (euclidean: minus the squared distance)."""
    x = x.astype(np.float64)
    q = q.astype(np.float64)
    if metric == "dot_product":
        return float(np.dot(x, q))
    if metric == "euclidean":
        return -float(np.sum((x - q) ** 2))
    nx, nq = np.linalg.norm(x), np.linalg.norm(q)
    return 0.0 if nx == 0 else float(np.dot(x, q) / (nx * nq))


def ref_tol(metric: str, x: np.ndarray, q: np.ndarray) -> float:
    """How far float32 arithmetic may move the key of ``x``."""
    nx, nq = float(np.linalg.norm(x)), float(np.linalg.norm(q))
    if metric == "cosine":
        return 1e-5
    if metric == "dot_product":
        return 1e-5 * (1.0 + nx * nq)
    return 1e-5 * (1.0 + nx * nx + nq * nq)


def out_key(metric: str, score: float, distance: float | None) -> float:
    """The kernel's ranking key, comparable with :func:`ref_key`."""
    if metric == "euclidean":
        assert distance is not None
        return -(distance**2)
    return score


def reference_top_k(
    matrix: np.ndarray, q: np.ndarray, k: int, metric: str, ids: list[str], cand: np.ndarray
) -> list[int]:
    rows = [r for r in range(matrix.shape[0]) if cand[r]]
    rows.sort(key=lambda r: (-ref_key(metric, matrix[r], q), ids[r]))
    return rows[:k]


def check_result(
    rows: list[int],
    scores: list[float],
    distances: list[float] | None,
    matrix: np.ndarray,
    q: np.ndarray,
    k: int,
    metric: str,
    ids: list[str],
    cand: np.ndarray,
    exact: bool,
) -> None:
    """Compare one query's result with the reference (see the module docstring)."""
    want = reference_top_k(matrix, q, k, metric, ids, cand)
    assert len(rows) == len(want) == min(k, int(cand.sum()))
    assert len(set(rows)) == len(rows)
    assert all(cand[r] for r in rows)
    # sorted by (score desc, id asc) by the kernel's own scores; scores higher-is-better
    order = [(-s, ids[r]) for r, s in zip(rows, scores)]
    assert order == sorted(order)
    for j, r in enumerate(rows):
        dist = None if distances is None else distances[j]
        if metric == "euclidean":
            assert dist is not None
            assert scores[j] == pytest.approx(1.0 / (1.0 + dist), rel=1e-12)
            assert dist == pytest.approx(float(np.linalg.norm(matrix[r].astype(np.float64) - q)), abs=1e-2)
        else:
            assert dist is None
        assert abs(out_key(metric, scores[j], dist) - ref_key(metric, matrix[r], q)) <= ref_tol(
            metric, matrix[r], q
        )
    if exact:
        assert rows == want
        return
    for j, (r, w) in enumerate(zip(rows, want)):
        tol = max(ref_tol(metric, matrix[r], q), ref_tol(metric, matrix[w], q))
        assert abs(ref_key(metric, matrix[r], q) - ref_key(metric, matrix[w], q)) <= tol, (j, r, w)


# --- strategies ------------------------------------------------------------------------------


@st.composite
def problems(draw: Any, integer: bool = True, max_rows: int = 40, max_dim: int = 8) -> dict[str, Any]:
    """A matrix, a batch of queries, k, a metric, shuffled string ids and an optional mask."""
    n = draw(st.integers(1, max_rows))
    d = draw(st.integers(1, max_dim))
    if integer:
        elem = st.integers(-3, 3).map(float)
    else:
        elem = st.floats(-10, 10, width=32, allow_subnormal=False).map(lambda x: 0.0 if abs(x) < 1e-3 else x)
    matrix = np.array(draw(st.lists(st.lists(elem, min_size=d, max_size=d), min_size=n, max_size=n)))
    matrix = matrix.astype(np.float32).reshape(n, d)
    # duplicated rows give exact ties whatever the metric
    for _ in range(draw(st.integers(0, min(5, n - 1)))):
        src, dst = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        matrix[dst] = matrix[src]
    b = draw(st.integers(1, 3))
    queries = np.array(draw(st.lists(st.lists(elem, min_size=d, max_size=d), min_size=b, max_size=b)))
    queries = queries.astype(np.float32).reshape(b, d)
    metric = draw(st.sampled_from(METRICS))
    if metric == "cosine":
        assume(bool(np.all(np.any(queries != 0, axis=1))))
    perm = draw(st.permutations(range(n)))
    ids = [f"id{p:03d}" for p in perm]
    k = draw(st.integers(1, n + 3))
    mask = None
    if draw(st.booleans()):
        mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    return {"matrix": matrix, "queries": queries, "metric": metric, "ids": ids, "k": k, "mask": mask}


def _exact(p: dict[str, Any], integer: bool) -> bool:
    return integer and p["metric"] != "cosine"


# --- top_k -----------------------------------------------------------------------------------


@pytest.mark.parametrize("integer", [True, False], ids=["int", "float"])
@given(data=st.data())
def test_top_k_matches_reference(integer: bool, data: Any) -> None:
    p = data.draw(problems(integer=integer))
    m, qs = p["matrix"], p["queries"]
    sq = np.einsum("ij,ij->i", m, m, dtype=np.float32)
    cand = p["mask"] if p["mask"] is not None else np.ones(len(m), dtype=bool)
    tops = top_k(m, sq, qs, p["k"], p["metric"], rank_ids(p["ids"]), p["mask"])
    assert len(tops) == len(qs)
    for q, top in zip(qs, tops):
        dist = None if top.distances is None else top.distances.tolist()
        check_result(
            top.rows.tolist(),
            top.scores.tolist(),
            dist,
            m,
            q,
            p["k"],
            p["metric"],
            p["ids"],
            cand,
            _exact(p, integer),
        )


@pytest.mark.parametrize("integer", [True, False], ids=["int", "float"])
@given(data=st.data())
def test_top_k_batch_equals_single_bit_for_bit(integer: bool, data: Any) -> None:
    p = data.draw(problems(integer=integer))
    m, qs = p["matrix"], p["queries"]
    sq = squared_norms(m)
    ids = rank_ids(p["ids"])
    batch = top_k(m, sq, qs, p["k"], p["metric"], ids, p["mask"])
    for i, q in enumerate(qs):
        (single,) = top_k(m, sq, q[None, :], p["k"], p["metric"], ids, p["mask"])
        assert single.rows.tolist() == batch[i].rows.tolist()
        assert single.scores.tolist() == batch[i].scores.tolist()


def _split_index(m: np.ndarray, cuts: list[int]) -> VectorIndex:
    """An index holding ``m`` in parts cut at ``cuts`` (adopted blocks and a growable tail)."""
    index = VectorIndex()
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(m))), len(m)]
    for lo, hi in itertools.pairwise(bounds):
        if (hi - lo) % 2:
            index.append_block(np.ascontiguousarray(m[lo:hi]))
        else:
            index.set_rows(np.arange(lo, hi, dtype=np.int64), m[lo:hi].copy())
    return index


@pytest.mark.parametrize("integer", [True, False], ids=["int", "float"])
@given(data=st.data())
def test_results_do_not_depend_on_the_layout_of_rows(integer: bool, data: Any) -> None:
    """Bit-identical ids, scores and distances whether the rows are one matrix, several parts
    of an index, or the same rows in another order (as segments spread over processes are)."""
    p = data.draw(problems(integer=integer, max_rows=60, max_dim=40))
    m, qs, k, metric = p["matrix"], p["queries"], p["k"], p["metric"]
    n = len(m)
    one = top_k(m, squared_norms(m), qs, k, metric, rank_ids(p["ids"]), p["mask"])
    cuts = data.draw(st.lists(st.integers(1, max(1, n - 1)), max_size=5))
    parts = _split_index(m, cuts).search(qs, k, metric, rank_ids(p["ids"]), p["mask"])
    perm = np.array(data.draw(st.permutations(range(n))), dtype=np.int64)
    pm = np.ascontiguousarray(m[perm])
    pids = [p["ids"][r] for r in perm.tolist()]
    pmask = None if p["mask"] is None else p["mask"][perm]
    shuffled = top_k(pm, squared_norms(pm), qs, k, metric, rank_ids(pids), pmask)
    for a, b, c in zip(one, parts, shuffled):
        assert a.rows.tolist() == b.rows.tolist()
        assert [p["ids"][r] for r in a.rows.tolist()] == [pids[r] for r in c.rows.tolist()]
        assert a.scores.tolist() == b.scores.tolist() == c.scores.tolist()
        if a.distances is None:
            assert b.distances is None and c.distances is None
        else:
            assert b.distances is not None and c.distances is not None
            assert a.distances.tolist() == b.distances.tolist() == c.distances.tolist()


@given(data=st.data())
def test_exact_scores_match_float64_reference(data: Any) -> None:
    p = data.draw(problems(integer=False, max_rows=20, max_dim=50))
    m, q = p["matrix"], p["queries"][0]
    for metric in METRICS:
        if metric == "cosine" and not q.any():
            continue
        scores, dists = exact_scores(m, np.repeat(q[None, :], len(m), axis=0), metric)
        for r in range(len(m)):
            if metric == "euclidean":
                assert dists is not None
                want = float(np.linalg.norm(m[r].astype(np.float64) - q.astype(np.float64)))
                assert dists[r] == pytest.approx(want, rel=1e-12, abs=1e-12)
                assert scores[r] == 1.0 / (1.0 + dists[r])
            else:
                assert scores[r] == pytest.approx(ref_key(metric, m[r], q), rel=1e-12, abs=1e-12)


def test_near_ties_are_ranked_by_exact_scores() -> None:
    """Rows whose float32 keys round equal (or the wrong way round) are ranked by their exact
    scores: the shortlist keeps every row within rounding distance of the k-th."""
    rng = np.random.default_rng(3)
    d = 384
    base = rng.standard_normal(d).astype(np.float32)
    m = np.repeat(base[None, :], 64, axis=0)
    for i in range(64):  # nudge one component of each row by a few ulps
        m[i, i % d] = np.nextafter(m[i, i % d], np.float32(np.inf) if i % 2 else np.float32(-np.inf))
    m = np.concatenate([m, rng.standard_normal((500, d)).astype(np.float32)])
    q = base[None, :] + np.float32(1e-3) * rng.standard_normal((1, d)).astype(np.float32)
    ids = [f"r{i:04d}" for i in range(len(m))]
    for metric in METRICS:
        for k in (1, 5, 20):
            (top,) = top_k(m, squared_norms(m), q, k, metric, rank_ids(ids))
            scores, dists = exact_scores(m, np.repeat(q, len(m), axis=0), metric)
            rank = scores if dists is None else -dists
            want = sorted(range(len(m)), key=lambda r: (-rank[r], ids[r]))[:k]
            assert top.rows.tolist() == want, metric


@pytest.mark.parametrize("integer", [True, False], ids=["int", "float"])
@given(data=st.data())
def test_vector_index_search_matches_reference(integer: bool, data: Any) -> None:
    """Rows added in several writes (some replaced, some cleared) then searched with a mask."""
    p = data.draw(problems(integer=integer))
    m = p["matrix"]
    n = len(m)
    index = VectorIndex()
    cut = data.draw(st.integers(0, n))
    # first part in one batch, the rest one row at a time (geometric growth path)
    if cut:
        index.set_rows(np.arange(cut, dtype=np.int64), m[:cut])
    for r in range(cut, n):
        index.set_rows(np.array([r], dtype=np.int64), m[r : r + 1])
    # overwrite a few rows with other values, then put the originals back
    rewrite = data.draw(st.lists(st.integers(0, n - 1), max_size=4, unique=True))
    if rewrite:
        rows = np.array(rewrite, dtype=np.int64)
        index.set_rows(rows, np.full((len(rows), m.shape[1]), 7.0, dtype=np.float32))
        index.set_rows(rows, m[rows])
    cleared = data.draw(st.lists(st.integers(0, n - 1), max_size=n // 2, unique=True))
    if cleared:
        index.clear_rows(np.array(cleared, dtype=np.int64))
    present = np.ones(n, dtype=bool)
    present[cleared] = False
    assert index.count == int(present.sum())
    assert index.nrows == n
    assert index.present.tolist() == present.tolist()
    cand = present & (p["mask"] if p["mask"] is not None else True)
    tops = index.search(p["queries"], p["k"], p["metric"], rank_ids(p["ids"]), p["mask"])
    for q, top in zip(p["queries"], tops):
        if not cand.any():
            assert len(top.rows) == 0
            continue
        dist = None if top.distances is None else top.distances.tolist()
        check_result(
            top.rows.tolist(),
            top.scores.tolist(),
            dist,
            m,
            q,
            p["k"],
            p["metric"],
            p["ids"],
            cand,
            _exact(p, integer),
        )


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@given(data=st.data())
def test_store_vector_search_matches_reference(is_async: bool, data: Any) -> None:
    """The whole path: records with metadata, a filter, a store (sync and async), single and batch."""
    p = data.draw(problems(integer=True, max_rows=25, max_dim=5))
    m, ids = p["matrix"], p["ids"]
    n = len(m)
    groups = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    flt_group = data.draw(st.none() | st.integers(0, 2))
    cand = np.ones(n, dtype=bool) if flt_group is None else np.array([g == flt_group for g in groups])
    records = [Record({"g": groups[r], "embedding": VectorField(m[r])}, id=ids[r]) for r in range(n)] + [
        Record({"g": 0, "text": "no vector"}, id="zz-novec")
    ]
    flt = None if flt_group is None else {"g": flt_group}
    factory = AsyncDatabaseFactory() if is_async else DatabaseFactory()
    db = factory.create(backend="memory", vector_enabled=True)
    with _runner(is_async) as run:  # run(x) awaits x for the async store; identity for the sync one
        run(db.create_batch(records))
        single = [run(db.vector_search(q, k=p["k"], filter=flt, metric=p["metric"])) for q in p["queries"]]
        batch = run(db.vector_search_batch(p["queries"], k=p["k"], filter=flt, metric=p["metric"]))
        run(db.close())
    row_of = {rid: r for r, rid in enumerate(ids)}
    for q, hits, bhits in zip(p["queries"], single, batch):
        rows = [row_of[h.id] for h in hits]
        dist = [h.distance for h in hits] if p["metric"] == "euclidean" else None
        check_result(
            rows, [h.score for h in hits], dist, m, q, p["k"], p["metric"], ids, cand, _exact(p, True)
        )
        if p["metric"] != "cosine":
            assert [h.id for h in bhits] == [h.id for h in hits]
        assert [h.score for h in bhits] == pytest.approx([h.score for h in hits], rel=1e-5, abs=1e-6)


@contextlib.contextmanager
def _runner(is_async: bool) -> Any:
    """A function running coroutines on a private loop (identity for the sync store)."""
    if not is_async:
        yield lambda x: x
        return
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


# --- exact ties and specific cases -----------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_exact_ties_ordered_by_id_also_at_kth_place(metric: str) -> None:
    rng = np.random.default_rng(0)
    n = 200
    matrix = np.tile(np.array([[1.0, 2.0, 3.0]], dtype=np.float32), (n, 1))
    matrix[::3] = [3.0, 2.0, 1.0]  # a worse vector for every third row
    ids = [f"r{i:04d}" for i in rng.permutation(n)]
    sq = np.einsum("ij,ij->i", matrix, matrix)
    q = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    tied = sorted(ids[r] for r in range(n) if r % 3)
    for k in (1, 5, 50, len(tied), len(tied) + 10):
        (top,) = top_k(matrix, sq, q, k, metric, rank_ids(ids), None)
        got = [ids[r] for r in top.rows.tolist()]
        assert got[: min(k, len(tied))] == tied[:k]
    # with a mask that keeps few rows (the gather path) and many rows (the masked path)
    for keep_every in (10, 2):
        mask = np.zeros(n, dtype=bool)
        mask[::keep_every] = True
        (top,) = top_k(matrix, sq, q, 7, metric, rank_ids(ids), mask)
        want = sorted(
            (r for r in range(n) if mask[r]), key=lambda r: (-ref_key(metric, matrix[r], q[0]), ids[r])
        )[:7]
        assert top.rows.tolist() == want


def test_top_k_empty_and_no_candidates() -> None:
    m = np.ones((3, 2), dtype=np.float32)
    sq = np.einsum("ij,ij->i", m, m)
    q = np.ones((2, 2), dtype=np.float32)
    ids = rank_ids(["a", "b", "c"])
    assert [len(t.rows) for t in top_k(m, sq, q, 2, "cosine", ids, np.zeros(3, dtype=bool))] == [0, 0]
    empty = np.empty((0, 2), dtype=np.float32)
    assert [len(t.rows) for t in top_k(empty, np.empty(0, np.float32), q, 2, "cosine", ids[:0])] == [0, 0]


def test_cosine_zero_stored_vector_scores_zero_and_zero_query_raises() -> None:
    m = np.array([[0, 0], [1, 0], [-1, 0]], dtype=np.float32)
    sq = np.einsum("ij,ij->i", m, m)
    (top,) = top_k(m, sq, np.array([[0, 1]], dtype=np.float32), 3, "cosine", rank_ids(["a", "b", "c"]))
    assert top.scores.tolist() == [0.0, 0.0, 0.0]
    assert top.rows.tolist() == [0, 1, 2]
    with pytest.raises(InvalidVectorError):
        top_k(m, sq, np.zeros((1, 2), dtype=np.float32), 1, "cosine", rank_ids(["a", "b", "c"]))


def test_euclidean_scores_and_distances() -> None:
    m = np.array([[0, 0], [3, 4], [1, 0]], dtype=np.float32)
    sq = np.einsum("ij,ij->i", m, m)
    (top,) = top_k(m, sq, np.zeros((1, 2), dtype=np.float32), 3, "euclidean", rank_ids(["a", "b", "c"]))
    assert top.rows.tolist() == [0, 2, 1]
    assert top.distances.tolist() == pytest.approx([0.0, 1.0, 5.0])
    assert top.scores.tolist() == pytest.approx([1.0, 0.5, 1 / 6])


# --- validation helpers ----------------------------------------------------------------------


def test_as_vector_accepts_and_copies() -> None:
    src = np.array([1, 2, 3], dtype=np.float64)
    out = as_vector(src)
    assert out.dtype == np.float32 and out.tolist() == [1.0, 2.0, 3.0]
    out[0] = 9
    assert src[0] == 1
    f32 = np.array([1, 2], dtype=np.float32)
    assert as_vector(f32) is not f32
    assert as_vector([True, False]).tolist() == [1.0, 0.0]
    assert as_vector((1, 2.5)).tolist() == [1.0, 2.5]
    assert as_vector(VectorField([4, 5])).tolist() == [4.0, 5.0]
    assert as_vector([1, 2], dim=2).shape == (2,)


@pytest.mark.parametrize(
    "value",
    [
        [],
        np.zeros((2, 2)),
        [[1, 2]],
        5.0,
        "abc",
        b"ab",
        ["a", "b"],
        [1, None],
        [1, [2]],
        [1j, 2],
        [np.nan, 1],
        [np.inf, 1],
        [-np.inf, 1],
        [1e39, 1],  # overflows float32 to inf
        {"a": 1},
    ],
)
def test_as_vector_rejects(value: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rejected cleanly, without numpy RuntimeWarnings
        with pytest.raises(InvalidVectorError):
            as_vector(value)
        with pytest.raises(InvalidVectorError):
            as_vector_batch([value])


def test_as_vector_dimension_mismatch() -> None:
    with pytest.raises(DimensionMismatchError):
        as_vector([1, 2, 3], dim=2)
    assert issubclass(DimensionMismatchError, InvalidVectorError)
    assert issubclass(InvalidVectorError, ValueError)


def test_as_vector_batch() -> None:
    out = as_vector_batch([[1, 2], [3, 4]])
    assert out.dtype == np.float32 and out.shape == (2, 2) and out.flags.c_contiguous
    assert as_vector_batch(np.arange(6).reshape(3, 2), dim=2).shape == (3, 2)
    assert as_vector_batch([], dim=3).shape == (0, 3)
    assert as_vector_batch([VectorField([1, 2]), np.array([3, 4])]).tolist() == [[1, 2], [3, 4]]
    fortran = np.asfortranarray(np.ones((3, 2)))
    assert as_vector_batch(fortran).flags.c_contiguous


@pytest.mark.parametrize(
    "value, dim, error",
    [
        ([[1, 2], [3]], None, DimensionMismatchError),
        ([[1, 2], [3, 4]], 3, DimensionMismatchError),
        (np.ones((2, 2)), 3, DimensionMismatchError),
        (np.ones(3), None, InvalidVectorError),
        (np.ones((2, 2, 2)), None, InvalidVectorError),
        (np.ones((2, 0)), None, InvalidVectorError),
        ([[1, 2], []], None, InvalidVectorError),
        ([[1, 2], [[1, 2]]], None, InvalidVectorError),
        ([[1, np.nan]], None, InvalidVectorError),
        ([[1, 2], [np.inf, 0]], None, InvalidVectorError),
        ([["a", "b"]], None, InvalidVectorError),
        (np.array([["a", "b"]]), None, InvalidVectorError),
        (np.array([[1 + 1j, 2]]), None, InvalidVectorError),
    ],
)
def test_as_vector_batch_rejects(value: Any, dim: int | None, error: type) -> None:
    with pytest.raises(error):
        as_vector_batch(value, dim=dim)


def test_normalize_metric_names_and_aliases() -> None:
    for m in METRICS:
        assert normalize_metric(m) == m
        assert normalize_metric(f"  {m.upper()} ") == m
    assert normalize_metric("dot") == "dot_product"
    assert normalize_metric("inner_product") == "dot_product"
    assert normalize_metric("l2") == "euclidean"
    for alias, canonical in METRIC_ALIASES.items():
        assert normalize_metric(alias) == canonical

    import enum

    class DistanceMetric(enum.Enum):  # dataknobs-data passes an enum
        COSINE = "cosine"

    assert normalize_metric(DistanceMetric.COSINE) == "cosine"


@pytest.mark.parametrize("bad", ["manhattan", "", None, 3, "l1"])
def test_normalize_metric_rejects_with_choices(bad: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        normalize_metric(bad)
    msg = str(exc.value)
    assert all(m in msg for m in METRICS)


# --- memory footprint ------------------------------------------------------------------------


def test_vector_index_nbytes_after_one_batch() -> None:
    n, d = 20_000, 64
    mat = np.random.default_rng(1).standard_normal((n, d)).astype(np.float32)
    index = VectorIndex(d)
    index.set_rows(np.arange(n, dtype=np.int64), mat)
    assert index.count == n
    assert index.nbytes <= 1.3 * mat.nbytes
    np.testing.assert_array_equal(index.matrix, mat)
    assert not index.matrix.flags.writeable


def test_store_vector_memory_after_one_batch() -> None:
    n, d = 5_000, 64
    mat = np.random.default_rng(2).standard_normal((n, d)).astype(np.float32)
    db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    db.add_vectors(mat, ids=[f"r{i}" for i in range(n)])
    assert db.core.table.vector_nbytes() <= 1.3 * mat.nbytes


def test_vector_index_from_matrix_is_adopted_then_copied_on_write() -> None:
    mat = np.arange(12, dtype=np.float32).reshape(4, 3)
    mat.flags.writeable = False
    index = VectorIndex.from_matrix(mat)
    assert index.count == 4 and index.dim == 3
    index.clear_rows(np.array([1], dtype=np.int64))  # must not touch the adopted array
    assert index.count == 3
    index.set_rows(np.array([4], dtype=np.int64), np.ones((1, 3), dtype=np.float32))
    assert index.count == 4 and index.nrows == 5
    assert mat.tolist() == np.arange(12, dtype=np.float32).reshape(4, 3).tolist()
    with pytest.raises(InvalidVectorError):
        VectorIndex.from_matrix(np.ones((2, 2), dtype=np.float64))


def test_vector_index_take_compacts() -> None:
    index = VectorIndex()
    index.set_rows(np.arange(5, dtype=np.int64), np.arange(10, dtype=np.float32).reshape(5, 2))
    index.clear_rows(np.array([1, 3], dtype=np.int64))
    small = index.take(np.array([0, 2, 4], dtype=np.int64))
    assert small.nrows == 3 and small.count == 3
    assert small.matrix.tolist() == [[0, 1], [4, 5], [8, 9]]
    assert index.get(1) is None and index.get(99) is None
    got = index.get(2)
    assert got is not None and got.tolist() == [4, 5]


def test_rows_without_a_vector_hold_zeros_after_growth(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: growing the matrix without zero-fill left whatever the memory held (even NaN)
    in rows that a sparse batch skips; masked out, but the matrix product warned about NaN."""
    import dk_vector_plugins.index as index_module

    real_empty = np.empty

    def poisoned_empty(shape: Any, dtype: Any = float, **kw: Any) -> Any:
        out = real_empty(shape, dtype=dtype, **kw)
        if np.issubdtype(np.dtype(dtype), np.floating):
            out.fill(np.nan)  # what uninitialized memory may hold
        return out

    monkeypatch.setattr(index_module.np, "empty", poisoned_empty)
    index = VectorIndex(4)
    index.set_rows(np.arange(3, dtype=np.int64), np.ones((3, 4), dtype=np.float32))
    for step in range(5):  # sparse batches: every other new row holds no vector
        view = index.matrix  # a live view: growth must copy (not realloc in place)
        base = index.nrows
        rows = np.arange(base + 1, base + 200, 2, dtype=np.int64)
        index.set_rows(rows, np.full((len(rows), 4), step + 2.0, dtype=np.float32))
        del view
    monkeypatch.undo()
    assert np.isfinite(index.matrix).all()
    assert not index.matrix[~index.present].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids = np.array([f"r{i:05d}" for i in range(index.nrows)], dtype=object)
        top = index.search(np.ones((1, 4), dtype=np.float32), 3, "cosine", ids)[0]
    assert len(top.rows) == 3


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dup", [0, 40], ids=["distinct", "near-ties"])
def test_batch_over_parts_equals_exhaustive_ranking(metric: str, dup: int) -> None:
    """Big enough for the shortlist's fast path (k + spare rows set aside by argpartition) and,
    with a block of near-identical rows, its fallback scan; several parts; a batch and a mask."""
    rng = np.random.default_rng(11)
    n, d = 3000, 48
    m = rng.standard_normal((n, d)).astype(np.float32)
    if dup:
        m[100 : 100 + dup] = m[5] + np.float32(1e-6) * rng.standard_normal((dup, d)).astype(np.float32)
    qs = np.concatenate([m[5:6], rng.standard_normal((7, d)).astype(np.float32)])
    ids = [f"x{i:05d}" for i in rng.permutation(n)]
    mask = rng.random(n) < 0.7
    index = _split_index(m, [700, 1500, 2900])
    for k in (1, 10, 25):
        tops = index.search(qs, k, metric, rank_ids(ids), mask)
        for q, top in zip(qs, tops):
            rows = np.flatnonzero(mask)
            scores, dists = exact_scores(m[rows], np.repeat(q[None, :], len(rows), axis=0), metric)
            rank = scores if dists is None else -dists
            want = [int(rows[j]) for j in sorted(range(len(rows)), key=lambda j: (-rank[j], ids[rows[j]]))[:k]]
            assert top.rows.tolist() == want


@settings(max_examples=200, deadline=None)
@given(
    b=st.integers(1, 4),
    n=st.integers(1, 2500),
    kk=st.integers(1, 12),
    chunk=st.sampled_from([4, 8, 16]),
    ties=st.booleans(),
    masked=st.floats(0.0, 0.95),
    tol=st.sampled_from([0.0, 1e-3, 0.05]),
    seed=st.integers(0, 2**16),
)
def test_chunked_shortlist_is_the_whole_row_shortlist(
    b: int, n: int, kk: int, chunk: int, ties: bool, masked: float, tol: float, seed: int
) -> None:
    """The shortlist through chunk maxima (long rows: a batch's keys) holds exactly the pairs of
    the whole-row selection: with near-ties, masked-out keys (-inf) and rows of fewer finite
    keys than ``kk``."""
    from dk_vector_plugins.kernel import _shortlist

    rng = np.random.default_rng(seed)
    key = rng.standard_normal((b, n)).astype(np.float32)
    if ties:
        key = np.round(key, 1)
    key[rng.random((b, n)) < masked] = -np.inf
    kk = min(kk, n)
    tols = np.full(b, tol)
    whole = _shortlist(key, kk, tols, chunk=1 << 40)  # never chunked
    chunked = _shortlist(key, kk, tols, chunk=chunk)
    assert set(zip(*map(np.ndarray.tolist, whole))) == set(zip(*map(np.ndarray.tolist, chunked)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**40), 2**40), max_size=60) | st.lists(st.integers(0, 5), max_size=60),
    st.sampled_from([np.int64, np.int32]),
)
def test_unique_helpers_equal_np_unique(values: list[int], dtype: Any) -> None:
    a = np.asarray(values, dtype=np.int64)
    if dtype is np.int32:
        a = (a % 1000).astype(np.int32)
    want, want_inverse = np.unique(a, return_inverse=True)
    got = unique_ints(a)
    assert got.dtype == a.dtype and got.tolist() == want.tolist()
    got2, inverse = unique_inverse(a)
    assert got2.dtype == a.dtype and got2.tolist() == want.tolist()
    assert inverse.tolist() == want_inverse.tolist()
