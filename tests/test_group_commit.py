"""Group commit: concurrent single writes in one process share commits, each keeps its own result
or error, and nothing is lost or doubled (threads on sync stores, tasks on async ones)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from dk_vector_plugins import AsyncDatabaseFactory, DatabaseFactory, DuplicateRecordError, Record, VectorField


def rec(rid: str, i: int) -> Record:
    return Record({"i": i, "embedding": VectorField(np.random.default_rng(i).standard_normal(8))}, id=rid)


@pytest.mark.parametrize("backend", ["file", "memory"])
def test_threads_share_commits_and_keep_their_results(tmp_path: Path, backend: str) -> None:
    config = {"backend": backend, **({"path": str(tmp_path / "s")} if backend == "file" else {})}
    db = DatabaseFactory().create(config)
    errors: list[BaseException] = []
    got: dict[str, str] = {}
    start = threading.Barrier(8)

    def writer(w: int) -> None:
        start.wait()
        for j in range(25):
            rid = f"w{w}-{j}"
            try:
                got[rid] = db.create(rec(rid, w * 100 + j))
            except BaseException as e:  # collected for the assertion
                errors.append(e)
        try:  # every thread creates "shared": exactly one succeeds
            got[f"shared-{w}"] = db.create(rec("shared", w))
        except DuplicateRecordError as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [type(e) for e in errors] == [DuplicateRecordError] * 7
    assert db.count() == 8 * 25 + 1 and all(got[rid] == rid for rid in got if not rid.startswith("shared"))
    if backend == "file":
        assert db.version < 8 * 25 + 1  # commits were shared
        again = DatabaseFactory().create(config)
        assert again.count() == 201 and again.verify()["live"] == 201


def test_async_tasks_share_commits(tmp_path: Path) -> None:
    async def go() -> int:
        db = AsyncDatabaseFactory().create(backend="file", path=str(tmp_path / "a"))
        await asyncio.gather(*(db.create(rec(f"t{i}", i)) for i in range(64)))
        n: int = await db.count()
        await db.close()
        return n

    assert asyncio.run(go()) == 64
    assert DatabaseFactory().create(backend="file", path=str(tmp_path / "a")).verify()["live"] == 64


def test_a_leader_waits_for_the_active_writers_and_a_lone_writer_never_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After commits that carried several writers, the thread that gets the lock waits (briefly)
    for as many writers to queue as the last two commits carried, so that one commit takes them
    all (without the wait, every other commit takes half of them); it stops waiting as soon as
    they are there. A writer alone never waits."""
    import time

    import dk_vector_plugins.core as core_mod

    monkeypatch.setattr(core_mod, "GROUP_WAIT_S", 5.0)
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "g"))
    core = db._core
    t0 = time.monotonic()
    for i in range(3):  # a lone writer: no wait, one commit each
        db.create(rec(f"alone{i}", i))
    assert time.monotonic() - t0 < 2.0 and db.version == 3

    core._groups, core._last_commit_s = (4, 4), 60.0  # as after commits of 4 writers each
    first = threading.Thread(target=db.create, args=(rec("first", 100),))
    t0 = time.monotonic()
    first.start()
    time.sleep(0.3)  # the first writer leads and waits for the others
    assert db.version == 3
    others = [threading.Thread(target=db.create, args=(rec(f"o{i}", 200 + i),)) for i in range(7)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert time.monotonic() - t0 < 4.0  # it stopped waiting once the 8 writers were there
    assert db.version == 4 and db.count() == 11  # one commit carried all eight
    assert core._groups == (4, 8)
