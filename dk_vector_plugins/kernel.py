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

Step 1 has a second implementation, chosen per search (``exact="auto" | "int8" | "float32"``):
the *int8 scan* (:mod:`dk_vector_plugins.quant`) reads a part's int8 codes (a quarter of the
bytes, built the first time an int8 search touches the part, kept until its rows change),
computes integer dot products with a SIMD library, and keeps every row whose certified upper
bound reaches the ``k``-th best certified lower bound. Step 2 is the same for both, so their
results are identical, bit for bit; only the number of rows step 2 ranks differs
(:attr:`TopK.reranked`).

Scores are higher-is-better for every metric:

* ``cosine``: cosine similarity (a stored zero vector scores 0);
* ``dot_product``: the inner product;
* ``euclidean``: ``1 / (1 + distance)``, the L2 distance itself being returned beside it.

Ties are broken by id, ascending, so results are deterministic, also at the k-th place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from . import quant
from .errors import InvalidVectorError
from .quant import Int8Codes, QueryCodes
from .vectors import squared_norms, unique_ints

__all__ = [
    "EXACT_MODES",
    "IdSource",
    "Part",
    "TopK",
    "choose_exact",
    "exact_scores",
    "inverse_norms",
    "rank_ids",
    "search_parts",
    "top_k",
]

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# Below this fraction of selected rows a filtered search gathers the rows first (less work);
# above it, it scores every row and masks the rest.
_GATHER_FRACTION = 0.2


@attrs.frozen
class TopK:
    """The result of :func:`top_k` for one query: rows best first, with scores and distances.

    ``reranked``: how many rows the exact ranking scored for this query (the shortlist of the
    float32 scan, or the rows the int8 bounds could not rule out), and ``exact``: which scan
    shortlisted them (``"int8"`` or ``"float32"``); ``None`` when not known.
    """

    rows: IntArray
    scores: npt.NDArray[np.float64]
    distances: npt.NDArray[np.float64] | None
    reranked: int | None = None
    exact: str | None = None


#: The values of the ``exact`` search option: which scan shortlists the rows (the results are
#: the same): ``"auto"`` picks per search, see :func:`choose_exact`.
EXACT_MODES: tuple[str, ...] = ("auto", "int8", "float32")


#: Where the ids used for tie-breaking come from: an object array indexed by row, or a function
#: returning the ids of an array of rows (a table whose ids are loaded lazily).
IdSource = npt.NDArray[Any] | Callable[[IntArray], Sequence[Any]]

_U32 = 2.0**-24  # unit roundoff of float32
_TINY32 = float(np.finfo(np.float32).tiny)
_MAX32 = np.float32(np.finfo(np.float32).max)
# a query block's score matrix holds at most this many float32 values (128 MiB: bounds the memory
# of batches; blocks of a few dozen queries keep the matrix product efficient)
_BLOCK_ELEMS = 1 << 25
# a long row of keys is shortlisted through the maxima of chunks of this many keys, when it has
# at least _CHUNKED_MIN_CHUNKS chunks and that many per wanted key
_CHUNK = 1024
_CHUNKED_MIN_CHUNKS = 16
# rescoring works on at most this many (row, query) pairs at a time (their float64 products
# stay in cache)
_RESCORE_CHUNK = 128


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
    buf = np.zeros((*a.shape[:-1], width), dtype=np.float64)
    buf[..., :n] = a
    return _halve(buf)


def _halve(buf: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """:func:`_tree_sum` of a buffer already zero-padded to a power of two (summed in place)."""
    width = buf.shape[-1]
    while width > 1:  # the same additions, in the same pairs, without new arrays
        width //= 2
        np.add(buf[..., :width], buf[..., width : 2 * width], out=buf[..., :width])
    out: npt.NDArray[np.float64] = buf[..., 0].copy()
    return out


def exact_scores(
    vectors: FloatArray, queries: FloatArray, metric: str, which: IntArray | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """The reported score (and euclidean distance) of each ``vectors[i]`` for its query:
    ``queries[i]``, or ``queries[which[i]]`` when ``which`` is given (each query's own terms,
    such as its norm, are then computed once, not once per row).

    Computed in float64 (products of float32 values are exact there) and summed in a fixed order
    (:func:`_tree_sum`), so a score is a function of the two vectors alone: the same record gets
    the same score, bit for bit, whichever store, segment layout, batch or worker process
    computed it. The fast float32 matrix product only shortlists candidates; these scores rank
    them. Rows are scored in small chunks, so the float64 work stays in cache.
    """
    p, d = vectors.shape
    scores = np.empty(p, dtype=np.float64)
    dists = np.empty(p, dtype=np.float64) if metric == "euclidean" else None
    q64 = queries.astype(np.float64)
    qnorm = np.sqrt(_tree_sum(q64 * q64)) if metric == "cosine" else None
    width = 1 << (d - 1).bit_length()
    ways = 2 if metric == "cosine" else 1
    buf = np.zeros((ways, min(p, _RESCORE_CHUNK), width), dtype=np.float64)
    for s in range(0, p, _RESCORE_CHUNK):
        x = vectors[s : s + _RESCORE_CHUNK].astype(np.float64)
        m = len(x)
        at = np.arange(s, s + m) if which is None else which[s : s + m]
        q = q64[at]
        part = buf[:, :m]
        part[..., d:] = 0.0  # the padding: halving sums into the lower half only, but a chunk reuses it
        if metric == "euclidean":
            np.subtract(x, q, out=part[0, :, :d])
            np.multiply(part[0, :, :d], part[0, :, :d], out=part[0, :, :d])
            dist = np.sqrt(_halve(part)[0])
            assert dists is not None
            dists[s : s + m] = dist
            scores[s : s + m] = 1.0 / (1.0 + dist)
            continue
        np.multiply(x, q, out=part[0, :, :d])
        if metric != "cosine":
            dot = _halve(part)[0]
        else:
            assert qnorm is not None
            np.multiply(x, x, out=part[1, :, :d])
            dot, sq = _halve(part)
            denom = np.sqrt(sq) * qnorm[at]
            # a vector whose float32 squared norm underflows counts as zero: it scores 0
            zero = sq < _TINY32
            with np.errstate(divide="ignore", invalid="ignore"):
                dot = np.where(zero, 0.0, dot / np.where(zero, 1.0, denom))
        scores[s : s + m] = dot
    return scores, dists


#: A part's candidate rows for the int8 scan: codes, cosine and dot-product key weights, squared
#: norms, special columns (see :meth:`Part.gathered`).
_Gathered = tuple[npt.NDArray[np.int8], FloatArray, FloatArray, FloatArray, IntArray]


class Part:
    """A run of consecutive index rows held in one float32 matrix (what the kernel scores).

    ``growable`` parts are owned by the index and have spare capacity (the tail that small
    writes go to); the others are adopted arrays (a validated batch, a memory-mapped segment)
    that the index never writes to.
    """

    __slots__ = (
        "_codes",
        "_gathered",
        "_inv",
        "_maxsq",
        "_overflow",
        "growable",
        "matrix",
        "n",
        "owned",
        "searches",
        "sqnorm",
        "start",
        "stored_codes",
    )

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
        self._overflow: IntArray | None = None
        self._inv: FloatArray | None = None
        # int8 codes of the first ``_codes.n`` rows (built by the first int8 search)
        self._codes: Int8Codes | None = None
        # the codes, key weights and special columns of the last candidate rows gathered
        self._gathered: tuple[Int8Codes, IntArray, _Gathered] | None = None
        #: Reads the part's codes stored with its segment (instead of quantizing its rows).
        self.stored_codes: Callable[[], Int8Codes] | None = None
        #: Auto searches that would have used int8 codes it lacked (see ``INT8_WARMUP``).
        self.searches = 0

    def changed(self, rows: IntArray | None = None) -> None:
        """The part's rows changed: ``rows`` (local row numbers) were written, ``None``: any.

        Codes of rows before the first written one stay valid (a row's codes depend on that
        row alone); the rest are quantized again by the next int8 search.
        """
        self._maxsq = None
        self._inv = None
        self._gathered = None
        first = int(rows.min()) if rows is not None and len(rows) else 0
        if self._codes is not None:
            self._codes = self._codes.head(first) if first > 0 else None
        stored = self.stored_codes
        if stored is not None:
            self.stored_codes = (lambda: stored().head(first)) if first > 0 else None

    @property
    def codes(self) -> Int8Codes | None:
        """The int8 codes held (of the first ``codes.n`` rows), or ``None``."""
        return self._codes

    def adopt_codes(self, codes: Int8Codes | None) -> None:
        """Take ``codes`` of this part's first ``codes.n`` rows (carried over from other parts,
        or read from storage)."""
        self._codes = codes
        self._gathered = None

    def gathered(self, sel: IntArray, codes: Int8Codes) -> _Gathered:
        """The int8 codes, key weights (cosine, dot product), squared norms and special columns
        of the candidate rows ``sel`` of :meth:`int8_codes` ``codes``: gathered, and kept for the
        next search with the same candidates (a filter repeated query after query gathers the
        codes once: a few MB a query otherwise)."""
        kept = self._gathered
        if kept is not None and kept[0] is codes and len(kept[1]) == len(sel) and np.array_equal(kept[1], sel):
            return kept[2]
        special = np.flatnonzero(np.isin(sel, codes.special)) if len(codes.special) else codes.special
        got = (codes.codes[sel], codes.w_cos[sel], codes.w_dot[sel], codes.sq32[sel], special)
        self._gathered = (codes, sel.copy(), got)
        return got

    def int8_codes(self) -> Int8Codes:
        """The int8 codes of all :attr:`n` rows: built on first use, extended when the part
        grew, cached until its rows change."""
        have = self._codes
        if have is None and self.stored_codes is not None:
            have = self.stored_codes()  # written with the segment: read, not computed
            self.stored_codes = None
        if have is not None and have.n == self.n:
            self._codes = have
            return have
        if have is not None and have.n > self.n:
            have = have.head(self.n)
        elif have is not None and have.n > 0:
            have = quant.concat_codes([have, quant.quantize_rows(self.matrix[have.n : self.n])])
        else:
            have = quant.quantize_rows(self.matrix[: self.n])
        self._codes = have
        return have

    @property
    def maxsq(self) -> float:
        """The largest finite squared norm of the part's rows (bounds the rounding of their
        scores; rows whose float32 squared norm overflows are :meth:`overflow_rows`)."""
        if self._maxsq is None:
            sq = np.asarray(self.sqnorm[: self.n])
            big = ~np.isfinite(sq)
            self._overflow = np.flatnonzero(big).astype(np.int64)
            self._maxsq = float(np.where(big, 0.0, sq).max()) if self.n else 0.0
        return self._maxsq

    def overflow_rows(self) -> IntArray:
        """Rows whose squared norm overflows float32 (their float32 keys mean nothing: the
        float32 scan shortlists them always)."""
        if self._maxsq is None:
            self.maxsq  # noqa: B018 - computes both
        assert self._overflow is not None
        return self._overflow

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
    exact: str = "auto",
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

    return search_parts([part] if n else [], queries, k, metric, ids, cand, gather, exact)


#: ``exact="auto"`` scans int8 codes when the SIMD library is there, the search has at most this
#: many queries (a larger batch is one float32 matrix product, faster than int8 dot products),
#: at least :data:`INT8_MIN_ROWS` candidate rows (:data:`INT8_MIN_GATHERED` when a filter leaves
#: few enough that they are gathered: the float32 scan copies their rows, the int8 scan their
#: codes, a quarter of the bytes, and keeps them for the same filter's next search), and ``k``
#: is small beside them.
INT8_MAX_BATCH = 8
INT8_MIN_ROWS = 50_000
INT8_MIN_GATHERED = 4096
INT8_ROWS_PER_K = 256
#: ``exact="auto"`` builds a part's codes (about 2 s per million rows of 384 dimensions) only
#: after this many searches chose int8 on it: a store opened for a few queries never pays it.
INT8_WARMUP = 8
#: Parts of at most this many rows are quantized at once, without a warm-up.
INT8_CHEAP_ROWS = 4096


def _warm(parts: Sequence[Part]) -> bool:
    """Whether an auto search may use the int8 scan on ``parts``: every part holds its codes,
    has them stored with its segment, is small (:data:`INT8_CHEAP_ROWS`), or has been searched
    :data:`INT8_WARMUP` times (then its codes are built now)."""
    ready = True
    for part in parts:
        codes = part.codes
        if part.stored_codes is not None and codes is None and getattr(part.matrix, "loaded", True):
            # stored with the segment: reading them is cheaper than a float32 scan (rows still in
            # storage without their codes held, load_vectors=False, keep to the float32 scan,
            # which reads them once; exact="int8", or a store opened with load_vectors="codes",
            # reads the codes and, by ranged reads, only the rows it re-ranks)
            continue
        if part.n <= INT8_CHEAP_ROWS:
            continue  # quantized in no time (small segments store no codes)
        if codes is None or codes.n < part.n:
            part.searches += 1
            ready = ready and part.searches > INT8_WARMUP
    return ready


def _codes_over_storage(parts: Sequence[Part]) -> bool:
    """Whether some of ``parts`` have their rows still in storage (a lazily read segment's matrix)
    and every such part holds the int8 codes of all its rows: the int8 scan then reads only the
    rows it re-ranks, where the float32 scan would read them all (``load_vectors="codes"``)."""
    away = [p for p in parts if not getattr(p.matrix, "loaded", True)]
    return bool(away) and all(p.codes is not None and p.codes.n >= p.n for p in away)


def choose_exact(
    exact: str, queries: int, rows: int, k: int, dim: int, *, in_storage: bool = False, gathered: bool = False
) -> str:
    """Which scan shortlists a search: ``"int8"`` or ``"float32"`` (see :data:`EXACT_MODES`).

    ``"int8"`` is honoured whenever the SIMD library is installed (else the float32 scan runs:
    the results are the same); ``"auto"`` picks int8 where it was measured faster
    (``benchmarks/bench_int8.py``), and always when ``in_storage``: rows still in storage whose
    int8 codes are held (a store opened with ``load_vectors="codes"``), which the float32 scan
    would read whole and the int8 scan reads only where it re-ranks them. ``gathered``: a filter
    leaves candidates few enough to be gathered (the bar is :data:`INT8_MIN_GATHERED` rows).
    """
    if exact not in EXACT_MODES:
        raise ValueError(f"exact must be one of {', '.join(EXACT_MODES)}, got {exact!r}")
    if exact == "float32" or not quant.available() or dim > quant.MAX_DIM or rows == 0:
        return "float32"
    if exact == "int8" or in_storage:
        return "int8"
    least = INT8_MIN_GATHERED if gathered else INT8_MIN_ROWS
    ok = queries <= INT8_MAX_BATCH and rows >= least and k * INT8_ROWS_PER_K <= rows
    return "int8" if ok else "float32"


@attrs.define
class _Col:
    """What one part contributes to a search: its candidate rows as columns of the key matrix."""

    part: Part
    sel: IntArray | None  # the candidate rows (gathered), or None: every row
    masked_out: BoolArray | None  # rows scored but not candidates
    offset: int  # first column in the key matrix
    width: int
    codes: Int8Codes | None = None  # the part's int8 codes (int8 scan only)


def search_parts(
    parts: Sequence[Part],
    queries: FloatArray,
    k: int,
    metric: str,
    ids: IdSource,
    cand: BoolArray,
    gather: Callable[[IntArray], FloatArray],
    exact: str = "auto",
) -> list[TopK]:
    """The kernel: exact top-``k`` per query over the candidate rows of ``parts``.

    1. Shortlist, by one of two scans (``exact``, see :func:`choose_exact`):

       * float32: for a block of queries, one float32 matrix product per part (restricted to
         the candidate rows when they are few), written side by side into one key matrix; then
         ``argpartition`` for the ``k``-th best key and every row whose key is within the
         float32 rounding bound of it (a few more than ``k``);
       * int8: the same key matrix from int8 codes (:mod:`dk_vector_plugins.quant`); every row
         whose certified upper bound reaches the ``k``-th best certified lower bound.

    2. Rank the shortlist by :func:`exact_scores`, ties by id: a row left out in step 1 is
       beaten by ``k`` rows whatever the rounding, so the result is the exact top-``k`` of
       the exact scores, the same however the rows are split into parts and whichever scan ran.
    """
    b = queries.shape[0]
    if k <= 0 or not parts or b == 0:
        return [_empty() for _ in range(b)]
    d = queries.shape[1]
    if metric == "cosine":
        qn = np.sqrt(squared_norms(queries))
        if (qn == 0).any():
            raise InvalidVectorError("a zero query vector has no direction; cosine similarity is undefined")
    cols: list[_Col] = []
    total = 0
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
        width = part.n if sel is None else len(sel)
        cols.append(_Col(part, sel, masked_out, total, width))
        total += width
    if not cols:
        return [_empty() for _ in range(b)]
    stored = _codes_over_storage([c.part for c in cols])
    gathered = any(c.sel is not None for c in cols)
    mode = choose_exact(exact, b, int(np.count_nonzero(cand)), k, d, in_storage=stored, gathered=gathered)
    if mode == "int8" and exact == "auto" and not stored and not _warm([c.part for c in cols]):
        mode = "float32"  # codes are built once a table is searched often (not for one query)
    found_q: list[IntArray] = []
    found_r: list[IntArray] = []
    todo32 = np.arange(b, dtype=np.int64)
    if mode == "int8":
        todo32 = _int8_shortlist(cols, total, queries, k, metric, found_q, found_r)
    if len(todo32):
        _float32_shortlist(cols, total, queries, todo32, k, metric, found_q, found_r)
    qi = np.concatenate(found_q)
    rows = np.concatenate(found_r)
    scores, dists = exact_scores(gather(rows), queries, metric, qi)
    # euclidean ranks by distance: 1 / (1 + d) can round equal for distinct tiny distances
    rank = scores if dists is None else -dists
    order = np.lexsort((rows, -rank, qi))
    order = _break_ties_by_id(order, qi, rank, rows, _ids_of(ids))
    qi_sorted = qi[order]
    bounds = np.searchsorted(qi_sorted, np.arange(b + 1))
    counts = np.diff(bounds).tolist()
    by = np.full(b, "int8" if mode == "int8" else "float32", dtype=object)
    by[todo32] = "float32"
    out = []
    for i in range(b):
        take = order[bounds[i] : min(bounds[i + 1], bounds[i] + k)]
        dist = None if dists is None else dists[take]
        out.append(TopK(rows[take], scores[take], dist, reranked=counts[i], exact=str(by[i])))
    return out


def _table_rows(cols: Sequence[_Col], col: IntArray) -> IntArray:
    """The table rows of key-matrix columns."""
    starts = np.asarray([c.offset for c in cols], dtype=np.int64)
    which = np.searchsorted(starts, col, side="right") - 1
    rows = np.empty(len(col), dtype=np.int64)
    for pi in unique_ints(which).tolist():
        here = which == pi
        c = cols[pi]
        local = col[here] - c.offset
        rows[here] = c.part.start + (local if c.sel is None else c.sel[local])
    return rows


def _float32_shortlist(
    cols: Sequence[_Col],
    total: int,
    queries: FloatArray,
    todo: IntArray,
    k: int,
    metric: str,
    found_q: list[IntArray],
    found_r: list[IntArray],
) -> None:
    """The float32 scan for queries ``todo``: appends (query, row) pairs of their shortlists."""
    queries_t = queries[todo]
    b, d = queries_t.shape
    if metric == "cosine":
        qn = np.sqrt(squared_norms(queries_t))
        q = (queries_t / qn[:, None]).astype(np.float32)
        qscale = np.ones(b, dtype=np.float64)
    else:
        q = queries_t
        qscale = np.sqrt(squared_norms(queries_t).astype(np.float64))
    qsq = squared_norms(queries_t) if metric == "euclidean" else None
    mats: list[tuple[Any, Any, Any]] = []
    maxsq = 0.0
    over: list[IntArray] = []  # columns of rows whose squared norm overflows float32
    for c in cols:
        part, sel = c.part, c.sel
        mat = part.matrix[: part.n] if sel is None else part.matrix[sel]
        sq = part.sqnorm[: part.n] if sel is None else part.sqnorm[sel]
        inv = None
        if metric == "cosine":
            inv = part.inv_norms() if sel is None else inverse_norms(sq)
        maxsq = max(maxsq, part.maxsq)
        big = part.overflow_rows()
        if len(big):
            if sel is not None:
                big = np.flatnonzero(np.isin(sel, big))
            elif c.masked_out is not None:
                big = big[~c.masked_out[big]]
            over.append(big + c.offset)
        mats.append((mat, sq, inv))
    over_cols = np.concatenate(over) if over else np.empty(0, dtype=np.int64)
    # the rounding bound of the approximate keys (of the worst part: one shortlist for all)
    if metric == "cosine":
        tol = np.full(b, 8.0 * (d + 4) * _U32)
    elif metric == "dot_product":
        tol = 4.0 * (d + 4) * _U32 * np.sqrt(maxsq) * qscale + 1e-36
    else:
        tol = 4.0 * (d + 8) * _U32 * (np.sqrt(maxsq) + qscale) ** 2 + 1e-36
    step = max(1, min(b, _BLOCK_ELEMS // max(total, 1)))
    block = np.empty((step, total), dtype=np.float32)  # reused: its pages are touched once
    for q0 in range(0, b, step):
        qb = q[q0 : q0 + step]
        key = block[: len(qb)]
        for c, (mat, sq, inv) in zip(cols, mats):
            view = key[:, c.offset : c.offset + c.width]
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
            if c.masked_out is not None:
                view[:, c.masked_out] = -np.inf
        if len(over_cols):  # out of the selection, into every shortlist
            key[:, over_cols] = -np.inf
            qi_o = np.repeat(np.arange(len(qb), dtype=np.int64), len(over_cols))
            found_q.append(todo[qi_o + q0])
            found_r.append(_table_rows(cols, np.tile(over_cols, len(qb))))
        qi, col = _shortlist(key, min(k, total), tol[q0 : q0 + step])
        found_q.append(todo[qi + q0])
        found_r.append(_table_rows(cols, col))


#: The int8 scan estimates the ``k``-th best key from every ``_SAMPLE_STRIDE``-th column.
_SAMPLE_STRIDE = 16
#: A query whose bounds leave more than this share of the rows (plus 4096) is shortlisted by the
#: float32 scan instead (data the int8 codes bound poorly: the exact ranking would cost more).
_INT8_GIVE_UP = 1 / 16


def _int8_shortlist(
    cols: Sequence[_Col],
    total: int,
    queries: FloatArray,
    k: int,
    metric: str,
    found_q: list[IntArray],
    found_r: list[IntArray],
) -> IntArray:
    """The int8 scan: appends (query, row) pairs of every row the bounds cannot rule out.

    Per block of queries: the int8 products of each part into one key matrix (``c·c_q`` times
    the row's weight; for euclidean ``2·s_q·key - ‖x‖²``), special rows set to ``+inf``, rows
    that are not candidates to ``-inf``. Per query: the ``k``-th best key of a sample gives a
    set of at least ``k`` rows; their exact lower bounds give ``tau``; the rows whose key can
    reach a bound of ``tau`` (:func:`~dk_vector_plugins.quant.key_threshold`, one comparison per
    row) have their exact upper bounds checked against ``tau``.

    Returns the queries left to the float32 scan (those the int8 path cannot bound).
    """
    # per part: its codes, and the codes, key weights and special columns of its candidate rows
    scan: list[tuple[npt.NDArray[np.int8], FloatArray, FloatArray, IntArray]] = []
    for c in cols:
        full = c.codes = c.part.int8_codes()
        if c.sel is None:
            scan.append((full.codes, full.w_cos if metric == "cosine" else full.w_dot, full.sq32, full.special))
        else:
            codes8, w_cos, w_dot, sq32, special = c.part.gathered(c.sel, full)
            scan.append((codes8, w_cos if metric == "cosine" else w_dot, sq32, special))
    qc = quant.quantize_queries(queries)
    maxima = (
        max(c.codes.max_norm for c in cols if c.codes is not None),
        max(c.codes.max_resid for c in cols if c.codes is not None),
        max(c.codes.max_rel_resid for c in cols if c.codes is not None),
        max(c.codes.max_sq for c in cols if c.codes is not None),
    )
    usable = qc.usable
    kk = min(k, total)
    give_up = int(total * _INT8_GIVE_UP) + 4096
    left: list[int] = np.flatnonzero(~usable).tolist()
    todo = np.flatnonzero(usable)
    step = max(1, min(len(todo), _BLOCK_ELEMS // max(total, 1)))
    block = np.empty((step, total), dtype=np.float32)
    for t0 in range(0, len(todo), step):
        qs = todo[t0 : t0 + step]
        key = block[: len(qs)]
        qcodes = qc.codes[qs]
        for c, (mat8, w, sq32, special) in zip(cols, scan):
            view = key[:, c.offset : c.offset + c.width]
            quant.int8_dots(qcodes, mat8, view)
            np.multiply(view, w[None, :], out=view)
            if metric == "euclidean":
                np.multiply(view, (2.0 * qc.scale[qs]).astype(np.float32)[:, None], out=view)
                np.subtract(view, sq32[None, :], out=view)
            if len(special):
                view[:, special] = np.inf
            if c.masked_out is not None:
                view[:, c.masked_out] = -np.inf
        for j, qi in enumerate(qs.tolist()):
            got = _int8_candidates(cols, key[j], kk, qc, qi, metric, maxima, give_up)
            if got is None:
                left.append(qi)
                continue
            found_q.append(np.full(len(got), qi, dtype=np.int64))
            found_r.append(_table_rows(cols, got))
    return np.asarray(sorted(left), dtype=np.int64)


def _int8_candidates(
    cols: Sequence[_Col],
    row: FloatArray,
    kk: int,
    qc: QueryCodes,
    qi: int,
    metric: str,
    maxima: tuple[float, float, float, float],
    give_up: int,
) -> IntArray | None:
    """The columns of one query's key row whose bounds cannot rule them out (``None``: too
    many, left to the float32 scan)."""
    n = len(row)
    if kk >= n:
        out: IntArray = np.flatnonzero(row > -np.inf)
        return out
    # 1. at least kk rows with high keys: the kk-th best key of a sample bounds them
    stride = max(1, min(_SAMPLE_STRIDE, n // max(64 * kk, 1)))
    sample = row[::stride]
    t = -np.inf
    if len(sample) > kk:
        t = float(np.partition(sample, len(sample) - kk)[len(sample) - kk])
    if t == -np.inf:  # fewer than kk candidates in the sample: the kk best of the row
        top = np.argpartition(row, n - kk)[n - kk :]
        t = float(row[top].min())
        if t == -np.inf:  # fewer than kk candidates at all: every one of them
            found: IntArray = np.flatnonzero(row > -np.inf)
            return found
    first = np.flatnonzero(row >= np.float32(t))
    if len(first) > 4 * kk + 1024:  # many equal keys: the kk best of them do as well
        first = first[np.argpartition(row[first], len(first) - kk)[len(first) - kk :]]
    lo, _ = _bounds(cols, first, qc, qi, metric)
    tau = float(np.partition(lo, len(lo) - kk)[len(lo) - kk])  # ≤ the kk-th best lower bound
    # 2. every row whose upper bound may reach tau: one comparison of the keys, then exactly
    theta = quant.key_threshold(tau, maxima, qc, qi, metric)
    t32 = np.nextafter(np.float32(theta), np.float32(-np.inf)) if math.isfinite(theta) else -_MAX32
    t32 = max(t32, -_MAX32)
    maybe = np.flatnonzero(row >= t32)
    if len(maybe) > give_up:
        return None
    _, hi = _bounds(cols, maybe, qc, qi, metric)
    keep: IntArray = maybe[hi >= tau]
    return keep


def _bounds(
    cols: Sequence[_Col], col: IntArray, qc: QueryCodes, qi: int, metric: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Certified bounds (:func:`~dk_vector_plugins.quant.row_bounds`) of key-matrix columns
    ``col`` (sorted) for query ``qi``, from exact integer products."""
    lo = np.empty(len(col), dtype=np.float64)
    hi = np.empty(len(col), dtype=np.float64)
    starts = np.asarray([c.offset for c in cols], dtype=np.int64)
    which = np.searchsorted(starts, col, side="right") - 1
    edges = np.searchsorted(which, np.arange(len(cols) + 1))  # col is sorted: runs per part
    for pi in np.flatnonzero(np.diff(edges)).tolist():
        a, z = int(edges[pi]), int(edges[pi + 1])
        codes, sel = cols[pi].codes, cols[pi].sel
        assert codes is not None
        local = col[a:z] - cols[pi].offset
        if sel is not None:
            local = sel[local]
        dots = quant.exact_dots(codes.codes[local], qc.codes[qi])
        special = np.isin(local, codes.special) if len(codes.special) else None
        lo[a:z], hi[a:z] = quant.row_bounds(
            dots, codes.scales[local], codes.residuals[local], codes.sqnorms[local], special, qc, qi, metric
        )
    return lo, hi


#: Extra rows ``argpartition`` sets aside beyond the ``k`` best: when they already reach below the
#: rounding window, the window needs no scan of all keys (the usual case).
_SPARE = 16


def _window_low(kth: npt.NDArray[np.float32], tol: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """The lowest key of the window ``kth - tol`` (rounded down, never admitting -inf)."""
    lo = (kth.astype(np.float64) - tol).astype(np.float32)
    lo = np.nextafter(lo, np.float32(-np.inf))  # rounding down: never narrower than the bound
    out: npt.NDArray[np.float32] = np.maximum(lo, -_MAX32)  # never admits -inf (masked out)
    return out


def _shortlist(
    key: FloatArray, kk: int, tol: npt.NDArray[np.float64], chunk: int = _CHUNK
) -> tuple[IntArray, IntArray]:
    """(query, column) pairs of the keys within ``tol`` of each query's ``kk``-th best key
    (all finite keys when there are no more than ``kk``).

    A long row is first cut in chunks of ``chunk`` keys (:func:`_shortlist_by_chunks`): one
    vectorized pass of chunk maxima, then only the chunks that can hold the window are looked
    at. Otherwise ``argpartition`` selects the best ``kk + _SPARE`` keys per query; if the worst
    of them is below the window, the window lies among them. Only a query with more near-ties
    than that scans its whole row.
    """
    n = key.shape[1]
    if n >= _CHUNKED_MIN_CHUNKS * chunk and kk * _CHUNKED_MIN_CHUNKS <= n // chunk:
        got = _shortlist_by_chunks(key, kk, tol, chunk)
        if got is not None:
            return got
    wide = min(n, kk + _SPARE)
    if wide >= n:
        qi, col = np.nonzero(key > -np.inf)
        return qi.astype(np.int64), col.astype(np.int64)
    top = np.argpartition(key, n - wide, axis=1)[:, n - wide :]
    vals = np.take_along_axis(key, top, axis=1)
    kth = np.partition(vals, wide - kk, axis=1)[:, wide - kk]  # the kk-th best of the row
    lo = _window_low(kth, tol)
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


def _shortlist_by_chunks(
    key: FloatArray, kk: int, tol: npt.NDArray[np.float64], chunk: int
) -> tuple[IntArray, IntArray] | None:
    """:func:`_shortlist` through chunk maxima (the same pairs; ``None`` when a query has fewer
    than ``kk`` chunks holding a finite key: the whole-row selection answers then).

    The ``kk``-th largest chunk maximum ``L`` is at most the ``kk``-th best key (``kk`` distinct
    keys reach it), so every key of the window (at least ``kth - tol``, at least ``L - tol``)
    lies in a chunk whose maximum reaches ``L - tol``: typically a few chunks, not the row. A
    batch then costs one pass over its keys instead of one ``argpartition`` of each row.
    """
    b, n = key.shape
    m = n // chunk
    rest = n - m * chunk
    cmax = np.empty((b, m + (1 if rest else 0)), dtype=np.float32)
    np.max(key[:, : m * chunk].reshape(b, m, chunk), axis=2, out=cmax[:, :m])
    if rest:
        np.max(key[:, m * chunk :], axis=1, out=cmax[:, m])
    nc = cmax.shape[1]
    least = np.partition(cmax, nc - kk, axis=1)[:, nc - kk]  # the kk-th largest chunk maximum
    if not np.isfinite(least).all():
        return None
    low = _window_low(least, tol)
    within = np.arange(chunk, dtype=np.int64)
    out_q: list[IntArray] = []
    out_c: list[IntArray] = []
    for i in range(b):
        chunks = np.flatnonzero(cmax[i] >= low[i])
        cols = (chunks[:, None] * chunk + within).ravel()
        if rest and len(chunks) and chunks[-1] == m:
            cols = cols[cols < n]
        vals = key[i, cols]
        kth = np.partition(vals, len(vals) - kk)[len(vals) - kk]  # the row's kk-th best: it is here
        keep = vals >= _window_low(np.asarray([kth], dtype=np.float32), tol[i : i + 1])[0]
        out_c.append(cols[keep])
        out_q.append(np.full(len(out_c[-1]), i, dtype=np.int64))
    return np.concatenate(out_q), np.concatenate(out_c)


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
