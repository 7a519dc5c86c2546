"""The store core shared by every backend and by the sync and async APIs.

:class:`StoreCore` is a thread-safe :class:`~dk_vector_plugins.memtable.RecordTable` plus a
:class:`Storage`: before a read it lets the storage bring the table up to date (a no-op in memory,
one cheap manifest check on file and S3); a write is planned against the current table (all
validation happens here, so a rejected call changes nothing), committed by the storage, and only
then applied to the table. A storage that loses a commit race reports it, and the write is planned
again on the refreshed table.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import numpy as np
import numpy.typing as npt

from .errors import ConflictError, DimensionMismatchError, DuplicateRecordError, InvalidRequestError
from .memtable import RecordTable, Row
from .quant import Int8Codes
from .query import Expr, Query
from .records import Record, new_id
from .search import apply_threshold
from .textindex import Postings
from .types import (
    HybridSearchConfig,
    HybridSearchResult,
    SearchRequest,
    TextSearchRequest,
    TextSearchResult,
    VectorSearchResult,
)
from .values import check_ids, normalize_dicts

__all__ = ["NullStorage", "Storage", "StoreCore", "WriteBatch"]

T = TypeVar("T")

# Async searches over more than this many floats run in a worker thread (BLAS releases the GIL).
_THREAD_THRESHOLD = 2_000_000
# Async text searches over tables of more rows than this run in a worker thread.
_TEXT_THREAD_ROWS = 20_000
#: Group commit: the longest a thread about to commit waits for the other active writers.
GROUP_WAIT_S = 0.002


@attrs.frozen
class WriteBatch:
    """One planned write: rows to append (replacing rows of the same id) and ids to delete.

    ``clear`` first removes every record. ``batches`` maps a vector field to (positions of rows
    in ``rows``, vectors). ``fresh`` promises that no id of ``rows`` is stored (after ``clear``)
    and none appears twice: readers of a stored table then skip looking them up.
    ``bare_ids`` replaces ``rows`` for rows that hold vectors only (no data, metadata or vector
    info): bulk loads skip building a tuple per row. ``norms`` holds the squared norms of a
    field's vectors when the planner computed them (aligned with ``batches``); ``id_rows`` the
    id -> row entries a fresh batch adds to the table's id lookup (built while planning).
    """

    rows: list[Row] = attrs.field(factory=list)
    batches: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = attrs.field(factory=dict)
    deletes: list[str] = attrs.field(factory=list)
    clear: bool = False
    fresh: bool = False
    bare_ids: list[str] | None = None
    norms: dict[str, npt.NDArray[np.float32]] = attrs.field(factory=dict)
    id_rows: dict[str, int] | None = None
    #: Commit even when nothing else changes (a new schema: a manifest without a new segment).
    touch: bool = False
    #: A merge: the batch's segment replaces the stored segments from this index on (their live
    #: rows, and their deletes of earlier rows), instead of following them.
    replaces: int | None = None
    #: A restore: the next version names exactly these stored segments (an earlier version's).
    restore: list[dict[str, Any]] | None = None
    #: Full-text postings of the rows per field (``text_search_fields``), built by the storage
    #: when it commits them (stored with the segment) and adopted by the table.
    texts: dict[str, Postings] = attrs.field(factory=dict)
    #: int8 codes of a field's vectors the table holds already (a merge or a compaction of rows
    #: that all hold the field): stored with the segment instead of quantizing the rows again.
    codes: dict[str, Int8Codes] = attrs.field(factory=dict)
    #: The rows' stored JSON lines, aligned with ``rows`` (a merge or a compaction of stored
    #: segments whose rows files it has at hand): written as they are, not encoded again
    #: (``None``: that row is encoded).
    lines: list[bytes | None] | None = None

    def row_ids(self) -> list[str]:
        """The ids of the rows the batch appends."""
        return self.bare_ids if self.bare_ids is not None else [r[0] for r in self.rows]

    @property
    def empty(self) -> bool:
        """Whether the batch changes nothing."""
        return not (self.rows or self.bare_ids or self.deletes or self.clear or self.touch or self.restore is not None)

    @property
    def changes_rows(self) -> bool:
        """Whether the batch adds, deletes or clears rows (a ``touch`` alone does not)."""
        return bool(
            self.rows or self.bare_ids or self.deletes or self.clear or self.replaces is not None or self.restore
        )


class Storage(Protocol):
    """Where a table lives. Memory keeps nothing; file and S3 keep a log-structured table.

    The core calls only these; what differs between backends stays behind them.
    """

    #: Whether the table keeps the vectors a commit wrote (memory maps of the written files),
    #: so that a caller's batch need not be copied first.
    adopts_written: bool

    def refresh(self, table: RecordTable) -> None:
        """Bring ``table`` up to the latest committed version."""

    def commit(self, table: RecordTable, batch: WriteBatch) -> bool:
        """Persist ``batch`` on top of the version ``table`` holds; ``False`` if another writer won."""

    def after_commit(self, table: RecordTable) -> None:
        """Maintenance after a commit was applied to ``table`` (e.g. automatic compaction)."""

    def compact(self, table: RecordTable) -> bool:
        """Reclaim the space of deleted and replaced rows (``table`` is fresh); ``False`` when
        another writer committed first."""

    def close(self) -> None:
        """Release resources."""


class NullStorage:
    """The storage of the memory backend: nothing to load, every commit succeeds."""

    adopts_written = False

    def refresh(self, table: RecordTable) -> None:
        """Nothing to do."""

    def commit(self, table: RecordTable, batch: WriteBatch) -> bool:
        """Nothing to persist."""
        return True

    def after_commit(self, table: RecordTable) -> None:
        """Drop dead rows once they outnumber the live ones (and 1024)."""
        if table.dead > max(1024, len(table)):
            table.compact()

    def compact(self, table: RecordTable) -> bool:
        """Drop dead rows in memory."""
        table.compact()
        return True

    def close(self) -> None:
        """Nothing to release."""


def apply(table: RecordTable, batch: WriteBatch) -> None:
    """Apply a committed batch to a table."""
    if batch.clear:
        table.clear()
    if batch.deletes:
        table.delete(batch.deletes)
    start = table.nrows
    table.append(
        batch.rows,
        batch.batches,
        bare_ids=batch.bare_ids,
        fresh=batch.fresh,
        norms=batch.norms,
        id_rows=batch.id_rows,
    )
    if batch.texts:
        table.adopt_texts(start, batch.texts)


@attrs.define(eq=False)
class _Ticket:
    """A write waiting for a commit (group commit): its plan, then its result or error."""

    plan: Callable[[RecordTable], tuple[WriteBatch, Any]]
    done: bool = False
    result: Any = None
    error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.done, self.result, self.error = True, result, error

    def outcome(self) -> Any:
        """The write's result (its error raised)."""
        if not self.done:  # the committing thread failed before it came to this write
            raise ConflictError("the commit this write joined failed; nothing of it was stored")
        if self.error is not None:
            raise self.error
        return self.result


def _adds_only(batch: WriteBatch) -> bool:
    """Whether a batch only appends rows of new ids (what a group commit may join)."""
    return (
        batch.fresh
        and not batch.deletes
        and not batch.clear
        and not batch.touch
        and batch.replaces is None
        and batch.restore is None
    )


def _combine(batches: Sequence[WriteBatch]) -> WriteBatch:
    """One batch appending the rows of ``batches`` (each :func:`_adds_only`, ids distinct)."""
    if all(b.bare_ids is not None for b in batches):
        bare: list[str] | None = [rid for b in batches for rid in b.bare_ids or ()]
        rows: list[Row] = []
    else:
        bare = None
        empty: dict[str, Any] = {}
        rows = [
            r
            for b in batches
            for r in (b.rows if b.bare_ids is None else [(rid, empty, empty, empty) for rid in b.bare_ids])
        ]
    fields: dict[str, tuple[list[npt.NDArray[np.int64]], list[npt.NDArray[np.float32]]]] = {}
    offset = 0
    for b in batches:
        for name, (pos, mat) in b.batches.items():
            ps, ms = fields.setdefault(name, ([], []))
            ps.append(pos + offset)
            ms.append(mat)
        offset += len(b.row_ids())
    merged = {name: (np.concatenate(ps), np.concatenate(ms)) for name, (ps, ms) in fields.items()}
    return WriteBatch(rows=rows, batches=merged, fresh=True, bare_ids=bare)


class StoreCore:
    """Thread-safe operations over a table and its storage. Every public method takes the lock."""

    def __init__(self, table: RecordTable, storage: Storage | None = None, max_retries: int = 20) -> None:
        self.table = table
        self.storage: Storage = storage or NullStorage()
        self.lock = threading.RLock()
        self.max_retries = max_retries
        #: How long a batch that only appends keeps rebasing onto other writers' commits.
        self.rebase_timeout_s = 120.0
        #: Async stores: every call may do I/O (file, S3), so :meth:`run_async` always uses a thread.
        self.io_bound = False
        #: Async stores: awaited before core work (opens a connection, e.g. an aioboto3 client).
        self.connect_async: Callable[[], Awaitable[None]] | None = None
        #: Async stores: awaited by :meth:`close_async` after the storage is closed.
        self.async_closers: list[Callable[[], Awaitable[None]]] = []
        #: Whether the table was loaded from its storage at least once (memory: always).
        self.opened = storage is None
        #: Writes waiting for the lock (group commit, see :meth:`write`).
        self._pending: list[_Ticket] = []
        self._turn = threading.Condition()  # guards _pending, _leading and _groups
        self._leading = False  # a thread is committing the writes it took from _pending
        #: The writes of the last two group commits and how long the last one took (seconds):
        #: how many writers are active, and how long a new leader may wait for them.
        self._groups: tuple[int, int] = (1, 1)
        self._last_commit_s = 0.0

    # -- running for an async store -----------------------------------------------------------------
    async def run_async(self, fn: Callable[..., T], *args: Any, heavy: bool = False, connect: bool = True) -> T:
        """Run ``fn(*args)`` for an async store: after opening its connection (unless
        ``connect=False``), in a worker thread when it may block (I/O, or ``heavy`` CPU work)."""
        if connect and self.connect_async is not None:
            await self.connect_async()
        if heavy or self.io_bound:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def vector_search_async(self, request: SearchRequest) -> list[list[VectorSearchResult]]:
        """:meth:`vector_search` for an async store (a large search runs in a worker thread)."""
        table = self.table
        work = table.nrows * (table.vector_dimension(request.vector_field) or 0) * len(request.queries)
        return await self.run_async(self.vector_search, request, heavy=work > _THREAD_THRESHOLD)

    def close(self) -> None:
        """Release the storage."""
        self.storage.close()

    async def close_async(self) -> None:
        """Release the storage (in a worker thread: its maintenance thread may need the event
        loop to finish), then what the async store opened on its event loop."""
        await asyncio.to_thread(self.storage.close)
        for closer in self.async_closers:
            await closer()

    # -- plumbing -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Bring the table up to date with its storage."""
        with self.lock:
            self.storage.refresh(self.table)
            self.opened = True

    def write(self, plan: Callable[[RecordTable], tuple[WriteBatch, Any]]) -> Any:
        """Plan a write on the fresh table, commit it, apply it; after a lost race, plan again on
        the winner's version (a rebase).

        A batch that deletes nothing and does not clear (creates, upserts, ``add_vectors``, bulk
        embedding) cannot conflict with another writer's: it is planned again as often as it
        takes, for up to :attr:`rebase_timeout_s`. Other batches give up with
        :class:`ConflictError` after :attr:`max_retries` lost races.

        Group commit: writes that threads (or an async store's worker threads) ask for while
        another commit is under way wait for the lock together; the thread that gets it commits
        every waiting write that only adds new ids as one commit (each gets its own result or
        error), and the others one by one. When the last commits carried several writers, the
        thread that gets the lock first waits a moment (at most half the last commit's time,
        and never more than :data:`GROUP_WAIT_S`) for the writers of the previous commit, back
        from it with their next write, so that one commit carries all of them instead of every
        other commit half of them. A lone writer never waits.
        """
        ticket = _Ticket(plan)
        with self._turn:
            self._pending.append(ticket)
            if self._leading:
                self._turn.notify_all()  # a leader waiting for writers counts this one
            while self._leading and not ticket.done:  # another writer commits: ours may join it
                self._turn.wait()
            if ticket.done:
                return ticket.outcome()
            self._leading = True  # this thread commits what is waiting
            active = sum(self._groups)
            if min(self._groups) > 1 or self._groups[1] > 2:  # several writers: wait for them
                until = time.monotonic() + min(GROUP_WAIT_S, 0.5 * self._last_commit_s)
                while len(self._pending) < active and (left := until - time.monotonic()) > 0:
                    self._turn.wait(left)
            group, self._pending = self._pending, []
        started = time.monotonic()
        try:
            with self.lock:
                self._write_group(group)
        finally:
            with self._turn:
                self._groups = (self._groups[1], len(group))
                self._last_commit_s = time.monotonic() - started
                self._leading = False
                self._turn.notify_all()
        return ticket.outcome()

    def _write_group(self, group: list[_Ticket]) -> None:
        """Commit the writes of ``group`` (under the lock): those that add only new ids, distinct
        from each other's, as one commit; every other one on its own."""
        alone = group
        if len(group) > 1:
            alone = []
            deadline = time.monotonic() + self.rebase_timeout_s
            while True:
                self.storage.refresh(self.table)
                self.opened = True
                joined: list[tuple[_Ticket, WriteBatch, Any]] = []
                seen: set[str] = set()
                for t in group:
                    if t.done or t in alone:
                        continue
                    try:
                        batch, result = t.plan(self.table)
                    except Exception as e:  # this write is refused; the others go on
                        t.finish(error=e)
                        continue
                    ids = batch.row_ids()
                    if batch.empty:
                        t.finish(result)
                    elif not _adds_only(batch) or not seen.isdisjoint(ids):
                        alone.append(t)
                    else:
                        seen.update(ids)
                        joined.append((t, batch, result))
                if len(joined) <= 1:
                    alone = [t for t, _, _ in joined] + alone
                    break
                combined = _combine([b for _, b, _ in joined])
                if self.storage.commit(self.table, combined):
                    apply(self.table, combined)
                    self.storage.after_commit(self.table)
                    for t, _, result in joined:
                        t.finish(result)
                    break
                if time.monotonic() > deadline:
                    for t, _, _ in joined:
                        t.finish(error=ConflictError("gave up: concurrent writers kept committing first"))
                    break
        for t in alone:
            if not t.done:
                try:
                    t.finish(self._write_one(t.plan))
                except Exception as e:
                    t.finish(error=e)

    def _write_one(self, plan: Callable[[RecordTable], tuple[WriteBatch, Any]]) -> Any:
        """One write, its own commit (see :meth:`write`)."""
        with self.lock:
            lost = 0
            deadline = time.monotonic() + self.rebase_timeout_s
            while True:
                self.storage.refresh(self.table)
                self.opened = True
                batch, result = plan(self.table)
                if batch.empty:
                    return result
                if self.storage.commit(self.table, batch):
                    apply(self.table, batch)
                    self.storage.after_commit(self.table)
                    return result
                lost += 1
                appends_only = not batch.deletes and not batch.clear
                if (not appends_only and lost > self.max_retries) or time.monotonic() > deadline:
                    raise ConflictError(
                        f"gave up after {lost} lost commit races"
                        + ("" if appends_only else f" (commit_retries={self.max_retries})")
                        + ": concurrent writers kept committing first"
                    )

    def read_locked(self, fn: Callable[[RecordTable], Any]) -> Any:
        """Run ``fn`` on the refreshed table under the lock."""
        with self.lock:
            self.storage.refresh(self.table)
            self.opened = True
            return fn(self.table)

    # -- writes ---------------------------------------------------------------------------------
    def put(self, records: Sequence[Record], mode: str) -> list[Any]:
        """Create, update or upsert records in one write; all or nothing.

        ``mode`` is ``"create"`` (existing ids raise :class:`DuplicateRecordError`), ``"update"``
        (missing ids are skipped; result ``False`` for them) or ``"upsert"``. Returns the ids
        (create, upsert) or one bool per record (update).
        """
        recs = list(records)
        for i, r in enumerate(recs):
            if not isinstance(r, Record):
                raise InvalidRequestError(f"records[{i}] must be a Record, got {type(r).__name__}")
        ids = [r.id if r.id is not None else new_id() for r in recs]
        check_ids(ids, "records")  # every mode: an update of a bad id is no silent miss
        if mode == "create":
            seen: set[str] = set()
            for rid in ids:
                if rid in seen:
                    raise DuplicateRecordError(f"record id {rid!r} appears twice in one batch", id=rid)
                seen.add(rid)

        def plan(table: RecordTable) -> tuple[WriteBatch, Any]:
            if mode == "create":
                for rid in ids:
                    if rid in table:
                        raise DuplicateRecordError(
                            f"a record with id {rid!r} already exists; use upsert to replace it", id=rid
                        )
            keep = [i for i, rid in enumerate(ids) if mode != "update" or rid in table]
            staged = []
            for i in keep:
                rec = recs[i]
                if rec.id != ids[i]:
                    rec = rec.copy(deep=False)
                    rec.id = ids[i]
                staged.append(rec)
            rows, batches = table.prepare(staged)
            result: Any = ids if mode != "update" else [rid in table for rid in ids]
            fresh = mode == "create" or (len(set(ids)) == len(ids) and table.has_none_of(ids))
            return WriteBatch(rows=rows, batches=batches, fresh=fresh), result

        return list(self.write(plan))

    def put_vectors(
        self,
        ids: Sequence[str] | None,
        matrix: npt.NDArray[np.float32],
        metadata: Sequence[Mapping[str, Any]] | None,
        field: str,
        merge: Callable[[list[int], RecordTable], list[Record]],
        norms: npt.NDArray[np.float32] | None = None,
    ) -> list[str]:
        """Upsert records made of one vector each (``add_vectors``), in one write.

        New ids become rows straight from ``matrix`` (no Record objects: bulk loads run near disk
        speed); rows whose id is already stored go through ``merge``, which returns full records
        keeping their other fields.
        """
        m = matrix.shape[0]
        if ids is None:
            rids = [new_id() for _ in range(m)]
        elif set(map(type, ids)) <= {str}:
            rids = list(ids)
        else:
            rids = [str(x) for x in ids]
        check_ids(rids, "ids")
        # the rows' own copies, as every backend reads them back (a value no store holds raises)
        metas = normalize_dicts(metadata, rids, "metadata") if metadata else None

        def plan(table: RecordTable) -> tuple[WriteBatch, Any]:
            dim = table.vector_dimension(field)
            if dim is not None and matrix.shape[1] != dim:
                raise DimensionMismatchError(
                    f"vectors have {matrix.shape[1]} dimensions, field {field!r} has {dim}"
                )
            n0 = table.nrows
            new_rows = dict(zip(rids, range(n0, n0 + m)))  # the rows they get if all are new
            stored = [] if table.has_none_of(new_rows) else [i for i, rid in enumerate(rids) if rid in table]
            if stored:  # upserts of existing records: merged records, planned the general way
                fresh = sorted(set(range(m)) - set(stored))
                merged = merge(stored, table)
            else:
                fresh, merged = list(range(m)), []
            batches = {field: (np.arange(len(fresh), dtype=np.int64), matrix[fresh] if stored else matrix)}
            all_new = not stored and len(new_rows) == m
            sq = {} if norms is None or stored else {field: norms}
            if not metas and not stored:  # vectors only: no row tuples at all
                batch = WriteBatch(
                    batches=batches, fresh=all_new, bare_ids=rids, norms=sq, id_rows=new_rows if all_new else None
                )
                return batch, rids
            empty: dict[str, Any] = {}  # the table never changes a row's dicts in place: one serves all
            empties = [empty] * m
            datas = metas or empties
            if stored:
                rows: list[Row] = [(rids[i], datas[i], empty, empty) for i in fresh]
            else:
                rows = list(zip(rids, datas, empties, empties))
            if merged:
                more, more_batches = table.prepare(merged)
                off = len(rows)
                rows.extend(more)
                for name, (pos, mat) in more_batches.items():
                    if name in batches:
                        p0, m0 = batches[name]
                        batches[name] = (np.concatenate([p0, pos + off]), np.concatenate([m0, mat]))
                    else:
                        batches[name] = (pos + off, mat)
            return WriteBatch(rows=rows, batches=batches, fresh=all_new, norms=sq), rids

        return list(self.write(plan))

    def apply_ops(self, ops: Sequence[tuple[str, Any]]) -> list[Any]:
        """Creates, updates, upserts and deletes in one write, in order, all or nothing (a
        :meth:`~dk_vector_plugins.SyncDatabase.batch`). ``ops`` are ``("create", record)``,
        ``("update", record)``, ``("upsert", record)`` (records with their ids set) and
        ``("delete", id)``; returns what each would return on its own (ids, or bools)."""
        for i, (kind, arg) in enumerate(ops):
            if kind == "delete":
                check_ids([arg], "ids")
            elif kind in ("create", "update", "upsert") and isinstance(arg, Record):
                check_ids([arg.id], "records")
            else:
                raise InvalidRequestError(f"operation {i} of the batch ({kind!r}) is not one a batch holds")

        def plan(table: RecordTable) -> tuple[WriteBatch, Any]:
            final: dict[str, Record | None] = {}  # id -> its state at the end of the batch

            def exists(rid: str) -> bool:
                return final[rid] is not None if rid in final else rid in table

            results: list[Any] = []
            for kind, arg in ops:
                if kind == "delete":
                    results.append(exists(arg))
                    final[arg] = None
                    continue
                rid = str(arg.id)
                if kind == "create" and exists(rid):
                    raise DuplicateRecordError(
                        f"a record with id {rid!r} already exists; use upsert to replace it", id=rid
                    )
                if kind == "update" and not exists(rid):
                    results.append(False)
                    continue
                final[rid] = arg
                results.append(True if kind == "update" else rid)
            records = [r for r in final.values() if r is not None]
            rows, batches = table.prepare(records)
            deletes = [rid for rid, r in final.items() if r is None and rid in table]
            return WriteBatch(rows=rows, batches=batches, deletes=deletes), results

        return list(self.write(plan))

    def delete_where(self, expr: Expr | None) -> int:
        """Delete every record matching ``expr`` in one write; returns how many."""

        def plan(table: RecordTable) -> tuple[WriteBatch, Any]:
            rows = np.flatnonzero(table.mask(expr))
            ids = table.ids_of(rows)
            return WriteBatch(deletes=ids), len(ids)

        return int(self.write(plan))

    def delete(self, ids: Sequence[str]) -> list[bool]:
        """Delete records; one bool per id (whether it existed)."""
        wanted = list(ids)

        def plan(table: RecordTable) -> tuple[WriteBatch, Any]:
            present = [rid in table for rid in wanted]
            return WriteBatch(deletes=[r for r, p in zip(wanted, present) if p]), present

        return list(self.write(plan))

    def clear(self) -> int:
        """Delete every record; returns how many there were."""

        def plan(table: RecordTable) -> tuple[WriteBatch, Any]:
            return WriteBatch(clear=len(table) > 0 or table.nrows > 0), len(table)

        return int(self.write(plan))

    # -- reads ----------------------------------------------------------------------------------
    def read(self, ids: Sequence[str]) -> list[Record | None]:
        """Copies of the records (``None`` for a missing id)."""
        return list(self.read_locked(lambda t: [t.get(rid) for rid in ids]))

    def exists(self, rid: str) -> bool:
        """Whether ``rid`` is stored."""
        return bool(self.read_locked(lambda t: rid in t))

    def count(self, expr: Expr | None) -> int:
        """How many records satisfy ``expr``."""
        return int(self.read_locked(lambda t: t.count(expr)))

    def search(self, query: Query | None, expr: Expr | None) -> list[Record]:
        """Records matching a query (filters, sort, offset, limit, projection)."""
        return list(self.read_locked(lambda t: t.query(query, expr)))

    def vector_search(self, request: SearchRequest) -> list[list[VectorSearchResult]]:
        """Exact search for each query of ``request`` (the built-in backends' default)."""

        def run(table: RecordTable) -> list[list[VectorSearchResult]]:
            table.check_search(request.vector_field, request.queries.shape[1])
            results = table.vector_search(
                request.queries,
                request.vector_field,
                request.k,
                request.metric,
                request.filter,
                exact=request.options.get("exact", "auto"),
            )
            return apply_threshold(results, request)

        return list(self.read_locked(run))

    def text_search(self, request: TextSearchRequest) -> list[list[TextSearchResult]]:
        """BM25 search for each query of ``request`` (the built-in backends' default)."""

        def run(table: RecordTable) -> list[list[TextSearchResult]]:
            results = table.text_search(request.terms, request.text_fields, request.k, request.filter)
            return apply_threshold(results, request)

        return list(self.read_locked(run))

    async def text_search_async(self, request: TextSearchRequest) -> list[list[TextSearchResult]]:
        """:meth:`text_search` for an async store (a large table's in a worker thread)."""
        return await self.run_async(self.text_search, request, heavy=self.table.nrows > _TEXT_THREAD_ROWS)

    def hybrid_search(
        self, text: TextSearchRequest, vector: SearchRequest, config: HybridSearchConfig, k: int
    ) -> list[HybridSearchResult]:
        """Both sides of a hybrid search in one pass under the lock (one refresh, one snapshot),
        fused; the built-in answer when no plugin answers either side."""

        def run(table: RecordTable) -> list[HybridSearchResult]:
            table.check_search(vector.vector_field, vector.queries.shape[1])
            return table.hybrid_search(text, vector, config, k)

        return list(self.read_locked(run))

    def string_fields(self) -> list[str]:
        """The fields holding text in some live record (what a text search searches by default)."""
        return list(self.read_locked(lambda t: t.string_fields()))

    def restore(self, version: int) -> None:
        """Commit the segments of an earlier ``version`` as the newest version (storages that
        keep versions: file and S3)."""
        segments = getattr(self.storage, "version_segments", None)
        if segments is None:
            raise InvalidRequestError("this store keeps no earlier versions")

        def plan(table: RecordTable) -> tuple[WriteBatch, Any]:
            return WriteBatch(restore=segments(version)), None

        self.write(plan)

    def touch(self) -> None:
        """Commit the store's current schema (a new manifest naming the same segments)."""
        self.write(lambda table: (WriteBatch(touch=True), None))

    def compact(self) -> None:
        """Reclaim the space of deleted and replaced rows (the storage's compaction)."""
        with self.lock:
            self.storage.refresh(self.table)
            self.storage.compact(self.table)
