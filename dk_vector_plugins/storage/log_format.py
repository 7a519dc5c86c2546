"""The log-structured table, sans I/O: manifests, segments, commit, refresh, compaction, clean-up.

Layout below a table's root (a directory, or an S3 prefix)::

    LATEST.json                     a copy of the newest manifest (a hint readers poll)
    manifests/00000000000000000007.json   manifest version 7, created once, never changed
    segments/<name>.ids.txt         the rows' ids, one per line (UTF-8)
    segments/<name>.deletes.json    ["id", ...]: ids this commit deletes (only when it deletes)
    segments/<name>.ids.json        {"ids": [...], "deletes": [...]}: instead of the two above
                                    when an id holds a line break (and in format 1)
    segments/<name>.rows.jsonl      one JSON object per row: data, metadata, vector info
    segments/<name>.f0.npy          the rows' vectors of one field, float32 (rows x dim)
    segments/<name>.f0.sq.npy       their squared norms, float32 (rows; from format 2)
    segments/<name>.f0.mask.npy     which rows hold that vector (only when not all do)

A manifest entry flags a segment ``fresh`` when none of its ids was stored before it and none
appears twice: a reader then appends its rows without looking ids up, and reads the ids only
when a result needs them (reopening a big store costs little more than mapping its vectors).

A commit uploads its segment objects, makes them durable, then creates manifest ``N+1`` with an
atomic create-if-absent. Whoever creates it has committed; a writer that loses the race deletes
its segment objects and plans again on the new version. Readers never see half a commit: a
manifest only names complete segments. ``LATEST.json`` is then advanced by compare-and-swap (never
backwards). A reader checks it with one conditional request; a writer that lost a race also probes
``N+1, N+2, ...`` so that a crash between creating a manifest and advancing ``LATEST.json`` is
repaired by the next writer.

Deletes and updates are tombstones: a segment lists the ids it deletes, and a later row with an
id replaces the earlier one. Compaction writes the live rows as one segment flagged ``clear`` in a
new manifest. Clean-up deletes only objects that none of the last ``keep_versions`` manifests name
and that are older than a grace period, so a reader still on an older version keeps working.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import attrs
import numpy as np
import numpy.typing as npt

from ..core import WriteBatch
from ..errors import DkvPerformanceWarning, StorageError
from ..index import LazyArray
from ..memtable import RecordTable
from ..vectors import squared_norms
from .npy import dump_npy, npy_header
from .ops import (
    Data,
    Delete,
    Flush,
    Get,
    GetArray,
    GetIfChanged,
    GetRange,
    List,
    Many,
    Program,
    Put,
    PutIfAbsent,
    PutIfMatch,
    data_len,
)
from .row_codec import EMPTY_ROW, LazyRows, encode_row, line_at

__all__ = ["FORMAT_VERSION", "TableLogic", "TableOptions", "TableState"]

#: The table format this version writes; a manifest with a higher number is refused.
#: 1: ids in ``.ids.json``; 2: adds ``.ids.txt``, ``.deletes.json``, ``.sq.npy`` and ``fresh``.
FORMAT_VERSION = 2
LATEST = "LATEST.json"
MANIFESTS = "manifests/"
SEGMENTS = "segments/"
TMP_MARK = ".tmp-"


def manifest_key(version: int) -> str:
    """The key of manifest ``version``."""
    return f"{MANIFESTS}{version:020d}.json"


@attrs.define
class TableOptions:
    """Tuning of the table format.

    :ivar max_segments: compact automatically when a manifest names more segments.
    :ivar dead_fraction: compact automatically when this fraction of stored rows is dead.
    :ivar keep_versions: clean-up never deletes what the newest this-many manifests name.
    :ivar grace_s: clean-up never deletes an object younger than this (seconds).
    :ivar lazy_rows: load row data on first use (vectors and ids load at once).
    :ivar lazy_ids: read the ids of ``fresh`` segments on first use instead of with the vectors
        (worth it where a read is cheap: local files; on S3 it would cost a round trip later).
    :ivar load_vectors: read vectors when a segment is loaded; ``False``: when first needed (a
        local search reads a segment's vectors whole, a record shown reads its own row), for a
        store whose searches run elsewhere (a Dask cluster).
    :ivar warn_load_bytes: warn (:class:`DkvPerformanceWarning`) before loading more than this.
    """

    max_segments: int = 32
    dead_fraction: float = 0.5
    keep_versions: int = 10
    grace_s: float = 3600.0
    lazy_rows: bool = True
    lazy_ids: bool = False
    load_vectors: bool = True
    warn_load_bytes: int | None = None


@attrs.define
class TableState:
    """What one store has loaded: the manifest version, its segments and LATEST.json's etag."""

    version: int = 0
    etag: str | None = None
    segments: list[dict[str, Any]] = attrs.field(factory=list)
    probe: bool = True  # probe for manifests newer than LATEST.json on the next refresh
    stats: dict[str, int] = attrs.field(factory=lambda: {"segments_loaded": 0, "bytes_loaded": 0})


def _parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    try:
        m = json.loads(raw)
        version = int(m["version"])
        fmt = int(m["format"])
        segs = m["segments"]
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError(f"corrupt manifest {where}: {e}") from e
    if fmt > FORMAT_VERSION:
        raise StorageError(
            f"{where} was written in table format {fmt} by a newer dk_vector_plugins; this version reads "
            f"format {FORMAT_VERSION} and older: upgrade the package"
        )
    if not isinstance(segs, list) or version < 0:
        raise StorageError(f"corrupt manifest {where}")
    return m  # type: ignore[no-any-return]


def has_row_data(entry: Mapping[str, Any]) -> bool:
    """Whether a segment has a rows file (format 2 leaves it out when every row is empty)."""
    return bool(entry["rows"]) and bool(entry.get("data", True))


def id_keys(entry: Mapping[str, Any]) -> list[str]:
    """The objects holding a segment's ids and deletes, in the order :func:`decode_ids` takes them."""
    base = f"{SEGMENTS}{entry['name']}"
    if entry.get("ids") != "txt":
        return [f"{base}.ids.json"]
    keys = [f"{base}.ids.txt"]
    if entry.get("deletes"):
        keys.append(f"{base}.deletes.json")
    return keys


def decode_ids(
    entry: Mapping[str, Any], raw: Sequence[bytes], describe: Callable[[str], str]
) -> tuple[Sequence[str] | Callable[[], Sequence[str]], list[str]]:
    """A segment's ids and deletes from the objects :func:`id_keys` names.

    Text ids are checked by count now and decoded when first asked for (a function).
    """
    keys = id_keys(entry)
    m = int(entry["rows"])
    if entry.get("ids") != "txt":
        try:
            meta = json.loads(raw[0])
            ids = list(map(str, meta["ids"]))
            deletes = list(map(str, meta["deletes"]))
        except (ValueError, KeyError, TypeError) as e:
            raise StorageError(f"corrupt segment file {describe(keys[0])}: {e}") from e
        if len(ids) != m:
            raise StorageError(f"segment file {describe(keys[0])} lists {len(ids)} ids, its manifest says {m}")
        return ids, deletes
    deletes = []
    if len(keys) > 1:
        try:
            deletes = list(map(str, json.loads(raw[1])))
        except (ValueError, TypeError) as e:
            raise StorageError(f"corrupt segment file {describe(keys[1])}: {e}") from e
    lazy = LazyIds(raw[0], describe(keys[0]), m)
    return lambda: lazy, deletes


class LazyIds(Sequence[str]):
    """A segment's ids, one per line, decoded on access: one id costs one slice, all of them one
    split (a search showing 10 hits of a 200k-row segment decodes 10 ids). A file holding
    another number of lines than ``expected`` raises :class:`StorageError` on first access."""

    def __init__(self, raw: bytes, where: str, expected: int) -> None:
        self._raw = raw
        self._where = where
        self._expected = expected  # checked when the ids are first read
        self._ends_cache: npt.NDArray[np.intp] | None = None
        self._all: list[str] | None = None

    def _bad_count(self, got: int) -> StorageError:
        return StorageError(f"segment file {self._where} lists {got} ids, its manifest says {self._expected}")

    @property
    def _ends(self) -> npt.NDArray[np.intp]:
        if self._ends_cache is None:
            ends = np.flatnonzero(np.frombuffer(self._raw, dtype=np.uint8) == 10)
            if len(ends) != self._expected or (len(self._raw) and self._raw[-1:] != b"\n"):
                raise self._bad_count(len(ends))
            self._ends_cache = ends
        return self._ends_cache

    def __len__(self) -> int:
        return self._expected

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return self.all()[i]
        if self._all is not None:
            return self._all[i]
        i, start, end = line_at(self._ends, i)
        try:
            return self._raw[start:end].decode()
        except UnicodeDecodeError as e:
            raise StorageError(f"corrupt segment file {self._where} (line {i + 1}): {e}") from e

    def all(self) -> list[str]:
        """Every id (decoded once)."""
        if self._all is None:
            try:
                got = self._raw.decode().split("\n")
            except UnicodeDecodeError as e:
                raise StorageError(f"corrupt segment file {self._where}: {e}") from e
            if len(got) != self._expected + 1 or got[-1]:
                raise self._bad_count(len(got) - 1 if not got[-1] else len(got))
            self._all = got[:-1]
        return self._all


class TableLogic:
    """The table programs. ``describe(key)`` names an object in error messages."""

    def __init__(self, options: TableOptions, describe: Callable[[str], str]) -> None:
        self.options = options
        self.describe = describe
        self.check_norms = False  # verify(): recompute stored norms
        self._data_offsets: dict[str, int] = {}  # .npy key -> where its data starts (row reads)

    # -- encoding -------------------------------------------------------------------------------
    def encode_segment(
        self, batch: WriteBatch, version: int
    ) -> tuple[dict[str, Any], dict[str, Data]]:
        """The manifest entry and the objects of a batch's segment (validates JSON-ability)."""
        name = f"{version:012d}-{uuid.uuid4().hex[:16]}"
        base = f"{SEGMENTS}{name}"
        ids = batch.row_ids()
        text_ids = "\n".join(ids)
        objects: dict[str, Data] = {}
        id_format = "txt" if text_ids.count("\n") == max(len(ids) - 1, 0) else "json"  # no id holds one
        if id_format == "txt":
            objects[f"{base}.ids.txt"] = (text_ids + "\n").encode() if ids else b""
            if batch.deletes:
                objects[f"{base}.deletes.json"] = json.dumps(list(batch.deletes)).encode()
        else:
            objects[f"{base}.ids.json"] = json.dumps({"ids": ids, "deletes": list(batch.deletes)}).encode()
        has_data = False
        if batch.rows:
            lines = [
                EMPTY_ROW if not (r[1] or r[2] or (r[3] and any(r[3].values()))) else encode_row(*r)
                for r in batch.rows
            ]
            has_data = any(line is not EMPTY_ROW for line in lines)
            if has_data:  # rows that are all empty (vectors only) need no file
                objects[f"{base}.rows.jsonl"] = b"".join(lines)
        m = len(ids)
        fields: dict[str, Any] = {}
        for i, (field, (positions, mat)) in enumerate(sorted(batch.batches.items())):
            key = f"f{i}"
            dense = len(positions) == m and np.array_equal(positions, np.arange(m))
            if dense:
                full = mat  # every row holds this vector, in order: no scatter
            else:
                full = np.zeros((m, mat.shape[1]), dtype=np.float32)
                full[positions] = mat
            objects[f"{base}.{key}.npy"] = dump_npy(full)
            known = batch.norms.get(field)
            sq = np.zeros(m, dtype=np.float32)
            sq[positions] = known if known is not None and len(known) == len(mat) else squared_norms(mat)
            objects[f"{base}.{key}.sq.npy"] = dump_npy(sq)
            count = m if dense else len(np.unique(positions))
            if count < m:
                present = np.zeros(m, dtype=np.bool_)
                present[positions] = True
                objects[f"{base}.{key}.mask.npy"] = dump_npy(present)
            fields[field] = {"key": key, "dim": int(mat.shape[1]), "count": count, "sq": True}
        entry = {
            "name": name,
            "rows": m,
            "deletes": len(batch.deletes),
            "clear": batch.clear,
            "fresh": batch.fresh and not batch.deletes,
            "ids": id_format,
            "data": has_data,
            "fields": fields,
            "bytes": sum(data_len(v) for v in objects.values()),
        }
        return entry, objects

    @staticmethod
    def segment_keys(entry: Mapping[str, Any]) -> list[str]:
        """Every object key of a segment."""
        base = f"{SEGMENTS}{entry['name']}"
        keys = list(id_keys(entry))
        if has_row_data(entry):
            keys.append(f"{base}.rows.jsonl")
        for f in entry["fields"].values():
            keys.append(f"{base}.{f['key']}.npy")
            if f.get("sq"):
                keys.append(f"{base}.{f['key']}.sq.npy")
            if f["count"] < entry["rows"]:
                keys.append(f"{base}.{f['key']}.mask.npy")
        return keys

    # -- reading --------------------------------------------------------------------------------
    def refresh(
        self, table: RecordTable, state: TableState, runner: Callable[[Program[Any]], Any]
    ) -> Program[bool]:
        """Bring ``table`` to the newest committed version; ``True`` if anything changed."""
        resp = yield GetIfChanged(LATEST, state.etag)
        target: dict[str, Any] | None = None
        if resp is not None:
            state.etag = resp.etag
            if resp.data:
                latest = _parse_manifest(resp.data, self.describe(LATEST))
                if latest["version"] > state.version:
                    target = latest
        if state.probe:
            v = max(state.version, target["version"] if target else 0)
            newest_from_latest = v
            while True:
                got = yield Get(manifest_key(v + 1), missing_ok=True)
                if got is None:
                    break
                target = _parse_manifest(got.data, self.describe(manifest_key(v + 1)))
                v += 1
            state.probe = False
            if target is not None and v > newest_from_latest:
                yield from self.publish_latest(target, state)
        if target is None:
            return False
        yield from self._apply_manifest(table, state, target, runner)
        return True

    def _apply_manifest(
        self,
        table: RecordTable,
        state: TableState,
        manifest: dict[str, Any],
        runner: Callable[[Program[Any]], Any],
    ) -> Program[None]:
        segs = manifest["segments"]
        old = [s["name"] for s in state.segments]
        if [s["name"] for s in segs[: len(old)]] == old:
            new = segs[len(old) :]
        else:  # compacted or cleared by another writer: rebuild from its segments
            table.clear()
            new = segs
        total = sum(int(e.get("bytes", 0)) for e in new)
        if self.options.warn_load_bytes is not None and total > self.options.warn_load_bytes:
            warnings.warn(
                f"loading {total / 2**20:.1f} MiB of segments from {self.describe('')} "
                f"(more than warn_download_bytes={self.options.warn_load_bytes}); a warm store "
                "afterwards only fetches what changes",
                DkvPerformanceWarning,
                stacklevel=2,
            )
        ops: list[Any] = []
        for entry in new:
            base = f"{SEGMENTS}{entry['name']}"
            if not self._ids_later(entry):
                ops.extend(Get(k) for k in id_keys(entry))
            if not self.options.lazy_rows and has_row_data(entry):
                ops.append(Get(f"{base}.rows.jsonl"))
            for f in entry["fields"].values():
                if self.options.load_vectors:
                    ops.append(GetArray(f"{base}.{f['key']}.npy"))
                    if f.get("sq"):
                        ops.append(GetArray(f"{base}.{f['key']}.sq.npy"))
                if f["count"] < entry["rows"]:
                    ops.append(GetArray(f"{base}.{f['key']}.mask.npy"))
        results = iter((yield Many(ops)) if ops else [])
        table.expect_rows(table.nrows + sum(int(e["rows"]) for e in new))
        for entry in new:
            self._load_segment(table, entry, results, runner)
            state.stats["segments_loaded"] += 1
            state.stats["bytes_loaded"] += int(entry.get("bytes", 0))
        table.expect_rows(0)
        state.version = int(manifest["version"])
        state.segments = list(segs)

    def _load_segment(
        self,
        table: RecordTable,
        entry: Mapping[str, Any],
        results: Any,
        runner: Callable[[Program[Any]], Any],
    ) -> None:
        base = f"{SEGMENTS}{entry['name']}"
        m = int(entry["rows"])
        ids: Sequence[str] | Callable[[], Sequence[str]]
        if self._ids_later(entry):
            ids_key = id_keys(entry)[0]
            read: list[Sequence[str]] = []

            def ids() -> Sequence[str]:
                if not read:
                    got, _ = decode_ids(entry, [runner(self.get_bytes(ids_key))], self.describe)
                    read.append(got() if callable(got) else got)
                return read[0]

            deletes: list[str] = []
        else:
            ids, deletes = decode_ids(entry, [next(results).data for _ in id_keys(entry)], self.describe)
        rows_key = f"{base}.rows.jsonl"
        cache: list[LazyRows] = []
        if not self.options.lazy_rows and has_row_data(entry):
            # fetched with the vectors (no request later), parsed row by row when first used
            fetched = LazyRows(next(results).data, self.describe(rows_key))
            if len(fetched) != m:
                raise StorageError(
                    f"segment file {self.describe(rows_key)} holds {len(fetched)} rows, expected {m}"
                )
            cache.append(fetched)
        vectors: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_] | None, Any]] = {}
        for field, f in entry["fields"].items():
            key = f"{base}.{f['key']}.npy"
            skey = f"{base}.{f['key']}.sq.npy"
            shape = (m, int(f["dim"]))
            dim = table.vector_dimension(field)
            if dim is not None and dim != f["dim"]:
                raise StorageError(
                    f"segment file {self.describe(key)} has {f['dim']}-dimensional vectors for field "
                    f"{field!r}, the store has {dim}"
                )
            mat: Any
            sq: Any = None
            if self.options.load_vectors:
                mat = self._checked(key, next(results), shape)
                if f.get("sq"):
                    sq = self._checked(skey, next(results), (m,))
                    if self.check_norms and not np.allclose(sq, squared_norms(mat), rtol=1e-5, atol=1e-30):
                        raise StorageError(
                            f"segment file {self.describe(skey)} does not hold the squared norms of "
                            f"{self.describe(key)}"
                        )
            else:  # read when a search needs them all, or a record its own vector
                mat = LazyArray(
                    shape,
                    functools.partial(self.read_array, runner, key, shape),
                    functools.partial(self.read_vectors, runner, key, shape),
                )
                if f.get("sq"):
                    sq = LazyArray((m,), functools.partial(self.read_array, runner, skey, (m,)))
            present = None
            if f["count"] < m:
                mkey = f"{base}.{f['key']}.mask.npy"
                present = np.array(next(results), dtype=np.bool_)
                if present.shape != (m,):
                    raise StorageError(
                        f"segment file {self.describe(mkey)} has shape {present.shape}, expected {(m,)}"
                    )
            vectors[field] = (mat, present, sq)

        def loader() -> LazyRows:
            # read once, parse row by row on demand (the table asks again for later rows)
            if not cache:
                got = runner(self.get_rows(rows_key))
                if len(got) != m:
                    raise StorageError(
                        f"segment file {self.describe(rows_key)} holds {len(got)} rows, expected {m}"
                    )
                cache.append(got)
            return cache[0]

        table.load_segment(
            ids,
            m,
            deletes,
            vectors,
            loader if has_row_data(entry) else None,
            clear=bool(entry.get("clear")),
            fresh=bool(entry.get("fresh")),
        )

    def _checked(self, key: str, arr: npt.NDArray[Any], shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
        if arr.dtype != np.float32 or arr.shape != shape:
            raise StorageError(
                f"segment file {self.describe(key)} holds {arr.dtype} {arr.shape}, expected float32 {shape}"
            )
        return arr

    def read_array(
        self, runner: Callable[[Program[Any]], Any], key: str, shape: tuple[int, ...]
    ) -> npt.NDArray[np.float32]:
        """A whole float32 ``.npy`` object of ``shape`` (memory-mapped where the store is local)."""
        return self._checked(key, runner(self.get_array(key)), shape)

    def get_array(self, key: str) -> Program[npt.NDArray[Any]]:
        """Load a ``.npy`` object (any dtype and shape)."""
        arr: npt.NDArray[Any] = yield GetArray(key)
        return arr

    def read_vectors(
        self, runner: Callable[[Program[Any]], Any], key: str, shape: tuple[int, int], rows: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """Some rows of a segment's vectors: ranged reads of just those rows."""
        out: npt.NDArray[np.float32] = runner(self._vector_rows(key, shape, rows))
        return out

    def _vector_rows(self, key: str, shape: tuple[int, int], rows: npt.NDArray[np.int64]) -> Program[Any]:
        offset = self._data_offsets.get(key)
        if offset is None:
            head = yield GetRange(key, 0, 4096)
            try:
                got_shape, fortran, dtype, offset = npy_header(head)
            except (ValueError, EOFError) as e:
                raise StorageError(f"corrupt segment file {self.describe(key)}: {e}") from e
            if fortran or dtype != np.float32 or got_shape != shape:
                raise StorageError(
                    f"segment file {self.describe(key)} holds {dtype} {got_shape}, expected float32 {shape}"
                )
            self._data_offsets[key] = offset
        if len(rows) and (rows.min() < 0 or rows.max() >= shape[0]):
            raise IndexError(f"rows out of range 0..{shape[0] - 1}")
        if len(rows) and int(rows[-1]) - int(rows[0]) == len(rows) - 1 and bool(np.all(np.diff(rows) == 1)):
            a, b = int(rows[0]), int(rows[-1]) + 1  # one run in order (a shard): no copy of the block
            (data,) = yield Many([GetRange(key, offset + a * shape[1] * 4, (b - a) * shape[1] * 4)])
            if len(data) != (b - a) * shape[1] * 4:
                raise StorageError(f"segment file {self.describe(key)} is truncated")
            return np.frombuffer(data, dtype=np.float32).reshape(b - a, shape[1])
        wanted = np.unique(rows)
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(wanted, breaks) if len(r)]
        width = shape[1] * 4
        parts = yield Many([GetRange(key, offset + a * width, (b - a) * width) for a, b in runs])
        block = np.empty((len(wanted), shape[1]), dtype=np.float32)
        at = 0
        for (a, b), data in zip(runs, parts):
            if len(data) != (b - a) * width:
                raise StorageError(f"segment file {self.describe(key)} is truncated")
            block[at : at + b - a] = np.frombuffer(data, dtype=np.float32).reshape(b - a, shape[1])
            at += b - a
        return block[np.searchsorted(wanted, rows)]

    def _ids_later(self, entry: Mapping[str, Any]) -> bool:
        """Whether a segment's ids are read on first use (a fresh segment that deletes nothing)."""
        return (
            self.options.lazy_ids
            and bool(entry.get("fresh"))
            and entry.get("ids") == "txt"
            and not entry.get("deletes")
            and int(entry["rows"]) > 0
        )

    def get_bytes(self, key: str) -> Program[bytes]:
        """An object's bytes."""
        got = yield Get(key)
        data: bytes = got.data
        return data

    def get_rows(self, key: str) -> Program[LazyRows]:
        """A segment's rows file, parsed row by row on access."""
        got = yield Get(key)
        return LazyRows(got.data, self.describe(key))

    # -- writing --------------------------------------------------------------------------------
    def commit(self, state: TableState, batch: WriteBatch) -> Program[bool]:
        """Commit ``batch`` as version ``state.version + 1``; ``False`` if another writer was first."""
        version = state.version + 1
        entry, objects = self.encode_segment(batch, version)
        yield Many([Put(k, v) for k, v in objects.items()])
        yield Flush()
        segments = ([] if batch.clear else list(state.segments)) + [entry]
        manifest = {
            "format": FORMAT_VERSION,
            "version": version,
            "created": time.time(),
            "segments": segments,
            "rows": sum(int(s["rows"]) for s in segments),
        }
        created = yield PutIfAbsent(manifest_key(version), json.dumps(manifest).encode())
        if not created:
            yield Many([Delete(k) for k in objects])
            state.probe = True
            return False
        state.version = version
        state.segments = segments
        yield from self.publish_latest(manifest, state)
        return True

    def read_back(self, entry: Mapping[str, Any], batch: WriteBatch) -> Program[None]:
        """Replace the vectors of ``batch`` by those of its committed segment ``entry`` where
        every row holds one (a memory map of the file, for a local store)."""
        base = f"{SEGMENTS}{entry['name']}"
        fields = [
            (name, f)
            for name, f in entry["fields"].items()
            if name in batch.batches and int(f["count"]) == int(entry["rows"])
        ]
        if not fields:
            return
        got = yield Many([GetArray(f"{base}.{f['key']}.npy") for _, f in fields])
        for (name, _), arr in zip(fields, got):
            pos, mat = batch.batches[name]
            if arr.shape == mat.shape and len(pos) == len(arr):
                batch.batches[name] = (pos, arr)

    def publish_latest(self, manifest: Mapping[str, Any], state: TableState) -> Program[None]:
        """Advance LATEST.json to ``manifest`` by compare-and-swap, never backwards.

        First try against the version this store last saw (no read: what a lone writer's commit
        meets); when another writer changed it since, read it and compare.
        """
        data = json.dumps(manifest).encode()
        if state.etag is not None:
            etag = yield PutIfMatch(LATEST, data, state.etag or None)
            if etag is not None:
                state.etag = etag
                return
        for _ in range(100):
            cur = yield Get(LATEST, missing_ok=True)
            if (
                cur is not None
                and cur.data
                and _parse_manifest(cur.data, self.describe(LATEST))["version"] >= manifest["version"]
            ):
                return
            etag = yield PutIfMatch(LATEST, data, cur.etag if cur is not None else None)
            if etag is not None:
                state.etag = etag
                return
        # Others keep advancing it: they are ahead of us, which is all LATEST.json must say.

    def needs_compaction(self, table: RecordTable, state: TableState) -> bool:
        """Whether the table has piled up small segments or dead rows."""
        if len(state.segments) > self.options.max_segments:
            return True
        stored = sum(int(s["rows"]) for s in state.segments)
        return stored > 1024 and table.dead > self.options.dead_fraction * stored

    def compaction_batch(self, table: RecordTable) -> WriteBatch:
        """All live rows of ``table`` (in row order) as one ``clear`` batch."""
        ids, rows = table.live_rows()
        live = np.flatnonzero(table._live[: table.nrows])
        batches = {}
        for name, index in table.indexes.items():
            in_range = live < index.nrows
            present = np.zeros(len(live), dtype=np.bool_)
            present[in_range] = index.present[live[in_range]]
            pos = np.flatnonzero(present)
            if len(pos):
                batches[name] = (pos.astype(np.int64), index.gather(live[pos]))
        if rows is None:  # vectors only: no rows file, no tuple per row
            return WriteBatch(bare_ids=ids, batches=batches, clear=True, fresh=True)
        return WriteBatch(rows=rows, batches=batches, clear=True, fresh=True)

    def gc(self, state: TableState, now: float | None = None, grace_s: float | None = None) -> Program[int]:
        """Delete unreferenced segments and old manifests past the grace period; returns the count."""
        now = time.time() if now is None else now
        grace = self.options.grace_s if grace_s is None else grace_s
        listed = yield Many([List(MANIFESTS), List(SEGMENTS)])
        manifests, segments = listed
        versions = sorted(
            (int(x.key[len(MANIFESTS) : -5]), x)
            for x in manifests
            if x.key.endswith(".json") and TMP_MARK not in x.key and x.key[len(MANIFESTS) : -5].isdigit()
        )
        keep = [v for v, _ in versions[-self.options.keep_versions :]]
        got = yield Many([Get(manifest_key(v), missing_ok=True) for v in keep])
        referenced: set[str] = set()
        for entry in state.segments:
            referenced.update(self.segment_keys(entry))
        for g, v in zip(got, keep):
            if g is not None:
                for entry in _parse_manifest(g.data, self.describe(manifest_key(v)))["segments"]:
                    referenced.update(self.segment_keys(entry))
        doomed = [x.key for x in segments if x.key not in referenced and now - x.mtime > grace]
        doomed += [x.key for v, x in versions[: -self.options.keep_versions] if now - x.mtime > grace]
        doomed += [x.key for x in manifests if TMP_MARK in x.key and now - x.mtime > grace]
        if doomed:
            yield Many([Delete(k) for k in doomed])
        return len(doomed)

    def verify(self) -> Program[dict[str, Any]]:
        """Check that the newest manifest and every segment it names are complete and consistent."""
        v = 0
        got = yield Get(LATEST, missing_ok=True)
        manifest = None
        if got is not None and got.data:
            manifest = _parse_manifest(got.data, self.describe(LATEST))
            v = manifest["version"]
        while True:
            nxt = yield Get(manifest_key(v + 1), missing_ok=True)
            if nxt is None:
                break
            v += 1
            manifest = _parse_manifest(nxt.data, self.describe(manifest_key(v)))
        if manifest is None:
            return {"version": 0, "segments": 0, "rows": 0, "live": 0}
        probe = RecordTable()
        state = TableState(probe=False)
        options = attrs.evolve(self.options, lazy_rows=False, lazy_ids=False, load_vectors=True)
        checker = TableLogic(options, self.describe)
        checker.check_norms = True
        yield from checker._apply_manifest(probe, state, manifest, lambda p: None)
        probe.materialize()  # parse every row: a corrupt line is named here
        return {
            "version": v,
            "segments": len(manifest["segments"]),
            "rows": probe.nrows,
            "live": len(probe),
        }
