"""The int8 scan of the kernel: identical results to the float32 scan, bit for bit.

Property tests draw adversarial data (duplicates, near-ties, zero vectors, huge and tiny norms,
one dominant dimension, integer data with exact ties) and check that ``exact="int8"`` returns
exactly what ``exact="float32"`` returns (rows, order, scores and distances with ``==``), and
both exactly the exhaustive ranking by :func:`~dk_vector_plugins.kernel.exact_scores`, for every
metric, with masks, deletes, ``k`` larger than the candidates, batches and several parts.
Unit tests check the bound itself, the code cache, the automatic choice and the fallback when
the SIMD library is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from test_kernel import _split_index as split_index  # parts cut at given rows

from dk_vector_plugins import DatabaseFactory, quant
from dk_vector_plugins.errors import InvalidRequestError
from dk_vector_plugins.index import VectorIndex
from dk_vector_plugins.kernel import TopK, choose_exact, exact_scores, rank_ids, top_k
from dk_vector_plugins.search import build_search_request
from dk_vector_plugins.vectors import METRICS, squared_norms

needs_simd = pytest.mark.skipif(not quant.available(), reason="numkong is not installed")


# --- helpers ---------------------------------------------------------------------------------


def exhaustive(
    m: np.ndarray, q: np.ndarray, k: int, metric: str, ids: list[str], cand: np.ndarray
) -> list[int]:
    """Every candidate scored by exact_scores, sorted by (rank desc, id asc)."""
    rows = np.flatnonzero(cand)
    if len(rows) == 0:
        return []
    scores, dists = exact_scores(m[rows], np.repeat(q[None, :], len(rows), axis=0), metric)
    rank = scores if dists is None else -dists
    order = sorted(range(len(rows)), key=lambda j: (-rank[j], ids[rows[j]]))
    return [int(rows[j]) for j in order[:k]]


def assert_identical(a: list[TopK], b: list[TopK]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.rows.tolist() == y.rows.tolist()
        assert x.scores.tolist() == y.scores.tolist()  # == on floats: bit for bit (no NaN here)
        if x.distances is None:
            assert y.distances is None
        else:
            assert y.distances is not None and x.distances.tolist() == y.distances.tolist()


@st.composite
def adversarial(draw: Any, max_rows: int = 300, max_dim: int = 24) -> dict[str, Any]:
    """A matrix with the data the bound finds hardest, queries, k, metric, ids, mask, layout."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, max_rows))
    d = draw(st.integers(1, max_dim))
    kind = draw(st.sampled_from(["gauss", "int", "unit", "offset"]))
    if kind == "int":  # exact ties everywhere
        m = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
    elif kind == "unit":
        m = rng.standard_normal((n, d)).astype(np.float32)
        m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-30)
    elif kind == "offset":  # far from the origin: the bound is loose
        m = (5.0 + 0.01 * rng.standard_normal((n, d))).astype(np.float32)
    else:
        m = rng.standard_normal((n, d)).astype(np.float32)
    for _ in range(draw(st.integers(0, 6))):  # special rows
        r = int(rng.integers(0, n))
        what = draw(st.sampled_from(["dup", "near", "zero", "huge", "tiny", "dominant", "sub"]))
        if what == "dup":
            m[r] = m[int(rng.integers(0, n))]
        elif what == "near":
            m[r] = m[int(rng.integers(0, n))] + np.float32(1e-6) * rng.standard_normal(d).astype(np.float32)
        elif what == "zero":
            m[r] = 0.0
        elif what == "huge":
            m[r] *= np.float32(10.0 ** draw(st.integers(3, 20)))
        elif what == "tiny":
            m[r] *= np.float32(10.0 ** -draw(st.integers(3, 20)))
        elif what == "sub":  # subnormal components
            m[r] = np.float32(1e-40) * rng.integers(-3, 4, d).astype(np.float32)
        else:
            m[r] = 0.0
            m[r, int(rng.integers(0, d))] = np.float32(rng.standard_normal() * 100)
    assume(bool(np.isfinite(m).all()))  # a store holds finite vectors only
    b = draw(st.integers(1, 4))
    qs = rng.standard_normal((b, d)).astype(np.float32)
    if kind == "int":
        qs = rng.integers(-3, 4, size=(b, d)).astype(np.float32)
    if draw(st.booleans()):
        qs[0] = m[int(rng.integers(0, n))]  # a stored vector as the query: its duplicates tie
    qs *= np.float32(10.0 ** draw(st.integers(-6, 6)))
    metric = draw(st.sampled_from(METRICS))
    if metric == "cosine":  # (a query whose float32 squared norm underflows has no direction)
        assume(bool(np.all(squared_norms(qs) > 0)))
    ids = [f"id{p:04d}" for p in rng.permutation(n)]
    k = draw(st.sampled_from([1, 2, 5, 10, n, n + 3]))
    mask = None
    if draw(st.booleans()):
        mask = rng.random(n) < draw(st.sampled_from([0.05, 0.3, 0.9]))
    cuts = sorted(rng.integers(0, n, size=draw(st.integers(0, 3))).tolist())
    return {"m": m, "qs": qs, "metric": metric, "ids": ids, "k": k, "mask": mask, "cuts": cuts}


# --- the property: int8 == float32 == exhaustive ---------------------------------------------


@needs_simd
@given(p=adversarial())
def test_int8_equals_float32_bit_for_bit(p: dict[str, Any]) -> None:
    m, qs, metric, ids, k, mask = p["m"], p["qs"], p["metric"], p["ids"], p["k"], p["mask"]
    index = split_index(m, p["cuts"])
    int8 = index.search(qs, k, metric, rank_ids(ids), mask, exact="int8")
    f32 = index.search(qs, k, metric, rank_ids(ids), mask, exact="float32")
    auto = index.search(qs, k, metric, rank_ids(ids), mask, exact="auto")
    assert_identical(int8, f32)
    assert_identical(auto, f32)
    cand = np.ones(len(m), dtype=bool) if mask is None else mask
    for q, top in zip(qs, int8):
        assert top.rows.tolist() == exhaustive(m, q, k, metric, ids, cand)
        if cand.any():  # (no candidate at all: an empty answer, nothing scanned)
            assert top.reranked is not None and top.reranked >= len(top.rows)
            assert top.exact in ("int8", "float32")
    assert all(t.exact == "float32" for t in f32 if len(t.rows))


@needs_simd
@given(p=adversarial(max_rows=120, max_dim=12))
def test_batch_equals_single_queries(p: dict[str, Any]) -> None:
    m, qs, metric, ids, k = p["m"], p["qs"], p["metric"], p["ids"], p["k"]
    batch = top_k(m, squared_norms(m), qs, k, metric, rank_ids(ids), p["mask"], exact="int8")
    for q, top in zip(qs, batch):
        one = top_k(m, squared_norms(m), q[None, :], k, metric, rank_ids(ids), p["mask"], exact="int8")
        assert_identical([top], one)


@needs_simd
@pytest.mark.parametrize("metric", METRICS)
def test_int8_actually_prunes_and_keeps_ties(metric: str) -> None:
    """A bigger table: the int8 path runs (and re-ranks few rows), exact ties at the k-th place
    are ordered by id, like the float32 path."""
    rng = np.random.default_rng(5)
    n, d = 6000, 64
    m = rng.standard_normal((n, d)).astype(np.float32)
    m[1000:1040] = m[7]  # 40 exact duplicates of row 7
    ids = [f"x{i:05d}" for i in rng.permutation(n)]
    qs = np.concatenate([m[7:8], rng.standard_normal((3, d)).astype(np.float32)])
    index = split_index(m, [1500, 4001])
    for k in (1, 10, 30):
        int8 = index.search(qs, k, metric, rank_ids(ids), exact="int8")
        f32 = index.search(qs, k, metric, rank_ids(ids), exact="float32")
        assert_identical(int8, f32)
        assert all(t.exact == "int8" for t in int8)
        assert all(t.reranked is not None and t.reranked < n // 4 for t in int8[1:])
        for q, top in zip(qs, int8):
            assert top.rows.tolist() == exhaustive(m, q, k, metric, ids, np.ones(n, dtype=bool))


# --- the store: deletes, appends, compaction, filters -----------------------------------------


@needs_simd
@pytest.mark.parametrize("metric", METRICS)
def test_store_with_deletes_appends_and_compaction(metric: str) -> None:
    rng = np.random.default_rng(3)
    d = 16
    db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    mat = rng.standard_normal((3000, d)).astype(np.float32)
    ids = [f"r{i:05d}" for i in range(len(mat))]
    db.add_vectors(mat, ids=ids, metadata=[{"c": i % 7} for i in range(len(mat))])
    qs = rng.standard_normal((3, d)).astype(np.float32)
    qs[0] = mat[10]
    table = db.core.table

    def check(expr: Any = None) -> None:
        for k in (1, 7, 5000):
            a = table.vector_search(qs, "embedding", k, metric, expr, exact="int8")
            b = table.vector_search(qs, "embedding", k, metric, expr, exact="float32")
            assert [[(h.id, h.score, h.distance) for h in hits] for hits in a] == [
                [(h.id, h.score, h.distance) for h in hits] for hits in b
            ]
            assert all(h.metadata["exact"] in ("int8", "float32") for hits in a for h in hits)
            assert all(h.metadata["reranked"] >= len(hits) for hits in a for h in hits)

    from dk_vector_plugins.query import compile_filter

    check()
    check(compile_filter({"c": 3}))
    db.delete_batch(ids[5:800])  # deletes: the codes stay, the rows drop out of the candidates
    check()
    db.add_vectors(rng.standard_normal((50, d)).astype(np.float32), ids=[f"n{i}" for i in range(50)])
    db.add_vectors(mat[10:11] * 2, ids=["r00010"])  # an update: a new row, the old one retired
    check()
    check(compile_filter({"c": 3}))
    db.compact()
    check()


@needs_simd
def test_codes_are_cached_extended_and_invalidated() -> None:
    rng = np.random.default_rng(8)
    d = 8
    index = VectorIndex(d)
    m = rng.standard_normal((100, d)).astype(np.float32)
    index.set_rows(np.arange(100, dtype=np.int64), m)
    ids = rank_ids([f"r{i:04d}" for i in range(400)])
    q = rng.standard_normal((1, d)).astype(np.float32)
    index.search(q, 3, "cosine", ids, exact="int8")
    part = index._parts[-1]
    codes = part.codes
    assert codes is not None and codes.n == 100
    index.search(q, 3, "cosine", ids, exact="int8")
    assert part.codes is codes  # cached
    more = rng.standard_normal((20, d)).astype(np.float32)
    index.set_rows(np.arange(100, 120, dtype=np.int64), more)  # appended to the growable tail
    assert part.codes is not None and part.codes.n == 100  # the old rows' codes hold
    got = index.search(q, 3, "cosine", ids, exact="int8")
    assert part.codes is not None and part.codes.n == 120  # extended
    assert_identical(got, index.search(q, 3, "cosine", ids, exact="float32"))
    index.set_rows(np.array([50], dtype=np.int64), np.full((1, d), 9.0, dtype=np.float32))  # overwrite
    assert part.codes is not None and part.codes.n == 50
    fresh = quant.quantize_rows(index.matrix)
    got = index.search(q, 3, "cosine", ids, exact="int8")
    np.testing.assert_array_equal(index._parts[0].int8_codes().codes, fresh.codes)
    assert_identical(got, index.search(q, 3, "cosine", ids, exact="float32"))
    # compaction keeps the codes of the rows it keeps
    keep = np.arange(0, 120, 3, dtype=np.int64)
    small = index.take(keep)
    carried = small._parts[0].codes
    assert carried is not None
    np.testing.assert_array_equal(carried.codes, quant.quantize_rows(index.gather(keep)).codes)
    np.testing.assert_array_equal(carried.residuals, quant.quantize_rows(index.gather(keep)).residuals)


@needs_simd
@pytest.mark.parametrize("metric", METRICS)
def test_a_repeated_filter_reuses_its_gathered_codes(metric: str) -> None:
    """A filtered int8 scan gathers the codes of the candidate rows; the next search with the
    same candidates (a filter repeated query after query) takes them as they are, and a change
    of the part's rows, or other candidates, gathers again. Results stay those of float32."""
    rng = np.random.default_rng(5)
    d, n = 16, 3000
    index = VectorIndex(d)
    index.set_rows(np.arange(n, dtype=np.int64), rng.standard_normal((n, d)).astype(np.float32))
    ids = rank_ids([f"r{i:05d}" for i in range(n)])
    mask = rng.random(n) < 0.1
    qs = rng.standard_normal((3, 1, d)).astype(np.float32)
    part = index._parts[-1]
    got = index.search(qs[0], 5, metric, ids, mask.copy(), exact="int8")
    assert_identical(got, index.search(qs[0], 5, metric, ids, mask.copy(), exact="float32"))
    kept = part._gathered
    assert kept is not None
    got = index.search(qs[1], 5, metric, ids, mask.copy(), exact="int8")  # an equal, new mask
    assert part._gathered is kept
    assert_identical(got, index.search(qs[1], 5, metric, ids, mask.copy(), exact="float32"))
    other = mask.copy()
    other[np.flatnonzero(mask)[:3]] = False
    got = index.search(qs[2], 5, metric, ids, other, exact="int8")
    assert part._gathered is not kept
    assert_identical(got, index.search(qs[2], 5, metric, ids, other, exact="float32"))
    row = int(np.flatnonzero(mask)[0])
    index.set_rows(np.array([row], dtype=np.int64), np.full((1, d), 3.0, dtype=np.float32))  # overwrite
    assert part._gathered is None
    got = index.search(qs[0], 5, metric, ids, mask.copy(), exact="int8")
    assert_identical(got, index.search(qs[0], 5, metric, ids, mask.copy(), exact="float32"))


@needs_simd
def test_merged_parts_keep_their_codes() -> None:
    rng = np.random.default_rng(4)
    m = rng.standard_normal((600, 6)).astype(np.float32)
    index = split_index(m, [101, 300, 451])
    ids = rank_ids([f"r{i:04d}" for i in range(600)])
    q = rng.standard_normal((2, 6)).astype(np.float32)
    before = index.search(q, 5, "euclidean", ids, exact="int8")
    index._merge(0, index.nparts)
    merged = index._parts[0].codes
    assert merged is not None and merged.n == 600
    np.testing.assert_array_equal(merged.codes, quant.quantize_rows(m).codes)
    assert_identical(before, index.search(q, 5, "euclidean", ids, exact="int8"))


# --- the bound ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e-12, 1e-3, 1.0, 1e3, 1e12])
def test_residual_norms_bound_the_quantization_error(scale: float) -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2000, 37)) * scale).astype(np.float32)
    x[::9, 0] *= 1000  # a dominant dimension
    codes = quant.quantize_rows(x)
    assert codes.codes.dtype == np.int8 and np.abs(codes.codes.astype(int)).max() <= 127
    err = x.astype(np.float64) - codes.scales.astype(np.float64)[:, None] * codes.codes
    assert (codes.residuals.astype(np.float64) >= np.linalg.norm(err, axis=1)).all()
    np.testing.assert_allclose(codes.sqnorms, np.sum(x.astype(np.float64) ** 2, axis=1), rtol=1e-12)


def test_cauchy_schwarz_bound_on_the_dot_product() -> None:
    """|x·q - x̂·q̂| ≤ ‖q̂‖·r_x + ‖q - q̂‖·‖x‖, the real values (float64 with margin)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 50)).astype(np.float32)
    q = rng.standard_normal((4, 50)).astype(np.float32)
    xc, qc = quant.quantize_rows(x), quant.quantize_queries(q)
    xhat = xc.scales.astype(np.float64)[:, None] * xc.codes
    for i in range(len(q)):
        qhat = qc.scale[i] * qc.codes[i].astype(np.float64)
        gap = np.abs(x.astype(np.float64) @ q[i].astype(np.float64) - xhat @ qhat)
        bound = qc.qhat_norm[i] * xc.residuals + qc.err_norm[i] * np.sqrt(xc.sqnorms)
        assert (gap <= bound).all()
        assert np.median(gap / bound) < 0.5  # and it is not vacuous


@pytest.mark.parametrize("metric", METRICS)
def test_row_bounds_hold_the_computed_scores(metric: str) -> None:
    """The interval of every row holds the value exact_scores computes (ties at ulp level too)."""
    rng = np.random.default_rng(6)
    d = 40
    x = rng.standard_normal((3000, d)).astype(np.float32)
    x[::5] *= np.float32(1e6)
    x[1::7] *= np.float32(1e-6)
    x[2::11] = x[3]
    x[4] = 0.0
    qs = np.concatenate([x[3:4], rng.standard_normal((3, d)).astype(np.float32) * np.float32(1e3)])
    xc, qc = quant.quantize_rows(x), quant.quantize_queries(qs)
    special = np.isin(np.arange(len(x)), xc.special)
    for i, q in enumerate(qs):
        dots = quant.exact_dots(xc.codes, qc.codes[i])
        lo, hi = quant.row_bounds(dots, xc.scales, xc.residuals, xc.sqnorms, special, qc, i, metric)
        scores, dists = exact_scores(x, np.repeat(q[None, :], len(x), axis=0), metric)
        value = scores if dists is None else -dists
        assert (lo <= value).all() and (value <= hi).all()
        assert np.isinf(lo[4]) and np.isinf(hi[4])  # a zero row is special: always re-ranked


def test_key_threshold_is_below_every_qualifying_key() -> None:
    """A row whose upper bound reaches tau has a float32 key >= the threshold."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4000, 24)).astype(np.float32) * np.float32(3.0)
    q = rng.standard_normal((2, 24)).astype(np.float32)
    xc, qc = quant.quantize_rows(x), quant.quantize_queries(q)
    maxima = (xc.max_norm, xc.max_resid, xc.max_rel_resid, xc.max_sq)
    for metric in METRICS:
        for i in range(len(q)):
            dots = quant.exact_dots(xc.codes, qc.codes[i])
            lo, hi = quant.row_bounds(dots, xc.scales, xc.residuals, xc.sqnorms, None, qc, i, metric)
            w = xc.w_cos if metric == "cosine" else xc.w_dot
            key = dots.astype(np.float32) * w
            if metric == "euclidean":
                key = key * np.float32(2.0 * qc.scale[i]) - xc.sq32
            for tau in np.quantile(lo, [0.5, 0.9, 0.99, 0.999]):
                theta = quant.key_threshold(float(tau), maxima, qc, i, metric)
                assert (key[hi >= tau] >= theta).all()


# --- choice, fallback, option, storage shape ---------------------------------------------------


def test_choose_exact_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_exact("float32", 1, 10**6, 10, 384) == "float32"
    with pytest.raises(ValueError):
        choose_exact("fast", 1, 10**6, 10, 384)
    if quant.available():
        assert choose_exact("int8", 1, 10, 10, 384) == "int8"
        assert choose_exact("auto", 1, 10**6, 10, 384) == "int8"
        assert choose_exact("auto", 256, 10**6, 10, 384) == "float32"  # a GEMM wins
        assert choose_exact("auto", 1, 1000, 10, 384) == "float32"  # small: nothing to win
        assert choose_exact("auto", 1, 10_000, 10, 384) == "float32"  # a small table scanned whole
        assert choose_exact("auto", 1, 10_000, 10, 384, gathered=True) == "int8"  # a filter's rows
        assert choose_exact("auto", 1, 2_000, 10, 384, gathered=True) == "float32"
        assert choose_exact("auto", 1, 10**6, 10**5, 384) == "float32"  # k near the row count
    monkeypatch.setattr(quant, "_nk", None)
    assert not quant.available()
    assert choose_exact("int8", 1, 10**6, 10, 384) == "float32"


def test_fallback_without_the_simd_library(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(12)
    m = rng.standard_normal((500, 8)).astype(np.float32)
    ids = rank_ids([f"r{i:04d}" for i in range(500)])
    q = rng.standard_normal((2, 8)).astype(np.float32)
    want = top_k(m, squared_norms(m), q, 5, "cosine", ids, exact="float32")
    monkeypatch.setattr(quant, "_nk", None)
    got = top_k(m, squared_norms(m), q, 5, "cosine", ids, exact="int8")
    assert_identical(got, want)
    assert all(t.exact == "float32" for t in got)
    with pytest.raises(RuntimeError):
        quant.int8_dots(np.zeros((1, 8), np.int8), np.zeros((3, 8), np.int8), np.zeros((1, 3), np.float32))


def test_exact_search_option_is_validated() -> None:
    def request(**options: Any) -> Any:
        return build_search_request(
            np.ones(4, dtype=np.float32),
            vector_field="embedding",
            k=3,
            filter=None,
            metric=None,
            default_metric="cosine",
            dimension=4,
            batch=None,
            options=options,
        )

    assert request(exact="int8").options["exact"] == "int8"
    assert "exact" not in request().options
    with pytest.raises(InvalidRequestError, match="exact must be one of"):
        request(exact="fast")


def test_codes_round_trip_as_npy_arrays(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    codes = quant.quantize_rows(x)
    arrays = {
        "codes": codes.codes,
        "scales": codes.scales,
        "residuals": codes.residuals,
        "sqnorms": codes.sqnorms,
    }
    for name, arr in arrays.items():
        np.save(tmp_path / f"{name}.npy", arr)
    back = quant.Int8Codes.from_arrays(*(np.load(tmp_path / f"{name}.npy") for name in arrays))
    for name, arr in arrays.items():
        np.testing.assert_array_equal(getattr(back, name), arr)
    assert back.max_rel_resid == codes.max_rel_resid
    with pytest.raises(ValueError):
        quant.Int8Codes.from_arrays(
            codes.codes, codes.scales.astype(np.float64), codes.residuals, codes.sqnorms
        )  # type: ignore[arg-type]


def test_auto_builds_codes_only_for_a_table_searched_often() -> None:
    # one query on a big table never pays for its codes; a table searched often gets them
    from dk_vector_plugins.kernel import INT8_MIN_ROWS, INT8_WARMUP

    rng = np.random.default_rng(3)
    db = DatabaseFactory().create()
    db.add_vectors(rng.standard_normal((INT8_MIN_ROWS, 16)).astype(np.float32))
    part = db.core.table.indexes["embedding"]._parts[0]
    q = rng.standard_normal(16)
    first = db.vector_search(q, k=5)
    assert first[0].metadata["exact"] == "float32" and part.codes is None
    for _ in range(INT8_WARMUP):
        hits = db.vector_search(q, k=5)
    assert hits[0].metadata["exact"] == "int8" and part.codes is not None
    assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in first]


def test_codes_of_needs_codes_only_where_the_rows_are() -> None:
    """A merge of some rows reuses their parts' codes even when another part of the table has
    none yet; rows in a part without codes give ``None`` (quantized by the caller)."""
    m = np.random.default_rng(4).standard_normal((301, 16)).astype(np.float32)
    index = VectorIndex()
    index.append_block(m[:201])
    index.append_block(m[201:])
    first = index._parts[0]
    first.adopt_codes(quant.quantize_rows(first.matrix[: first.n]))
    rows = np.arange(150, 201, dtype=np.int64)
    got = index.codes_of(rows)
    want = quant.quantize_rows(m[150:201])
    assert got is not None
    assert np.array_equal(got.codes, want.codes) and np.array_equal(got.scales, want.scales)
    assert np.array_equal(got.residuals, want.residuals) and np.array_equal(got.sqnorms, want.sqnorms)
    assert index.codes_of(np.arange(190, 210, dtype=np.int64)) is None  # some rows in the part without
