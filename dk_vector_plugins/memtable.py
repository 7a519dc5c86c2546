"""The in-memory row table every backend serves from: records, vector indexes, filter columns.

Rows are append-only: a write appends new rows and retires (tombstones) the rows it replaces, so
the row space of a table is the concatenation of its writes, exactly as a log-structured table on
disk or S3 is the concatenation of its segments. :meth:`RecordTable.compact` drops dead rows.

The table is single-threaded and does no I/O: stores wrap it with a lock and their own storage.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import DimensionMismatchError, DkvError, InvalidRequestError, InvalidVectorError
from .index import VectorIndex
from .kernel import TopK
from .quant import Int8Codes
from .query import Column, Expr, Query, SortOrder
from .records import MISSING, Field, Record, VectorField, is_number_list, is_vector_value, lookup
from .search import fuse_ranked, hybrid_results
from .textindex import (
    Postings,
    TextIndex,
    TextSettings,
    bm25_top,
    field_without_text,
    index_texts,
    merge_postings,
    text_of,
)
from .types import (
    HybridSearchConfig,
    HybridSearchResult,
    SearchRequest,
    TextSearchRequest,
    TextSearchResult,
    VectorSearchResult,
)
from .values import check_names, normalize_dicts
from .vectors import as_vector_batch, unique_ints

__all__ = ["Row", "RecordTable", "no_text_error", "row_text"]

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float32]

#: A row whose data is still in storage (loaded on first use, a whole segment at a time).
UNLOADED: Any = type("Unloaded", (), {"__repr__": lambda self: "UNLOADED"})()
#: Loads the data of a chunk of rows: one (data, metadata, vector info) per row.
ChunkLoader = Callable[[], Sequence[tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]]]
#: Loads the ids of a chunk of rows.
IdsLoader = Callable[[], Sequence[str]]
#: A stored field's vectors: the matrix, which rows hold one (``None``: all), their squared norms.
StoredVectors = tuple[npt.NDArray[np.float32], "BoolArray | None", "npt.NDArray[np.float32] | None"]

#: One row's parts: (id, data without vectors, metadata, vector field -> info).
Row = tuple[str, dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]


def _stacked(values: list[Any]) -> Any:
    """VectorField values are validated 1-D float32 arrays: one ``np.stack`` when their lengths
    agree (as_vector_batch then checks the matrix at once), else the list (per-item messages)."""
    try:
        return np.stack(values)
    except ValueError:
        return values


#: Values a copy of a record may share with the table (immutable).
_ATOMIC = frozenset({str, int, float, bool, type(None)})


def _copied_all(rows: Iterable[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Copies of rows' data or metadata that the caller may change freely: a shallow copy of a
    row whose values are all immutable (the common case, and much faster), else a deep copy
    (one loop for all the rows: a result's records are copied without a call per row)."""
    atomic = _ATOMIC.issuperset
    return [{} if not v else dict(v) if atomic(map(type, v.values())) else copy.deepcopy(v) for v in rows]


def row_text(rid: str | None, data: dict[str, Any] | None, meta: dict[str, Any] | None, field: str) -> str | None:
    """The text a row holds in ``field`` (a path into its data or metadata, see
    :func:`~dk_vector_plugins.records.lookup`), or ``None``."""
    value = data.get(field) if data and field != "id" else None  # the common case: a top-level string
    return value if type(value) is str else text_of(lookup(rid, data or {}, meta or {}, field))


def names_the_id(field: str) -> bool:
    """Whether the path ``field`` resolves to the record's id (``id``, ``fields.id``), which
    :func:`row_text` then needs."""
    while field.startswith("fields."):
        field = field[len("fields.") :]
    return field == "id"


def no_text_error(field: str, known: Sequence[str]) -> InvalidRequestError:
    """The error of a text search of a field that no live record holds text in."""
    return InvalidRequestError(
        f"no record holds text in field {field!r}; the fields holding text: {', '.join(known) or 'none'}"
    )


def split_record(record: Record) -> tuple[dict[str, Any], dict[str, VectorField]]:
    """A record's plain data fields and its vector fields."""
    data: dict[str, Any] = {}
    vectors: dict[str, VectorField] = {}
    for key, value in record._data.items():
        if is_vector_value(value):
            vectors[key] = value if isinstance(value, VectorField) else VectorField(value, name=key)
        else:
            data[key] = value
    return data, vectors


class RecordTable:
    """Rows of records with one :class:`VectorIndex` per vector field and lazy filter columns.

    :param dimensions: the fixed dimension of every vector field, or ``None`` to let the first
        stored vector of each field fix it.
    """

    def __init__(self, dimensions: int | None = None) -> None:
        self.dimensions = dimensions
        self._ids: list[Any] = []  # str, or UNLOADED while the ids of a stored segment are unread
        self._id_chunks: list[tuple[int, int, IdsLoader]] = []
        # id -> live row; None until needed when rows were loaded from storage without it
        self._row_of_map: dict[str, int] | None = {}
        self._live: BoolArray = np.zeros(0, dtype=np.bool_)
        self._data: list[Any] = []
        self._meta: list[Any] = []
        self._vinfo: list[Any] = []
        self.indexes: dict[str, VectorIndex] = {}
        #: Full-text postings per text field (see :mod:`dk_vector_plugins.textindex`).
        self.texts: dict[str, TextIndex] = {}
        #: The store's analyzer and BM25 settings (set by the store; they follow its schema).
        self.text_provider: Callable[[], TextSettings] | None = None
        #: Fields where a plain list of numbers is also a vector (set by the store: its
        #: ``vector_field``). The row keeps the list as given; the field's index holds it too.
        self.list_vector_fields: frozenset[str] = frozenset()
        self._bm25_cache: dict[Any, Any] = {}
        self._columns: dict[str, Column] = {}
        self._chunks: list[tuple[int, int, ChunkLoader]] = []
        self._size_hint = 0
        # rows in use; the row lists may be longer (slots filled ahead of loads, see expect_rows)
        self._n = 0

    def expect_rows(self, n: int) -> None:
        """Loads about to bring the table to ``n`` rows: size buffers for that at once
        (``0``: the loads are done)."""
        self._size_hint = n
        if n == 0:
            self._trim_lists()
        elif self._n == 0 and not self._ids:
            self._prealloc(n)

    def _prealloc(self, n: int) -> None:
        """Fill the row lists of an empty table with ``n`` slots of rows still in storage, so that
        loading lazy segments into them costs nothing per row."""
        self._ids = [UNLOADED] * n
        self._data = [UNLOADED] * n
        self._meta = [UNLOADED] * n
        self._vinfo = [UNLOADED] * n

    def _trim_lists(self) -> None:
        if len(self._ids) > self._n:
            for rows in (self._ids, self._data, self._meta, self._vinfo):
                del rows[self._n :]

    # -- size -----------------------------------------------------------------------------------
    @property
    def nrows(self) -> int:
        """Rows ever appended since the last compaction, dead ones included."""
        return self._n

    def __len__(self) -> int:
        return int(np.count_nonzero(self._live[: self.nrows]))

    @property
    def dead(self) -> int:
        """Rows retired by updates and deletes, not yet compacted away."""
        return self.nrows - len(self)

    @property
    def _row_of(self) -> dict[str, int]:
        """id -> live row, built on first use (loads every id)."""
        if self._row_of_map is None:
            self._load_ids()
            live = np.flatnonzero(self._live[: self.nrows]).tolist()
            self._row_of_map = dict(zip([self._ids[r] for r in live], live))
        return self._row_of_map

    def _load_ids(self, rows: Iterable[int] | None = None) -> None:
        """Read the ids of stored segments still unread: of ``rows`` only, or all of them."""
        if not self._id_chunks:
            return
        if rows is not None:
            import bisect

            starts = [c[0] for c in self._id_chunks]
            for r in rows:
                if self._ids[r] is UNLOADED:
                    start, _, loader = self._id_chunks[bisect.bisect_right(starts, r) - 1]
                    self._ids[r] = loader()[r - start]  # the loader decodes that one id
            return
        for start, stop, loader in self._id_chunks:
            got = loader()
            if len(got) != stop - start:
                from .errors import StorageError

                raise StorageError(f"a stored segment lists {len(got)} ids, its manifest says {stop - start}")
            every = getattr(got, "all", None)
            self._ids[start:stop] = every() if every is not None else list(got)
        self._id_chunks = []

    def ids_of(self, rows: npt.NDArray[np.int64] | Sequence[int]) -> list[str]:
        """The ids of ``rows`` (reading only the stored ids they need)."""
        rl = rows.tolist() if isinstance(rows, np.ndarray) else list(rows)
        if self._id_chunks:
            self._load_ids(rl)
        return [self._ids[r] for r in rl]

    def ids(self) -> list[str]:
        """The live ids, in row order."""
        self._load_ids()
        return [self._ids[r] for r in np.flatnonzero(self._live[: self.nrows]).tolist()]

    def __contains__(self, rid: object) -> bool:
        return rid in self._row_of

    def has_none_of(self, ids: Iterable[str]) -> bool:
        """Whether none of ``ids`` is stored (one set operation)."""
        return self._row_of.keys().isdisjoint(ids)

    def row_of(self, rid: str) -> int | None:
        """The live row of ``rid``."""
        return self._row_of.get(rid)

    def vector_dimension(self, field: str) -> int | None:
        """The dimension of a vector field (``None`` when unknown)."""
        index = self.indexes.get(field)
        if index is not None and index.dim is not None:
            return index.dim
        return self.dimensions

    # -- validation -----------------------------------------------------------------------------
    def prepare(
        self, records: Sequence[Record], what: str = "records"
    ) -> tuple[list[Row], dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]]:
        """Validate records and split them into rows and per-field vector batches.

        Raises before anything changes: a bad vector or a value no store holds names the record
        (:mod:`dk_vector_plugins.values`). Record ids must be set.
        """
        by_field: dict[str, tuple[list[int], list[Any]]] = {}
        ids: list[str] = []
        datas: list[dict[str, Any]] = []
        metas: list[dict[str, Any]] = []
        vinfos: list[dict[str, dict[str, Any]]] = []
        infos: dict[str, tuple[list[int], list[dict[str, Any]]]] = {}  # field -> rows, non-empty info
        for i, rec in enumerate(records):
            if not isinstance(rec, Record):
                raise InvalidVectorError(f"{what}[{i}] must be a Record, got {type(rec).__name__}")
            data, vectors = split_record(rec)
            vinfo: dict[str, dict[str, Any]] = {}
            for name, vf in vectors.items():
                lst = by_field.setdefault(name, ([], []))
                lst[0].append(i)
                lst[1].append(vf.value)
                vinfo[name] = info = vf.info()
                if info:
                    got = infos.setdefault(name, ([], []))
                    got[0].append(i)
                    got[1].append(info)
            for name in self.list_vector_fields:  # a list of numbers there: kept, and a vector too
                value = data.get(name)
                if isinstance(value, Field):
                    value = value.value
                if is_number_list(value):
                    lst = by_field.setdefault(name, ([], []))
                    lst[0].append(i)
                    lst[1].append(value)
            ids.append(str(rec.id))
            datas.append(data)
            metas.append(rec.metadata)
            vinfos.append(vinfo)
        # the table keeps its own copies of the values as every backend reads them back: a caller
        # mutating its record later must not reach them, and memory must answer as file and S3 do
        datas = normalize_dicts(datas, ids, "data")
        metas = normalize_dicts(metas, ids, "metadata")
        check_names(by_field, {name: ids[pos[0]] for name, (pos, _) in by_field.items()}, "data")
        for name, (positions, found) in infos.items():
            owners = [ids[p] for p in positions]
            for p, info in zip(positions, normalize_dicts(found, owners, f"vector field {name!r}:")):
                vinfos[p][name] = info
        rows: list[Row] = list(zip(ids, datas, metas, vinfos))
        batches: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = {}
        for name, (positions, values) in by_field.items():
            dim = self.vector_dimension(name)
            try:
                mat = as_vector_batch(_stacked(values), dim, what=f"vector field {name!r} of {what}")
            except DimensionMismatchError:
                for pos, v in zip(positions, values):
                    if dim is not None and len(v) != dim:
                        raise DimensionMismatchError(
                            f"vector field {name!r} of record {rows[pos][0]!r} has {len(v)} "
                            f"dimensions, expected {dim}"
                        ) from None
                raise
            batches[name] = (np.asarray(positions, dtype=np.int64), mat)
        return rows, batches

    # -- writes ---------------------------------------------------------------------------------
    def append(
        self,
        rows: Sequence[Row],
        batches: Mapping[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]],
        adopt: bool = True,
        bare_ids: Sequence[str] | None = None,
        fresh: bool = False,
        norms: Mapping[str, npt.NDArray[np.float32]] | None = None,
        id_rows: Mapping[str, int] | None = None,
    ) -> None:
        """Append validated rows (see :meth:`prepare`); each replaces the live row of its id.

        With ``adopt`` the vector matrices of ``batches`` are handed over: a big one becomes part
        of the index as it is, so the caller must not change it afterwards (the arrays that
        :meth:`prepare` returns are the table's own copies). ``bare_ids`` stands for rows that hold
        vectors only (``rows`` is then ignored); ``fresh`` promises that no id is stored yet
        and none appears twice; ``id_rows`` may hold their id -> row entries already.
        """
        ids = list(bare_ids) if bare_ids is not None else [r[0] for r in rows]
        if not ids:
            return
        self._trim_lists()
        start = self.nrows
        m = len(ids)
        self._grow(start + m)
        self._ids.extend(ids)
        if bare_ids is not None:
            none: list[Any] = [None] * m
            self._data.extend(none)
            self._meta.extend(none)
            self._vinfo.extend(none)
        else:
            self._data.extend(r[1] for r in rows)
            self._meta.extend(r[2] for r in rows)
            self._vinfo.extend(r[3] or None for r in rows)
        retired: list[int] = []
        if fresh:  # no id stored, none twice: no lookup per row (nor at all, while none is built)
            if self._row_of_map is not None:
                if id_rows is not None and len(id_rows) == m and id_rows.get(ids[0]) == start:
                    self._row_of_map.update(id_rows)  # built by the planner for these very rows
                else:
                    self._row_of_map.update(zip(ids, range(start, start + m)))
        elif len(new_rows := dict(zip(ids, range(start, start + m)))) == m and self._row_of.keys().isdisjoint(
            new_rows
        ):
            self._row_of.update(new_rows)  # only new ids, none twice: no per-row loop
        else:
            retired = [self._row_of[rid] for rid in ids if rid in self._row_of]
            # the same id twice in one batch: the earlier row is retired by the later one
            for off, rid in enumerate(ids):
                prev = self._row_of.get(rid)
                if prev is not None and prev >= start:
                    retired.append(prev)
                self._row_of[rid] = start + off
        self._n = start + m
        self._live[start : start + m] = True
        for name, (positions, mat) in batches.items():
            index = self.indexes.get(name)
            if index is None:
                index = self.indexes[name] = VectorIndex(self.vector_dimension(name))
            index.set_rows(
                positions + start,
                mat,
                size_hint=self._size_hint,
                adopt=adopt,
                sqnorm=None if norms is None else norms.get(name),
            )
        if retired:
            self._retire(np.asarray(retired, dtype=np.int64))
        for field, col in self._columns.items():
            if bare_ids is not None:
                col.set(range(start, start + m), [lookup(rid, {}, {}, field) for rid in ids])
            else:
                col.set(range(start, start + m), [lookup(r[0], r[1], r[2], field) for r in rows])

    def _grow(self, n: int) -> None:
        if n > len(self._live):
            cap = max(n, int(len(self._live) * 1.25) + 16, self._size_hint)
            live = np.zeros(cap, dtype=np.bool_)
            live[: self.nrows] = self._live[: self.nrows]
            self._live = live

    def _retire(self, rows: npt.NDArray[np.int64]) -> None:
        self._live[rows] = False
        for r in rows.tolist():
            self._data[r] = None
            self._meta[r] = None
            self._vinfo[r] = None
        for index in self.indexes.values():
            index.clear_rows(rows)

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Retire the live rows of ``ids``; returns the ids that existed."""
        rows, gone = [], []
        for rid in ids:
            r = self._row_of.pop(rid, None)
            if r is not None:
                rows.append(r)
                gone.append(rid)
        if rows:
            self._retire(np.asarray(rows, dtype=np.int64))
        return gone

    def clear(self) -> int:
        """Remove every row; returns how many live records there were."""
        n = len(self)
        dims = {name: idx.dim for name, idx in self.indexes.items()}
        hint = self._size_hint
        provider, lists = self.text_provider, self.list_vector_fields
        self.__init__(self.dimensions)  # type: ignore[misc]
        self._size_hint = hint
        self.text_provider, self.list_vector_fields = provider, lists
        if hint:
            self._prealloc(hint)
        for name, dim in dims.items():
            self.indexes[name] = VectorIndex(dim)
        return n

    def truncate(self, nrows: int) -> None:
        """Drop rows ``nrows..``, live or not (the last segments of a stored table, about to be
        replaced by their merge). Rows before ``nrows`` that the dropped ones retired stay
        retired: the merge retires them again."""
        if nrows >= self.nrows:
            return
        dropped = (np.flatnonzero(self._live[nrows : self.nrows]) + nrows).tolist()
        if self._row_of_map is not None and dropped:
            self._load_ids(dropped)
            for r in dropped:
                self._row_of_map.pop(self._ids[r], None)
        # a stored segment's rows still in storage are read by segment: one cut in two is read now
        for a, b, _ in self._chunks:
            if a < nrows < b:
                self._load_rows(range(a, nrows))
        for a, b, _ in self._id_chunks:
            if a < nrows < b:
                self._load_ids(range(a, nrows))
        self._chunks = [c for c in self._chunks if c[1] <= nrows]
        self._id_chunks = [c for c in self._id_chunks if c[1] <= nrows]
        self._trim_lists()
        for rows in (self._ids, self._data, self._meta, self._vinfo):
            del rows[nrows:]
        self._live[nrows : self.nrows] = False
        self._n = nrows
        self._columns = {}  # rebuilt from the rows when a filter next needs them
        for index in self.indexes.values():
            index.truncate(nrows)
        for text in self.texts.values():
            text.truncate(nrows)

    def compact(self) -> None:
        """Drop dead rows (renumbers rows; ids, vectors and columns are kept)."""
        if self.dead == 0:
            return
        self.materialize()
        self._load_ids()
        keep = np.flatnonzero(self._live[: self.nrows])
        self._n = len(keep)
        self._ids = [self._ids[r] for r in keep.tolist()]
        self._live = np.ones(len(keep), dtype=np.bool_)
        self._data = [self._data[r] for r in keep]
        self._meta = [self._meta[r] for r in keep]
        self._vinfo = [self._vinfo[r] for r in keep]
        self._row_of_map = {rid: i for i, rid in enumerate(self._ids)}
        self.indexes = {name: idx.take(keep) for name, idx in self.indexes.items()}
        self.texts = {name: text.take(keep) for name, text in self.texts.items()}
        self._columns = {name: col.take(keep) for name, col in self._columns.items()}

    # -- rows loaded from storage ---------------------------------------------------------------
    def load_segment(
        self,
        ids: Sequence[str] | IdsLoader,
        count: int,
        deletes: Sequence[str],
        vectors: Mapping[str, StoredVectors],
        loader: ChunkLoader | None,
        clear: bool = False,
        fresh: bool = False,
        texts: Mapping[str, tuple[str, Callable[[int], Postings]]] | None = None,
        codes: Mapping[str, Callable[[], Int8Codes]] | None = None,
    ) -> None:
        """Apply a stored segment of ``count`` rows: clear (if it says so), its deletes, then its rows.

        ``ids`` is the rows' ids or a function reading them. A ``fresh`` segment promises that
        none of its ids is stored before it and none appears twice: its ids are then read only
        when something needs them, and no id lookup is built. Row data stays in storage until
        first use when ``loader`` is given. Vector matrices are adopted as index parts without
        copying (e.g. memory-mapped). ``texts`` are, per field, the analyzer key of the segment's
        stored full-text postings and a function reading them (called with the segment's first
        row, on the field's first search; postings of another analyzer are not used). ``codes``
        read the int8 codes stored for a vector field (on its first int8 search).
        """
        if clear:
            self.clear()
        if deletes:
            self.delete(deletes)
        m = count
        if m == 0:
            return
        for name, (key, load) in (texts or {}).items():
            self.texts.setdefault(name, TextIndex()).add_stored(self.nrows, m, load, key)
        for name, (mat, _, _) in vectors.items():
            dim = self.vector_dimension(name)
            if dim is not None and mat.shape[1] != dim:
                raise DimensionMismatchError(
                    f"stored vector field {name!r} has {mat.shape[1]} dimensions, the store has {dim}"
                )
        start = self.nrows
        if fresh and not self._columns:
            if self._row_of_map is not None and not self._row_of_map:
                self._row_of_map = None  # nothing live yet: build the lookup only when needed
            self._grow(start + m)
            if loader is None:
                loader = _no_data_loader(m)
            if len(self._ids) < start + m:  # no slots filled ahead (expect_rows): add them
                self._trim_lists()
                for slots in (self._ids, self._data, self._meta, self._vinfo):
                    slots.extend([UNLOADED] * m)
            self._n = start + m
            if callable(ids):
                self._id_chunks.append((start, start + m, ids))
                if self._row_of_map is not None:  # keep the lookup current: read them now
                    self._load_ids()
            else:
                self._ids[start : start + m] = ids
            if self._row_of_map is not None:
                self._row_of_map.update(zip(self._ids[start : start + m], range(start, start + m)))
            self._live[start : start + m] = True
            self._adopt_vectors(start, vectors, codes)
        else:
            id_list = list(ids() if callable(ids) else ids)
            if len(id_list) != m:
                from .errors import StorageError

                raise StorageError(f"a stored segment lists {len(id_list)} ids, its manifest says {m}")
            if loader is not None and self._columns:  # filter columns need the data now
                parts = loader()
                loader = None
                rows: list[Row] = [(rid, p[0], p[1], p[2]) for rid, p in zip(id_list, parts)]
            else:
                lazy = UNLOADED if loader is not None else {}
                rows = [(rid, lazy, lazy, lazy) for rid in id_list]
            # the vectors first, adopted as they are (no copy, nothing read while loading), so
            # that the rows this segment retires (ids stored twice) clear them too
            self._adopt_vectors(start, vectors, codes)
            self.append(rows, {})
        if loader is not None:
            self._chunks.append((start, start + m, loader))

    def _adopt_vectors(
        self,
        start: int,
        vectors: Mapping[str, StoredVectors],
        codes: Mapping[str, Callable[[], Int8Codes]] | None = None,
    ) -> None:
        """Stored vectors of rows ``start, start + 1, ...`` become parts of the field indexes."""
        for name, (mat, present, sqnorm) in vectors.items():
            index = self.indexes.get(name)
            if index is None:
                index = self.indexes[name] = VectorIndex(self.vector_dimension(name))
            index.pad_to(start)
            index.append_block(mat, present, sqnorm, (codes or {}).get(name))

    def _load_rows(self, rows: Iterable[int]) -> None:
        """Load the data of those ``rows`` that are still in storage (only those rows are parsed)."""
        if not self._chunks:
            return
        import bisect

        starts = [c[0] for c in self._chunks]
        wanted: dict[int, list[int]] = {}
        for r in rows:
            if self._data[r] is UNLOADED:
                wanted.setdefault(bisect.bisect_right(starts, r) - 1, []).append(r)
        for ci in sorted(wanted):
            start, stop, loader = self._chunks[ci]
            parts = loader()
            if len(parts) != stop - start:
                from .errors import StorageError

                raise StorageError(
                    f"a stored segment holds {len(parts)} rows, its manifest says {stop - start}"
                )
            for r in wanted[ci]:
                if self._data[r] is UNLOADED:
                    data, meta, vinfo = parts[r - start]
                    self._data[r], self._meta[r], self._vinfo[r] = data, meta, vinfo or None

    def materialize(self) -> None:
        """Load every row (and id) still in storage."""
        self._load_ids()
        for start, stop, loader in self._chunks:  # a chunk at a time, no lookup per row
            parts = loader()
            if isinstance(parts, _NoData):  # vectors only: every row empty
                none: list[Any] = [None] * (stop - start)
                self._data[start:stop] = none
                self._meta[start:stop] = none
                self._vinfo[start:stop] = none
                continue
            if len(parts) != stop - start:
                from .errors import StorageError

                raise StorageError(f"a stored segment holds {len(parts)} rows, its manifest says {stop - start}")
            data, meta, vinfo = self._data, self._meta, self._vinfo
            for r in range(start, stop):
                if data[r] is UNLOADED:
                    data[r], meta[r], vinfo[r] = parts[r - start]
                    vinfo[r] = vinfo[r] or None
        self._chunks = []

    def live_rows(self, start: int = 0) -> tuple[list[str], list[Row] | None]:
        """The live ids of rows ``start..`` in row order, and their rows' parts (``None`` when
        no such row holds data, metadata or vector info: a table of vectors only)."""
        live = (np.flatnonzero(self._live[start : self.nrows]) + start).tolist()
        if start == 0:
            self.materialize()
        else:
            self._load_rows(live)
            self._load_ids(live)
        ids = [self._ids[r] for r in live]
        data, meta, vinfo = self._data, self._meta, self._vinfo
        if not any(data[r] or meta[r] or vinfo[r] for r in live):
            return ids, None
        rows = [(rid, data[r] or {}, meta[r] or {}, vinfo[r] or {}) for rid, r in zip(ids, live)]
        return ids, rows

    def row_parts(self, row: int) -> Row:
        """The stored parts of a live row (loading it if needed)."""
        self._load_rows([row])
        return (self.ids_of([row])[0], self._data[row] or {}, self._meta[row] or {}, self._vinfo[row] or {})

    # -- reads ----------------------------------------------------------------------------------
    def record(self, row: int, fields: Sequence[str] | None = None) -> Record:
        """A copy of the record at ``row`` (optionally only ``fields``) that the caller may change."""
        return self.records([row], fields)[0]

    def records(self, rows: Sequence[int], fields: Sequence[str] | None = None) -> list[Record]:
        """Copies of the records at ``rows`` (optionally only ``fields``), in that order: their
        rows read and each field's vectors gathered in one go, not row by row."""
        if not rows:
            return []
        self._load_rows([r for r in rows if self._data[r] is UNLOADED])
        ids = self.ids_of(rows)
        arr = np.asarray(rows, dtype=np.int64)
        # per vector field: its vectors of the rows (one gather) and which rows hold one
        vectors: list[tuple[str, list[FloatArray], list[bool] | None]] = []
        last = max(rows)
        for name, index in self.indexes.items():
            if index.count and (fields is None or name in fields):
                held: list[bool] | None = None  # None: every row holds one (the common case)
                if index.count < index.nrows or last >= index.nrows:
                    held = index.holds(arr).tolist()
                vectors.append((name, list(index.gather(arr)), held))
        n = len(rows)
        datas = _copied_all(map(self._data.__getitem__, rows))
        metas = _copied_all(map(self._meta.__getitem__, rows))
        vinfo_of = self._vinfo
        for name, mats, held_of in vectors:
            # the rows that get this field's vector: they hold one, and their data lacks the
            # name (a plain list of numbers, also indexed, reads back as it was given)
            take = [j for j in range(n) if (held_of is None or held_of[j]) and name not in datas[j]]
            infos = [(vinfo_of[rows[j]] or {}).get(name) for j in take]
            made = VectorField._stored_all([mats[j] for j in take], name, _copied_all(infos))
            for j, field in zip(take, made):
                datas[j][name] = field
        out: list[Record] = []
        new_record = Record.__new__
        for j in range(n):
            rec = new_record(Record)
            rec._id = ids[j]
            values = datas[j]
            if fields is not None:
                values = {k: values[k] for k in fields if k in values}
            rec._data = values
            rec.metadata = metas[j]
            out.append(rec)
        return out

    def get(self, rid: str) -> Record | None:
        """A copy of the live record ``rid``, or ``None``."""
        row = self._row_of.get(rid)
        return None if row is None else self.record(row)

    def column(self, field: str) -> Column:
        """The dictionary-encoded column of ``field`` (built on first use, then kept current)."""
        col = self._columns.get(field)
        if col is None:
            col = Column()
            live = np.flatnonzero(self._live[: self.nrows])
            self.materialize()
            self._load_ids()
            col.set(
                live.tolist(),
                [
                    lookup(self._ids[r], self._data[r] or {}, self._meta[r] or {}, field)
                    for r in live.tolist()
                ],
            )
            col.extend_to(self.nrows)
            self._columns[field] = col
        return col

    def mask(self, expr: Expr | None) -> BoolArray:
        """Live rows satisfying ``expr`` (all live rows for ``None``)."""
        live: BoolArray = self._live[: self.nrows]
        if expr is None:
            copied: BoolArray = live.copy()
            return copied
        out: BoolArray = expr.mask(self.column, self.nrows) & live
        return out

    def query(self, query: Query | None, expr: Expr | None = None) -> list[Record]:
        """Records matching ``query``: filtered by mask, then sorted, paged and projected."""
        fields = query.fields if query is not None else None
        return self.records(self.query_rows(query, expr), fields)

    def query_ids(self, query: Query | None, expr: Expr | None = None) -> list[str]:
        """The ids of the records :meth:`query` answers, in its order (no record is built)."""
        return self.ids_of(self.query_rows(query, expr))

    def records_of(
        self, ids: Sequence[str], expr: Expr | None = None, fields: Sequence[str] | None = None
    ) -> list[Record]:
        """Copies of the live records of ``ids`` that satisfy ``expr``, in that order (projected on
        ``fields``); an id no longer stored, or whose record no longer satisfies ``expr``, is left
        out. Reads only the rows of those ids."""
        rows = [r for r in (self._row_of.get(rid) for rid in ids) if r is not None]
        self._load_rows(rows)
        if expr is not None:
            rows = [r for r in rows if expr.evaluate(*self.row_parts(r)[:3])]
        return self.records(rows, fields)

    def query_rows(self, query: Query | None, expr: Expr | None = None) -> list[int]:
        """The rows of the records matching ``query`` (or ``expr`` when there is no query):
        filtered by mask, then sorted and paged."""
        rows = np.flatnonzero(self.mask(expr if query is None else query.expression()))
        specs = query.sort_specs if query is not None else []
        row_list: list[int] = rows.tolist()
        if specs:
            self._load_rows(row_list)
            self._load_ids(row_list if len(row_list) < 1024 else None)
        for spec in reversed(specs):  # stable sorts, last key first
            col_vals = [
                lookup(self._ids[r], self._data[r] or {}, self._meta[r] or {}, spec.field) for r in row_list
            ]
            order = sorted(
                range(len(row_list)),
                key=lambda i: _sort_key(col_vals[i]),
                reverse=spec.order is SortOrder.DESC,
            )
            if spec.order is SortOrder.DESC:  # absent values still last
                present = [i for i in order if col_vals[i] is not MISSING and col_vals[i] is not None]
                absent = [i for i in order if col_vals[i] is MISSING or col_vals[i] is None]
                order = present + sorted(absent)
            row_list = [row_list[i] for i in order]
        if query is not None:
            off = query.offset_value or 0
            row_list = row_list[off:]
            if query.limit_value is not None:
                row_list = row_list[: query.limit_value]
        return row_list

    def count(self, expr: Expr | None = None) -> int:
        """How many live records satisfy ``expr``."""
        if expr is None:
            return len(self)
        return int(np.count_nonzero(self.mask(expr)))

    # -- full-text search -----------------------------------------------------------------------
    @property
    def text_settings(self) -> TextSettings | None:
        """The store's analyzer and BM25 settings (``None``: the table has no store)."""
        return None if self.text_provider is None else self.text_provider()

    def index_rows(self, rows: Sequence[Row], fields: Iterable[str] | None = None) -> dict[str, Postings]:
        """The full-text postings of ``rows`` for ``fields`` (default: the configured
        ``text_search_fields``), relative to the first row: what a commit stores with them."""
        settings = self.text_settings
        if settings is None or not rows or not (settings.fields if fields is None else fields):
            return {}
        return {
            field: index_texts(
                (row_text(rid, data, meta, field) for rid, data, meta, _ in rows),
                settings.analyzer.analyze,
                0,
                settings.key,
            )
            for field in (settings.fields if fields is None else fields)
        }

    def postings_of_rows(self, rows: npt.NDArray[np.int64], fields: Iterable[str]) -> dict[str, Postings]:
        """The postings the index holds for ``rows`` (ascending), as rows ``0 ..`` in that order,
        per field of ``fields`` it covers them for (made by the store's analyzer): what a merge or
        a compaction stores for the rows it rewrites, without analyzing their text again. A field
        some of whose rows are not indexed yet is left out."""
        settings = self.text_settings
        out: dict[str, Postings] = {}
        if settings is None or not len(rows):
            return out
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        for field in fields:
            index = self.texts.get(field)
            if index is None or any(a < hi and lo < b for a, b in index.gaps(hi)):
                continue
            if any(p.analyzer != settings.key for p in index.parts if p.start < hi and lo < p.stop):
                continue
            parts = index.take(rows).loaded()
            merged = parts[0]
            for part in parts[1:]:
                merged = merge_postings(merged, part)
            out[field] = merged
        return out

    def adopt_texts(self, start: int, texts: Mapping[str, Postings]) -> None:
        """Postings built for rows ``start ..`` (by :meth:`index_rows` at commit) join the index."""
        for field, postings in texts.items():
            index = self.texts.setdefault(field, TextIndex())
            if not index.parts or index.parts[-1].stop <= start:  # rows before may be indexed later
                index.add(postings.at(start))
            index.resolve(postings.analyzer)

    def text_index(self, field: str) -> TextIndex:
        """The postings of ``field`` over every row (rows not indexed yet are indexed now)."""
        settings = self.text_settings
        assert settings is not None, "the store sets text_provider before a text search"
        index = self.texts.setdefault(field, TextIndex())
        index.resolve(settings.key)
        for a, b in index.gaps(self.nrows):
            self._load_rows(r for r in range(a, b) if self._live[r])
            data, meta, live = self._data, self._meta, self._live
            ids = self.ids_of(range(a, b)) if names_the_id(field) else None
            texts = (
                row_text(None if ids is None else ids[r - a], data[r], meta[r], field)
                if live[r] and data[r] is not UNLOADED
                else None
                for r in range(a, b)
            )
            index.add(index_texts(texts, settings.analyzer.analyze, a, settings.key))
        return index

    def string_fields(self) -> list[str]:
        """The top-level fields holding a string (or a list of strings) in some live record."""
        found: set[str] = set()
        live = np.flatnonzero(self._live[: self.nrows]).tolist()
        self._load_rows(live)
        for r in live:
            data = self._data[r]
            if data:
                found.update(k for k, v in data.items() if k not in found and text_of(v) is not None)
        return sorted(found)

    def text_tops(
        self, terms: Sequence[Sequence[str]], fields: Sequence[str], k: int, expr: Expr | None = None
    ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
        """BM25 top-``k`` rows and scores per query (one list of terms each) over ``fields`` of
        the live rows that satisfy ``expr`` (see :mod:`dk_vector_plugins.textindex`)."""
        settings = self.text_settings
        assert settings is not None, "the store sets text_provider before a text search"
        indexes = [self.text_index(f) for f in fields]
        live: BoolArray = self._live[: self.nrows]
        mask = None if expr is None else self.mask(expr)
        cache = self._bm25_cache.setdefault(tuple(fields), {})
        tops = bm25_top(indexes, terms, live, mask, k, settings.k1, settings.b, self.ids_of, cache)
        # a field without text? Only when none of the searched fields holds text is the search
        # refused, so a query with hits cannot be: the same answer for every query
        if any(len(rows) == 0 for rows, _ in tops) and live.any():
            n_live = int(np.count_nonzero(live))
            key = (tuple((ix.uid, ix.version) for ix in indexes), self.nrows, n_live)
            held = cache.get("holds")
            if held is None or held[0] != key:
                held = (key, [bool(ix.lengths(self.nrows)[live].any()) for ix in indexes])
                cache["holds"] = held
            blank = field_without_text(fields, held[1])
            if blank is not None:
                raise no_text_error(blank, self.string_fields())
        return tops

    def text_search(
        self, terms: Sequence[Sequence[str]], fields: Sequence[str], k: int, expr: Expr | None = None
    ) -> list[list[TextSearchResult]]:
        """:meth:`text_tops` as results."""
        return self.text_results(self.text_tops(terms, fields, k, expr), fields)

    def text_results(
        self, tops: Iterable[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]], fields: Sequence[str]
    ) -> list[list[TextSearchResult]]:
        """The text search results for top-``k`` rows and scores of this table, one list per
        query (as :meth:`vector_results` is for vector search: a plugin that ranks the rows
        elsewhere builds the very same results with it)."""
        fields_t = tuple(fields)
        return [
            [
                TextSearchResult(record=rec, score=score, text_fields=fields_t)
                for rec, score in zip(self.records(rows.tolist()), scores.tolist())
            ]
            for rows, scores in tops
        ]

    def hybrid_search(
        self, text: TextSearchRequest, vector: SearchRequest, config: HybridSearchConfig, k: int
    ) -> list[HybridSearchResult]:
        """Both sides of a hybrid search on this table as it is (one snapshot), fused, and only
        the ``k`` fused hits' records built."""
        rows_t, scores_t = self.text_tops(text.terms, text.text_fields, text.k, text.filter)[0]
        exact = vector.options.get("exact", "auto")
        top = self.vector_tops(vector.queries, vector.vector_field, vector.k, vector.metric, vector.filter, exact)[0]
        ids_t, ids_v = self.ids_of(rows_t), self.ids_of(top.rows)
        fused = fuse_ranked(list(zip(ids_t, scores_t.tolist())), list(zip(ids_v, top.scores.tolist())), config, k)
        row_of = dict(zip(ids_v, top.rows.tolist())) | dict(zip(ids_t, rows_t.tolist()))
        return hybrid_results(fused, self.records([row_of[hit[0]] for hit in fused]), config)

    # -- vector search --------------------------------------------------------------------------
    def vector_search(
        self,
        queries: npt.NDArray[np.float32],
        field: str,
        k: int,
        metric: str,
        expr: Expr | None = None,
        exact: str = "auto",
    ) -> list[list[VectorSearchResult]]:
        """Exact top-``k`` per query over the live rows that hold ``field`` and satisfy ``expr``.

        ``exact``: which scan shortlists the rows (``"auto"``, ``"int8"``, ``"float32"``; the
        results are the same, see :func:`~dk_vector_plugins.kernel.choose_exact`).
        """
        return self.vector_results(self.vector_tops(queries, field, k, metric, expr, exact), field, metric)

    def vector_tops(
        self,
        queries: npt.NDArray[np.float32],
        field: str,
        k: int,
        metric: str,
        expr: Expr | None = None,
        exact: str = "auto",
    ) -> list[TopK]:
        """:meth:`vector_search`'s top-``k`` rows and scores per query (no records built)."""
        index = self.indexes.get(field)
        if index is None or index.count == 0:
            empty = np.zeros(0, dtype=np.int64)
            return [TopK(empty, np.zeros(0, dtype=np.float64), None) for _ in range(len(queries))]
        mask = None if expr is None else self.mask(expr)
        return index.search(queries, k, metric, self.ids_of, mask, exact=exact)

    def vector_results(self, tops: Sequence[TopK], field: str, metric: str) -> list[list[VectorSearchResult]]:
        """The search results for top-``k`` rows of this table, one list per query, best first.

        :meth:`vector_search` builds its results with it; a plugin that runs the kernel elsewhere
        (e.g. over segments on other processes) and merges their top-``k`` into rows of this
        table builds the very same results with it.
        """
        if tops:  # the hits' vectors in one read per part (they may still be in storage)
            hit_rows = unique_ints(np.concatenate([t.rows for t in tops]))
            for index in self.indexes.values():
                if index.in_storage:
                    index.gather(hit_rows[hit_rows < index.nrows])
        out: list[list[VectorSearchResult]] = []
        for top in tops:
            hits = []
            rows = top.rows.tolist()
            for j, (row, rec) in enumerate(zip(rows, self.records(rows))):
                info = (self._vinfo[row] or {}).get(field, {})
                src = info.get("source_field")
                source_text = rec.get_value(src) if src else None
                dist = None if top.distances is None else float(top.distances[j])
                meta: dict[str, Any] = {"metric": metric}
                if dist is not None:
                    meta["distance"] = dist
                if top.reranked is not None:  # how many rows the exact ranking scored, by which scan
                    meta["reranked"] = top.reranked
                    meta["exact"] = top.exact
                hits.append(
                    VectorSearchResult(
                        record=rec,
                        score=float(top.scores[j]),
                        source_text=source_text if isinstance(source_text, str) else None,
                        vector_field=field,
                        metadata=meta,
                        distance=dist,
                    )
                )
            out.append(hits)
        return out

    def check_search(self, field: str, dimensions: int) -> bool:
        """Validate a search of ``field`` with queries of ``dimensions``; ``True`` if it holds vectors.

        An unknown field (when the table has any vector field) and a dimension mismatch raise.
        """
        if self.indexes and field not in self.indexes:
            known = ", ".join(sorted(self.indexes))
            raise InvalidRequestError(f"unknown vector field {field!r}; this store's vector fields: {known}")
        dim = self.vector_dimension(field)
        if dim is not None and dimensions != dim:
            raise DimensionMismatchError(
                f"query vector has {dimensions} dimensions, field {field!r} has {dim}"
            )
        index = self.indexes.get(field)
        return index is not None and index.count > 0

    def vector_nbytes(self) -> int:
        """Bytes held by the vector indexes."""
        return sum(i.nbytes for i in self.indexes.values())


class _NoData(Sequence[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]):
    """The rows of a segment that holds vectors only: every row empty."""

    _EMPTY: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] = ({}, {}, {})

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._EMPTY] * len(range(*i.indices(self._n)))
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._EMPTY


def _no_data_loader(n: int) -> ChunkLoader:
    rows = _NoData(n)
    return lambda: rows


def _sort_key(v: Any) -> tuple[int, Any]:
    """Total order across types: numbers, then strings, then others; absent/None last."""
    if v is MISSING or v is None:
        return (3, 0)
    if isinstance(v, (bool, int, float)):
        return (0, v)
    if isinstance(v, str):
        return (1, v)
    return (2, repr(v))


def check_ids(ids: Iterable[Any]) -> None:
    """Record ids must be non-empty strings."""
    for rid in ids:
        if not isinstance(rid, str) or not rid:
            raise DkvError(f"record ids must be non-empty strings, got {rid!r}")
