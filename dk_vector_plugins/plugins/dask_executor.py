"""The ``dask`` plugin: exact vector search and bulk embedding of file and S3 stores on a Dask cluster.

A store opts in with ``executor="dask"`` (config dict, keywords or TOML, like every other key)::

    DatabaseFactory().create(backend="s3", bucket="b", prefix="docs", vector_enabled=True,
                             executor="dask", scheduler_address="tcp://scheduler:8786")

Without ``scheduler_address`` the plugin starts a local cluster of ``n_workers`` processes with
``threads_per_worker`` threads each. Needs the ``dask`` extra (``pip install
'dk_vector_plugins[dask]'``); this module imports without it and only a store that asks for
``executor="dask"`` needs it.

**Search** (``dkv_vector_search`` / ``dkv_vector_search_async``, ``tryfirst``; declines for
stores not configured for Dask). The unit of distribution is the immutable segment of the
log-structured table; a segment of more than ``shard_rows`` rows is cut into near-equal row
ranges ("parts"), so a compacted table of one big segment still spreads over the workers.

1. The client refreshes the store (it answers for the current version) and, under the store
   lock, takes a snapshot: the manifest's segment list, and per part the offsets of its dead rows
   (tombstoned by later deletes and updates), from the table's live mask. Segment ``i`` covers
   table rows ``[sum(rows of earlier segments), + rows)``: table-backed stores never renumber
   rows except by storage compaction, which rewrites the segment list accordingly.
2. Parts are assigned to workers greedily in manifest order (each part to the least-loaded
   worker by rows, ties broken by a hash of part and worker): deterministic for a given worker
   set, and a commit only appends segments, so it assigns only the new parts and every other part
   stays on the worker whose cache holds it.
3. One task per worker carries the whole batch of queries and that worker's parts. The worker
   loads each part once (ids; the field's rows of the ``.npy`` -- memory-mapped for a file
   store, one ranged GET on S3; row data only when a filter needs it) and keeps it on the
   ``distributed.Worker`` object, keyed by store and segment name (segments are immutable). It
   computes ``mask = live & filter`` with the core's compiled filter, runs the core's one search
   kernel (:meth:`VectorIndex.search <dk_vector_plugins.engine.VectorIndex.search>`) and
   returns its local top-``k`` (rows, scores, distances, ids).
4. The client merges the lists by (score desc, id asc) -- (distance asc, id asc) for euclidean,
   the kernel's own order; scores are the kernel's exact ones, so the merge equals the
   single-process ranking bit for bit -- keeps ``k`` and builds the results from its table
   (:meth:`RecordTable.vector_results <dk_vector_plugins.table.RecordTable.vector_results>`,
   the code the single-process search uses). If the table changed meanwhile, it searches again.

A worker lost mid-query makes the scheduler run its task again on another worker (up to Dask's
``distributed.scheduler.allowed-failures``); a search that still cannot finish raises
:class:`ClusterError`, never a partial top-``k``.

The client store opens with ``load_vectors=False`` unless told otherwise: it holds ids,
tombstones and row data, and reads only the vectors of the records a search returns.

**Bulk embedding** (``dkv_bulk_embed`` / ``dkv_bulk_embed_async``, ``tryfirst``): batches of
texts are embedded on the workers in parallel with the request's embedder (sent to each worker
once), and each batch is committed as one segment, in input order, as it finishes; the progress
bar advances per committed batch. Skipping of records that already hold their vector (resume) is
the built-in driver's.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import io
import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from ..embed import BulkEmbedReport, BulkEmbedRequest, _attach, _batches, _plan, _progress_bar, _skip_mask
from ..engine import TopK, VectorIndex, rank_ids
from ..errors import (
    ConfigError,
    ConflictError,
    DkvError,
    InvalidRequestError,
    PluginError,
    StorageError,
)
from ..factory import OptionSpec
from ..hookspecs import hookimpl
from ..query import Expr
from ..records import VectorSearchResult
from ..search import SearchRequest, apply_threshold
from ..storage.ops import load_npy, open_npy
from ..storage.s3 import client_kwargs
from ..storage.table import decode_ids, decode_rows, has_row_data, id_keys
from ..table import RecordTable

__all__ = ["ClusterError", "StoreSpec", "assign", "cached_parts", "client_for", "close_client", "merge_hits"]

log = logging.getLogger(__name__)

EXECUTORS = ("local", "dask")
#: Backends whose stores the plugin can distribute (the log-structured table).
TABLE_BACKENDS = ("file", "s3")
#: Default rows of one part: a segment above this is searched as several parts.
DEFAULT_SHARD_ROWS = 262_144
_SEGMENTS = "segments/"
# A worker scores at least this many queries per kernel call and at most about _CHUNK_FLOATS
# scores at once (bounds a worker's memory for big batches). How a batch is split does not change
# any score: the kernel ranks by exact scores, which do not depend on the product's shape.
_MIN_CHUNK = 128
_CHUNK_FLOATS = 1 << 25
_WORKERS_TTL_S = 1.0
_SEARCH_ATTEMPTS = 3

FloatArray = npt.NDArray[np.float32]
#: One list of hits: table rows, scores, distances (euclidean) and ids, best first.
Hits = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64] | None, list[str]]


class ClusterError(PluginError):
    """The Dask cluster could not answer (workers lost beyond the retries, scheduler unreachable).

    Nothing partial is returned: a search either gives the full exact top-``k`` or raises this.
    """


# --- configuration -----------------------------------------------------------------------------


def _executor(v: Any) -> Any:
    if v not in EXECUTORS:
        raise ConfigError(
            f"config key 'executor' must be one of {', '.join(map(repr, EXECUTORS))}, got {v!r}"
        )
    return v


def _positive(name: str) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        if v <= 0:
            raise ConfigError(f"config key {name!r} must be > 0, got {v}")
        return v

    return convert


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "executor",
        (str,),
        "local",
        "where vector search and bulk embedding run: 'local' (this process) or 'dask' (a Dask "
        "cluster; file and s3 stores)",
        convert=_executor,
    ),
    OptionSpec(
        "scheduler_address",
        (str,),
        None,
        "executor='dask': address of a running Dask scheduler (e.g. tcp://host:8786); "
        "default: start a local cluster",
    ),
    OptionSpec(
        "n_workers",
        (int,),
        None,
        "executor='dask' without scheduler_address: worker processes of the local cluster "
        "(default: one per core)",
        convert=_positive("n_workers"),
    ),
    OptionSpec(
        "threads_per_worker",
        (int,),
        1,
        "executor='dask' without scheduler_address: threads of each local worker process",
        convert=_positive("threads_per_worker"),
    ),
    OptionSpec(
        "shard_rows",
        (int,),
        DEFAULT_SHARD_ROWS,
        "executor='dask': segments larger than this are searched as several parts of at most this many rows",
        convert=_positive("shard_rows"),
    ),
)


@hookimpl
def dkv_register_options() -> Sequence[OptionSpec]:
    """The ``executor`` key and the Dask keys, for every backend (only file and s3 can use them)."""
    return OPTIONS


def _wants_dask(db: Any) -> bool:
    """Whether ``db`` is configured for Dask; a clear error when it is but cannot be."""
    config = getattr(db, "config", None)
    if not isinstance(config, Mapping) or config.get("executor") != "dask":
        return False
    backend = getattr(db, "backend_name", None)
    if backend not in TABLE_BACKENDS:
        raise ConfigError(
            f"executor='dask' distributes the segments of a file or s3 store; backend {backend!r} has "
            "no segments: use backend='file' or 's3', or executor='local'"
        )
    _require_distributed()
    return True


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise ConfigError(
            "executor='dask' needs dask.distributed: install it with  pip install 'dk_vector_plugins[dask]'"
        ) from e
    return distributed


@attrs.frozen
class StoreSpec:
    """How a worker opens a store's objects: a directory (``kind="file"``) or a bucket and prefix.

    Explicit S3 credentials of the store's config travel with the tasks; without them, workers
    use boto3's usual chain (environment, instance role).
    """

    kind: str
    path: str | None = None
    bucket: str | None = None
    prefix: str = ""
    client_kwargs: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def key(self) -> tuple[str, ...]:
        """The store's identity in a worker's cache (no credentials)."""
        if self.kind == "file":
            return ("file", str(self.path))
        return ("s3", str(self.client_kwargs.get("endpoint_url") or ""), str(self.bucket), self.prefix)

    @classmethod
    def from_config(cls, backend: str, config: Mapping[str, Any]) -> StoreSpec:
        """The spec of a validated file or s3 store config."""
        if backend == "file":
            return cls("file", path=os.path.abspath(os.fspath(config["path"])))
        kwargs = client_kwargs(config)
        prefix = str(config.get("prefix") or "").strip("/")
        return cls("s3", bucket=config["bucket"], prefix=prefix + "/" if prefix else "", client_kwargs=kwargs)


# --- the client side: one Dask client per store ------------------------------------------------


class _Cluster:
    """A store's Dask client (and the local cluster it started), created on first use."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        distributed = _require_distributed()
        self.cluster: Any = None
        address = config.get("scheduler_address")
        try:
            if address:
                # connect timeout: distributed.comm.timeouts.connect (dask config)
                self.client: Any = distributed.Client(address, set_as_default=False)
            else:
                self.cluster = distributed.LocalCluster(
                    n_workers=config.get("n_workers") or max(1, (os.cpu_count() or 1)),
                    threads_per_worker=config.get("threads_per_worker") or 1,
                    processes=True,
                    dashboard_address=":0",
                )
                self.client = distributed.Client(self.cluster, set_as_default=False)
        except (OSError, TimeoutError) as e:
            if self.cluster is not None:
                self.cluster.close()
            where = f"the Dask scheduler at {address}" if address else "a local Dask cluster"
            raise ClusterError(f"cannot reach {where}: {type(e).__name__}: {e}") from e
        self._workers: list[str] = []
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self._assigned: tuple[Any, list[str]] | None = None

    def owners(self, parts: list[tuple[str, int]], workers: list[str]) -> list[str]:
        """:func:`assign`, remembered for the last (parts, workers) seen."""
        key = (parts, workers)
        with self._lock:
            if self._assigned is not None and self._assigned[0] == key:
                return self._assigned[1]
        owners = assign(parts, workers)
        with self._lock:
            self._assigned = (key, owners)
        return owners

    def workers(self) -> list[str]:
        """The workers' addresses, sorted (refreshed at most every second)."""
        with self._lock:
            now = time.monotonic()
            if not self._workers or now - self._checked > _WORKERS_TTL_S:
                found = sorted(self.client.nthreads())
                if not found:
                    try:
                        self.client.wait_for_workers(1, timeout=60)
                    except TimeoutError as e:
                        raise ClusterError("the Dask cluster has no workers (waited 60 s)") from e
                    found = sorted(self.client.nthreads())
                self._workers, self._checked = found, now
            return list(self._workers)


def _close(client: Any, cluster: Any) -> None:
    for thing in (client, cluster):
        if thing is not None:
            try:
                thing.close()
            except Exception:  # pragma: no cover - best effort at shutdown
                log.debug("closing %r failed", thing, exc_info=True)


_CREATE_LOCK = threading.Lock()


def _cluster_for(db: Any) -> _Cluster:
    state: _Cluster | None = db.__dict__.get("_dkv_dask")
    if state is not None and state.client.status in ("closed", "closing", "failed"):
        close_client(db)  # e.g. gave up reconnecting to a restarted scheduler: start afresh
        state = None
    if state is None:
        with _CREATE_LOCK:
            state = db.__dict__.get("_dkv_dask")
            if state is None:
                state = _Cluster(db.config)
                db.__dict__["_dkv_dask"] = state
                finalizer = weakref.finalize(db, _close, state.client, state.cluster)
                db.__dict__["_dkv_dask_finalizer"] = finalizer
                db.on_close(finalizer)  # db.close() closes the client (and a local cluster) too
    return state


def client_for(db: Any) -> Any:
    """The ``distributed.Client`` of a store configured with ``executor="dask"`` (created if needed)."""
    if not _wants_dask(db):
        raise ConfigError("this store is not configured with executor='dask'")
    return _cluster_for(db).client


def close_client(db: Any) -> None:
    """Close a store's Dask client, and the local cluster it started (also done when ``db`` is collected)."""
    finalizer = db.__dict__.pop("_dkv_dask_finalizer", None)
    db.__dict__.pop("_dkv_dask", None)
    if finalizer is not None:
        finalizer()


def _is_cluster_failure(e: BaseException) -> bool:
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError

    return isinstance(e, (KilledWorker, CommClosedError, asyncio.CancelledError)) or type(e).__name__ in (
        "FutureCancelledError",
        "CancelledError",
    )


def _cluster_error(what: str, e: BaseException) -> ClusterError:
    return ClusterError(
        f"{what} failed on the Dask cluster: {type(e).__name__}: {e}; nothing partial was returned "
        "(a lost worker's tasks are retried on the others up to distributed.scheduler.allowed-failures)"
    )


# --- search: planning on the client ------------------------------------------------------------


@attrs.frozen
class _Unit:
    """One part of a segment: rows ``[start, stop)`` of segment ``entry`` (table rows from ``base``)."""

    entry: dict[str, Any]
    start: int
    stop: int
    base: int  # table row of the part's first row
    dead: npt.NDArray[np.int64]  # offsets (within the part) of rows that are no longer live

    @property
    def name(self) -> str:
        return f"{self.entry['name']}:{self.start}"


def _parts(
    segments: Sequence[Mapping[str, Any]], shard_rows: int
) -> list[tuple[dict[str, Any], int, int, int]]:
    """(segment entry, start, stop, table row of the segment's first row) per part, in manifest order."""
    out: list[tuple[dict[str, Any], int, int, int]] = []
    base = 0
    for entry in segments:
        m = int(entry["rows"])
        if m:
            n = -(-m // shard_rows)
            bounds = [m * i // n for i in range(n + 1)]
            out.extend((dict(entry), a, b, base) for a, b in itertools.pairwise(bounds))
        base += m
    return out


def _rank(part: str, worker: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{part}|{worker}".encode(), digest_size=8).digest(), "big")


def assign(parts: Sequence[tuple[str, int]], workers: Sequence[str]) -> list[str]:
    """A worker per part ``(name, rows)``: greedy least-loaded in the given (manifest) order.

    Deterministic for a worker set; appending parts never moves the earlier ones.
    """
    loads = dict.fromkeys(workers, 0)
    out = []
    for name, rows in parts:
        lowest = min(loads.values())
        tied = [w for w in workers if loads[w] == lowest]
        best = tied[0] if len(tied) == 1 else max(tied, key=lambda w: _rank(name, w))
        loads[best] += rows
        out.append(best)
    return out


@attrs.frozen
class _Plan:
    version: int
    names: frozenset[str]
    groups: dict[str, list[_Unit]]


def _check_request(table: RecordTable, request: SearchRequest) -> bool:
    """The core's checks of a search; ``False`` when the field holds no vector at all."""
    return table.check_search(request.vector_field, request.queries.shape[1])


def _plan_search(db: Any, request: SearchRequest, cluster: _Cluster, workers: list[str]) -> _Plan | None:
    """Under the store lock: the parts to search and their dead rows (``None``: nothing to search)."""
    table: RecordTable = db.core.table
    if not _check_request(table, request):
        return None
    state = db.storage.state
    segments = list(state.segments)
    total = sum(int(s["rows"]) for s in segments)
    if total != table.nrows:
        raise StorageError(
            f"the loaded table has {table.nrows} rows but its manifest version {state.version} names "
            f"{total}: cannot map segments to rows"
        )
    live = table.mask(None)
    parts = _parts(segments, int(db.config.get("shard_rows") or DEFAULT_SHARD_ROWS))
    owners = cluster.owners([(f"{e['name']}:{a}", b - a) for e, a, b, _ in parts], workers)
    groups: dict[str, list[_Unit]] = {}
    for (entry, a, b, base), owner in zip(parts, owners):
        if request.vector_field not in entry.get("fields", {}):
            continue
        dead = np.flatnonzero(~live[base + a : base + b]).astype(np.int64)
        if len(dead) == b - a:
            continue
        groups.setdefault(owner, []).append(_Unit(entry, a, b, base + a, dead))
    return _Plan(int(state.version), frozenset(s["name"] for s in segments), groups)


# --- search: merging -----------------------------------------------------------------------------


def _empty_hits() -> Hits:
    return (np.empty(0, np.int64), np.empty(0, np.float64), None, [])


def merge_hits(lists: Sequence[Hits], k: int, metric: str) -> Hits:
    """The best ``k`` of several best-first hit lists, in the kernel's order.

    (score desc, id asc); for euclidean (distance asc, id asc), which stays exact where the
    score ``1 / (1 + d)`` rounds equal for distinct tiny distances.
    """
    lists = [h for h in lists if len(h[0])]
    if not lists:
        return _empty_hits()
    if len(lists) == 1:
        rows, scores, dists, ids = lists[0]
        return rows[:k], scores[:k], None if dists is None else dists[:k], ids[:k]
    rows = np.concatenate([h[0] for h in lists])
    scores = np.concatenate([h[1] for h in lists])
    ids = [i for h in lists for i in h[3]]
    dist_parts = [h[2] for h in lists]
    dists = None if any(d is None for d in dist_parts) else np.concatenate(dist_parts)  # type: ignore[arg-type]
    if metric == "euclidean" and dists is not None:
        d = dists.tolist()
        order = sorted(range(len(ids)), key=lambda i: (d[i], ids[i]))[:k]
    else:
        s = scores.tolist()
        order = sorted(range(len(ids)), key=lambda i: (-s[i], ids[i]))[:k]
    idx = np.asarray(order, dtype=np.int64)
    return rows[idx], scores[idx], None if dists is None else dists[idx], [ids[i] for i in order]


# --- search: the worker side ---------------------------------------------------------------------


class _Source:
    """Read-only access to a store's objects from a worker."""

    def describe(self, key: str) -> str:
        raise NotImplementedError  # pragma: no cover

    def read(self, key: str) -> bytes:
        raise NotImplementedError  # pragma: no cover

    def read_array(self, key: str) -> npt.NDArray[Any]:
        """A whole (small) ``.npy`` object."""
        try:
            return load_npy(self.read(key))
        except (ValueError, EOFError) as e:
            raise StorageError(f"corrupt segment file {self.describe(key)}: {e}") from e

    def read_rows(self, key: str, start: int, stop: int, shape: tuple[int, int]) -> FloatArray:
        """Rows ``[start, stop)`` of a float32 ``.npy`` matrix of ``shape``."""
        raise NotImplementedError  # pragma: no cover


def _check_matrix(arr: npt.NDArray[Any], shape: tuple[int, int], where: str) -> None:
    if arr.dtype != np.float32 or arr.shape != shape:
        raise StorageError(f"segment file {where} holds {arr.dtype} {arr.shape}, expected float32 {shape}")


class _FileSource(_Source):
    def __init__(self, root: str) -> None:
        self.root = root

    def describe(self, key: str) -> str:
        return os.path.join(self.root, key)

    def read(self, key: str) -> bytes:
        try:
            with open(self.describe(key), "rb") as f:
                return f.read()
        except OSError as e:
            raise StorageError(f"cannot read segment file {self.describe(key)}: {e}") from e

    def read_rows(self, key: str, start: int, stop: int, shape: tuple[int, int]) -> FloatArray:
        try:
            arr = open_npy(self.describe(key))
        except (OSError, ValueError, EOFError) as e:
            raise StorageError(f"cannot read segment file {self.describe(key)}: {e}") from e
        _check_matrix(arr, shape, self.describe(key))
        return arr[start:stop]  # type: ignore[no-any-return]  # a memory-mapped view: no copy


class _S3Source(_Source):
    def __init__(self, spec: StoreSpec) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = str(spec.bucket)
        self.prefix = spec.prefix
        self.client = boto3.client(
            "s3", config=Config(retries={"mode": "standard"}, max_pool_connections=16), **spec.client_kwargs
        )

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _get(self, key: str, byte_range: str | None = None) -> bytes:
        try:
            extra = {"Range": byte_range} if byte_range else {}
            resp = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, **extra)
            return resp["Body"].read()  # type: ignore[no-any-return]
        except Exception as e:
            raise StorageError(f"cannot read {self.describe(key)}: {type(e).__name__}: {e}") from e

    def read(self, key: str) -> bytes:
        return self._get(key)

    def read_rows(self, key: str, start: int, stop: int, shape: tuple[int, int]) -> FloatArray:
        # Only this part's rows cross the network: the .npy header, then one ranged GET.
        head = self._get(key, "bytes=0-4095")
        buf = io.BytesIO(head)
        try:
            version = np.lib.format.read_magic(buf)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            got_shape, fortran, dtype = read(buf)
        except (ValueError, EOFError) as e:
            raise StorageError(f"corrupt segment file {self.describe(key)}: {e}") from e
        if fortran or np.dtype(dtype) != np.float32 or tuple(got_shape) != shape:
            raise StorageError(
                f"segment file {self.describe(key)} holds {dtype} {got_shape}, expected float32 {shape}"
            )
        offset = buf.tell()
        row_bytes = shape[1] * 4
        if stop <= start:
            return np.empty((0, shape[1]), dtype=np.float32)
        lo, hi = offset + start * row_bytes, offset + stop * row_bytes - 1
        data = self._get(key, f"bytes={lo}-{hi}")
        if len(data) != hi - lo + 1:
            raise StorageError(f"segment file {self.describe(key)} is truncated")
        return np.frombuffer(data, dtype=np.float32).reshape(stop - start, shape[1])


def _query_chunks(queries: FloatArray, nrows: int) -> list[FloatArray]:
    """Split a big batch so that one kernel call scores at most about ``_CHUNK_FLOATS`` values."""
    b = queries.shape[0]
    size = max(_MIN_CHUNK, _CHUNK_FLOATS // max(1, nrows))
    n = max(1, b // size)
    return [queries] if n == 1 else list(np.array_split(queries, n))


class _Part:
    """A worker's cached part of a segment: ids, vector indexes per field, rows for filters."""

    def __init__(self, source: _Source, entry: Mapping[str, Any], start: int, stop: int) -> None:
        self.source = source
        self.entry = dict(entry)
        self.start, self.stop = start, stop
        self.rows = int(entry["rows"])
        self.base = f"{_SEGMENTS}{entry['name']}"
        got, _ = decode_ids(entry, [source.read(k) for k in id_keys(entry)], source.describe)
        ids = got() if callable(got) else got
        self.id_list = list(ids[start:stop])
        self.ids = rank_ids(self.id_list)
        self.lock = threading.Lock()
        self._indexes: dict[str, VectorIndex | None] = {}
        self._table: RecordTable | None = None

    def index(self, field: str) -> VectorIndex | None:
        with self.lock:
            if field not in self._indexes:
                self._indexes[field] = self._load_index(field)
            return self._indexes[field]

    def _load_index(self, field: str) -> VectorIndex | None:
        f = self.entry.get("fields", {}).get(field)
        if f is None or self.stop <= self.start:
            return None
        mat = self.source.read_rows(
            f"{self.base}.{f['key']}.npy", self.start, self.stop, (self.rows, int(f["dim"]))
        )
        present = None
        if int(f["count"]) < self.rows:
            mkey = f"{self.base}.{f['key']}.mask.npy"
            full = self.source.read_array(mkey)
            if full.shape != (self.rows,):
                raise StorageError(
                    f"segment file {self.source.describe(mkey)} has shape {full.shape}, expected {(self.rows,)}"
                )
            present = np.array(full[self.start : self.stop], dtype=np.bool_)
        return VectorIndex.from_matrix(mat, present)

    def _load_rows(self) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]]:
        key = f"{self.base}.rows.jsonl"
        lines = self.source.read(key).splitlines(keepends=True)
        if len(lines) != self.rows:
            raise StorageError(
                f"segment file {self.source.describe(key)} holds {len(lines)} rows, expected {self.rows}"
            )
        return decode_rows(b"".join(lines[self.start : self.stop]), self.source.describe(key))

    def _filter_mask(self, expr: Expr) -> npt.NDArray[np.bool_]:
        with self.lock:  # building filter columns mutates the table
            if self._table is None:
                table = RecordTable()
                loader = self._load_rows if has_row_data(self.entry) else None
                table.load_segment(self.id_list, len(self.id_list), [], {}, loader, fresh=True)
                self._table = table
            return self._table.mask(expr)

    def search(
        self,
        queries: FloatArray,
        k: int,
        metric: str,
        field: str,
        expr: Expr | None,
        dead: npt.NDArray[np.int64],
    ) -> list[TopK]:
        """The kernel's top-``k`` of this part per query (rows local to the part)."""
        index = self.index(field)
        if index is None or index.count == 0:
            return [TopK(np.empty(0, np.int64), np.empty(0, np.float64), None) for _ in range(len(queries))]
        mask = None if expr is None else self._filter_mask(expr)
        if len(dead):
            if mask is None:
                mask = np.ones(self.stop - self.start, dtype=np.bool_)
            mask[dead] = False
        out: list[TopK] = []
        for chunk in _query_chunks(queries, self.stop - self.start):
            out.extend(index.search(chunk, k, metric, self.ids, mask))
        return out


class _WorkerCache:
    """What one worker keeps between tasks: object sources and loaded parts (immutable)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sources: dict[tuple[str, ...], _Source] = {}
        self.parts: dict[tuple[Any, ...], _Part] = {}
        self.loading: dict[tuple[Any, ...], threading.Lock] = {}
        self.stats = {"parts_loaded": 0, "searches": 0}
        self.embedders: dict[str, Any] = {}

    def source(self, spec: StoreSpec) -> _Source:
        with self.lock:
            src = self.sources.get(spec.key)
            if src is None:
                src = _FileSource(str(spec.path)) if spec.kind == "file" else _S3Source(spec)
                self.sources[spec.key] = src
            return src

    def part(self, spec: StoreSpec, unit: _Unit) -> _Part:
        key = (spec.key, unit.entry["name"], unit.start, unit.stop)
        with self.lock:
            part = self.parts.get(key)
            if part is not None:
                return part
            loading = self.loading.setdefault(key, threading.Lock())
        with loading:  # one load per part, even with several threads per worker
            with self.lock:
                part = self.parts.get(key)
            if part is None:
                part = _Part(self.source(spec), unit.entry, unit.start, unit.stop)
                with self.lock:
                    self.parts[key] = part
                    self.loading.pop(key, None)
                    self.stats["parts_loaded"] += 1
        return part

    def evict(self, store: tuple[str, ...], live: frozenset[str]) -> None:
        """Forget parts of ``store``'s segments that its current version no longer names."""
        with self.lock:
            for key in [k for k in self.parts if k[0] == store and k[1] not in live]:
                del self.parts[key]


_LOCAL_CACHE_LOCK = threading.Lock()
_LOCAL_HOLDER = type("_LocalHolder", (), {})()


def worker_cache() -> _WorkerCache:
    """The cache of the current Dask worker (an in-process fallback outside a worker)."""
    try:
        from distributed import get_worker

        holder: Any = get_worker()
    except (ImportError, ValueError):
        holder = _LOCAL_HOLDER
    cache: _WorkerCache | None = getattr(holder, "_dkv_cache", None)
    if cache is None:
        with _LOCAL_CACHE_LOCK:
            cache = getattr(holder, "_dkv_cache", None)
            if cache is None:
                cache = _WorkerCache()
                holder._dkv_cache = cache
    return cache


def cached_parts(dask_worker: Any = None) -> dict[str, Any]:
    """What a worker holds (``client.run(cached_parts)``): its parts per store, and counters."""
    holder = dask_worker if dask_worker is not None else None
    cache: _WorkerCache = getattr(holder, "_dkv_cache", None) or worker_cache()
    with cache.lock:
        return {"parts": sorted(cache.parts), "stats": dict(cache.stats)}


def search_group(
    spec: StoreSpec,
    live_segments: frozenset[str],
    units: Sequence[_Unit],
    queries: FloatArray,
    k: int,
    metric: str,
    field: str,
    expr: Expr | None,
) -> list[Hits]:
    """The worker task: the merged top-``k`` of ``units`` for each query (table rows, best first)."""
    cache = worker_cache()
    cache.evict(spec.key, live_segments)
    per_query: list[list[Hits]] = [[] for _ in range(len(queries))]
    for unit in units:
        part = cache.part(spec, unit)
        for qi, top in enumerate(part.search(queries, k, metric, field, expr, unit.dead)):
            if len(top.rows):
                ids = [part.id_list[r] for r in top.rows.tolist()]
                per_query[qi].append((top.rows + unit.base, top.scores, top.distances, ids))
    cache.stats["searches"] += 1
    return [merge_hits(lists, k, metric) for lists in per_query]


# --- search: orchestration -----------------------------------------------------------------------


def _run(cluster: _Cluster, spec: StoreSpec, plan: _Plan, request: SearchRequest) -> list[Hits]:
    """One task per worker group; the merged hits per query, or :class:`ClusterError`."""
    client = cluster.client
    token = uuid.uuid4().hex[:12]
    futures = [
        client.submit(
            search_group,
            spec,
            plan.names,
            units,
            request.queries,
            request.k,
            request.metric,
            request.vector_field,
            request.filter,
            key=f"dkv-search-{token}-{i}",
            workers=[addr],
            allow_other_workers=True,
            pure=False,
        )
        for i, (addr, units) in enumerate(sorted(plan.groups.items()))
    ]
    try:
        groups: list[list[Hits]] = client.gather(futures)
    except DkvError:
        client.cancel(futures)
        raise
    except BaseException as e:  # a cancelled future is a BaseException (asyncio.CancelledError)
        client.cancel(futures)
        if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise _cluster_error("the vector search", e) from e
    for f in futures:
        f.release()
    b = len(request.queries)
    if any(len(g) != b for g in groups):  # pragma: no cover - a worker answered for other queries
        raise ClusterError("a Dask worker returned results for a different number of queries")
    return [merge_hits([g[qi] for g in groups], request.k, request.metric) for qi in range(b)]


def search(db: Any, request: SearchRequest) -> list[list[VectorSearchResult]]:
    """Exact search of a Dask-configured store (one result list per query)."""
    cluster = _cluster_for(db)
    spec = StoreSpec.from_config(db.backend_name, db.config)
    core = db.core
    empty: list[list[VectorSearchResult]] = [[] for _ in range(len(request.queries))]

    def finish(hits: list[Hits]) -> list[list[VectorSearchResult]]:
        tops = [TopK(rows, scores, dists) for rows, scores, dists, _ in hits]
        results: list[list[VectorSearchResult]] = core.table.vector_results(
            tops, request.vector_field, request.metric
        )
        return apply_threshold(results, request)

    for attempt in range(_SEARCH_ATTEMPTS):
        # The last attempt holds the store lock throughout, so the table cannot change under it;
        # the others let this store's other threads go on while the cluster works.
        hold = attempt == _SEARCH_ATTEMPTS - 1
        workers = cluster.workers()
        with core.lock:
            core.refresh()
            plan = _plan_search(db, request, cluster, workers)
            if plan is None or not plan.groups:
                return empty
            if hold:
                return finish(_run(cluster, spec, plan, request))
        hits = _run(cluster, spec, plan, request)
        with core.lock:
            if db.storage.state.version == plan.version:
                return finish(hits)
        # committed meanwhile (rows may have died): search the new version
    raise ConflictError("the table changed during every attempt of a distributed search")  # pragma: no cover


async def search_async(db: Any, request: SearchRequest) -> Any:
    """The async twin: the same search from a worker thread (the store's I/O stays on its loop)."""
    await db.connect()
    results = await asyncio.to_thread(search, db, request)
    return results if request.batch else results[0]


@hookimpl(tryfirst=True)
def dkv_vector_search(db: Any, request: SearchRequest) -> Any:
    """Exact search on the Dask cluster for stores with ``executor="dask"``; declines for others."""
    if not _wants_dask(db):
        return None
    results = search(db, request)
    return results if request.batch else results[0]


@hookimpl(tryfirst=True)
def dkv_vector_search_async(db: Any, request: SearchRequest) -> Any:
    """Async exact search on the Dask cluster for stores with ``executor="dask"``; declines for others."""
    if not _wants_dask(db):
        return None
    return search_async(db, request)


# --- bulk embedding ------------------------------------------------------------------------------


class _Shipped:
    """An embedder that pickle cannot take as it is because ``__init__`` cached a bound method with
    ``functools.lru_cache`` (as :class:`~dk_vector_plugins.HashingEmbedder` does): its class, its
    other attributes and the caches to rebuild. It travels (and is replicated between workers) in
    this picklable form; each worker builds the embedder once and keeps it."""

    def __init__(
        self, cls: Any, state: dict[str, Any], caches: dict[str, tuple[str, dict[str, Any]]]
    ) -> None:
        self.cls, self.state, self.caches = cls, state, caches
        self.token = uuid.uuid4().hex

    def build(self) -> Any:
        obj = self.cls.__new__(self.cls)
        obj.__dict__.update(self.state)
        for attr, (method, params) in self.caches.items():
            wrapped = functools.lru_cache(maxsize=params.get("maxsize"), typed=bool(params.get("typed")))
            setattr(obj, attr, wrapped(getattr(obj, method)))
        return obj


def portable(embedder: Any) -> Any:
    """``embedder`` itself if it pickles, else a :class:`_Shipped` stand-in, else :class:`PluginError`."""
    import cloudpickle

    try:
        cloudpickle.dumps(embedder)
        return embedder
    except Exception as first:
        state: dict[str, Any] = {}
        caches: dict[str, tuple[str, dict[str, Any]]] = {}
        for name, value in getattr(embedder, "__dict__", {}).items():
            inner = getattr(value, "__wrapped__", None)
            if hasattr(value, "cache_parameters") and inspect.ismethod(inner) and inner.__self__ is embedder:
                caches[name] = (inner.__name__, dict(value.cache_parameters()))
            else:
                state[name] = value
        shipped = _Shipped(type(embedder), state, caches)
        try:
            if not caches:
                raise first
            cloudpickle.dumps(shipped)
        except Exception as e:
            raise PluginError(
                f"the embedder {embedder!r} cannot be sent to Dask workers (it does not pickle: {e}); "
                "use a picklable embedder or executor='local'"
            ) from e
        return shipped


def embed_texts(embedder: Any, texts: list[str]) -> npt.NDArray[Any]:
    """The worker task: embed one batch of texts."""
    emb = embedder
    if isinstance(embedder, _Shipped):
        cache = worker_cache()
        with cache.lock:
            emb = cache.embedders.get(embedder.token)
            if emb is None:
                emb = cache.embedders[embedder.token] = embedder.build()
                while len(cache.embedders) > 4:  # the embedders of the latest bulk embeds
                    cache.embedders.pop(next(iter(cache.embedders)))
    vectors = emb.embed(texts)
    if inspect.isawaitable(vectors):
        if inspect.iscoroutine(vectors):
            vectors.close()
        raise InvalidRequestError("an async embedding function cannot run on Dask workers")
    return np.asarray(vectors)


def bulk_embed(db: Any, request: BulkEmbedRequest) -> BulkEmbedReport:
    """Embed on the workers, commit each batch (one segment) in input order as it finishes."""
    if getattr(request.embedder, "is_async", False):
        raise InvalidRequestError(
            "an async embedding function cannot run on Dask workers: give a sync one, or use executor='local'"
        )
    cluster = _cluster_for(db)
    client = cluster.client
    core = db.core
    recs, texts = _plan(request)
    dim = db.vector_dimension(request.vector_field)
    window = max(2, 2 * len(cluster.workers()))
    token = uuid.uuid4().hex[:12]
    embedded = skipped = batches = 0
    pending: deque[tuple[list[int], Any, int]] = deque()
    pending_ids: set[str] = set()
    try:
        shipped = client.scatter(portable(request.embedder), broadcast=True, hash=False)
    except DkvError:
        raise
    except Exception as e:
        raise _cluster_error("sending the embedder", e) from e

    def vectors_of(future: Any) -> Any:
        try:
            return future.result()
        except DkvError:
            raise
        except BaseException as e:
            if _is_cluster_failure(e):
                raise _cluster_error("bulk embedding", e) from e
            raise

    try:
        with _progress_bar(request, len(recs)) as bar:

            def commit_oldest() -> None:
                nonlocal dim, embedded, batches
                todo, future, size = pending.popleft()
                if future is not None:
                    done = _attach([recs[i] for i in todo], vectors_of(future), request, dim)
                    dim = done[0][request.vector_field].shape[0]
                    core.put(done, "upsert")
                    embedded += len(done)
                    batches += 1
                    pending_ids.difference_update(str(recs[i].id) for i in todo)
                bar.update(size)

            for n, sl in enumerate(_batches(len(recs), request.batch_size)):
                ids = [str(r.id) for r in recs[sl]]
                if not pending_ids.isdisjoint(ids):  # the same id again: commit the earlier one first
                    while pending:
                        commit_oldest()
                skip = _skip_mask(core.read(ids), texts[sl], request)
                todo = [i for i, s in zip(range(sl.start, sl.stop), skip) if not s]
                skipped += len(skip) - len(todo)
                future = None
                if todo:
                    future = client.submit(
                        embed_texts,
                        shipped,
                        [texts[i] for i in todo],
                        key=f"dkv-embed-{token}-{n}",
                        pure=False,
                    )
                    pending_ids.update(str(recs[i].id) for i in todo)
                pending.append((todo, future, sl.stop - sl.start))
                while len(pending) >= window:
                    commit_oldest()
            while pending:
                commit_oldest()
    finally:
        leftover = [f for _, f, _ in pending if f is not None]
        if leftover:
            client.cancel(leftover)
        client.cancel([shipped])
    return BulkEmbedReport([str(r.id) for r in recs], embedded, skipped, batches)


async def bulk_embed_async(db: Any, request: BulkEmbedRequest) -> BulkEmbedReport:
    """The async twin: the same driver from a worker thread."""
    await db.connect()
    return await asyncio.to_thread(bulk_embed, db, request)


@hookimpl(tryfirst=True)
def dkv_bulk_embed(db: Any, request: BulkEmbedRequest) -> Any:
    """Bulk embedding on the Dask cluster for stores with ``executor="dask"``; declines for others."""
    if not _wants_dask(db):
        return None
    return bulk_embed(db, request)


@hookimpl(tryfirst=True)
def dkv_bulk_embed_async(db: Any, request: BulkEmbedRequest) -> Any:
    """Async bulk embedding on the Dask cluster for stores with ``executor="dask"``; declines for others."""
    if not _wants_dask(db):
        return None
    return bulk_embed_async(db, request)
