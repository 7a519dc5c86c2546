"""Merges and automatic clean-ups on the writing store's maintenance thread
(``maintenance="background"``, the default): commits go on while a merge is under way, what they
change in the merged rows meanwhile holds after it, a merge that lost its run is dropped with its
objects, a clean-up spares a merge's objects not yet committed, and closing never deadlocks.

A merge is held at a chosen point by wrapping the store's own table logic (the real code runs on
either side of the hold); every check is against the memory backend or a fresh store.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
import pytest

from dk_vector_plugins import AsyncDatabaseFactory, DatabaseFactory, Record, SyncDatabase, VectorField
from dk_vector_plugins.backends.s3 import S3Database
from dk_vector_plugins.backends.tabled import AsyncTableDatabase, TableDatabase
from dk_vector_plugins.core import WriteBatch
from dk_vector_plugins.errors import StorageError
from dk_vector_plugins.memtable import RecordTable
from dk_vector_plugins.storage import driver
from dk_vector_plugins.storage.log_format import PreparedMerge, ReadSegment, TableLogic, TableState
from dk_vector_plugins.storage.ops import Data, List, Listed, Program

if TYPE_CHECKING:
    from botocore.awsrequest import AWSPreparedRequest
    from s3_server import S3Server

WORKER = "dkv-maintenance"
P = ParamSpec("P")
T = TypeVar("T")


def vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(8).astype(np.float32)


def rec(i: int, n: int | None = None) -> Record:
    return Record({"n": i if n is None else n, "embedding": VectorField(vec(i if n is None else n))}, id=f"r{i}")


def open_store(**config: Any) -> TableDatabase:
    db = DatabaseFactory().create(**config)
    assert isinstance(db, TableDatabase)
    return db


def contents(db: SyncDatabase) -> list[tuple[str, Any]]:
    return sorted((str(r.id), r.get("n")) for r in db.all())


class Hold:
    """Stops the maintenance thread at one point of a merge until :meth:`release`."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.gate = threading.Event()

    def wait(self) -> None:
        if threading.current_thread().name == WORKER:
            self.reached.set()
            assert self.gate.wait(30), "the test never released the merge"

    def until_reached(self) -> None:
        assert self.reached.wait(30), "no merge started"

    def release(self) -> None:
        self.gate.set()


def hold_before_storing(logic: TableLogic) -> Hold:
    """Hold a merge after it took the run's rows (under the lock), before it encodes them."""
    hold, encode = Hold(), logic.encode_segment

    def encode_segment(batch: WriteBatch, version: int) -> tuple[dict[str, Any], dict[str, Data]]:
        hold.wait()
        return encode(batch, version)

    logic.encode_segment = encode_segment  # type: ignore[method-assign]
    return hold


def hold_after_storing(logic: TableLogic) -> Hold:
    """Hold a merge after its objects are stored, before it takes the lock to commit them."""
    hold, store = Hold(), logic.store_segment

    def store_segment(objects: Mapping[str, Data]) -> Program[dict[str, bytes]]:
        inline = yield from store(objects)
        hold.wait()
        return inline

    logic.store_segment = store_segment  # type: ignore[method-assign]
    return hold


def merge_held_after_storing(db: TableDatabase) -> Hold:
    """Create r0..r2 (``merge_fan=3``: their merge is due) and wait until the merge has stored
    its objects; it is held there until released."""
    hold = hold_after_storing(db.storage.logic)
    for i in range(3):
        db.create(rec(i))
    hold.until_reached()
    return hold


def in_thread(fn: Callable[[], None], timeout: float = 20.0) -> None:
    """Run ``fn`` on another thread; fail if it does not finish in ``timeout`` (it waited for
    the held merge) and re-raise what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # pragma: no cover - re-raised below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "a commit waited for the merge under way"
    if errors:
        raise errors[0]


@pytest.fixture
def stores() -> Iterator[list[SyncDatabase]]:
    opened: list[SyncDatabase] = []
    yield opened
    for db in opened:
        db.close()


def test_commits_go_on_while_a_merge_is_under_way(location: dict[str, Any], stores: list[SyncDatabase]) -> None:
    db = open_store(**location, merge_fan=3)
    mem = DatabaseFactory().create(backend="memory")
    stores += [db, mem]
    hold = hold_before_storing(db.storage.logic)
    for i in range(3):  # the third makes a merge of the three segments due
        for s in (db, mem):
            s.create(rec(i))
    hold.until_reached()

    def meanwhile() -> None:
        for s in (db, mem):
            s.create(rec(3))
            s.create(rec(4))
            s.delete("r1")  # a row of the run being merged
            s.update("r2", Record({"n": 20, "embedding": VectorField(vec(20))}))  # another one
            s.upsert(rec(0, n=30))

    in_thread(meanwhile)
    assert contents(db) == contents(mem)
    hold.release()
    assert db.storage.settle(30)
    assert contents(db) == contents(mem) == [("r0", 30), ("r2", 20), ("r3", 3), ("r4", 4)]
    ops = [v["operation"] for v in db.versions()]
    assert "merge" in ops[3:], ops  # committed after the writes made meanwhile
    q = vec(99)
    want = [(h.id, h.score) for h in mem.vector_search(q, k=4)]
    assert [(h.id, h.score) for h in db.vector_search(q, k=4)] == want
    fresh = open_store(**location)
    stores.append(fresh)
    assert contents(fresh) == contents(mem)
    assert [(h.id, h.score) for h in fresh.vector_search(q, k=4)] == want
    assert fresh.verify()["live"] == 4
    # the writer's table lines up with the version it holds (what a reload or a Dask plan needs)
    assert sum(int(e["rows"]) for e in db.storage.state.segments) == db.core.table.nrows


def test_a_merge_whose_run_another_writer_compacted_is_dropped(location: dict[str, Any], stores: list[SyncDatabase]) -> None:
    db = open_store(**location, merge_fan=3, inline_bytes=0)
    other = DatabaseFactory().create(**location)
    stores += [db, other]
    hold = merge_held_after_storing(db)
    written = set(db.storage._in_flight)
    assert written  # the merge's objects are stored, named by no manifest yet
    assert written <= {x.key for x in db.storage.run(_list("segments/"))}
    other.compact()
    hold.release()
    assert db.storage.settle(30)
    assert not db.storage._in_flight
    assert db.versions()[-1]["operation"] == "compact"  # the merge did not commit on top
    assert contents(db) == contents(other) == [(f"r{i}", i) for i in range(3)]
    assert not written & {x.key for x in db.storage.run(_list("segments/"))}  # dropped with its objects
    fresh = open_store(**location)
    stores.append(fresh)
    assert fresh.verify()["live"] == 3


def test_a_merge_that_lost_the_race_to_another_writer_commits_after_it(
    location: dict[str, Any], stores: list[SyncDatabase]
) -> None:
    db = open_store(**location, merge_fan=3)
    other = DatabaseFactory().create(**location)
    stores += [db, other]
    hold = merge_held_after_storing(db)
    other.create(rec(10))  # committed first: the merge's version is taken
    other.delete("r0")  # a row of the run, deleted by the other writer
    hold.release()
    assert db.storage.settle(30)
    ops = [v["operation"] for v in db.versions()]
    assert ops[-1] == "merge" and ops.count("merge") == 1, ops  # the merge tried again on top
    want = [("r1", 1), ("r10", 10), ("r2", 2)]
    assert contents(db) == want
    fresh = open_store(**location)
    stores.append(fresh)
    assert contents(fresh) == want and fresh.verify()["live"] == 3
    assert [e["name"] for e in fresh.storage.state.segments] == [e["name"] for e in db.storage.state.segments]


def _list(prefix: str) -> Program[list[Listed]]:
    return (yield List(prefix, stat=False))  # type: ignore[no-any-return]


def test_a_clean_up_spares_the_objects_of_a_merge_not_yet_committed(
    location: dict[str, Any], stores: list[SyncDatabase]
) -> None:
    db = open_store(**location, merge_fan=3, inline_bytes=0, keep_versions=1)
    stores.append(db)
    hold = merge_held_after_storing(db)
    written = set(db.storage._in_flight)
    assert written
    with db.core.lock:  # a clean-up as vacuum() runs it (which lets a merge under way finish first)
        db.storage.gc(grace_s=0)  # old enough to go, named by no manifest: spared as in flight
    listed = {x.key for x in db.storage.run(_list("segments/"))}
    assert written <= listed
    hold.release()
    assert db.storage.settle(30)
    assert db.versions()[-1]["operation"] == "merge"
    fresh = open_store(**location)
    stores.append(fresh)
    assert fresh.verify()["live"] == 3
    assert contents(fresh) == [(f"r{i}", i) for i in range(3)]


def test_close_while_a_merge_waits_for_the_lock_does_not_deadlock(location: dict[str, Any]) -> None:
    db = open_store(**location, merge_fan=3)
    hold = merge_held_after_storing(db)
    worker = db.storage._worker
    assert worker is not None
    with db.core.lock:  # the merge, released, now waits for the lock this thread holds
        hold.release()
        in_thread(db.close)
    assert not worker.is_alive()
    fresh = open_store(**location)
    try:
        assert contents(fresh) == [(f"r{i}", i) for i in range(3)]  # the merge was dropped, nothing lost
        assert fresh.verify()["live"] == 3
    finally:
        fresh.close()


def test_an_async_store_merges_in_the_background_and_closes(location: dict[str, Any]) -> None:
    async def main() -> list[str]:
        db = AsyncDatabaseFactory().create(**location, merge_fan=3)
        assert isinstance(db, AsyncTableDatabase)
        try:
            for i in range(12):
                await db.create(rec(i))
            assert await asyncio.to_thread(db.storage.settle, 30)
            return [v["operation"] for v in await db.versions()]
        finally:
            await db.close()

    ops = asyncio.run(main())
    assert len(ops) >= 12  # the merges rode along with the writes or came after them
    fresh = open_store(**location)
    try:
        assert contents(fresh) == sorted((f"r{i}", i) for i in range(12))
        assert len(fresh.storage.state.segments) < 12
    finally:
        fresh.close()


def test_inline_maintenance_merges_in_the_commit(tmp_path: Path) -> None:
    db = open_store(backend="file", path=str(tmp_path / "s"), merge_fan=3, maintenance="inline")
    try:
        for i in range(3):
            db.create(rec(i))
        assert len(db.storage.state.segments) == 1  # merged by the third commit itself
        assert db.storage._worker is None
    finally:
        db.close()


def test_the_maintenance_thread_stops_with_the_store(tmp_path: Path) -> None:
    db = open_store(backend="file", path=str(tmp_path / "s"), merge_fan=3)
    for i in range(3):
        db.create(rec(i))
    worker = db.storage._worker
    assert worker is not None and worker.name == WORKER
    db.close()
    assert not worker.is_alive()
    assert not any(t.name == WORKER and t is worker for t in threading.enumerate())


def _offered(db: TableDatabase) -> PreparedMerge:
    """Wait until the maintenance thread offers a stored merge to the next commit."""
    for _ in range(2000):
        ready = db.storage._ready
        if ready is not None:
            return ready
        threading.Event().wait(0.01)
    raise AssertionError("no merge was offered")


def test_the_next_commit_takes_a_stored_merge_along(
    location: dict[str, Any], stores: list[SyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver, "RIDE_WAIT_S", 60.0)  # the merge waits for the commit below
    db = open_store(**location, merge_fan=3)
    mem = DatabaseFactory().create(backend="memory")
    stores += [db, mem]
    for i in range(3):
        for s in (db, mem):
            s.create(rec(i))
    merge = _offered(db)
    for s in (db, mem):
        s.delete("r1")  # this commit takes the merge along: r1 is in the merged rows
        s.upsert(rec(2, n=22))  # replaces a merged row
    assert db.storage._ready is None and merge.start == 0
    ops = [v["operation"] for v in db.versions()]
    assert "merge" not in ops and len(ops) == 5, ops  # no version of its own
    names = [e["name"] for e in db.storage.state.segments]
    assert len(names) == 3 and names[0] == merge.entry["name"]  # merged, the delete, the upsert
    assert not db.storage._in_flight
    want = [("r0", 0), ("r2", 22)]
    assert contents(db) == contents(mem) == want
    q = vec(5)
    assert [(h.id, h.score) for h in db.vector_search(q, k=3)] == [(h.id, h.score) for h in mem.vector_search(q, k=3)]
    with db.core.lock:
        assert sum(int(e["rows"]) for e in db.storage.state.segments) == db.core.table.nrows
    fresh = open_store(**location)
    stores.append(fresh)
    assert contents(fresh) == want and fresh.verify()["live"] == 2
    assert [e["name"] for e in fresh.storage.state.segments] == names


def test_a_stored_merge_whose_run_is_gone_is_dropped_by_the_commit_that_takes_it(
    location: dict[str, Any], stores: list[SyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver, "RIDE_WAIT_S", 60.0)
    db = open_store(**location, merge_fan=3, inline_bytes=0)
    other = DatabaseFactory().create(**location)
    stores += [db, other]
    for i in range(3):
        db.create(rec(i))
    merge = _offered(db)
    written = set(merge.written)
    assert written <= {x.key for x in db.storage.run(_list("segments/"))}
    other.compact()
    db.create(rec(3))  # loads the compaction first: the run is gone, the merge is dropped
    assert merge.start is None and not db.storage._in_flight
    assert not written & {x.key for x in db.storage.run(_list("segments/"))}
    assert contents(db) == [(f"r{i}", i) for i in range(4)]
    fresh = open_store(**location)
    stores.append(fresh)
    assert fresh.verify()["live"] == 4


def test_a_write_that_cannot_take_a_merge_along_commits_alone(
    tmp_path: Path, stores: list[SyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking a merge along reads the segments after its run first; when that fails the write
    commits without the merge (dropped), instead of failing."""
    monkeypatch.setattr(driver, "RIDE_WAIT_S", 60.0)
    root = tmp_path / "s"
    db = open_store(backend="file", path=str(root), merge_fan=3, inline_bytes=0)
    stores.append(db)
    hold = merge_held_after_storing(db)
    db.create(rec(3))  # after the run: the commit taking the merge reads it again
    hold.release()
    merge = _offered(db)
    later = db.storage.state.segments[-1]
    vectors = root / "segments" / f"{later['name']}.{later['fields']['embedding']['key']}.npy"
    saved = vectors.read_bytes()
    vectors.unlink()
    db.create(rec(4))
    assert merge.start is None and not db.storage._in_flight
    assert [v["operation"] for v in db.versions()][-1] == "write"
    vectors.write_bytes(saved)
    fresh = open_store(backend="file", path=str(root))
    stores.append(fresh)
    assert contents(fresh) == [(f"r{i}", i) for i in range(5)] and fresh.verify()["live"] == 5


# -- found by a review: each failed before its fix ------------------------------------------------


def test_a_failed_delete_of_a_dropped_merge_does_not_fail_the_committed_write(
    tmp_path: Path, stores: list[SyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver, "RIDE_WAIT_S", 60.0)
    root = tmp_path / "s"
    db = open_store(backend="file", path=str(root), merge_fan=3, inline_bytes=0)
    other = DatabaseFactory().create(backend="file", path=str(root))
    stores += [db, other]
    for i in range(3):
        db.create(rec(i))
    merge = _offered(db)
    other.compact()  # the run is gone: the next commit drops the merge
    victim = root / merge.written[0]  # and deleting its objects fails (a directory in the way)
    victim.unlink()
    victim.mkdir()
    (victim / "x").write_text("x")
    db.create(rec(3))  # committed: it must not raise (it did, and a retry then stored r3 twice)
    with db.core.lock:
        assert sum(int(e["rows"]) for e in db.storage.state.segments) == db.core.table.nrows
    assert db.exists("r3")
    fresh = open_store(backend="file", path=str(root))
    stores.append(fresh)
    assert sorted(str(r.id) for r in fresh.all()) == ["r0", "r1", "r2", "r3"]


def test_a_store_never_closed_is_freed(tmp_path: Path) -> None:
    refs = []
    for k in range(3):
        db = open_store(backend="file", path=str(tmp_path / f"s{k}"), merge_fan=3)
        for i in range(3):
            db.create(rec(i))
        assert db.storage.settle(30)
        refs.append(weakref.ref(db.core.table))
        del db
    for _ in range(50):  # the thread lets go of its store while it waits (at most a second)
        gc.collect()
        if not any(r() is not None for r in refs):
            break
        threading.Event().wait(0.1)
    assert not any(r() is not None for r in refs)


def test_vacuum_while_holding_the_store_lock_returns(tmp_path: Path, stores: list[SyncDatabase]) -> None:
    db = open_store(backend="file", path=str(tmp_path / "s"), merge_fan=3)
    stores.append(db)
    for i in range(3):
        db.create(rec(i))

    def locked_vacuum() -> None:
        with db.core.lock:  # as dataknobs-data style callers hold a store's lock around calls
            db.vacuum()

    in_thread(locked_vacuum)


def test_maintenance_goes_on_after_a_failure_under_warnings_as_errors(
    tmp_path: Path, stores: list[SyncDatabase]
) -> None:
    db = open_store(backend="file", path=str(tmp_path / "s"), merge_fan=3, max_segments=8)
    stores.append(db)
    encode, failed = db.storage.logic.encode_segment, threading.Event()

    def encode_once_failing(batch: WriteBatch, version: int) -> tuple[dict[str, Any], dict[str, Data]]:
        if threading.current_thread().name == WORKER and not failed.is_set():
            failed.set()
            raise OSError("a transient failure")
        return encode(batch, version)

    db.storage.logic.encode_segment = encode_once_failing  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # python -W error: the thread's warning raises in it
        for i in range(3):
            db.create(rec(i))
        assert failed.wait(30)
        assert db.storage.settle(30)
        for i in range(3, 40):
            db.create(rec(i))
        assert db.storage.settle(30)
    assert len(db.storage.state.segments) <= 8
    assert contents(db) == sorted((f"r{i}", i) for i in range(40))


def test_a_read_error_before_a_lone_merge_commit_changes_nothing(s3_server: S3Server, stores: list[SyncDatabase]) -> None:
    """A merge committing alone reads the segments after its run before its manifest is written
    (it read them after: a failure left the writer's table behind its version)."""
    cfg = {"backend": "s3", **s3_server.config()}
    client, bucket, prefix = s3_server.client(), cfg["bucket"], cfg["prefix"]
    db = open_store(**cfg, merge_fan=3, inline_bytes=0)
    stores.append(db)
    hold = merge_held_after_storing(db)
    db.create(rec(3))  # after the run
    later = db.storage.state.segments[-1]
    key = f"{prefix}/segments/{later['name']}.{later['fields']['embedding']['key']}.npy"
    saved = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.delete_object(Bucket=bucket, Key=key)  # a transient read error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hold.release()
        assert db.storage.settle(30)  # no commit follows: the thread tries alone, and gives up
    client.put_object(Bucket=bucket, Key=key, Body=saved)
    with db.core.lock:  # (a later merge of all four, from the rows in memory, may have committed)
        assert sum(int(e["rows"]) for e in db.storage.state.segments) == db.core.table.nrows
    assert db.count() == 4 and db.exists("r3")
    fresh = open_store(**cfg)
    stores.append(fresh)
    assert fresh.verify()["live"] == 4 and contents(fresh) == contents(db)


def test_a_forked_child_does_not_commit_the_parents_merge(
    tmp_path: Path, stores: list[SyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    monkeypatch.setattr(driver, "RIDE_WAIT_S", 2.0)  # the fork lands while the merge waits
    root = tmp_path / "s"
    db = open_store(backend="file", path=str(root), merge_fan=3)
    stores.append(db)
    for i in range(3):
        db.create_batch([Record({"n": 30 * i + j, "embedding": VectorField(vec(30 * i + j))}, id=f"r{30 * i + j}") for j in range(30)])
    merge = _offered(db)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = False
        try:
            ok = db.storage._ready is None
            db.create(rec(100))
            ok = ok and merge.entry["name"] not in [e["name"] for e in db.storage.state.segments]
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert db.storage.settle(30)
    fresh = open_store(backend="file", path=str(root))
    stores.append(fresh)
    assert fresh.verify()["live"] == 91 and fresh.count() == 91


def test_writers_that_exit_without_closing_still_merge(tmp_path: Path) -> None:
    root = tmp_path / "s"
    script = (
        "import sys\n"
        "from dk_vector_plugins import DatabaseFactory, Record\n"
        "db = DatabaseFactory().create(backend='file', path=sys.argv[1], merge_fan=3)\n"
        "db.create(Record({'n': int(sys.argv[2])}, id='r' + sys.argv[2]))\n"  # no close()
    )
    for i in range(9):
        subprocess.run([sys.executable, "-c", script, str(root), str(i)], check=True, timeout=120)
    db = open_store(backend="file", path=str(root), maintenance="inline")
    try:
        ops = [v["operation"] for v in db.versions()]
        assert ops.count("merge") >= 3, ops  # merged before each process ended
        assert len(db.storage.state.segments) <= 3 and db.count() == 9
    finally:
        db.close()


def test_the_commit_taking_a_merge_along_reads_nothing_this_store_wrote(
    s3_server: S3Server, stores: list[SyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On S3 the segments committed while a merge was under way are read again from memory
    (the store's own objects, kept meanwhile), not downloaded."""
    monkeypatch.setattr(driver, "RIDE_WAIT_S", 60.0)
    cfg = {"backend": "s3", **s3_server.config()}
    db = open_store(**cfg, merge_fan=3, inline_bytes=0)
    stores.append(db)
    hold = merge_held_after_storing(db)
    db.create(rec(3))  # after the run, its own objects
    hold.release()
    merge = _offered(db)
    reads: list[str] = []

    def count(request: AWSPreparedRequest, **_: object) -> None:
        if request.method == "GET" and "/segments/" in request.url:
            reads.append(request.url)

    assert isinstance(db, S3Database)
    db.s3_client.meta.events.register("before-send.s3.*", count)
    db.create(rec(4))  # takes the merge along
    assert merge.start == 0 and reads == []
    assert not db.storage._recent  # let go once the merge is settled
    fresh = open_store(**cfg)
    stores.append(fresh)
    assert fresh.verify()["live"] == 5 and contents(fresh) == contents(db)


# -- found by a second review: each failed before its fix -------------------------------------------


def test_a_lone_merge_whose_hint_fails_keeps_its_objects(s3_server: S3Server, stores: list[SyncDatabase]) -> None:
    cfg = {"backend": "s3", **s3_server.config()}
    db = open_store(**cfg, merge_fan=3, inline_bytes=0)
    stores.append(db)
    publish = db.storage.logic.publish_latest

    def failing_publish(manifest: Mapping[str, Any], state: TableState) -> Program[None]:
        if threading.current_thread().name == WORKER:
            raise StorageError("LATEST.json could not be written")
        return (yield from publish(manifest, state))

    db.storage.logic.publish_latest = failing_publish  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(3):
            db.create(rec(i))
        assert db.storage.settle(30)  # committed alone (no commit followed), then the hint failed
    assert db.versions()[-1]["operation"] == "merge"
    fresh = open_store(**cfg)  # the merged segment's objects are there
    stores.append(fresh)
    assert fresh.verify()["live"] == 3 and contents(fresh) == [(f"r{i}", i) for i in range(3)]


def test_a_store_keeps_no_more_of_its_recent_objects_than_the_cap(
    s3_server: S3Server, stores: list[SyncDatabase], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver, "RECENT_MAX_BYTES", 10_000)
    cfg = {"backend": "s3", **s3_server.config()}
    db = open_store(**cfg, merge_fan=3, inline_bytes=0)
    stores.append(db)
    hold = merge_held_after_storing(db)
    db.create(rec(3))  # a small segment: kept
    kept = dict(db.storage._recent)
    assert kept and sum(map(len, kept.values())) <= 10_000
    db.add_vectors(np.stack([vec(i) for i in range(400)]), ids=[f"b{i}" for i in range(400)])  # 12.8 KB of vectors
    assert db.storage._recent == kept  # over the cap: read from storage if needed
    db.compact()  # rewrites the table (and drops the run): never kept
    assert db.storage._recent == kept
    hold.release()
    assert db.storage.settle(30)
    assert not db.storage._recent


def test_verify_during_a_merge_reads_storage_not_memory(s3_server: S3Server, stores: list[SyncDatabase]) -> None:
    cfg = {"backend": "s3", **s3_server.config()}
    client, bucket, prefix = s3_server.client(), cfg["bucket"], cfg["prefix"]
    db = open_store(**cfg, merge_fan=3, inline_bytes=0)
    stores.append(db)
    hold = merge_held_after_storing(db)
    db.create(rec(3))  # kept in memory for the merge
    later = db.storage.state.segments[-1]
    key = f"{prefix}/segments/{later['name']}.{later['fields']['embedding']['key']}.npy"
    assert f"segments/{later['name']}.{later['fields']['embedding']['key']}.npy" in db.storage._recent
    client.delete_object(Bucket=bucket, Key=key)
    try:
        with pytest.raises(StorageError):
            db.verify()
    finally:
        hold.release()


def test_a_child_forked_while_the_thread_changes_the_table_loads_it_again(
    tmp_path: Path, stores: list[SyncDatabase]
) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    root = tmp_path / "s"
    db = open_store(backend="file", path=str(root), merge_fan=3)
    stores.append(db)
    stored = hold_after_storing(db.storage.logic)
    for i in range(3):
        db.create(rec(i))
    stored.until_reached()
    db.create(rec(3))  # after the run: loaded again by the merge committing alone
    mid, load = Hold(), db.storage.logic._load_read

    def held_load(table: RecordTable, state: TableState, read: Sequence[ReadSegment]) -> None:
        mid.wait()  # the manifest is written, the table half changed, the lock held
        load(table, state, read)

    db.storage.logic._load_read = held_load  # type: ignore[method-assign]
    stored.release()
    mid.until_reached()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        import faulthandler

        faulthandler.dump_traceback_later(20, exit=True)  # a lock no thread releases: fail, not hang
        ok = False
        try:
            ok = db.count() == 4 and db.exists("r3")
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    mid.release()
    assert db.storage.settle(30)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_store_used_past_its_event_loop_does_not_hang_its_thread(s3_server: S3Server) -> None:
    """Run in a process of its own (what the abandoned loop never ran is collected there)."""
    script = (
        "import asyncio, json, sys, time, warnings\n"
        "import numpy as np\n"
        "from dk_vector_plugins import AsyncDatabaseFactory, Record, VectorField\n"
        "warnings.simplefilter('ignore')\n"
        "cfg = json.loads(sys.argv[1])\n"
        "async def main():\n"
        "    db = AsyncDatabaseFactory().create(**cfg, merge_fan=3, inline_bytes=0)\n"
        "    for i in range(3):\n"
        "        await db.create(Record({'embedding': VectorField(np.full(8, i, np.float32))}, id=f'r{i}'))\n"
        "    return db  # not closed: its loop ends with a merge due\n"
        "db = asyncio.run(main())\n"
        "t = time.monotonic()\n"
        "print(db.storage.settle(20), round(time.monotonic() - t, 1))\n"
    )
    cfg = {"backend": "s3", **s3_server.config()}
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cfg)], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert out[0] == "True" and float(out[1]) < 10, out  # its I/O fails at once instead of waiting for the loop


def test_parallel_requests_fall_back_only_when_the_pool_is_shut_down() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dk_vector_plugins.storage.ops import _in_parallel

    runs: list[str] = []

    class Store:
        def do(self, op: str) -> str:
            runs.append(op)
            return op.upper()

    class NoThread(ThreadPoolExecutor):
        def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
            future = super().submit(fn, *args, **kwargs)  # queued, then the thread fails to start
            if args == ("b",):
                raise RuntimeError("can't start new thread")
            return future

    with NoThread(max_workers=2) as pool, pytest.raises(RuntimeError, match="start new thread"):
        _in_parallel(pool, Store(), ["a", "b", "c"])  # type: ignore[arg-type, list-item]
    assert sorted(runs) == ["a", "b"]  # nothing twice
    closed = ThreadPoolExecutor(max_workers=2)
    closed.shutdown()
    runs.clear()
    assert _in_parallel(closed, Store(), ["a", "b"]) == ["A", "B"]  # type: ignore[arg-type, list-item]
    assert runs == ["a", "b"]


def test_a_forked_child_of_an_s3_store_runs_its_requests(s3_server: S3Server, stores: list[SyncDatabase]) -> None:
    """The I/O pool's threads are the parent's: the child's store makes its own (it waited for
    the parent's for good)."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork() on this platform")
    cfg = {"backend": "s3", **s3_server.config()}
    db = open_store(**cfg, merge_fan=3, inline_bytes=0)
    stores.append(db)
    for i in range(3):
        db.create(rec(i))
    assert db.storage.settle(30)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        import faulthandler

        faulthandler.dump_traceback_later(20, exit=True)
        ok = False
        try:
            db.create(rec(10))
            ok = db.count() == 4
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    fresh = open_store(**cfg)
    stores.append(fresh)
    assert fresh.count() == 4 and fresh.verify()["live"] == 4
