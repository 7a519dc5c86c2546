"""Merging the newest small segments (size-tiered): bounded segment counts, no full rewrite on the
write path, and every reader — the writer, another handle, a fresh one, a Dask-style snapshot —
answers exactly as a store that never merged (checked against the memory backend)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import DatabaseFactory, Record, VectorField
from dk_vector_plugins.storage.segments import snapshot


def vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(8).astype(np.float32)


def state(db: Any) -> list[tuple[str, Any]]:
    return sorted((r.id, r.get("n")) for r in db.all())


@pytest.fixture(params=["file", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, Any]:
    if request.param == "file":
        return {"backend": "file", "path": str(tmp_path / "s")}
    return {"backend": "s3", **request.getfixturevalue("s3_server").config()}


@pytest.mark.parametrize("inline", [64 * 1024, 0], ids=["inline", "objects"])
def test_single_writes_merge_and_every_reader_agrees(location: dict[str, Any], inline: int) -> None:
    writer = DatabaseFactory().create(**location, inline_bytes=inline)
    writer.storage.logic.options.merge_fan = 3  # merge often
    other = DatabaseFactory().create(**location)
    mem = DatabaseFactory().create(backend="memory")
    rng = random.Random(7)
    for step in range(120):
        rid = f"r{rng.randrange(60)}"
        op = rng.random()
        for db in (writer, mem):
            if op < 0.6:
                db.upsert(Record({"n": step, "embedding": VectorField(vec(step))}, id=rid))
            elif op < 0.8:
                db.delete(rid)
            else:
                db.upsert(Record({"n": step}, id=rid))  # a record without a vector
        if step % 10 == 9:
            assert state(writer) == state(mem) == state(other)
            q = vec(1000 + step)
            want = [(h.id, h.score) for h in mem.vector_search(q, k=5)]
            assert [(h.id, h.score) for h in writer.vector_search(q, k=5)] == want
            assert [(h.id, h.score) for h in other.vector_search(q, k=5)] == want
            # the loaded table lines up with the manifest it loaded (what a Dask plan relies on)
            assert snapshot(writer.storage).rows == writer.core.table.nrows
            assert snapshot(other.storage).rows == other.core.table.nrows
    segments = writer.storage.state.segments
    assert len(segments) <= 3 + 8  # a few tiers, never one per write
    fresh = DatabaseFactory().create(**location)
    assert state(fresh) == state(mem) and fresh.verify()["live"] == len(mem.all())


def test_merge_keeps_deletes_of_older_segments(location: dict[str, Any]) -> None:
    db = DatabaseFactory().create(**location)
    db.add_vectors(np.stack([vec(i) for i in range(50)]), ids=[f"b{i}" for i in range(50)])  # a base
    db.storage.logic.options.merge_fan = 4
    for i in range(8):
        db.delete(f"b{i}")  # tombstones of the base's rows, in small segments that get merged
    assert len(db.storage.state.segments) < 9
    again = DatabaseFactory().create(**location)
    assert again.count() == 42 and not any(again.exists(f"b{i}") for i in range(8))


def test_clean_up_runs_on_its_own_and_bounds_the_files(tmp_path: Any) -> None:
    root = tmp_path / "s"
    db = DatabaseFactory().create(backend="file", path=str(root), gc_every=8, keep_versions=2, keep_for=0)
    for i in range(120):
        db.create(Record({"n": i, "embedding": VectorField(vec(i))}, id=f"r{i}"))
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) < 40, len(files)  # 120 commits; old manifests and merged segments cleaned up
    assert DatabaseFactory().create(backend="file", path=str(root)).verify()["live"] == 120
    assert db.config["grace_s"] == 0  # keep_for is its other name
