"""Merging the newest small segments (size-tiered): bounded segment counts, no full rewrite on the
write path, and every reader — the writer, another handle, a fresh one, a Dask-style snapshot —
answers exactly as a store that never merged (checked against the memory backend)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import DatabaseFactory, Record, VectorField
from dk_vector_plugins.memtable import RecordTable
from dk_vector_plugins.storage.driver import TableStorage
from dk_vector_plugins.storage.log_format import TableState
from dk_vector_plugins.storage.ops import Op, Program
from dk_vector_plugins.storage.segments import snapshot


def vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(8).astype(np.float32)


def state(db: Any) -> list[tuple[str, Any]]:
    return sorted((r.id, r.get("n")) for r in db.all())


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
            with writer.core.lock:  # (a merge in the background commits under it)
                assert snapshot(writer.storage).rows == writer.core.table.nrows
            assert snapshot(other.storage).rows == other.core.table.nrows
    assert writer.storage.settle(30)
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
    assert db.storage.settle(30)
    assert len(db.storage.state.segments) < 9
    again = DatabaseFactory().create(**location)
    assert again.count() == 42 and not any(again.exists(f"b{i}") for i in range(8))


def test_clean_up_runs_on_its_own_and_bounds_the_files(tmp_path: Any) -> None:
    root = tmp_path / "s"
    db = DatabaseFactory().create(backend="file", path=str(root), gc_every=8, keep_versions=2, keep_for=0)
    for i in range(120):
        db.create(Record({"n": i, "embedding": VectorField(vec(i))}, id=f"r{i}"))
    assert db.storage.settle(30)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) < 40, len(files)  # 120 commits; old manifests and merged segments cleaned up
    assert DatabaseFactory().create(backend="file", path=str(root)).verify()["live"] == 120
    assert db.config["grace_s"] == 0  # keep_for is its other name


def _rows_file(storage: TableStorage, entry: dict[str, Any]) -> bytes:
    """The stored bytes of a segment's rows (from its manifest when held there)."""
    key = f"segments/{entry['name']}.rows.jsonl"
    held = storage.state.inline.get(key)
    return held if held is not None else bytes(storage.run(storage.logic.get_bytes(key)))


@pytest.mark.parametrize("inline", [64 * 1024, 0], ids=["inline", "objects"])
def test_a_merge_writes_the_rows_as_stored_without_encoding_them(
    location: dict[str, Any], inline: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dk_vector_plugins.storage import log_format

    db = DatabaseFactory().create(**location, inline_bytes=inline)
    db.storage.logic.options.merge_fan = 5
    encoded: list[str] = []
    real = log_format.encode_row
    monkeypatch.setattr(log_format, "encode_row", lambda rid, *a: encoded.append(rid) or real(rid, *a))
    lines: dict[str, bytes] = {}  # id -> its row's line, as its own commit stored it
    for i in range(3):
        rid = f"r{i}"
        db.create(Record({"n": i, "t": f"text {i}", "embedding": VectorField(vec(i))}, id=rid))
        last = db.storage.state.segments[-1]
        lines[rid] = _rows_file(db.storage, last)
    db.delete("r1")
    db.add_vectors(vec(9)[None, :], ids=["bare"])  # a row without data; the fifth segment: merged
    assert db.storage.settle(30)  # (by the store's maintenance thread)
    # each row encoded once, when it was created; a store whose rows files cost a request (s3)
    # reads only those held in manifests, and encodes the others from the table
    at_hand = location["backend"] == "file" or inline > 0
    assert encoded == ["r0", "r1", "r2"] + ([] if at_hand else ["r0", "r2"])
    merged = db.storage.state.segments[-1]
    assert merged["rows"] == 3 and len(db.storage.state.segments) == 1
    assert _rows_file(db.storage, merged) == lines["r0"] + lines["r2"] + b'{"d": {}, "m": {}, "v": {}}\n'
    again = DatabaseFactory().create(**location)
    assert state(again) == [("bare", None), ("r0", 0), ("r2", 2)]
    assert again.read("r2").get("t") == "text 2"  # type: ignore[union-attr]


def test_a_compaction_writes_the_rows_as_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dk_vector_plugins.storage import log_format

    root = tmp_path / "s"
    db = DatabaseFactory().create(backend="file", path=str(root), inline_bytes=0)
    for i in range(4):
        db.create(Record({"n": i, "embedding": VectorField(vec(i))}, id=f"r{i}"))
    db.delete("r0")
    monkeypatch.setattr(log_format, "encode_row", lambda *a: pytest.fail("a stored row was encoded again"))
    db.compact()
    assert len(db.storage.state.segments) == 1
    fresh = DatabaseFactory().create(backend="file", path=str(root))
    assert state(fresh) == [("r1", 1), ("r2", 2), ("r3", 3)] and fresh.verify()["live"] == 3


def test_a_merge_encodes_the_rows_when_a_rows_file_is_damaged(tmp_path: Path) -> None:
    root = tmp_path / "s"
    db = DatabaseFactory().create(backend="file", path=str(root), inline_bytes=0)
    db.storage.logic.options.merge_fan = 3
    for i in range(2):
        db.create(Record({"n": i, "embedding": VectorField(vec(i))}, id=f"r{i}"))
    first = db.storage.state.segments[0]
    rows = root / "segments" / f"{first['name']}.rows.jsonl"
    rows.write_bytes(rows.read_bytes().replace(b'"n": 0', b'"n": 7'))  # the table holds n=0
    db.create(Record({"n": 2}, id="r2"))  # merges: r0 is encoded from the table, not copied
    assert db.storage.settle(30)
    assert len(db.storage.state.segments) == 1
    fresh = DatabaseFactory().create(backend="file", path=str(root))
    assert state(fresh) == [("r0", 0), ("r1", 1), ("r2", 2)] and fresh.verify()["live"] == 3


def test_clean_up_waits_for_the_commit_after_a_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inline maintenance: a clean-up due in a commit that merged waits for the next commit."""
    events: list[str] = []
    maintain, gc = TableStorage._maintain, TableStorage._auto_gc

    def logged_maintain(self: TableStorage, table: RecordTable) -> bool:
        merged = maintain(self, table)
        events.append("merge" if merged else "commit")
        return merged

    def logged_gc(self: TableStorage, state: TableState | None = None) -> None:
        events.append("gc")
        gc(self, state)

    monkeypatch.setattr(TableStorage, "_maintain", logged_maintain)
    monkeypatch.setattr(TableStorage, "_auto_gc", logged_gc)
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "s"), gc_every=5, maintenance="inline")
    db.storage.logic.options.merge_fan = 4  # merges make versions 5, 10, 15: a clean-up is due
    for i in range(12):
        db.create(Record({"n": i}, id=f"r{i}"))
    assert "gc" in events
    for at, event in enumerate(events):
        if event == "gc":  # never right after a merge: after the next plain commit
            assert events[at - 1] == "commit", events
    assert state(DatabaseFactory().create(backend="file", path=str(tmp_path / "s"))) == [
        (f"r{i}", i) for i in sorted(range(12), key=lambda i: f"r{i}")
    ]


def test_clean_up_reads_no_manifest_the_store_wrote_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dk_vector_plugins.storage.local import LocalObjectStore
    from dk_vector_plugins.storage.ops import Get

    root = tmp_path / "s"
    writer = DatabaseFactory().create(backend="file", path=str(root), gc_every=0, keep_versions=3)
    for i in range(8):
        writer.create(Record({"n": i}, id=f"r{i}"))
    reads: list[str] = []
    do = LocalObjectStore.do

    def counted(self: LocalObjectStore, op: Op) -> Any:
        if isinstance(op, Get) and op.key.startswith("manifests/"):
            reads.append(op.key)
        return do(self, op)

    monkeypatch.setattr(LocalObjectStore, "do", counted)
    writer.vacuum(grace_s=0)
    assert reads == []  # the versions it keeps are those it committed
    other = DatabaseFactory().create(backend="file", path=str(root), gc_every=0, keep_versions=3)
    assert reads  # it opened at the version LATEST.json names and read the manifests after it
    reads.clear()
    other.vacuum(grace_s=0)  # and remembers them
    assert reads == []
    assert state(DatabaseFactory().create(backend="file", path=str(root))) == state(writer)


@pytest.mark.parametrize("max_segments", [0, 1])
def test_clean_up_still_runs_when_every_commit_compacts(tmp_path: Path, max_segments: int) -> None:
    root = tmp_path / "s"
    db = DatabaseFactory().create(
        backend="file", path=str(root), max_segments=max_segments, gc_every=3, keep_versions=2, grace_s=0
    )
    for i in range(60):
        db.create(Record({"n": i}, id=f"r{i}"))
    assert len(list((root / "manifests").iterdir())) < 20  # put off once at most, never starved
    assert DatabaseFactory().create(backend="file", path=str(root)).count() == 60


def test_clean_up_reads_the_ages_of_a_few_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dk_vector_plugins.storage.local import LocalObjectStore
    from dk_vector_plugins.storage.ops import List, Stat

    root = tmp_path / "s"
    db = DatabaseFactory().create(backend="file", path=str(root), gc_every=0, keep_versions=2)
    for i in range(40):
        db.create(Record({"n": i, "embedding": VectorField(vec(i))}, id=f"r{i}"))
    ops: list[Op] = []
    do = LocalObjectStore.do

    def counted(self: LocalObjectStore, op: Op) -> Any:
        ops.append(op)
        return do(self, op)

    monkeypatch.setattr(LocalObjectStore, "do", counted)
    manifests = len(list((root / "manifests").iterdir()))
    assert db.vacuum() == 0  # everything is younger than grace_s: nothing goes
    listed = [op for op in ops if isinstance(op, List) and op.prefix in ("manifests/", "segments/")]
    assert listed and not any(op.stat for op in listed)  # names only, no stat per file
    assert 1 <= sum(isinstance(op, Stat) for op in ops) <= 3  # the oldest candidates' ages
    ops.clear()
    gone = db.vacuum(grace_s=0)  # all old enough: each candidate's age read, then deleted
    assert gone > 10 and len(list((root / "manifests").iterdir())) < manifests
    assert sum(isinstance(op, Stat) for op in ops) >= gone
    assert DatabaseFactory().create(backend="file", path=str(root)).count() == 40


def test_stat_and_a_listing_without_ages(location: dict[str, Any]) -> None:
    from dk_vector_plugins.storage.ops import List, Put, Stat

    db = DatabaseFactory().create(**location)
    db.storage.run(_program([Put("segments/x.bin", b"12345")]))
    got = db.storage.run(_program([Stat("segments/x.bin"), Stat("segments/missing"), List("segments/x", stat=False)]))
    here, missing, listed = got
    assert (here.key, here.size) == ("segments/x.bin", 5) and here.mtime > 0
    assert missing is None
    assert [x.key for x in listed] == ["segments/x.bin"]  # ages may be left out (a local directory)


def _program(ops: list[Op]) -> Program[list[Any]]:
    """A table program performing ``ops`` one after another; returns their results."""
    out: list[Any] = []
    for op in ops:
        out.append((yield op))
    return out
