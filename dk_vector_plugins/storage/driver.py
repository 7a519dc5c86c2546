"""The :class:`~dk_vector_plugins.core.Storage` of the file and S3 backends: table programs run on an object store.

:class:`TableStorage` runs the programs of :mod:`.log_format` with a caller-supplied runner: on a sync
store (thread pool for parallel requests), or on an async store from a worker thread by handing
each program to the event loop (so the async classes share the very same core and never block
their loop).
"""

from __future__ import annotations

import asyncio
import random
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..core import WriteBatch, apply
from ..errors import StorageError
from ..memtable import RecordTable
from .log_format import TableLogic, TableOptions, TableState, serve_inline
from .ops import AsyncObjectStore, Program, SyncObjectStore, run_async, run_sync

__all__ = ["TableStorage", "async_runner", "sync_runner"]

Runner = Callable[[Program[Any]], Any]


def sync_runner(store: SyncObjectStore) -> tuple[Runner, Callable[[], None]]:
    """A runner for a blocking store (parallel requests on a thread pool, its threads started
    on first use) and its closer."""
    pool = ThreadPoolExecutor(max_workers=max(1, store.concurrency), thread_name_prefix="dkv-io")
    closed = False

    def run(program: Program[Any]) -> Any:
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
        return asyncio.run_coroutine_threadsafe(run_async(program, store), loop).result()

    return run


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


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
        #: After a commit, the table holds the vectors as read back from storage (memory maps of
        #: the files just written) instead of the batch's arrays, which may be the caller's own.
        self.adopts_written = adopts_written
        self.logic = TableLogic(options, describe)
        self.state = TableState()
        self._closer = closer
        self._conflicts = 0
        self._gc_due = 0  # clean-ups due, put off by a merge (see after_commit)
        self.max_staleness_s = max_staleness_s
        self._checked = float("-inf")

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
        schema = self.logic.schema
        if batch.rows and schema is not None and schema.text.fields:
            missing = [f for f in schema.text.fields if f not in batch.texts]  # a merge brings its own
            if missing:
                batch.texts.update(table.index_rows(batch.rows, missing))
        before = list(self.state.segments)
        if self.run(self.logic.commit(self.state, batch)):
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
        """Merge the newest small segments (bounded work); compact when segments or dead rows
        pile up all the same; every ``gc_every`` versions, clean up by the retention policy
        (after the next commit instead when this one merged: one pause, not two at once; put
        off once at most, so that commits that all merge still clean up)."""
        merged = self._maintain(table)
        every = self.logic.options.gc_every
        if every and self.state.version % every == 0:
            self._gc_due += 1
        if self._gc_due and (not merged or self._gc_due > 1):
            self._gc_due = 0
            try:
                self.gc()
            except StorageError as e:  # the commit stands; the next clean-up tries again
                warnings.warn(f"dk_vector_plugins: automatic clean-up failed: {e}", RuntimeWarning, stacklevel=2)

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
        """Delete objects no recent manifest names, older than the grace period."""
        return int(self.run(self.logic.gc(self.state, grace_s=grace_s)))

    def verify(self) -> dict[str, Any]:
        """Check the newest committed version end to end (every segment readable and consistent)."""
        return dict(self.run(self.logic.verify()))

    def close(self) -> None:
        """Release the I/O threads."""
        if self._closer is not None:
            self._closer()
            self._closer = None
