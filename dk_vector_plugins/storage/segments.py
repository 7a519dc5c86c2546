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
  local store; only that range's bytes on S3), its presence masks and its rows, with the table's
  own programs (:class:`~dk_vector_plugins.storage.log_format.TableLogic`) on the object stores
  the backends use (:class:`~dk_vector_plugins.storage.local.LocalObjectStore`,
  :class:`~dk_vector_plugins.storage.s3.S3ObjectStore`).

Segments are immutable, so what a reader returns may be cached by segment name.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from ..errors import StorageError
from ..textindex import Postings
from .driver import TableStorage, sync_runner
from .local import LocalObjectStore
from .log_format import (
    SEGMENTS,
    Checksums,
    TableLogic,
    TableOptions,
    TableState,
    decode_ids,
    has_row_data,
    id_keys,
    segment_keys,
    serve_inline,
)
from .ops import Program, SyncObjectStore
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
    """

    name: str
    dim: int
    count: int
    vectors_key: str
    mask_key: str | None = None

    @property
    def has_mask(self) -> bool:
        """Whether some rows hold no vector of this field (a presence mask is stored)."""
        return self.mask_key is not None


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
        self._mapped: dict[str, FloatArray] = {}
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
            key = field.vectors_key
            with self._mapped_lock:
                mat = self._mapped.get(key)
            if mat is None:
                mat = self.logic.read_array(self._runner(segment), key, shape, segment.checksums)
                with self._mapped_lock:
                    while len(self._mapped) >= self.KEEP_MAPPED:
                        self._mapped.pop(next(iter(self._mapped)))
                    self._mapped[key] = mat
            return mat[start:stop]
        wanted = np.arange(start, stop, dtype=np.int64)
        return self.logic.read_vectors(self._runner(segment), field.vectors_key, shape, wanted, segment.checksums)

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
