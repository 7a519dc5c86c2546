"""The one exact search kernel: vectorized top-k over float32 matrices.

Every backend stores and loads; none scores vectors itself. A :class:`VectorIndex` holds one
vector field of a table: float32 rows in one or more parts (a stored segment or a big batch is
adopted as it is, memory-mapped or not; small writes go to a growable tail), a mask of rows that
hold a vector, and the rows' squared norms. A search runs in two steps:

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

from .errors import ConfigError, DimensionMismatchError, InvalidVectorError

__all__ = [
    "METRICS",
    "METRIC_ALIASES",
    "TopK",
    "VectorIndex",
    "as_vector",
    "as_vector_batch",
    "as_vector_batch_with_norms",
    "LazyArray",
    "exact_scores",
    "squared_norms",
    "normalize_metric",
    "top_k",
]

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

#: Canonical metric names (dataknobs-data's spelling).
METRICS: tuple[str, ...] = ("cosine", "euclidean", "dot_product")
#: Accepted aliases and the canonical metric each stands for.
METRIC_ALIASES: dict[str, str] = {
    "dot": "dot_product",
    "inner_product": "dot_product",
    "ip": "dot_product",
    "l2": "euclidean",
    "cos": "cosine",
}

_GROWTH = 1.5
# Below this fraction of selected rows a filtered search gathers the rows first (less work);
# above it, it scores every row and masks the rest.
_GATHER_FRACTION = 0.2


def normalize_metric(metric: Any) -> str:
    """Return the canonical name of ``metric`` or raise :class:`ConfigError` naming the choices."""
    if hasattr(metric, "value") and isinstance(metric.value, str):  # an Enum such as DistanceMetric
        metric = metric.value
    if isinstance(metric, str):
        name = metric.strip().lower()
        if name in METRICS:
            return name
        if name in METRIC_ALIASES:
            return METRIC_ALIASES[name]
    aliases = ", ".join(f"{a} -> {c}" for a, c in METRIC_ALIASES.items())
    raise ConfigError(
        f"unknown vector metric {metric!r}; expected one of {', '.join(METRICS)} (aliases: {aliases})"
    )


def _to_float_array(value: Any, what: str) -> npt.NDArray[Any]:
    if hasattr(value, "value") and not isinstance(value, np.ndarray):  # a VectorField
        value = value.value
    if isinstance(value, (str, bytes)):
        raise InvalidVectorError(f"{what} must be a sequence of numbers, got a {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise InvalidVectorError(f"{what} must be numeric: {e}") from e
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InvalidVectorError(f"{what} must be numeric, got values of dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InvalidVectorError(f"{what} must be real-valued, got complex numbers")
    return arr


def _check_finite(arr: FloatArray, what: str) -> None:
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "infinity"
        raise InvalidVectorError(f"{what} contains {bad}; every component must be finite")


def as_vector(value: Any, dim: int | None = None, *, what: str = "vector") -> FloatArray:
    """Validate one vector and return it as a new 1-D float32 array.

    Raises :class:`InvalidVectorError` for an empty, non-1-D, non-numeric or non-finite value and
    :class:`DimensionMismatchError` when ``dim`` is given and differs.
    """
    arr = _to_float_array(value, what)
    if arr.ndim != 1:
        raise InvalidVectorError(f"{what} must be 1-D, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise InvalidVectorError(f"{what} is empty")
    if dim is not None and arr.shape[0] != dim:
        raise DimensionMismatchError(f"{what} has {arr.shape[0]} dimensions, expected {dim}")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: reported below
        out = np.array(arr, dtype=np.float32, copy=True)
        _check_finite(out, what)
    return out


def as_vector_batch(
    value: Any, dim: int | None = None, *, what: str = "vectors", copy: bool = True
) -> FloatArray:
    """Validate a batch of vectors (a 2-D array or a sequence of 1-D ones) as an (m, d) float32 array.

    The result is a new array, or with ``copy=False`` ``value`` itself when it already is a
    C-contiguous float32 array.
    """
    if isinstance(value, np.ndarray):
        arr = _to_float_array(value, what)
    else:
        items = list(value)
        if not items:
            return np.empty((0, dim or 0), dtype=np.float32)
        rows = [_to_float_array(v, f"{what}[{i}]") for i, v in enumerate(items)]
        for i, r in enumerate(rows):
            if r.ndim != 1:
                raise InvalidVectorError(f"{what}[{i}] must be 1-D, got shape {r.shape}")
            if r.size == 0:
                raise InvalidVectorError(f"{what}[{i}] is empty")
            if r.shape[0] != rows[0].shape[0]:
                expected = dim if dim is not None else rows[0].shape[0]
                raise DimensionMismatchError(f"{what}[{i}] has {r.shape[0]} dimensions, expected {expected}")
        arr = np.stack(rows)
    if arr.ndim != 2:
        raise InvalidVectorError(f"{what} must be 2-D (m, d), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise InvalidVectorError(f"{what} are empty")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have {arr.shape[1]} dimensions, expected {dim}")
    with np.errstate(over="ignore"):  # see as_vector
        out = np.array(arr, dtype=np.float32, copy=True if copy else None, order="C")
        if not np.isfinite(out).all():
            bad_row = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            _check_finite(out[bad_row], f"{what}[{bad_row}]")
    return out


def as_vector_batch_with_norms(
    value: Any, dim: int | None = None, *, what: str = "vectors", copy: bool = True
) -> tuple[FloatArray, FloatArray]:
    """:func:`as_vector_batch` and the rows' :func:`squared_norms`, in one pass over the data
    (a non-finite component makes its row's norm non-finite: only then are rows checked one by one)."""
    if not isinstance(value, np.ndarray):
        out = as_vector_batch(value, dim, what=what)
        return out, squared_norms(out)
    arr = _to_float_array(value, what)
    if arr.ndim != 2 or arr.shape[1] == 0 or (dim is not None and arr.shape[1] != dim):
        out = as_vector_batch(value, dim, what=what)  # raises the precise error
        return out, squared_norms(out)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(arr, dtype=np.float32, copy=True if copy else None, order="C")
        sq = squared_norms(out)
        if not np.isfinite(sq).all():  # a NaN or infinity, or finite values whose square overflows
            for r in np.flatnonzero(~np.isfinite(sq)).tolist():
                _check_finite(out[r], f"{what}[{r}]")  # raises for a NaN or infinity
    return out, sq


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


class LazyArray:
    """A float32 array still in storage (a segment's vectors or norms on S3), read when needed.

    Indexing it with a few row numbers reads just those rows (``read_rows``; a record shown in
    a result needs its vector); anything else reads all of it once (``load``), after which it
    behaves as the array.
    """

    #: At most this share of the rows (or 64 rows) is read row by row.
    FEW = 0.05

    def __init__(
        self,
        shape: tuple[int, ...],
        load: Callable[[], npt.NDArray[np.float32]],
        read_rows: Callable[[IntArray], npt.NDArray[np.float32]] | None = None,
    ) -> None:
        self.shape = shape
        self.dtype = np.dtype(np.float32)
        self.ndim = len(shape)
        self._load = load
        self._read_rows = read_rows
        self._array: npt.NDArray[np.float32] | None = None
        self._rows: dict[int, npt.NDArray[np.float32]] = {}  # rows read one by one, kept

    @property
    def loaded(self) -> bool:
        """Whether the whole array has been read."""
        return self._array is not None

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (0 until loaded)."""
        return 0 if self._array is None else int(self._array.nbytes)

    def __len__(self) -> int:
        return self.shape[0]

    def load(self) -> npt.NDArray[np.float32]:
        """The whole array (read once)."""
        if self._array is None:
            arr = self._load()
            if arr.shape != self.shape or arr.dtype != np.float32:
                raise InvalidVectorError(f"expected float32 {self.shape}, read {arr.dtype} {arr.shape}")
            self._array = arr
        return self._array

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        arr = self.load()
        return arr if dtype is None else arr.astype(dtype)

    def __getitem__(self, key: Any) -> Any:
        if (
            self._array is None
            and self._read_rows is not None
            and isinstance(key, np.ndarray)
            and key.ndim == 1
            and key.dtype.kind in "iu"
            and len(key) <= max(64, int(self.FEW * self.shape[0]))
        ):
            wanted = key.astype(np.int64).tolist()
            missing = sorted({r for r in wanted if r not in self._rows})
            if missing:
                got = self._read_rows(np.asarray(missing, dtype=np.int64))
                self._rows.update(zip(missing, got))
            return np.stack([self._rows[r] for r in wanted]) if wanted else self.load()[key]
        return self.load()[key]


class _Part:
    """A run of consecutive index rows held in one float32 matrix.

    ``growable`` parts are owned by the index and have spare capacity (the tail that small
    writes go to); the others are adopted arrays (a validated batch, a memory-mapped segment)
    that the index never writes to.
    """

    __slots__ = ("_inv", "_maxsq", "growable", "matrix", "n", "owned", "sqnorm", "start")

    def __init__(
        self,
        start: int,
        matrix: FloatArray | LazyArray,
        sqnorm: FloatArray | LazyArray,
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
            self._inv = _inverse_norms(self.sqnorm[: self.n])
        return self._inv


def _inverse_norms(sq: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(sq >= _TINY32, 1.0 / np.sqrt(sq), 0.0).astype(np.float32)
    return out


class VectorIndex:
    """One vector field of a table: float32 vectors aligned with the table's rows.

    Row ``r`` of the index belongs to row ``r`` of the table; :attr:`present` says which rows
    hold a vector. The rows live in one or more *parts*, consecutive runs of rows in one matrix
    each: a big batch or a stored segment is adopted as a part of its own (no copy, also when it
    is memory-mapped), small writes go to a growable tail. The part count stays bounded (small
    neighbours are merged). Not thread-safe on its own: the owning store serializes writes.
    """

    #: A write of at least this many rows becomes a part of its own instead of being copied.
    ADOPT_ROWS = 1024
    #: Above this many parts, neighbouring small parts are merged.
    MAX_PARTS = 64

    def __init__(self, dim: int | None = None) -> None:
        self.dim: int | None = dim
        self._parts: list[_Part] = []
        self._present: BoolArray = np.zeros(0, dtype=np.bool_)
        self._nrows = 0
        self._count = 0

    # -- construction from stored data -------------------------------------------------------
    @classmethod
    def from_matrix(
        cls, matrix: FloatArray, present: BoolArray | None = None, sqnorm: FloatArray | None = None
    ) -> VectorIndex:
        """Adopt ``matrix`` (e.g. a memory-mapped ``.npy``) without copying it.

        ``sqnorm`` (the rows' squared norms, as :func:`squared_norms` computes them) saves a pass
        over the matrix when the caller has it stored.
        """
        index = cls(None)
        index.append_block(matrix, present, sqnorm)
        return index

    def append_block(
        self,
        matrix: FloatArray | LazyArray,
        present: BoolArray | None = None,
        sqnorm: FloatArray | LazyArray | None = None,
    ) -> None:
        """Append ``len(matrix)`` rows, adopting ``matrix`` as a part (never written to).

        Rows where ``present`` is false hold no vector (their matrix rows should be zeros).
        ``matrix`` and ``sqnorm`` may be :class:`LazyArray` s: read when a search or a record
        first needs them.
        """
        if matrix.ndim != 2 or matrix.dtype != np.float32:
            raise InvalidVectorError(f"expected a 2-D float32 matrix, got {matrix.dtype} {matrix.shape}")
        if self.dim is None:
            self.dim = int(matrix.shape[1])
        elif matrix.shape[1] != self.dim:
            raise DimensionMismatchError(f"a block of {matrix.shape[1]}-dimensional vectors, expected {self.dim}")
        m = int(matrix.shape[0])
        if m == 0:
            return
        if sqnorm is None:
            if isinstance(matrix, LazyArray):
                lazy = matrix
                sqnorm = LazyArray((m,), lambda: squared_norms(lazy.load()))
            else:
                sqnorm = squared_norms(matrix)
        elif sqnorm.shape != (m,) or sqnorm.dtype != np.float32:
            raise InvalidVectorError(f"expected {m} float32 squared norms, got {sqnorm.dtype} {sqnorm.shape}")
        pres = np.ones(m, dtype=np.bool_) if present is None else np.asarray(present, dtype=np.bool_)
        start = self._nrows
        self._grow_present(start + m)
        self._present[start : start + m] = pres
        self._count += int(np.count_nonzero(pres))
        self._nrows = start + m
        self._seal_tail()
        self._parts.append(_Part(start, matrix, sqnorm, m, growable=False, owned=False))
        self._bound_parts()

    def pad_to(self, nrows: int) -> None:
        """Extend the index to ``nrows`` rows; the new rows hold no vector (they take no memory)."""
        if nrows > self._nrows:
            self._grow_present(nrows)
            self._nrows = nrows

    # -- properties ---------------------------------------------------------------------------
    @property
    def nrows(self) -> int:
        """Number of table rows this index spans (with or without a vector)."""
        return self._nrows

    @property
    def count(self) -> int:
        """Number of rows that hold a vector."""
        return self._count

    @property
    def nparts(self) -> int:
        """How many parts (matrices) hold the rows."""
        return len(self._parts)

    @property
    def present(self) -> BoolArray:
        """Read-only view: which of the first :attr:`nrows` rows hold a vector."""
        view = self._present[: self._nrows]
        view.flags.writeable = False
        return view

    @property
    def matrix(self) -> FloatArray:
        """Read-only view of all :attr:`nrows` rows as one matrix.

        When the rows span several parts they are merged into one first (a copy, once).
        Prefer :meth:`gather` for a few rows.
        """
        if not self._parts:
            empty: FloatArray = np.zeros((self._nrows, self.dim or 0), dtype=np.float32)
            return empty
        if len(self._parts) > 1 or self._parts[0].start > 0:
            self._merge(0, len(self._parts))
        part = self._parts[0]
        if part.n < self._nrows:  # rows past the last part hold no vector
            full = self.gather(np.arange(self._nrows, dtype=np.int64))
            self._parts = [_Part(0, full, squared_norms(full), self._nrows, growable=False)]
            part = self._parts[0]
        view: FloatArray = part.matrix[: part.n]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Bytes held by the index (matrices with their capacity, norms, presence mask)."""
        return int(sum(p.matrix.nbytes + p.sqnorm.nbytes for p in self._parts) + self._present.nbytes)

    def parts(self) -> list[tuple[int, FloatArray, FloatArray]]:
        """``(first row, matrix, squared norms)`` of each part, read-only views, in row order."""
        out = []
        for p in self._parts:
            mat, sq = p.matrix[: p.n], p.sqnorm[: p.n]
            mat.flags.writeable = False
            sq.flags.writeable = False
            out.append((p.start, mat, sq))
        return out

    # -- writes -------------------------------------------------------------------------------
    def _grow_present(self, n: int) -> None:
        if n > len(self._present):
            cap = max(n, int(len(self._present) * _GROWTH) + 16)
            present = np.zeros(cap, dtype=np.bool_)
            present[: self._nrows] = self._present[: self._nrows]
            self._present = present

    def _seal_tail(self) -> None:
        """The last part stops growing (a new part follows it): give back its spare capacity."""
        if self._parts and self._parts[-1].growable:
            tail = self._parts[-1]
            tail.growable = False
            if tail.matrix.shape[0] > tail.n:
                tail.matrix = tail.matrix[: tail.n].copy()
                tail.sqnorm = tail.sqnorm[: tail.n].copy()

    def _tail(self, rows_needed: int, size_hint: int) -> _Part:
        """A growable last part with room for ``rows_needed`` more rows."""
        dim = self.dim or 0
        last = self._parts[-1] if self._parts else None
        if last is None or not last.growable or last.start + last.n != self._nrows:
            self._seal_tail()
            cap = max(rows_needed, 16, size_hint - self._nrows)
            last = _Part(
                self._nrows, np.zeros((cap, dim), dtype=np.float32), np.zeros(cap, dtype=np.float32), 0, True
            )
            self._parts.append(last)
            self._bound_parts()
            last = self._parts[-1]
            if not last.growable:  # merged into a neighbour (an adopted copy): start afresh
                return self._tail(rows_needed, size_hint)
            return last
        need = last.n + rows_needed
        if need > last.matrix.shape[0]:
            cap = max(need, int(last.matrix.shape[0] * _GROWTH) + 16, size_hint - last.start)
            matrix = np.zeros((cap, dim), dtype=np.float32)
            matrix[: last.n] = last.matrix[: last.n]
            sq = np.zeros(cap, dtype=np.float32)
            sq[: last.n] = last.sqnorm[: last.n]
            last.matrix, last.sqnorm = matrix, sq
        return last

    def set_rows(
        self,
        rows: IntArray,
        vectors: FloatArray,
        size_hint: int = 0,
        adopt: bool = False,
        sqnorm: FloatArray | None = None,
    ) -> None:
        """Store ``vectors[i]`` at table row ``rows[i]`` (already validated, shape (m, dim)).

        Rows past :attr:`nrows` are appended (rows skipped in between hold no vector); a run of
        at least :attr:`ADOPT_ROWS` new rows becomes a part of its own (``vectors`` itself when
        ``adopt`` is true and the rows are consecutive: the caller hands it over and never
        changes it). ``size_hint``: the caller expects the index to reach that many rows.
        ``sqnorm``: the vectors' :func:`squared_norms` when the caller has them.
        """
        if len(rows) == 0:
            return
        if sqnorm is None or len(sqnorm) != len(vectors):
            sqnorm = squared_norms(vectors)
        if self.dim is None:
            self.dim = int(vectors.shape[1])
        old = rows < self._nrows
        if old.any():
            self._overwrite(rows[old], vectors[old])
            if old.all():
                return
            new_sel = ~old
            rows, vectors, sqnorm = rows[new_sel], vectors[new_sel], sqnorm[new_sel]
        start = self._nrows
        top = int(rows.max()) + 1
        span = top - start
        consecutive = span == len(rows) and bool((np.diff(rows) == 1).all()) if len(rows) > 1 else span == 1
        self._grow_present(top)
        if span >= self.ADOPT_ROWS:
            if consecutive:
                block = vectors if adopt else np.array(vectors, dtype=np.float32, copy=True, order="C")
            else:
                block = np.zeros((span, self.dim), dtype=np.float32)
                block[rows - start] = vectors
            sq = sqnorm if consecutive else np.zeros(span, dtype=np.float32)
            if not consecutive:
                sq[rows - start] = sqnorm
            self._seal_tail()
            self._parts.append(_Part(start, block, sq, span, growable=False, owned=block is not vectors))
        else:
            tail = self._tail(span, size_hint)
            off = tail.n
            tail.matrix[off : off + span] = 0.0
            tail.sqnorm[off : off + span] = 0.0
            local = rows - tail.start
            if consecutive:
                tail.matrix[off : off + span] = vectors
                tail.sqnorm[off : off + span] = sqnorm
            else:
                tail.matrix[local] = vectors
                tail.sqnorm[local] = sqnorm
            tail.n = off + span
            tail.changed()
        self._present[rows] = True
        self._nrows = top
        self._count += len(rows) if consecutive else int(np.count_nonzero(self._present[start:top]))
        self._bound_parts()

    def _overwrite(self, rows: IntArray, vectors: FloatArray) -> None:
        """Replace the vectors of existing rows (copying an adopted part before writing to it)."""
        which = self._locate(rows)
        if (which < 0).any() or any(
            rows[which == pi].max() >= self._parts[pi].start + self._parts[pi].n for pi in np.unique(which).tolist()
        ):
            self.matrix  # noqa: B018 - rows in gaps between parts: one part covering every row first
            which = self._locate(rows)
        for pi in np.unique(which).tolist():
            part = self._parts[pi]
            sel = which == pi
            if not part.owned:
                part.matrix = np.array(part.matrix[: part.n], dtype=np.float32, copy=True)
                part.sqnorm = np.array(part.sqnorm[: part.n], dtype=np.float32, copy=True)
                part.owned = True
            local = rows[sel] - part.start
            part.matrix[local] = vectors[sel]
            part.sqnorm[local] = squared_norms(vectors[sel])
            part.changed()
        before = int(np.count_nonzero(self._present[rows]))
        self._present[rows] = True
        self._count += len(np.unique(rows)) - before if before < len(rows) else 0

    def _bound_parts(self) -> None:
        """Merge the smallest neighbouring parts while there are more than :attr:`MAX_PARTS`."""
        while len(self._parts) > self.MAX_PARTS:
            sizes = [a.n + b.n for a, b in zip(self._parts, self._parts[1:])]
            i = int(np.argmin(sizes))
            self._merge(i, i + 2)

    def _merge(self, lo: int, hi: int) -> None:
        """Replace parts ``lo..hi-1`` by one owned part holding their rows (row 0 on for ``lo=0``;
        rows in gaps between parts hold no vector and become zeros)."""
        group = self._parts[lo:hi]
        if not group:
            return
        first = 0 if lo == 0 else group[0].start
        end = group[-1].start + group[-1].n
        if len(group) == 1 and group[0].start == first:
            return
        matrix = np.zeros((end - first, self.dim or 0), dtype=np.float32)
        sq = np.zeros(end - first, dtype=np.float32)
        for p in group:
            matrix[p.start - first : p.start - first + p.n] = p.matrix[: p.n]
            sq[p.start - first : p.start - first + p.n] = p.sqnorm[: p.n]
        self._parts[lo:hi] = [_Part(first, matrix, sq, end - first, growable=False)]

    def clear_rows(self, rows: IntArray) -> None:
        """Forget the vectors of ``rows`` (deletes, or updates that drop the field)."""
        rows = rows[rows < self._nrows]
        if len(rows) == 0:
            return
        rows = np.unique(rows)
        self._count -= int(self._present[rows].sum())
        self._present[rows] = False

    def _locate(self, rows: IntArray) -> IntArray:
        starts = np.array([p.start for p in self._parts], dtype=np.int64)
        out: IntArray = np.searchsorted(starts, rows, side="right") - 1
        return out

    def gather(self, rows: IntArray) -> FloatArray:
        """The vectors of ``rows`` (a new array; rows without a vector give zeros)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(self._parts) == 1 and self._parts[0].start == 0 and len(rows) and rows.max() < self._parts[0].n:
            one: FloatArray = np.asarray(self._parts[0].matrix[rows], dtype=np.float32)
            if not self._present[rows].all():
                one = one.copy()
                one[~self._present[rows]] = 0.0
            return one
        out = np.zeros((len(rows), self.dim or 0), dtype=np.float32)
        if len(rows) == 0 or not self._parts:
            return out
        which = self._locate(rows)
        for pi in np.unique(which).tolist():
            if pi < 0:
                continue
            part = self._parts[pi]
            local = rows - part.start
            sel = (which == pi) & (local < part.n)
            out[sel] = part.matrix[local[sel]]
        out[~self._present[rows]] = 0.0
        return out

    def get(self, row: int) -> FloatArray | None:
        """A copy of the vector at ``row``, or ``None``."""
        if row >= self._nrows or row < 0 or not self._present[row]:
            return None
        import bisect

        part = self._parts[bisect.bisect_right([p.start for p in self._parts], row) - 1]
        local = row - part.start
        if isinstance(part.matrix, LazyArray) and not part.matrix.loaded:
            vec: FloatArray = part.matrix[np.array([local], dtype=np.int64)][0].copy()
        else:
            vec = np.array(part.matrix[local], dtype=np.float32, copy=True)
        return vec

    @property
    def in_storage(self) -> bool:
        """Whether some vectors are still in storage (:class:`LazyArray` parts not read)."""
        return any(isinstance(p.matrix, LazyArray) and not p.matrix.loaded for p in self._parts)

    def take(self, keep: IntArray) -> VectorIndex:
        """A compacted index holding rows ``keep`` (in that order) as rows ``0..len(keep)-1``."""
        out = VectorIndex(self.dim)
        keep = keep[keep < self._nrows]
        if len(keep):
            present = self._present[keep].copy()
            mat = self.gather(keep)
            out.append_block(mat, present, squared_norms(mat))
        return out

    # -- search -------------------------------------------------------------------------------
    def search(
        self,
        queries: FloatArray,
        k: int,
        metric: str,
        ids: IdSource,
        mask: BoolArray | None = None,
    ) -> list[TopK]:
        """Exact top-``k`` rows for each query of ``queries`` (shape (b, dim)).

        ``ids`` gives the ids of rows (for tie-breaking); ``mask`` (length >= :attr:`nrows`)
        limits the candidate rows (it is combined with :attr:`present`).
        """
        n = self._nrows
        cand = self._present[:n]
        if mask is not None:
            cand = cand & mask[:n]
        return _search(self._parts, queries, k, metric, ids, cand, self.gather)


def squared_norms(matrix: FloatArray) -> FloatArray:
    """The rows' squared norms in float32 (the one place they are computed)."""
    out: FloatArray = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float32)
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

    ``sqnorm`` holds the rows' squared norms (:func:`squared_norms`). See :func:`_search`.
    """
    n = matrix.shape[0]
    part = _Part(0, matrix, sqnorm, n, growable=False)
    cand = np.ones(n, dtype=np.bool_) if candidates is None else candidates[:n]

    def gather(rows: IntArray) -> FloatArray:
        out: FloatArray = np.asarray(matrix[rows], dtype=np.float32)
        return out

    return _search([part] if n else [], queries, k, metric, ids, cand, gather)


def _search(
    parts: Sequence[_Part],
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
    cols: list[tuple[_Part, IntArray | None, BoolArray | None, Any, Any, Any]] = []
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
            inv = part.inv_norms() if sel is None else _inverse_norms(sq)
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
