"""A vector field of a table: float32 rows in parts, aligned with the table's rows.

:class:`VectorIndex` owns the layout (which rows live in which part, the growable tail, merging
small parts, adopting stored segments without a copy); :class:`LazyArray` stands for vectors
still in storage. Scoring is the kernel's (:mod:`dk_vector_plugins.kernel`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import DimensionMismatchError, InvalidVectorError
from .kernel import IdSource, Part, TopK, search_parts
from .quant import Int8Codes, LoadedCodes, concat_codes
from .vectors import squared_norms, unique_ints, unique_inverse

__all__ = ["LazyArray", "VectorIndex"]

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

_GROWTH = 1.5


#: Gathering at most this many rows copies them one by one (cheaper than masks per part).
_FEW_ROWS = 64


class LazyArray:
    """A float32 array still in storage (a segment's vectors or norms on S3), read when needed.

    Indexing it with a few row numbers reads just those rows (``read_rows``; a record shown in
    a result needs its vector, an int8 search the rows it re-ranks) and keeps them; anything else
    reads all of it once (``load``), after which it behaves as the array. ``few``: the share of
    the rows (at least 64) read by themselves, default :attr:`FEW`; :attr:`MOST` for rows meant
    to stay in storage (``load_vectors="codes"``: the re-rank of a batch reads its rows too).
    """

    #: At most this share of the rows (or 64 rows) is read row by row.
    FEW = 0.05
    #: The share for an array whose rows are to stay in storage: beyond it, reading it whole
    #: costs less than keeping that many rows one by one.
    MOST = 0.5

    def __init__(
        self,
        shape: tuple[int, ...],
        load: Callable[[], npt.NDArray[np.float32]],
        read_rows: Callable[[IntArray], npt.NDArray[np.float32]] | None = None,
        few: float | None = None,
    ) -> None:
        self.shape = shape
        self.dtype = np.dtype(np.float32)
        self.ndim = len(shape)
        self.few = self.FEW if few is None else few
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
            and len(key) <= max(64, int(self.few * self.shape[0]))
        ):
            wanted = key.astype(np.int64).tolist()
            missing = sorted({r for r in wanted if r not in self._rows})
            if missing:
                got = np.array(self._read_rows(np.asarray(missing, dtype=np.int64)), dtype=np.float32)
                self._rows.update(zip(missing, got))  # a copy: not views of the blocks read
            return np.stack([self._rows[r] for r in wanted]) if wanted else self.load()[key]
        return self.load()[key]


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
        self._parts: list[Part] = []
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
        codes: Callable[[], Int8Codes] | None = None,
    ) -> None:
        """Append ``len(matrix)`` rows, adopting ``matrix`` as a part (never written to).

        Rows where ``present`` is false hold no vector (their matrix rows should be zeros).
        ``matrix`` and ``sqnorm`` may be :class:`LazyArray` s: read when a search or a record
        first needs them. ``codes`` reads the rows' int8 codes stored with them (the first int8
        search calls it instead of quantizing the rows); codes already read
        (:class:`~dk_vector_plugins.quant.LoadedCodes`) are held at once, so a search scans them
        while ``matrix`` stays in storage and reads only the rows it re-ranks.
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
        part = Part(start, matrix, sqnorm, m, growable=False, owned=False)
        if isinstance(codes, LoadedCodes):
            part.adopt_codes(codes())
        else:
            part.stored_codes = codes
        self._parts.append(part)
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
            self._parts = [Part(0, full, squared_norms(full), self._nrows, growable=False)]
            part = self._parts[0]
        view: FloatArray = part.matrix[: part.n]
        view.flags.writeable = False
        return view

    @property
    def nbytes(self) -> int:
        """Bytes held by the index (matrices with their capacity, norms, int8 codes, presence mask)."""
        codes = sum(p.codes.nbytes for p in self._parts if p.codes is not None)
        return int(sum(p.matrix.nbytes + p.sqnorm.nbytes for p in self._parts) + codes + self._present.nbytes)

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

    def _tail(self, rows_needed: int, size_hint: int) -> Part:
        """A growable last part with room for ``rows_needed`` more rows."""
        dim = self.dim or 0
        last = self._parts[-1] if self._parts else None
        if last is None or not last.growable or last.start + last.n != self._nrows:
            self._seal_tail()
            cap = max(rows_needed, 16, size_hint - self._nrows)
            last = Part(
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
            self._parts.append(Part(start, block, sq, span, growable=False, owned=block is not vectors))
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
            tail.changed(np.arange(off, off + span, dtype=np.int64))  # new rows: codes before them hold
        self._present[rows] = True
        self._nrows = top
        self._count += len(rows) if consecutive else int(np.count_nonzero(self._present[start:top]))
        self._bound_parts()

    def _overwrite(self, rows: IntArray, vectors: FloatArray) -> None:
        """Replace the vectors of existing rows (copying an adopted part before writing to it)."""
        which = self._locate(rows)
        if (which < 0).any() or any(
            rows[which == pi].max() >= self._parts[pi].start + self._parts[pi].n for pi in unique_ints(which).tolist()
        ):
            self.matrix  # noqa: B018 - rows in gaps between parts: one part covering every row first
            which = self._locate(rows)
        for pi in unique_ints(which).tolist():
            part = self._parts[pi]
            sel = which == pi
            if not part.owned:
                part.matrix = np.array(part.matrix[: part.n], dtype=np.float32, copy=True)
                part.sqnorm = np.array(part.sqnorm[: part.n], dtype=np.float32, copy=True)
                part.owned = True
            local = rows[sel] - part.start
            part.matrix[local] = vectors[sel]
            part.sqnorm[local] = squared_norms(vectors[sel])
            part.changed(local)
        before = int(np.count_nonzero(self._present[rows]))
        self._present[rows] = True
        self._count += len(unique_ints(rows)) - before if before < len(rows) else 0

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
        merged = Part(first, matrix, sq, end - first, growable=False)
        merged.adopt_codes(_merged_codes(group, first, self.dim or 0))
        self._parts[lo:hi] = [merged]

    def truncate(self, nrows: int) -> None:
        """Drop rows ``nrows..`` (the table's last segments, replaced by their merge)."""
        if nrows >= self._nrows:
            return
        self._count -= int(np.count_nonzero(self._present[nrows : self._nrows]))
        self._present[nrows : self._nrows] = False
        kept = []
        for p in self._parts:
            if p.start >= nrows:
                continue
            if p.start + p.n > nrows:  # cut: its rows past ``nrows`` are no longer read
                cut = nrows - p.start
                p.n = cut
                p.changed(np.array([cut], dtype=np.int64))  # caches recomputed; codes of rows kept
            kept.append(p)
        self._parts = kept
        self._nrows = nrows

    def clear_rows(self, rows: IntArray) -> None:
        """Forget the vectors of ``rows`` (deletes, or updates that drop the field)."""
        rows = rows[rows < self._nrows]
        if len(rows) == 0:
            return
        rows = unique_ints(rows)
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
        parts = self._parts
        if len(rows) <= _FEW_ROWS:  # a few rows (results): copied one by one, stored ones read together
            starts = [p.start for p in parts]
            present = self._present
            lazy: dict[int, list[int]] = {}
            for j, row in enumerate(rows.tolist()):
                pi = bisect.bisect_right(starts, row) - 1
                if pi < 0 or row >= self._nrows or not present[row] or row - starts[pi] >= parts[pi].n:
                    continue
                matrix = parts[pi].matrix
                if isinstance(matrix, LazyArray) and not matrix.loaded:
                    lazy.setdefault(pi, []).append(j)
                else:
                    out[j] = matrix[row - starts[pi]]
            for pi, js in lazy.items():
                sel = np.asarray(js, dtype=np.int64)
                out[sel] = parts[pi].matrix[rows[sel] - starts[pi]]
            return out
        which = self._locate(rows)
        for pi in unique_ints(which).tolist():
            if pi < 0:
                continue
            part = parts[pi]
            local = rows - part.start
            sel = (which == pi) & (local < part.n)
            matrix = part.matrix
            if not sel.any():
                continue
            if isinstance(matrix, LazyArray) and not matrix.loaded:
                # rows in storage: each read once (a row re-ranked for several queries is
                # asked for once per query), so a few rows stay a few ranged reads
                uniq, back = unique_inverse(local[sel])
                out[sel] = matrix[uniq][back]
            else:
                out[sel] = matrix[local[sel]]
        out[~self.holds(rows)] = 0.0
        return out

    def holds(self, rows: IntArray) -> BoolArray:
        """Which of ``rows`` hold a vector (rows past :attr:`nrows`, the last one with a
        vector, hold none)."""
        held = np.zeros(len(rows), dtype=np.bool_)
        inside = rows < self._nrows
        held[inside] = self._present[rows[inside]]
        return held

    def get(self, row: int) -> FloatArray | None:
        """A copy of the vector at ``row``, or ``None``."""
        if row >= self._nrows or row < 0 or not self._present[row]:
            return None
        vec: FloatArray = self.gather(np.array([row], dtype=np.int64))[0]
        return vec

    @property
    def in_storage(self) -> bool:
        """Whether some vectors are still in storage (:class:`LazyArray` parts not read whole;
        rows gathered from them, such as those a search re-ranked, are read by themselves)."""
        return any(isinstance(p.matrix, LazyArray) and not p.matrix.loaded for p in self._parts)

    def take(self, keep: IntArray) -> VectorIndex:
        """A compacted index holding rows ``keep`` (in that order) as rows ``0..len(keep)-1``."""
        out = VectorIndex(self.dim)
        keep = keep[keep < self._nrows]
        if len(keep):
            present = self._present[keep].copy()
            mat = self.gather(keep)
            out.append_block(mat, present, squared_norms(mat))
            out._parts[-1].adopt_codes(self.codes_of(keep))
        return out

    def codes_of(self, rows: IntArray) -> Int8Codes | None:
        """The int8 codes of ``rows`` (in that order) when the parts holding them have their codes
        (a row's codes depend on that row alone, so compaction and merges keep them; other parts
        need none); ``None`` otherwise."""
        if not self._parts:
            return None
        which = self._locate(rows)
        if (which < 0).any() or not self._present[rows].all():
            return None  # rows without a vector: quantized again (cheap) by the next int8 search
        pieces: list[Int8Codes] = []
        order: list[IntArray] = []
        for pi in unique_ints(which).tolist():
            part = self._parts[pi]
            here = np.flatnonzero(which == pi)
            local = rows[here] - part.start
            codes = part.codes
            if codes is None or (local >= min(part.n, codes.n)).any():
                return None  # a part without codes of these rows: the caller quantizes them
            pieces.append(codes.take(local))
            order.append(here)
        both = concat_codes(pieces)
        return both.take(np.argsort(np.concatenate(order), kind="stable"))

    # -- search -------------------------------------------------------------------------------
    def search(
        self,
        queries: FloatArray,
        k: int,
        metric: str,
        ids: IdSource,
        mask: BoolArray | None = None,
        exact: str = "auto",
    ) -> list[TopK]:
        """Exact top-``k`` rows for each query of ``queries`` (shape (b, dim)).

        ``ids`` gives the ids of rows (for tie-breaking); ``mask`` (length >= :attr:`nrows`)
        limits the candidate rows (it is combined with :attr:`present`). ``exact``: which scan
        shortlists the rows (``"auto"``, ``"int8"``, ``"float32"``; the results are the same,
        see :func:`~dk_vector_plugins.kernel.choose_exact`).
        """
        n = self._nrows
        cand = self._present[:n]
        if mask is not None:
            cand = cand & mask[:n]
        return search_parts(self._parts, queries, k, metric, ids, cand, self.gather, exact)


def _merged_codes(group: list[Part], first: int, dim: int) -> Int8Codes | None:
    """The codes of parts merged into one starting at row ``first`` (rows in gaps hold zeros,
    whose codes are zeros), or ``None`` when a part has none."""
    if any(p.codes is None or p.codes.n < p.n for p in group):
        return None
    pieces: list[Int8Codes] = []
    at = first
    for p in group:
        if p.start > at:  # a gap: rows without a vector
            gap = p.start - at
            pieces.append(
                Int8Codes(
                    np.zeros((gap, dim), dtype=np.int8),
                    np.zeros(gap, dtype=np.float32),
                    np.zeros(gap, dtype=np.float32),
                    np.zeros(gap, dtype=np.float64),
                )
            )
        codes = p.codes
        assert codes is not None
        pieces.append(codes.head(p.n))
        at = p.start + p.n
    return concat_codes(pieces)
