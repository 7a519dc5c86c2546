"""The one exact search kernel: vectorized top-k over float32 matrices.

Every backend stores and loads; none scores vectors itself. The kernel scores *parts*: runs of
consecutive rows held in one float32 matrix each, with their squared norms (a
:class:`~dk_vector_plugins.index.VectorIndex` keeps a vector field as parts). A search runs in
two steps:

1. *shortlist*: per part, one BLAS product for a block of queries, ``argpartition`` for the
   ``k``-th best key, and every row within float32 rounding distance of it;
2. *rank*: the shortlisted rows are scored by :func:`exact_scores` (float64, summed in a fixed
   order) and sorted by (score desc, id asc).

So results are exact and reproducible: a record's score depends on its vector and the query
only, not on the part layout, the batch, the BLAS library or the process computing it.

Scores are higher-is-better for every metric:

* ``cosine``: cosine similarity (a stored zero vector scores 0);
* ``dot_product``: the inner product;
* ``euclidean``: ``1 / (1 + distance)``, the L2 distance itself being returned beside it.

Ties are broken by id, ascending, so results are deterministic, also at the k-th place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from .errors import InvalidVectorError
from .vectors import squared_norms

__all__ = ["IdSource", "Part", "TopK", "exact_scores", "inverse_norms", "rank_ids", "search_parts", "top_k"]

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# Below this fraction of selected rows a filtered search gathers the rows first (less work);
# above it, it scores every row and masks the rest.
_GATHER_FRACTION = 0.2


@attrs.frozen
class TopK:
    """The result of :func:`top_k` for one query: rows best first, with scores and distances."""

    rows: IntArray
    scores: npt.NDArray[np.float64]
    distances: npt.NDArray[np.float64] | None


#: Where the ids used for tie-breaking come from: an object array indexed by row, or a function
#: returning the ids of an array of rows (a table whose ids are loaded lazily).
IdSource = npt.NDArray[Any] | Callable[[IntArray], Sequence[Any]]

_U32 = 2.0**-24  # unit roundoff of float32
_TINY32 = float(np.finfo(np.float32).tiny)
_MAX32 = np.float32(np.finfo(np.float32).max)
# a query block's score matrix holds at most this many float32 values (128 MiB: bounds the memory
# of batches; blocks of a few dozen queries keep the matrix product efficient)
_BLOCK_ELEMS = 1 << 25
# rescoring works on at most this many (row, query) pairs at a time
_RESCORE_CHUNK = 1 << 13


def _ids_of(ids: IdSource) -> Callable[[IntArray], list[Any]]:
    if callable(ids):
        fn = ids
        return lambda rows: list(fn(rows))
    arr = ids
    return lambda rows: arr[rows].tolist()


def _tree_sum(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Sums over the last axis added in a fixed pairwise order (zero-padded to a power of two,
    then halves added elementwise): the result depends on the values only, never on where a
    row sits in memory, how many rows there are, or which BLAS is installed."""
    n = a.shape[-1]
    width = 1 << (n - 1).bit_length()
    if width != n:
        a = np.concatenate([a, np.zeros((*a.shape[:-1], width - n), dtype=np.float64)], axis=-1)
    while width > 1:
        width //= 2
        a = a[..., :width] + a[..., width:]
    out: npt.NDArray[np.float64] = a[..., 0].copy()
    return out


def exact_scores(
    vectors: FloatArray, queries: FloatArray, metric: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """The reported score (and euclidean distance) of each ``vectors[i]`` for ``queries[i]``.

    Computed in float64 (products of float32 values are exact there) and summed in a fixed order,
    so a score is a function of the two vectors alone: the same record gets the same score,
    bit for bit, whichever store, segment layout, batch or worker process computed it. The fast
    float32 matrix product only shortlists candidates; these scores rank them.
    """
    p = vectors.shape[0]
    scores = np.empty(p, dtype=np.float64)
    dists = np.empty(p, dtype=np.float64) if metric == "euclidean" else None
    for s in range(0, p, _RESCORE_CHUNK):
        x = vectors[s : s + _RESCORE_CHUNK].astype(np.float64)
        q = queries[s : s + _RESCORE_CHUNK].astype(np.float64)
        if metric == "euclidean":
            diff = x - q
            dist = np.sqrt(_tree_sum(diff * diff))
            assert dists is not None
            dists[s : s + len(x)] = dist
            scores[s : s + len(x)] = 1.0 / (1.0 + dist)
            continue
        if metric != "cosine":
            dot = _tree_sum(x * q)
        if metric == "cosine":  # the three sums in one pass
            dot, sq, qq = _tree_sum(np.stack([x * q, x * x, q * q]))
            denom = np.sqrt(sq) * np.sqrt(qq)
            # a vector whose float32 squared norm underflows counts as zero: it scores 0
            zero = sq < _TINY32
            with np.errstate(divide="ignore", invalid="ignore"):
                dot = np.where(zero, 0.0, dot / np.where(zero, 1.0, denom))
        scores[s : s + len(x)] = dot
    return scores, dists


class Part:
    """A run of consecutive index rows held in one float32 matrix (what the kernel scores).

    ``growable`` parts are owned by the index and have spare capacity (the tail that small
    writes go to); the others are adopted arrays (a validated batch, a memory-mapped segment)
    that the index never writes to.
    """

    __slots__ = ("_inv", "_maxsq", "growable", "matrix", "n", "owned", "sqnorm", "start")

    def __init__(
        self,
        start: int,
        matrix: Any,
        sqnorm: Any,
        n: int,
        growable: bool,
        owned: bool = True,
    ) -> None:
        self.start = start
        # an ndarray, or a LazyArray that slicing reads whole (indexing a few rows reads those)
        self.matrix: Any = matrix
        self.sqnorm: Any = sqnorm
        self.n = n
        self.growable = growable
        self.owned = owned  # False: adopted, copied before any write
        self._maxsq: float | None = None
        self._inv: FloatArray | None = None

    def changed(self) -> None:
        self._maxsq = None
        self._inv = None

    @property
    def maxsq(self) -> float:
        """The largest squared norm of the part's rows (bounds the rounding of their scores)."""
        if self._maxsq is None:
            self._maxsq = float(self.sqnorm[: self.n].max()) if self.n else 0.0
        return self._maxsq

    def inv_norms(self) -> FloatArray:
        """1/|x| per row (0 for zero vectors), cached until the part changes."""
        if self._inv is None:
            self._inv = inverse_norms(self.sqnorm[: self.n])
        return self._inv


def inverse_norms(sq: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(sq >= _TINY32, 1.0 / np.sqrt(sq), 0.0).astype(np.float32)
    return out


def top_k(
    matrix: FloatArray,
    sqnorm: FloatArray,
    queries: FloatArray,
    k: int,
    metric: str,
    ids: IdSource,
    candidates: BoolArray | None = None,
) -> list[TopK]:
    """Exact top-``k`` over the rows of ``matrix`` for each row of ``queries``.

    ``sqnorm`` holds the rows' squared norms (:func:`squared_norms`). See :func:`search_parts`.
    """
    n = matrix.shape[0]
    part = Part(0, matrix, sqnorm, n, growable=False)
    cand = np.ones(n, dtype=np.bool_) if candidates is None else candidates[:n]

    def gather(rows: IntArray) -> FloatArray:
        out: FloatArray = np.asarray(matrix[rows], dtype=np.float32)
        return out

    return search_parts([part] if n else [], queries, k, metric, ids, cand, gather)


def search_parts(
    parts: Sequence[Part],
    queries: FloatArray,
    k: int,
    metric: str,
    ids: IdSource,
    cand: BoolArray,
    gather: Callable[[IntArray], FloatArray],
) -> list[TopK]:
    """The kernel: exact top-``k`` per query over the candidate rows of ``parts``.

    1. Shortlist: for a block of queries, one float32 matrix product per part (restricted to
       the candidate rows when they are few), written side by side into one key matrix; then
       ``argpartition`` for the ``k``-th best key and every row whose key is within the float32
       rounding bound of it (a few more than ``k``).
    2. Rank the shortlist by :func:`exact_scores`, ties by id: a row left out in step 1 is
       beaten by ``k`` rows whatever the rounding, so the result is the exact top-``k`` of
       the exact scores, the same however the rows are split into parts.
    """
    b = queries.shape[0]
    if k <= 0 or not parts or b == 0:
        return [_empty() for _ in range(b)]
    d = queries.shape[1]
    if metric == "cosine":
        qn = np.sqrt(squared_norms(queries))
        if (qn == 0).any():
            raise InvalidVectorError("a zero query vector has no direction; cosine similarity is undefined")
        q = (queries / qn[:, None]).astype(np.float32)
        qscale = np.ones(b, dtype=np.float64)
    else:
        q = queries
        qscale = np.sqrt(squared_norms(queries).astype(np.float64))
    qsq = squared_norms(queries) if metric == "euclidean" else None
    # what each part contributes: its candidate rows as columns of one key matrix per block
    cols: list[tuple[Part, IntArray | None, BoolArray | None, Any, Any, Any]] = []
    offsets: list[int] = []
    total = 0
    maxsq = 0.0
    for part in parts:
        c = cand[part.start : part.start + part.n]
        m = int(np.count_nonzero(c))
        if m == 0:
            continue
        sel: IntArray | None = None
        masked_out: BoolArray | None = None
        if m < part.n:
            if m <= _GATHER_FRACTION * part.n or m <= k:
                sel = np.flatnonzero(c)
            else:
                masked_out = ~c
        mat = part.matrix[: part.n] if sel is None else part.matrix[sel]
        sq = part.sqnorm[: part.n] if sel is None else part.sqnorm[sel]
        inv = None
        if metric == "cosine":
            inv = part.inv_norms() if sel is None else inverse_norms(sq)
        else:
            maxsq = max(maxsq, part.maxsq)
        cols.append((part, sel, masked_out, mat, sq, inv))
        offsets.append(total)
        total += int(mat.shape[0])
    if not cols:
        return [_empty() for _ in range(b)]
    # the rounding bound of the approximate keys (of the worst part: one shortlist for all)
    if metric == "cosine":
        tol = np.full(b, 8.0 * (d + 4) * _U32)
    elif metric == "dot_product":
        tol = 4.0 * (d + 4) * _U32 * np.sqrt(maxsq) * qscale + 1e-36
    else:
        tol = 4.0 * (d + 8) * _U32 * (np.sqrt(maxsq) + qscale) ** 2 + 1e-36
    starts = np.asarray(offsets, dtype=np.int64)
    found_q: list[IntArray] = []
    found_r: list[IntArray] = []
    step = max(1, min(b, _BLOCK_ELEMS // max(total, 1)))
    block = np.empty((step, total), dtype=np.float32)  # reused: its pages are touched once
    for q0 in range(0, b, step):
        qb = q[q0 : q0 + step]
        key = block[: len(qb)]
        for off, (_, _, masked_out, mat, sq, inv) in zip(offsets, cols):
            view = key[:, off : off + mat.shape[0]]
            if len(qb) == 1:
                np.matmul(mat, qb[0], out=view[0])
            else:
                np.matmul(qb, mat.T, out=view)
            if metric == "cosine":  # scaled in place: one score matrix per block
                np.multiply(view, inv[None, :], out=view)
            elif metric == "euclidean":
                assert qsq is not None
                np.multiply(view, np.float32(2.0), out=view)
                np.subtract(view, sq[None, :], out=view)
                np.subtract(view, qsq[q0 : q0 + step, None], out=view)
            if masked_out is not None:
                view[:, masked_out] = -np.inf
        qi, col = _shortlist(key, min(k, total), tol[q0 : q0 + step])
        which = np.searchsorted(starts, col, side="right") - 1
        rows_b = np.empty(len(col), dtype=np.int64)
        for pi in np.unique(which).tolist():
            here = which == pi
            part, sel = cols[pi][0], cols[pi][1]
            local = col[here] - offsets[pi]
            rows_b[here] = part.start + (local if sel is None else sel[local])
        found_q.append(qi + q0)
        found_r.append(rows_b)
    qi = np.concatenate(found_q)
    rows = np.concatenate(found_r)
    scores, dists = exact_scores(gather(rows), queries[qi], metric)
    # euclidean ranks by distance: 1 / (1 + d) can round equal for distinct tiny distances
    rank = scores if dists is None else -dists
    order = np.lexsort((rows, -rank, qi))
    order = _break_ties_by_id(order, qi, rank, rows, _ids_of(ids))
    qi_sorted = qi[order]
    bounds = np.searchsorted(qi_sorted, np.arange(b + 1))
    out = []
    for i in range(b):
        take = order[bounds[i] : min(bounds[i + 1], bounds[i] + k)]
        out.append(TopK(rows[take], scores[take], None if dists is None else dists[take]))
    return out


#: Extra rows ``argpartition`` sets aside beyond the ``k`` best: when they already reach below the
#: rounding window, the window needs no scan of all keys (the usual case).
_SPARE = 16


def _shortlist(key: FloatArray, kk: int, tol: npt.NDArray[np.float64]) -> tuple[IntArray, IntArray]:
    """(query, column) pairs of the keys within ``tol`` of each query's ``kk``-th best key
    (all finite keys when there are no more than ``kk``).

    ``argpartition`` selects the best ``kk + _SPARE`` keys per query; if the worst of them is
    below the window, the window lies among them. Only a query with more near-ties than that
    scans its whole row.
    """
    n = key.shape[1]
    wide = min(n, kk + _SPARE)
    if wide >= n:
        qi, col = np.nonzero(key > -np.inf)
        return qi.astype(np.int64), col.astype(np.int64)
    top = np.argpartition(key, n - wide, axis=1)[:, n - wide :]
    vals = np.take_along_axis(key, top, axis=1)
    kth = np.partition(vals, wide - kk, axis=1)[:, wide - kk]  # the kk-th best of the row
    lo = (kth.astype(np.float64) - tol).astype(np.float32)
    lo = np.nextafter(lo, np.float32(-np.inf))  # rounding down: never narrower than the bound
    lo = np.maximum(lo, -_MAX32)  # never admits -inf (masked out)
    finite = np.isfinite(kth)
    inside = finite & (vals.min(axis=1) < lo)  # every key outside `top` is below the window
    out_q: list[IntArray] = []
    out_c: list[IntArray] = []
    if inside.any():
        sel = vals >= lo[:, None]
        sel &= inside[:, None]
        rq, rc = np.nonzero(sel)
        out_q.append(rq)
        out_c.append(top[rq, rc])
    for i in np.flatnonzero(~inside).tolist():  # many near-ties, or fewer than kk finite keys
        c = np.flatnonzero(key[i] >= lo[i]) if finite[i] else np.flatnonzero(key[i] > -np.inf)
        out_q.append(np.full(len(c), i))
        out_c.append(c)
    qi = np.concatenate(out_q).astype(np.int64)
    col = np.concatenate(out_c).astype(np.int64)
    return qi, col


def _break_ties_by_id(
    order: IntArray,
    qi: IntArray,
    scores: npt.NDArray[np.float64],
    rows: IntArray,
    ids_of: Callable[[IntArray], list[Any]],
) -> IntArray:
    """Within runs of equal (query, score), order by id ascending (only those ids are looked up)."""
    if len(order) < 2:
        return order
    qs, ss = qi[order], scores[order]
    same = (qs[1:] == qs[:-1]) & (ss[1:] == ss[:-1])
    if not same.any():
        return order
    edges = np.flatnonzero(np.diff(np.concatenate([[0], same.astype(np.int8), [0]])))
    order = order.copy()
    for s, e in zip(edges[0::2].tolist(), edges[1::2].tolist()):
        run = order[s : e + 1]
        run_ids = ids_of(rows[run])
        order[s : e + 1] = run[sorted(range(len(run)), key=run_ids.__getitem__)]
    return order


def _empty() -> TopK:
    return TopK(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64), None)


def rank_ids(ids: Sequence[Any]) -> npt.NDArray[Any]:
    """An object array of ids suitable for the ``ids`` argument of :func:`top_k`."""
    arr = np.empty(len(ids), dtype=object)
    arr[:] = list(ids)
    return arr
