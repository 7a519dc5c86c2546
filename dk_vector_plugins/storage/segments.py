"""Read-only access to a table's segments from another process (e.g. a Dask worker).

A store's own reads go through :class:`~dk_vector_plugins.storage.driver.TableStorage`, which
loads a version whole. A process that searches *some* rows of *some* segments of that version
needs less, and must not write:

* :func:`snapshot` describes the version a store has loaded (:class:`TableSnapshot`): its
  segments in table order (:class:`SegmentInfo`: name, rows, vector fields, object keys), with no
  manifest dicts to interpret;
* :class:`StoreSpec` names the objects of a file or S3 store in a picklable form (it travels with
  tasks), and :func:`open_reader` opens them read-only where it arrives;
* :class:`SegmentReader` reads a segment's ids, a row range of its vectors (memory-mapped on a
  local store; only that range's bytes on S3), the int8 codes stored of a row range (likewise),
  its presence masks and its rows, with the table's own programs
  (:class:`~dk_vector_plugins.storage.log_format.TableLogic`) on the object stores
  the backends use (:class:`~dk_vector_plugins.storage.local.LocalObjectStore`,
  :class:`~dk_vector_plugins.storage.s3.S3ObjectStore`).

Segments are immutable, so what a reader returns may be cached by segment name.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from ..errors import StorageError
from ..quant import Int8Codes
from ..textindex import Postings
from .driver import TableStorage, sync_runner
from .local import LocalObjectStore
from .log_format import (
    CODE_OBJECTS,
    SEGMENTS,
    Checksums,
    TableLogic,
    TableOptions,
    TableState,
    block_digests,
    decode_ids,
    digest_list_checksum,
    has_row_data,
    id_keys,
    segment_keys,
    serve_inline,
    verify_npy,
)
from .npy import npy_header, npy_header_bytes
from .ops import GetArray, GetRange, Many, Program, SyncObjectStore
from .row_codec import RowParts
from .s3 import S3ObjectStore, client_kwargs, require

__all__ = [
    "SegmentInfo",
    "SegmentReader",
    "StoreSpec",
    "TableSnapshot",
    "VectorFieldInfo",
    "open_reader",
    "snapshot",
]

#: Parallel requests (and pooled connections) of a reader on S3.
READER_CONCURRENCY = 16


# --- what a version holds ----------------------------------------------------------------------


@attrs.frozen
class VectorFieldInfo:
    """One vector field of a segment.

    :ivar name: the field's name.
    :ivar dim: its dimension.
    :ivar count: how many of the segment's rows hold a vector of this field.
    :ivar vectors_key: the object holding the vectors (float32 ``.npy``, rows x dim; rows without a
        vector hold zeros).
    :ivar mask_key: the object saying which rows hold one (``None``: every row does).
    :ivar codes_keys: the objects holding the int8 codes of its rows, in the order of
        :data:`~dk_vector_plugins.storage.log_format.CODE_OBJECTS` (codes, scales, residual norms,
        squared norms; empty: the segment stores none).
    """

    name: str
    dim: int
    count: int
    vectors_key: str
    mask_key: str | None = None
    codes_keys: tuple[str, ...] = ()

    @property
    def has_mask(self) -> bool:
        """Whether some rows hold no vector of this field (a presence mask is stored)."""
        return self.mask_key is not None

    @property
    def has_codes(self) -> bool:
        """Whether the segment stores the int8 codes of this field's rows."""
        return bool(self.codes_keys)


@attrs.frozen
class SegmentInfo:
    """One immutable segment of a table version.

    :ivar name: the segment's name (unique for ever: a key for caches).
    :ivar rows: its row count.
    :ivar fields: its vector fields, by name order.
    :ivar has_rows: whether it stores row data (data, metadata); without, every row is empty.
    :ivar id_format: how its ids are stored (``"txt"``: one per line; ``"json"``).
    :ivar deletes: how many ids it deletes (tombstones of earlier rows).
    :ivar checksums: the checksums of its objects, which a reader verifies (``None``: a segment
        written in table format 1 or 2, which has none).
    :ivar inline: the objects of a small segment kept inside its manifest, by key (they travel
        with the snapshot; ``None``: the segment's objects are stored on their own).
    """

    name: str
    rows: int
    fields: tuple[VectorFieldInfo, ...] = ()
    has_rows: bool = False
    id_format: str = "json"
    deletes: int = 0
    checksums: Checksums | None = attrs.field(default=None, eq=False, repr=False)
    inline: Mapping[str, bytes] | None = attrs.field(default=None, eq=False, repr=False)
    #: The full-text postings stored with the segment, per field: its manifest entry (``key``,
    #: ``analyzer``, ``size``).
    texts: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], inline: Mapping[str, bytes] | None = None) -> SegmentInfo:
        """The segment a manifest entry describes (``inline``: the loaded inline objects, of
        which an inline segment takes its own)."""
        base = f"{SEGMENTS}{entry['name']}"
        rows = int(entry["rows"])
        fields = tuple(
            VectorFieldInfo(
                name,
                int(f["dim"]),
                int(f["count"]),
                f"{base}.{f['key']}.npy",
                f"{base}.{f['key']}.mask.npy" if int(f["count"]) < rows else None,
                tuple(f"{base}.{f['key']}.{c}.npy" for c in CODE_OBJECTS) if f.get("codes") else (),
            )
            for name, f in sorted(entry.get("fields", {}).items())
        )
        return cls(
            str(entry["name"]),
            rows,
            fields,
            has_row_data(entry),
            str(entry.get("ids") or "json"),
            int(entry.get("deletes") or 0),
            Checksums.of(entry),
            {k: inline[k] for k in segment_keys(entry) if k in inline} if "in" in entry and inline else None,
            {str(field): dict(t) for field, t in (entry.get("text") or {}).items()},
        )

    def field(self, name: str) -> VectorFieldInfo | None:
        """The vector field ``name`` of this segment, or ``None`` when none of its rows has it."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    @property
    def rows_key(self) -> str | None:
        """The object holding the row data (``None``: the segment stores none)."""
        return f"{SEGMENTS}{self.name}.rows.jsonl" if self.has_rows else None

    @property
    def id_keys(self) -> tuple[str, ...]:
        """The objects holding the ids (and deletes)."""
        return tuple(id_keys(_id_entry(self)))


def _id_entry(segment: SegmentInfo) -> dict[str, Any]:
    """What the table format's id decoder reads of a segment's manifest entry."""
    return {"name": segment.name, "rows": segment.rows, "ids": segment.id_format, "deletes": segment.deletes}


@attrs.frozen
class TableSnapshot:
    """The segment list of one table version; segment ``i`` holds table rows
    ``[sum of the rows of segments 0..i-1, + rows)``."""

    version: int
    segments: tuple[SegmentInfo, ...]

    @property
    def rows(self) -> int:
        """The table rows of this version (live or not)."""
        return sum(s.rows for s in self.segments)

    @property
    def names(self) -> frozenset[str]:
        """The names of its segments."""
        return frozenset(s.name for s in self.segments)


def snapshot(storage: TableStorage | TableState) -> TableSnapshot:
    """The version ``storage`` has loaded (call it under the store's lock, so that it matches the
    store's table)."""
    state = storage.state if isinstance(storage, TableStorage) else storage
    return TableSnapshot(
        int(state.version), tuple(SegmentInfo.from_entry(e, state.inline) for e in state.segments)
    )


# --- where the objects are ---------------------------------------------------------------------


@attrs.frozen
class StoreSpec:
    """How another process opens a store's objects: a directory (``kind="file"``), or a bucket and
    prefix (``kind="s3"``).

    Explicit S3 credentials of the store's config travel with the spec (never in its ``repr`` or
    :attr:`key`); without them, a reader uses boto3's usual chain (environment, instance role).
    """

    kind: str
    path: str | None = None
    bucket: str | None = None
    prefix: str = ""
    client_kwargs: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def key(self) -> tuple[str, ...]:
        """The store's identity, e.g. in a cache (no credentials)."""
        if self.kind == "file":
            return ("file", str(self.path))
        return ("s3", str(self.client_kwargs.get("endpoint_url") or ""), str(self.bucket), self.prefix)

    @classmethod
    def from_config(cls, backend: str, config: Mapping[str, Any]) -> StoreSpec:
        """The spec of a validated ``file`` or ``s3`` store config."""
        if backend == "file":
            return cls("file", path=os.path.abspath(os.fspath(config["path"])))
        if backend != "s3":
            raise StorageError(f"backend {backend!r} keeps no table segments (file or s3 do)")
        prefix = str(config.get("prefix") or "").strip("/")
        return cls(
            "s3",
            bucket=config["bucket"],
            prefix=prefix + "/" if prefix else "",
            client_kwargs=client_kwargs(config),
        )


# --- reading -----------------------------------------------------------------------------------

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


class SegmentReader:
    """Reads segments of one store, read-only, with the table's programs.

    ``mapped``: the store is local and :class:`~dk_vector_plugins.storage.ops.GetArray`
    memory-maps, so a row range of vectors is a view of the mapped file (no copy, shared through
    the page cache); otherwise a row range is fetched by one ranged read after the ``.npy`` header.

    What a reader returns is verified against the segment's checksums (format 3): ids, rows and
    masks whole, a mapped vectors file whole when first mapped (then kept mapped), a ranged read
    block by block (the checksum blocks holding the rows, and their digests).
    """

    #: Mapped vector files kept (verified once, sliced by every range asked for).
    KEEP_MAPPED = 64

    def __init__(self, store: SyncObjectStore, mapped: bool = False) -> None:
        self.store = store
        self.mapped = mapped
        self.run, self._close = sync_runner(store)
        self.logic = TableLogic(TableOptions(), store.describe)
        self._mapped: dict[str, npt.NDArray[Any]] = {}
        self._mapped_lock = threading.Lock()

    def describe(self, key: str) -> str:
        """A human name of an object (a path, or ``s3://bucket/key``)."""
        return self.store.describe(key)

    def _runner(self, segment: SegmentInfo) -> Callable[[Program[Any]], Any]:
        """Runs table programs for ``segment`` (its inline objects answered from the snapshot)."""
        inline = segment.inline
        if not inline:
            return self.run
        return lambda program: self.run(serve_inline(program, inline))

    def ids(self, segment: SegmentInfo) -> Sequence[str]:
        """The ids of the segment's rows, in row order."""
        run = self._runner(segment)
        raw = [run(self.logic.get_bytes(k, segment.checksums)) for k in segment.id_keys]
        got, _ = decode_ids(_id_entry(segment), raw, self.describe)
        return got() if callable(got) else got

    def vectors(self, segment: SegmentInfo, field: VectorFieldInfo, start: int, stop: int) -> FloatArray:
        """Rows ``[start, stop)`` of the vectors of one of the segment's fields (zeros where a row
        holds none: see :meth:`presence`)."""
        shape = (segment.rows, field.dim)
        if self.mapped:
            mat: FloatArray = self._mapped_array(segment, field.vectors_key, shape, np.dtype(np.float32))
            return mat[start:stop]
        wanted = np.arange(start, stop, dtype=np.int64)
        return self.logic.read_vectors(self._runner(segment), field.vectors_key, shape, wanted, segment.checksums)

    def _mapped_array(
        self, segment: SegmentInfo, key: str, shape: tuple[int, ...], dtype: np.dtype[Any]
    ) -> npt.NDArray[Any]:
        """A whole memory-mapped ``.npy`` object of the segment (verified when first mapped, then
        kept: :attr:`KEEP_MAPPED`)."""
        with self._mapped_lock:
            arr = self._mapped.get(key)
        if arr is None:
            arr = self.logic.read_array(self._runner(segment), key, shape, segment.checksums, dtype)
            with self._mapped_lock:
                while len(self._mapped) >= self.KEEP_MAPPED:
                    self._mapped.pop(next(iter(self._mapped)))
                self._mapped[key] = arr
        return arr

    def codes(self, segment: SegmentInfo, field: VectorFieldInfo, start: int, stop: int) -> Int8Codes | None:
        """The int8 codes stored of rows ``[start, stop)`` of one of the segment's fields (``None``:
        the segment stores none; see :attr:`VectorFieldInfo.has_codes`).

        A row's codes depend on that row alone, so those of a row range are a slice of the
        segment's. On a local store the slice is a view of the mapped objects (each verified
        when first mapped); otherwise the whole objects are read when the range is the whole
        segment, else only the checksum blocks holding the range (verified block by block).
        """
        if not field.has_codes:
            return None
        m = segment.rows
        if not 0 <= start <= stop <= m:
            raise IndexError(f"rows {start}..{stop} out of range 0..{m}")
        layout = [
            (key, (m, field.dim) if c == "c8" else (m,), _CODE_DTYPES[c])
            for key, c in zip(field.codes_keys, CODE_OBJECTS)
        ]
        arrays: list[npt.NDArray[Any]]
        if start == stop:
            arrays = [np.empty((0, *shape[1:]), dtype=dt) for _, shape, dt in layout]
        elif self.mapped:
            arrays = [self._mapped_array(segment, key, shape, dt)[start:stop] for key, shape, dt in layout]
        elif start == 0 and stop == m:
            arrays = self._runner(segment)(self._whole_arrays(layout, segment.checksums))
        else:
            arrays = self._runner(segment)(self._array_rows(layout, start, stop, segment.checksums))
        return Int8Codes.from_arrays(*arrays)  # (each array's dtype and shape checked already)

    def _whole_arrays(
        self, layout: Sequence[tuple[str, tuple[int, ...], np.dtype[Any]]], sums: Checksums | None
    ) -> Program[list[npt.NDArray[Any]]]:
        """Whole ``.npy`` objects (one round of parallel reads), each checked and verified."""
        got: list[npt.NDArray[Any]] = yield Many([GetArray(key) for key, _, _ in layout])
        out = []
        for (key, shape, dtype), arr in zip(layout, got):
            if arr.dtype != dtype or arr.shape != shape or not arr.flags.c_contiguous:
                raise StorageError(
                    f"segment file {self.describe(key)} holds {arr.dtype} {arr.shape}, "
                    f"expected {dtype} {shape}"
                )
            verify_npy(arr, key, sums, self.describe)
            out.append(arr)
        return out

    def _array_rows(
        self,
        layout: Sequence[tuple[str, tuple[int, ...], np.dtype[Any]]],
        start: int,
        stop: int,
        sums: Checksums | None,
    ) -> Program[list[npt.NDArray[Any]]]:
        """Rows ``[start, stop)`` of ``.npy`` objects (of ``shape`` and ``dtype`` each, rows first)
        by ranged reads, in two rounds of parallel reads: each object's header (and, with
        checksums, its trailer of block digests, verified against the manifest, where this
        version's header puts it); then the rows (with checksums: the whole checksum blocks
        holding them, each verified against its digest)."""
        # where this version's header ends each object's data (and so where its trailer starts)
        ends = [len(npy_header_bytes(shape, dt)) + math.prod(shape) * dt.itemsize for _, shape, dt in layout]
        first: list[GetRange] = [GetRange(key, 0, _HEADER_BYTES) for key, _, _ in layout]
        if sums is not None:
            first += [GetRange(k, end, _trailer_size(end, sums) + 1) for (k, _, _), end in zip(layout, ends)]
        got: list[bytes] = yield Many(first)
        offsets = [self._data_offset(k, shape, dt, head) for (k, shape, dt), head in zip(layout, got)]
        digests: list[npt.NDArray[np.uint64] | None] = [None] * len(layout)
        if sums is not None:
            trailers = got[len(layout) :]
            for i, ((key, shape, dtype), offset) in enumerate(zip(layout, offsets)):
                end = offset + math.prod(shape) * dtype.itemsize
                if end != ends[i]:  # another header than this version writes: its trailer is elsewhere
                    trailers[i] = (yield GetRange(key, end, _trailer_size(end, sums) + 1))
                trailer = trailers[i]
                size = _trailer_size(end, sums)
                if len(trailer) != size or digest_list_checksum(trailer) != sums.expected(key):
                    raise StorageError(
                        f"checksum mismatch in segment file {self.describe(key)}: its block digests do not "
                        "match the manifest (the object is damaged)"
                    )
                digests[i] = np.frombuffer(trailer, dtype="<u8")
        spans = []
        for (_, shape, dtype), offset in zip(layout, offsets):
            width = math.prod(shape[1:]) * dtype.itemsize
            a, b = offset + start * width, offset + stop * width
            if sums is not None:  # whole checksum blocks of the object's data
                block = sums.block
                a, b = a // block * block, min(-(-b // block) * block, offset + shape[0] * width)
            spans.append((a, b))
        datas: list[bytes] = yield Many([GetRange(k, a, b - a) for (k, _, _), (a, b) in zip(layout, spans)])
        out = []
        for (key, shape, dtype), offset, (a, b), data, digest in zip(layout, offsets, spans, datas, digests):
            if len(data) != b - a:
                raise StorageError(f"segment file {self.describe(key)} is truncated")
            if digest is not None and sums is not None:
                blocks = block_digests([data], sums.block)
                at = a // sums.block
                if not np.array_equal(blocks, digest[at : at + len(blocks)]):
                    raise StorageError(
                        f"checksum mismatch in segment file {self.describe(key)}: bytes {a}..{b} do not "
                        "match their block digests (the object is damaged)"
                    )
            per_row = math.prod(shape[1:])
            at_row = offset + start * per_row * dtype.itemsize - a
            rows = np.frombuffer(data, dtype=dtype, count=(stop - start) * per_row, offset=at_row)
            out.append(rows.reshape((stop - start, *shape[1:])))
        return out

    def _data_offset(self, key: str, shape: tuple[int, ...], dtype: np.dtype[Any], head: bytes) -> int:
        """Where the data of a ``.npy`` object starts, by its header (checked against ``shape``
        and ``dtype``)."""
        try:
            got_shape, fortran, got_dtype, offset = npy_header(head)
        except ValueError as e:
            raise StorageError(f"corrupt segment file {self.describe(key)}: {e}") from e
        if fortran or got_dtype != dtype or got_shape != shape:
            raise StorageError(
                f"segment file {self.describe(key)} holds {got_dtype} {got_shape}, expected {dtype} {shape}"
            )
        return offset

    def presence(
        self, segment: SegmentInfo, field: VectorFieldInfo, start: int, stop: int
    ) -> BoolArray | None:
        """Which of rows ``[start, stop)`` hold a vector of the field (``None``: all of them)."""
        if field.mask_key is None:
            return None
        full = self.logic.read_array(
            self._runner(segment), field.mask_key, (segment.rows,), segment.checksums, np.dtype(np.bool_)
        )
        return np.array(full[start:stop], dtype=np.bool_)

    def postings(self, segment: SegmentInfo, field: str) -> Postings | None:
        """The full-text postings of ``field`` stored with the segment (all its rows), or ``None``."""
        text = segment.texts.get(field)
        if text is None:
            return None
        entry = {"name": segment.name, "rows": segment.rows}
        return self.logic.read_postings(self._runner(segment), entry, text, segment.checksums, 0)

    def rows(self, segment: SegmentInfo, start: int, stop: int) -> list[RowParts]:
        """(data, metadata, vector info) of rows ``[start, stop)`` (empty ones without row data)."""
        key = segment.rows_key
        if key is None:
            return [({}, {}, {}) for _ in range(start, stop)]
        parsed = self._runner(segment)(self.logic.get_rows(key, segment.checksums))
        if len(parsed) != segment.rows:
            raise StorageError(
                f"segment file {self.describe(key)} holds {len(parsed)} rows, expected {segment.rows}"
            )
        return list(parsed[start:stop])

    def close(self) -> None:
        """Release the reader's I/O threads."""
        self._close()


#: The dtype of each object of a field's stored int8 codes (see :class:`Int8Codes`).
_CODE_DTYPES: dict[str, np.dtype[Any]] = {
    "c8": np.dtype(np.int8),
    "cs": np.dtype(np.float32),
    "cr": np.dtype(np.float32),
    "cn": np.dtype(np.float64),
}


#: Bytes read for a ``.npy`` header (this package writes headers of 128 bytes).
_HEADER_BYTES = 4096


def _trailer_size(end: int, sums: Checksums) -> int:
    """Bytes of the block digests after an object's first ``end`` bytes (header and data)."""
    return 8 * math.ceil(end / sums.block)


def open_reader(spec: StoreSpec) -> SegmentReader:
    """A reader of the store ``spec`` names; creates and writes nothing."""
    if spec.kind == "file":
        root = str(spec.path)
        if not os.path.isdir(root):
            raise StorageError(f"store directory {root} does not exist (or is not reachable from here)")
        return SegmentReader(LocalObjectStore(root, fsync=False), mapped=True)
    boto3 = require("boto3")
    from botocore.config import Config

    config = Config(retries={"mode": "standard"}, max_pool_connections=READER_CONCURRENCY)
    client = boto3.client("s3", config=config, **spec.client_kwargs)
    store = S3ObjectStore(client, str(spec.bucket), prefix=spec.prefix, concurrency=READER_CONCURRENCY)
    return SegmentReader(store)
