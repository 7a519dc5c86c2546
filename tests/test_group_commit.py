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
