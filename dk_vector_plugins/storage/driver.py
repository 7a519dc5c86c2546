"""The :class:`~dk_vector_plugins.core.Storage` of the file and S3 backends: table programs run on an object store.

:class:`TableStorage` runs the programs of :mod:`.log_format` with a caller-supplied runner: on a sync
store (thread pool for parallel requests), or on an async store from a worker thread by handing
each program to the event loop (so the async classes share the very same core and never block
their loop).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import random
import threading
import time
import warnings
import weakref
from collections import ChainMap
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..core import StoreCore, WriteBatch, apply
from ..errors import StorageError
from ..memtable import RecordTable
from .log_format import PreparedMerge, ReadSegment, TableLogic, TableOptions, TableState, serve_inline
from .ops import AsyncObjectStore, Program, SyncObjectStore, run_async, run_sync

__all__ = ["TableStorage", "async_runner", "sync_runner"]

Runner = Callable[[Program[Any]], Any]

#: How long a merge stored in the background waits for a commit of its store to take it along
#: (seconds) before committing on its own: a store that commits more often pays no manifest write
#: (and no request) for its merges.
RIDE_WAIT_S = 0.05

#: At most this many bytes of a remote store's own recent objects are kept in memory while a
#: merge is in flight (see ``TableStorage._recent``).
RECENT_MAX_BYTES = 64 * 2**20

#: Automatic clean-ups run without the store's lock when the grace period is at least this long
#: (seconds): no commit of the store is still writing objects that old.
UNLOCKED_GC_GRACE_S = 600.0


def sync_runner(store: SyncObjectStore) -> tuple[Runner, Callable[[], None]]:
    """A runner for a blocking store (parallel requests on a thread pool, its threads started
    on first use) and its closer."""

    def new_pool() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=max(1, store.concurrency), thread_name_prefix="dkv-io")

    pool, pid = new_pool(), os.getpid()
    closed = False

    def run(program: Program[Any]) -> Any:
        nonlocal pool, pid
        if pid != os.getpid():  # a forked child: the pool's threads are the parent's
            pool, pid = new_pool(), os.getpid()
        return run_sync(program, store, None if closed else pool)  # closed: on the calling thread

    def close() -> None:
        nonlocal closed
        closed = True
        pool.shutdown(wait=False)

    return run, close


def async_runner(store: AsyncObjectStore, loop: asyncio.AbstractEventLoop) -> Runner:
    """A runner, for use from worker threads, that performs the I/O on ``loop``."""

    def run(program: Program[Any]) -> Any:
        if _running_loop() is loop:
            raise RuntimeError("table I/O must not run on the event loop thread")  # pragma: no cover
        if loop.is_closed():
            program.close()
            raise StorageError("the store's event loop is closed: its I/O cannot run")
        done = asyncio.run_coroutine_threadsafe(run_async(program, store), loop)
        while True:
            try:
                return done.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                # a loop that stopped (asyncio.run returned) never runs it: the maintenance
                # thread of a store used past its loop gives up instead of waiting for good
                if loop.is_closed() or not loop.is_running():
                    done.cancel()
                    raise StorageError("the store's event loop stopped before its I/O ran") from None

    return run


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


#: At interpreter exit, how long (seconds, in all) the maintenance due in stores not closed
#: may take before the process ends (a script that never closes its store still merges).
EXIT_SETTLE_S = 10.0

#: The storages attached to a store core (their maintenance threads, at exit and after a fork).
_STORAGES: weakref.WeakSet[TableStorage] = weakref.WeakSet()


def _settle_at_exit() -> None:
    deadline = time.monotonic() + EXIT_SETTLE_S
    for storage in list(_STORAGES):
        storage.settle(max(0.0, deadline - time.monotonic()))


def _after_fork_in_child() -> None:
    for storage in list(_STORAGES):
        storage._after_fork()


atexit.register(_settle_at_exit)
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class TableStorage:
    """A log-structured table on an object store, as a :class:`~dk_vector_plugins.core.Storage`."""

    def __init__(
        self,
        runner: Runner,
        describe: Callable[[str], str],
        options: TableOptions,
        closer: Callable[[], None] | None = None,
        max_staleness_s: float = 0.0,
        adopts_written: bool = False,
    ) -> None:
        self.run: Runner = lambda program: runner(serve_inline(program, self.state.inline))
        #: The same, also answering from the store's own recent objects (``_recent``): only for
        #: what committing a merge reads again, never for a read that checks storage.
        self._run_recent: Runner = lambda program: runner(serve_inline(program, self._served()))
        #: After a commit, the table holds the vectors as read back from storage (memory maps of
        #: the files just written) instead of the batch's arrays, which may be the caller's own.
        self.adopts_written = adopts_written
        self.logic = TableLogic(options, describe)
        self.state = TableState()
        self._closer = closer
        self._conflicts = 0
        self._gc_due = 0  # clean-ups due, put off by a merge (see after_commit)
        self._gc_mark = -1  # background: the version // gc_every a clean-up was last due at
        self.max_staleness_s = max_staleness_s
        self._checked = float("-inf")
        self._core: StoreCore | None = None  # (the store core that attached: its lock)
        self._table: RecordTable | None = None
        self._reset_maintenance()

    def _reset_maintenance(self) -> None:
        """No maintenance thread, nothing due (a new storage, or a child forked from a process
        that had one: the thread, its merge and its locks are the parent's)."""
        self._wake = threading.Condition()  # guards the fields below
        self._merge_due = False
        self._gc_due_bg = False
        self._busy = False
        self._stopping = False
        self._worker: threading.Thread | None = None
        #: Keys of objects a merge stored that no manifest names yet (spared by clean-up).
        self._in_flight: set[str] = set()
        #: A merge stored and waiting for the next commit to take it along (see RIDE_WAIT_S).
        self._ready: PreparedMerge | None = None
        #: A remote store's own objects committed while a merge is in flight (at most
        #: RECENT_MAX_BYTES): the commit of the merge reads the segments after its run from here.
        self._recent: dict[str, bytes] = {}
        self._merging = False  # a merge took its rows and is not settled yet

    def _served(self) -> Mapping[str, bytes]:
        """What reads are answered with from memory: inline objects, and :attr:`_recent`."""
        return ChainMap(self.state.inline, self._recent) if self._recent else self.state.inline

    def attach(self, core: StoreCore) -> None:
        """The store core calling this storage, always under its ``lock``: with it, merges and
        automatic clean-ups run on a background thread (``maintenance="background"``), which
        takes that lock only to read the rows it merges and to commit a merge no commit took."""
        self._core = core
        _STORAGES.add(self)

    @property
    def _lock(self) -> threading.RLock | None:
        return self._core.lock if self._core is not None else None

    def _owns_lock(self) -> bool:
        """Whether the calling thread holds the store's lock (it must not wait for the thread)."""
        owned = getattr(self._lock, "_is_owned", None)
        return bool(owned()) if owned is not None else False

    def _after_fork(self) -> None:
        """In a forked child: start afresh. A store lock held at the fork by a thread the child
        does not have (the maintenance thread, or any other) is replaced, and the table, which
        that thread may have left half changed, is loaded again from storage."""
        self._reset_maintenance()
        core = self._core
        if core is None:
            return
        if core.lock.acquire(blocking=False):  # free, or held by this very thread
            core.lock.release()
            return
        core.lock = threading.RLock()
        core.table.clear()
        self.state = TableState(pinned=self.state.pinned)

    def refresh(self, table: RecordTable) -> None:
        """Load what other writers committed since the last call (one conditional request when nothing).

        With ``max_staleness_s`` (eventual consistency) the check is skipped while the last one is
        younger than that, except after a lost commit race.
        """
        now = time.monotonic()
        if self.max_staleness_s and not self.state.probe and now - self._checked < self.max_staleness_s:
            return
        self.run(self.logic.refresh(table, self.state, self.run))
        self._checked = now

    def version_segments(self, version: int) -> list[dict[str, Any]]:
        """The segments of an earlier version, all still stored (for a restore)."""
        return list(self.run(self.logic.version_segments(version)))

    def commit(self, table: RecordTable, batch: WriteBatch) -> bool:
        """Commit a batch; on a lost race back off (with jitter) and report ``False``.

        The rows' full-text postings of the ``text_search_fields`` are built here, once, and
        stored in the same commit."""
        self._index_texts(table, batch)
        before = list(self.state.segments)
        merge = self._take_ready(batch)
        try:
            if merge is not None:
                merge.later = self._read_after(merge)
            keep = None
            plain = batch.restore is None and not batch.clear and batch.replaces is None
            if self._merging and merge is None and plain and not self.adopts_written:
                keep = self._recent  # a merge in flight will read this commit's segment again
            done = self.run(
                self.logic.commit(self.state, batch, merge, table if merge else None, keep, RECENT_MAX_BYTES)
            )
        finally:
            if merge is not None:
                self._settle_merge(merge)
        if done:
            self._conflicts = 0
            if batch.restore is not None:  # the table is loaded again from the restored segments
                try:
                    self._check_restored(batch.restore, before)
                finally:
                    table.clear()
                    self.state.segments = []
                    self.state.version -= 1
                    self.state.probe = True
                    self.state.etag = None
                return True
            if self.adopts_written and batch.batches:
                try:
                    self.run(self.logic.read_back(self.state.segments[-1], batch))
                except StorageError:  # committed all the same: keep copies of the batch's arrays
                    for name, (pos, mat) in list(batch.batches.items()):
                        batch.batches[name] = (pos, np.array(mat, dtype=np.float32, copy=True))
            return True
        self._conflicts += 1
        time.sleep(min(0.5, 0.002 * 2 ** min(self._conflicts, 8)) * random.random())
        return False

    def _take_ready(self, batch: WriteBatch) -> PreparedMerge | None:
        """The merge waiting to be committed, for a batch that may take it along (one that
        only writes)."""
        if self._ready is None or not batch.changes_rows or batch.restore is not None or batch.clear:
            return None
        if batch.replaces is not None:
            return None
        with self._wake:
            merge, self._ready = self._ready, None
            self._wake.notify_all()
        return merge

    def _read_after(self, merge: PreparedMerge) -> list[ReadSegment] | None:
        """What committing ``merge`` needs read before its manifest is written (after it nothing
        may fail): the segments after its run, and (a local store) its vectors read back;
        ``None`` when the run is gone or the segments cannot be read (no commit takes it)."""
        start = merge.find(self.state)
        if start is None:
            return None
        try:
            later = list(
                self._run_recent(self.logic.read_entries(self.state.segments[start + len(merge.run) :], self.run))
            )
        except StorageError:
            return None
        if self.adopts_written and merge.batch.batches and not merge.inline:
            try:  # the table then maps the merged vectors instead of holding copies
                self.run(self.logic.read_back(merge.entry, merge.batch))
            except StorageError:
                pass
        return later

    def _settle_merge(self, merge: PreparedMerge) -> None:
        """After a commit that took (or a thread that gave up) ``merge``: dropped unless
        committed, its objects deleted (a failure leaves them to clean-up: the commit stands);
        either way no longer in flight. Never raises."""
        try:
            if merge.start is None:
                self.run(self.logic.delete_objects(merge.written))
        except Exception:  # what no manifest names is clean-up's
            pass
        finally:
            with self._wake:
                self._in_flight.difference_update(merge.written)
                self._in_flight.difference_update(merge.inline)
                self._merging = False
                self._recent = {}

    def _index_texts(self, table: RecordTable, batch: WriteBatch) -> None:
        """Add to ``batch`` the full-text postings of its rows that it does not bring (a merge
        brings its own), for the schema's ``text_search_fields``."""
        schema = self.logic.schema
        if batch.rows and schema is not None and schema.text.fields:
            missing = [f for f in schema.text.fields if f not in batch.texts]
            if missing:
                batch.texts.update(table.index_rows(batch.rows, missing))

    def _check_restored(self, restored: list[dict[str, Any]], before: list[dict[str, Any]]) -> None:
        """After a restore's commit: if a clean-up (of another store, racing it) deleted objects
        the restored segments are stored in, commit the segments of the version before once more
        (the table as it was) and raise :class:`StorageError`. A failure of the check itself
        (a listing) is a warning: the restore stands, as committed."""
        try:
            missing = self.run(self.logic.missing_objects(restored))
        except StorageError as e:
            warnings.warn(
                f"dk_vector_plugins: the restore is committed, but checking that the objects it names are "
                f"still stored failed: {e}",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        if not missing:
            return
        committed = self.state.version
        lost = f"{self.logic.describe(missing[0])}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        if self.run(self.logic.commit(self.state, WriteBatch(restore=before))):
            raise StorageError(
                f"a clean-up running at the same time deleted what the restore needs ({lost}), so the "
                f"old version can no longer be restored; the restore's version {committed} is undone by "
                f"version {self.state.version}, which holds the table as it was before the restore"
            )
        raise StorageError(
            f"a clean-up running at the same time deleted what the restore needs ({lost}), and another "
            f"writer committed on top of the restore's version {committed} before it could be undone: "
            f"version {committed} and the versions after it cannot be read; the objects of version "
            f"{committed - 1}, the table before the restore, are intact"
        )

    def after_commit(self, table: RecordTable) -> None:
        """Maintenance after a commit (called under the store's lock): merge the newest small
        segments (bounded work); compact when segments or dead rows pile up all the same; every
        ``gc_every`` versions, clean up by the retention policy.

        In the background (:meth:`attach`, ``maintenance="background"``): the commit only says what is due and
        returns; a thread of this store merges (reading the rows under the lock, storing the
        merged segment without it, for the next commit to take along: see
        :meth:`_merge_off_path`) and cleans up, so no commit waits for either. Inline (no lock given, or
        ``maintenance="inline"``): in this commit (after the next one instead when this one merged:
        one pause, not two at once; put off once at most, so that commits that all merge still
        clean up)."""
        every = self.logic.options.gc_every
        if self._lock is not None and self.logic.options.maintenance == "background":
            self._table = table
            with self._wake:
                busy = self._busy or self._merge_due
            if not busy and self.logic.needs_compaction(table, self.state):
                self.compact(table)  # the safety net (segments or dead rows piled up): inline
            merge = self.logic.merge_start(self.state) is not None
            # due once per gc_every versions, whichever commits (this store's merges too) made them
            mark = self.state.version // every if every else 0
            if self._gc_mark < 0:  # from the version this store loaded: a new process does not clean up at once
                self._gc_mark = (self.state.version - 1) // every if every else 0
            gc_due = mark > self._gc_mark
            self._gc_mark = max(mark, self._gc_mark)
            if merge or gc_due:
                self._signal(merge=merge, gc=gc_due)
            return
        merged = self._maintain(table)
        if every and self.state.version % every == 0:
            self._gc_due += 1
        if self._gc_due and (not merged or self._gc_due > 1):
            self._gc_due = 0
            self._auto_gc()

    def _auto_gc(self, state: TableState | None = None) -> None:
        """An automatic clean-up: a failure is a warning (the commit stands; the next one tries
        again)."""
        try:
            self.run(self.logic.gc(state or self.state, in_flight=self._in_flight_keys))
        except StorageError as e:
            warnings.warn(f"dk_vector_plugins: automatic clean-up failed: {e}", RuntimeWarning, stacklevel=2)

    def _in_flight_keys(self) -> set[str]:
        with self._wake:
            return set(self._in_flight)

    # -- maintenance in the background --------------------------------------------------------
    def _signal(self, merge: bool, gc: bool) -> None:
        """Say what is due; start the maintenance thread if none runs."""
        with self._wake:
            if self._stopping:
                return
            self._merge_due |= merge
            self._gc_due_bg |= gc
            if self._worker is None:
                worker = threading.Thread(
                    target=TableStorage._work, args=(weakref.ref(self),), name="dkv-maintenance", daemon=True
                )
                try:
                    worker.start()
                except RuntimeError:  # the interpreter is shutting down: the next session merges
                    self._merge_due = self._gc_due_bg = False
                    return
                self._worker = worker
            self._wake.notify_all()

    @staticmethod
    def _work(ref: weakref.ReferenceType[TableStorage]) -> None:
        """The maintenance thread: merges and clean-ups as commits make them due, one at a time,
        until the storage closes (what is due then is done first) or is collected (the thread
        holds it only while it works, not while it waits)."""
        me = threading.current_thread()
        try:
            while True:
                storage = ref()
                if storage is None:
                    return
                wake = storage._wake
                with wake:
                    if storage._worker is not me:
                        return
                    due = storage._merge_due or storage._gc_due_bg
                    if not due and storage._stopping:
                        return
                    if not due:
                        del storage  # waiting keeps no reference: an unclosed store can go
                        wake.wait(1.0)
                        continue
                    task = (storage._merge_due, storage._gc_due_bg)
                    storage._merge_due = storage._gc_due_bg = False
                    storage._busy = True
                storage._run_task(*task)
                del storage
        finally:
            storage = ref()
            if storage is not None:
                with storage._wake:
                    if storage._worker is me:  # a later _signal starts another
                        storage._worker = None
                        storage._busy = False
                    storage._wake.notify_all()

    def _run_task(self, merge: bool, gc: bool) -> None:
        """Run one round of maintenance; whatever it raises is a warning (the commits stand; a
        later one makes it due again), and it never stops the thread."""
        try:
            if merge:
                self._merge_off_path()
            if gc:
                self._gc_off_path()
        except BaseException as e:  # the thread must go on
            try:
                warnings.warn(f"dk_vector_plugins: background maintenance failed: {e!r}", RuntimeWarning, stacklevel=1)
            except BaseException:  # warnings as errors: nowhere to raise to
                pass
        finally:
            with self._wake:
                self._busy = False
                self._wake.notify_all()

    def _locked(self) -> bool:
        """Take the store's lock (waiting while it is held), unless the storage closes."""
        lock = self._lock
        assert lock is not None
        while not lock.acquire(timeout=0.05):
            if self._stopping:
                return False
        return True

    def _unlock(self) -> None:
        lock = self._lock
        assert lock is not None
        lock.release()

    def _merge_off_path(self) -> None:
        """Merge the newest small segments while commits go on: under the lock, the run's live
        rows as a batch (as an inline merge takes them); without it, the merged segment encoded
        and stored; then offered to the store's next commit, which commits it in its own
        manifest (:meth:`TableLogic.commit`), or, when none comes within :data:`RIDE_WAIT_S`,
        committed on its own under the lock (:meth:`TableLogic.commit_merge`). Either way it
        replaces the run where it then stands (the segments committed meanwhile stay after it)
        and the table is brought in line as after another writer's merge. Again while merges
        are due (one may make the next tier's due)."""
        table = self._table
        for _ in range(64):
            if table is None or not self._locked():
                return
            try:
                start = self.logic.merge_start(self.state) if self.state.pinned is None else None
                if start is None:
                    return
                batch = self.logic.merge_batch(table, self.state, start, self.run, self.adopts_written)
                self._index_texts(table, batch)
                run = [str(e["name"]) for e in self.state.segments[start:]]
                version = self.state.version + 1
                self._merging = True  # from here the commits keep what the merge reads again
            finally:
                self._unlock()
            merge = PreparedMerge(run, batch, {}, {}, [])
            owned = True  # until a commit takes it, this thread settles it
            try:
                merge.entry, objects = self.logic.encode_segment(batch, version)
                with self._wake:
                    self._in_flight.update(objects)
                merge.written = list(objects)
                merge.inline = self.run(self.logic.store_segment(objects))
                merge.written = [k for k in objects if k not in merge.inline]
                with self._wake:  # offered to the next commit
                    self._ready = merge
                    until = time.monotonic() + RIDE_WAIT_S
                    while self._ready is merge and not self._stopping and (left := until - time.monotonic()) > 0:
                        self._wake.wait(left)
                    owned = self._ready is merge
                    if owned:
                        self._ready = None
                if not owned:
                    continue  # the commit that took it settles it
                if not self._locked():
                    return
                try:
                    self._commit_alone(table, merge)
                finally:
                    self._unlock()
            finally:
                if owned:
                    self._settle_merge(merge)

    def _commit_alone(self, table: RecordTable, merge: PreparedMerge) -> None:
        """Commit ``merge`` in a manifest of its own (under the lock): this store's commits since
        are in its state; when another writer's took the version, once more on top of it."""
        for last in (False, True):
            later = self._read_after(merge)
            if later is None:
                return
            done = self.run(self.logic.commit_merge(table, self.state, merge, later, last))
            if done is not None:
                return
            self.run(self.logic.refresh(table, self.state, self.run))
            self._checked = time.monotonic()

    def _gc_off_path(self) -> None:
        """An automatic clean-up beside the commits: by the segments this store holds now. With
        a grace period shorter than :data:`UNLOCKED_GC_GRACE_S`, under the lock (an object a
        commit of this store is writing may be younger than that)."""
        if not self._locked():
            return
        if self.logic.options.grace_s < UNLOCKED_GC_GRACE_S:
            try:
                self._auto_gc()
            finally:
                self._unlock()
            return
        try:
            held = TableState(segments=list(self.state.segments))
        finally:
            self._unlock()
        self._auto_gc(held)

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until the maintenance due has been done; whether it was (within ``timeout``).
        A thread holding the store's lock does not wait (the maintenance may need the lock)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._wake:
            while self._busy or self._merge_due or self._gc_due_bg:
                alive = self._worker is not None and self._worker.is_alive()
                left = None if deadline is None else deadline - time.monotonic()
                if not alive or self._owns_lock() or (left is not None and left <= 0):
                    return False
                self._wake.wait(0.1 if left is None else min(left, 0.1))
        return True

    def _maintain(self, table: RecordTable) -> bool:
        """Compact or merge if due; whether anything was rewritten."""
        if self.logic.needs_compaction(table, self.state):
            self.compact(table)
            return True
        start = self.logic.merge_start(self.state)
        if start is None:
            return False
        first = sum(int(e["rows"]) for e in self.state.segments[:start])
        batch = self.logic.merge_batch(table, self.state, start, self.run, self.adopts_written)
        if self.commit(table, batch):  # lost to another writer: the next commit tries again
            table.truncate(first)
            apply(table, batch)
        return True

    def compact(self, table: RecordTable) -> bool:
        """Rewrite the live rows as one segment; ``False`` if another writer committed first."""
        if len(self.state.segments) <= 1 and table.dead == 0:
            return True
        batch = self.logic.compaction_batch(table, self.state, self.run, self.adopts_written)
        if self.commit(table, batch):
            # the table becomes the compacted segment itself (mapped, for a local store: the
            # live vectors are not copied a second time)
            apply(table, batch)
            return True
        return False

    def gc(self, grace_s: float | None = None) -> int:
        """Delete objects no recent manifest names, older than the grace period (those of a merge
        in flight in the background are spared)."""
        return int(self.run(self.logic.gc(self.state, grace_s=grace_s, in_flight=self._in_flight_keys)))

    def verify(self) -> dict[str, Any]:
        """Check the newest committed version end to end (every segment readable and consistent)."""
        return dict(self.run(self.logic.verify()))

    def close(self) -> None:
        """Stop the maintenance thread, after the maintenance due (unless the closing thread
        holds the store's lock: then a merge that needs it is given up), then release the I/O
        threads."""
        with self._wake:
            self._stopping = True
            worker = self._worker
            self._wake.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        _STORAGES.discard(self)
        if self._closer is not None:
            self._closer()
            self._closer = None
