"""The ``file`` backend on real files: persistence, concurrency, corruption, compaction, async.

Crash tests (SIGKILLed writers) and the two-process race live in ``test_file_crash.py``; the
child processes both use are in ``helpers_file_writer.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import (
    AsyncDatabaseFactory,
    ConfigError,
    DatabaseFactory,
    DkvError,
    DuplicateRecordError,
    Record,
    StorageError,
    VectorField,
)
from dk_vector_plugins.backends.file import AsyncFileDatabase, FileDatabase
from dk_vector_plugins.storage.log_format import FORMAT_VERSION

HELPER = str(Path(__file__).with_name("helpers_file_writer.py"))
DIM = 8


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``open_store(name="s", **config)``: a FileDatabase on ``tmp_path/name``; closed at teardown."""
    made: list[Any] = []

    def make(name: str = "s", **config: Any) -> Any:
        config.setdefault("vector_enabled", True)
        config.setdefault("inline_bytes", 0)  # these tests look at segment files (inline: test_small_commits)
        db = DatabaseFactory().create(backend="file", path=str(tmp_path / name), **config)
        made.append(db)
        return db

    yield make
    for db in made:
        db.close()


def vec(seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def rich_records() -> list[Record]:
    """Records with several vector fields, some with none, datetimes, bytes, nesting, unicode."""
    out = []
    for i in range(30):
        data: dict[str, Any] = {
            "title": f"doc {i} — ünïcode ✓",
            "n": i,
            "ratio": i / 7,
            "flag": i % 2 == 0,
            "kind": ["a", "b", "c"][i % 3],
            "when": dt.datetime(2024, 1, 1 + i % 28, 12, i, tzinfo=dt.timezone.utc),
            "day": dt.date(2023, 5, 1 + i % 28),
            "blob": bytes([i, 0, 255, i % 7]),
            "nested": {"list": [1, 2, {"deep": i}], "none": None},
        }
        if i % 5 != 4:  # every fifth record has no vector at all
            data["embedding"] = VectorField(vec(i), source_field="title", model_name="m", model_version="1")
        if i % 3 == 0:  # a second field, 4-d, on a third of the records
            data["image"] = VectorField(vec(1000 + i, 4))
        if i % 10 == 1:  # a third field on a few
            data["extra"] = VectorField(vec(2000 + i, 16))
        out.append(Record(data, id=f"r{i:02d}", metadata={"src": "test", "i": i, "tags": ["x", i]}))
    return out


def is_mapped(arr: np.ndarray) -> bool:
    """Whether ``arr`` is a view of a memory-mapped file."""
    import mmap

    base: Any = arr
    while isinstance(base, np.ndarray) and not isinstance(base, np.memmap):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, (np.memmap, mmap.mmap))


def hits(results: list[Any]) -> list[tuple[str, float]]:
    return [(h.id, round(h.score, 5)) for h in results]


def searches(db: Any) -> list[Any]:
    """A fixed set of searches over every vector field, metric, and a filter (errors by name)."""
    out: list[Any] = []

    def one(*args: Any, **kw: Any) -> None:
        try:
            out.append(hits(db.vector_search(*args, **kw)))
        except DkvError as e:
            out.append(type(e).__name__)

    for seed in range(3):
        one(vec(500 + seed), k=7)
        one(vec(500 + seed), k=7, metric="euclidean")
        one(vec(600 + seed), k=7, filter={"kind": "b"})
        one(vec(700 + seed, 4), vector_field="image", k=5)
        one(vec(800 + seed, 16), vector_field="extra", k=5)
    return out


def snapshot(db: Any) -> list[tuple[str, dict[str, Any]]]:
    return sorted((r.id, r.to_dict(include_metadata=True)) for r in db.all())


def manifest(path: Path) -> dict[str, Any]:
    """The newest manifest in a store directory."""
    names = sorted(p.name for p in (path / "manifests").iterdir() if p.name.endswith(".json"))
    return json.loads((path / "manifests" / names[-1]).read_text())  # type: ignore[no-any-return]


def popen_helper(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, HELPER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def expect_line(proc: subprocess.Popen[str], want: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith(want):
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"child said {line!r}, expected {want!r}; stderr:\n{err}")
    return line


# --- 1. persistence --------------------------------------------------------------------------


def test_round_trip_every_value_type(open_store: Callable[..., Any], tmp_path: Path) -> None:
    db = open_store()
    originals = rich_records()
    db.create_batch(originals[:20])
    for r in originals[20:]:  # several commits: several segments
        db.create(r)
    before_search, before_all = searches(db), snapshot(db)
    db.close()

    again = open_store()
    assert again.count() == 30
    for r in originals:
        got = again.read(r.id)
        assert got == r, r.id
        assert got.metadata == r.metadata
        assert isinstance(got["when"], dt.datetime) and got["when"].tzinfo is not None
        assert isinstance(got["day"], dt.date) and isinstance(got["blob"], bytes)
        if "embedding" in r:
            assert got.fields["embedding"].source_field == "title"
            assert got.fields["embedding"].model_name == "m"
        else:
            assert "embedding" not in got
    assert searches(again) == before_search
    assert snapshot(again) == before_all
    assert again.count({"kind": "a"}) == 10
    # the source text of a hit comes back too
    top = again.vector_search(vec(3), k=1)[0]
    assert top.id == "r03" and top.source_text == "doc 3 — ünïcode ✓"
    assert again.verify()["live"] == 30


def test_updates_and_deletes_persist_as_tombstones(open_store: Callable[..., Any], tmp_path: Path) -> None:
    db = open_store()
    db.create_batch(rich_records())
    assert db.update("r01", Record({"title": "new", "embedding": VectorField(vec(99))}))
    assert db.delete("r02") and db.delete_batch(["r03", "nope"]) == [True, False]
    db.upsert(Record({"title": "upserted", "image": VectorField(vec(7, 4))}, id="r04"))
    db.upsert(Record({"title": "brand new"}, id="z"))
    assert db.update("missing", Record({"x": 1})) is False
    want_search, want_all = searches(db), snapshot(db)
    version = db.version
    db.close()

    # deletes are tombstones: the old segment still holds the rows, a later one lists the ids
    m = manifest(tmp_path / "s")
    assert m["version"] == version
    assert sum(s["deletes"] for s in m["segments"]) == 2
    segs = tmp_path / "s" / "segments"
    seg_ids = [(segs / f"{s['name']}.ids.txt").read_text().splitlines() for s in m["segments"]]
    seg_deletes = [
        json.loads((segs / f"{s['name']}.deletes.json").read_text()) if s["deletes"] else []
        for s in m["segments"]
    ]
    assert "r02" in seg_ids[0] and any("r02" in d for d in seg_deletes[1:])
    # fresh: no id stored before (the first batch, and the upsert of the new id "z")
    assert [s["fresh"] for s in m["segments"]] == [True, False, False, False, False, True]

    again = open_store()
    assert again.version == version
    assert again.read("r02") is None and again.read("r03") is None
    assert again.read("r01")["title"] == "new" and "image" not in again.read("r01")
    assert again.read("r04")["title"] == "upserted" and "embedding" not in again.read("r04")
    assert again.read("z")["title"] == "brand new"
    assert again.count() == 29
    assert hits(again.vector_search(vec(99), k=1)) == [("r01", 1.0)]
    assert searches(again) == want_search and snapshot(again) == want_all


def test_clear_persists(open_store: Callable[..., Any]) -> None:
    db = open_store()
    db.create_batch(rich_records())
    assert db.clear() == 30
    db.close()
    again = open_store()
    assert again.count() == 0 and again.all() == [] and again.vector_search(vec(1), k=3) == []
    again.create(Record({"embedding": VectorField(vec(1))}, id="after"))
    again.close()
    third = open_store()
    assert [r.id for r in third.all()] == ["after"]
    assert hits(third.vector_search(vec(1), k=3)) == [("after", 1.0)]


def test_store_opened_earlier_sees_other_writers(open_store: Callable[..., Any], tmp_path: Path) -> None:
    a = open_store()
    b = open_store()
    assert a.count() == 0
    b.create(Record({"n": 1, "embedding": VectorField(vec(1))}, id="x"))
    assert a.count() == 1 and a.read("x")["n"] == 1  # no refresh() needed
    assert hits(a.vector_search(vec(1), k=1)) == [("x", 1.0)]
    b.delete("x")
    assert a.read("x") is None and a.vector_search(vec(1), k=1) == []
    a.create(Record({"embedding": VectorField(vec(2))}, id="y"))
    assert b.exists("y") and a.version == b.version

    # another OS process
    proc = popen_helper("batches", str(tmp_path / "s"), "0", "3", "10")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert a.count() == 31 and b.count({"batch": 2}) == 10
    assert a.read("b1-9")["batch"] == 1


def test_a_writer_answers_as_on_the_newest_version(open_store: Callable[..., Any]) -> None:
    """Writes of a store that another store's commits left behind: a create of a taken id, an
    update and a delete of records created since, a re-create of an id deleted since."""
    a = open_store()
    a.create(Record({"n": 0, "embedding": VectorField(vec(0))}, id="x0"))
    b = open_store()
    b.create_batch([Record({"n": i, "embedding": VectorField(vec(i))}, id=f"x{i}") for i in (1, 2)])
    with pytest.raises(DuplicateRecordError):
        a.create(Record({"n": 9}, id="x1"))
    b.create(Record({"n": 3}, id="x3"))
    assert a.update("x3", Record({"n": -3})) is True and a.delete("x2") is True
    b.delete("x1")
    a.create(Record({"n": 11, "embedding": VectorField(vec(11))}, id="x1"))  # a still held x1
    assert b.read("x1")["n"] == 11 and b.read("x3")["n"] == -3 and not b.exists("x2") and b.count() == 3


def test_a_write_after_another_store_cleaned_up_is_kept(open_store: Callable[..., Any]) -> None:
    """A store left behind while another one commits, compacts and cleans up (the manifests
    after its version deleted) still commits on the newest version: its write is never lost by
    creating a manifest number that clean-up had freed."""
    a = open_store()
    a.create(Record({"n": 0, "embedding": VectorField(vec(0))}, id="a0"))
    b = open_store()
    for i in range(1, 30):
        b.create(Record({"n": i, "embedding": VectorField(vec(i))}, id=f"b{i}"))
    b.compact()
    assert b.vacuum(0) > 0  # manifest a.version + 1 among the deleted
    a.create(Record({"n": 99, "embedding": VectorField(vec(99))}, id="late"))
    assert b.exists("late") and b.count() == 31 and open_store().read("late")["n"] == 99


def test_readers_never_see_half_a_commit(open_store: Callable[..., Any], tmp_path: Path) -> None:
    """A reader polls while another process commits batches of 40: only whole batches show."""
    size, count = 40, 30
    reader = open_store()
    reader.count()  # the directory exists
    proc = popen_helper("batches", str(tmp_path / "s"), "0", str(count), str(size))
    expect_line(proc, "ready")
    observations = 0
    seen_counts = set()
    while True:
        done = proc.poll() is not None
        recs = reader.all()
        by_batch: dict[int, int] = {}
        for r in recs:
            by_batch[r["batch"]] = by_batch.get(r["batch"], 0) + 1
        assert all(v == size for v in by_batch.values()), by_batch
        n = reader.count()
        assert n % size == 0
        found = reader.vector_search(vec(5), k=size * count)
        assert len(found) % size == 0
        seen_counts.add(len(recs))
        observations += 1
        if done:
            break
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert reader.count() == size * count
    assert observations > 3 and len(seen_counts) > 2  # we really did watch it grow


# --- 2. concurrency within one process ----------------------------------------------------------


def _hammer(dbs: list[Any], per_thread: int) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(dbs))

    def work(t: int, db: Any) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                db.create(
                    Record({"t": t, "i": i, "embedding": VectorField(vec(t * 1000 + i))}, id=f"t{t}-{i}")
                )
        except BaseException as e:  # reported by the test
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t, db)) for t, db in enumerate(dbs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


@pytest.mark.parametrize("shared", [False, True], ids=["separate-instances", "shared-instance"])
def test_threads_lose_nothing(open_store: Callable[..., Any], shared: bool) -> None:
    first = open_store(fsync=False)
    dbs = [first] * 4 if shared else [first] + [open_store(fsync=False) for _ in range(3)]
    assert _hammer(dbs, 100) == []
    want = {f"t{t}-{i}" for t in range(4) for i in range(100)}
    for db in dbs:
        assert db.count() == 400
    check = open_store()
    assert {r.id for r in check.all()} == want
    assert check.verify()["live"] == 400
    assert len(check.vector_search(vec(1), k=1000)) == 400


# --- 4. corruption ---------------------------------------------------------------------------


def _corruptible(open_store: Callable[..., Any], tmp_path: Path) -> dict[str, Path]:
    """A store of three segments; the files of the second one, by kind."""
    db = open_store()
    recs = rich_records()
    db.create_batch(recs[:10])
    db.create_batch(recs[10:20])  # has records without "image": a mask file
    db.create_batch(recs[20:])
    db.close()
    m = manifest(tmp_path / "s")
    seg = m["segments"][1]
    base = tmp_path / "s" / "segments" / seg["name"]
    files = {"ids": Path(f"{base}.ids.txt"), "rows": Path(f"{base}.rows.jsonl")}
    files["npy"] = Path(f"{base}.{seg['fields']['embedding']['key']}.npy")
    files["norms"] = Path(f"{base}.{seg['fields']['embedding']['key']}.sq.npy")
    files["mask"] = Path(f"{base}.{seg['fields']['image']['key']}.mask.npy")
    for p in files.values():
        assert p.exists(), p
    return files


@pytest.mark.parametrize("kind", ["ids", "rows", "npy", "norms", "mask"])
@pytest.mark.parametrize("damage", ["truncate", "delete", "empty"])
def test_damaged_segment_file_is_named(
    open_store: Callable[..., Any], tmp_path: Path, kind: str, damage: str
) -> None:
    files = _corruptible(open_store, tmp_path)
    target = files[kind]
    early = open_store()  # opened before the damage: lazily loaded rows are still on disk
    size = target.stat().st_size
    if damage == "delete":
        target.unlink()
    else:
        with open(target, "r+b") as f:
            f.truncate(0 if damage == "empty" else size - 5)

    with pytest.raises(StorageError) as err:
        db = open_store()
        db.vector_search(vec(1), k=30)
        db.all()
    assert str(target) in str(err.value)
    with pytest.raises(StorageError) as err2:
        early.verify()
    assert str(target) in str(err2.value)
    if kind == "rows":  # an open store that had not parsed the rows yet says which file too
        with pytest.raises(StorageError) as err3:
            early.all()
        assert str(target) in str(err3.value)


def test_stray_files_are_ignored(open_store: Callable[..., Any], tmp_path: Path) -> None:
    db = open_store()
    db.create_batch(rich_records())
    want_search, want_all = searches(db), snapshot(db)
    db.close()
    root = tmp_path / "s"
    m = manifest(root)
    seg = m["segments"][0]["name"]
    junk = {
        root / "notes.txt": b"hello",
        root / "LATEST.json.tmp-deadbeef0000": b"{half",
        root / "segments" / "junk.bin": os.urandom(100),
        root / "segments" / f"{seg}.ids.json.tmp-0123456789ab": b'{"ids": [',
        root / "segments" / "000000000099-ffffffffffffffff.f0.npy": b"not an npy",
        root / "manifests" / f"{m['version'] + 1:020d}.json.tmp-cafecafecafe": b'{"format": 1, "vers',
        root / "manifests" / "README": b"junk",
    }
    for p, data in junk.items():
        p.write_bytes(data)
    (root / "segments" / "a-directory").mkdir()
    (root / "manifests" / "00000000000000000999.json.d").mkdir()

    again = open_store()
    assert searches(again) == want_search and snapshot(again) == want_all
    assert again.verify()["live"] == 30
    again.create(Record({"embedding": VectorField(vec(3))}, id="new"))
    assert again.vacuum() == 0  # everything is younger than the grace period
    assert again.vacuum(grace_s=0) >= 1  # unreferenced junk in segments/ is the store's to delete
    assert open_store().count() == 31


@pytest.mark.parametrize("where", ["next-manifest", "latest"])
def test_newer_format_is_refused(open_store: Callable[..., Any], tmp_path: Path, where: str) -> None:
    db = open_store()
    db.create_batch(rich_records()[:5])
    db.close()
    root = tmp_path / "s"
    m = manifest(root)
    m["format"] = 999
    if where == "latest":
        (root / "LATEST.json").write_text(json.dumps(m))
    else:
        m["version"] += 1
        (root / "manifests" / f"{m['version']:020d}.json").write_text(json.dumps(m))
    with pytest.raises(StorageError, match="newer") as err:
        open_store().count()
    assert "format 999" in str(err.value) and "upgrade" in str(err.value)


def test_corrupt_manifest_is_named(open_store: Callable[..., Any], tmp_path: Path) -> None:
    db = open_store()
    db.create(Record({"x": 1}, id="a"))
    db.close()
    bad = tmp_path / "s" / "manifests" / f"{2:020d}.json"
    bad.write_text('{"format": 1, "vers')
    with pytest.raises(StorageError) as err:
        open_store().count()
    assert str(bad) in str(err.value)


def test_reopen_parses_only_the_rows_it_shows(open_store: Callable[..., Any], tmp_path: Path) -> None:
    """Row data loads lazily row by row: showing 5 hits of a 3000-row segment parses ~5 rows."""
    from dk_vector_plugins.memtable import UNLOADED

    db = open_store()
    x = np.random.default_rng(3).standard_normal((3000, DIM)).astype(np.float32)
    db.add_vectors(x, ids=[f"v{i}" for i in range(3000)], metadata=[{"i": i} for i in range(3000)])
    db.close()
    again = open_store()
    found = again.vector_search(x[7], k=5)
    assert found[0].id == "v7" and found[0].record["i"] == 7
    assert again.read("v2999")["i"] == 2999
    unloaded = sum(d is UNLOADED for d in again.core.table._data)
    assert unloaded >= 3000 - 6, unloaded
    assert again.count({"i": 5}) == 1  # a filter needs every row: they all load, correctly
    assert [r["i"] for r in again.search({"i": 2998})] == [2998]


def test_reopen_of_many_segments_adopts_them_without_copying(open_store: Callable[..., Any]) -> None:
    """Reopening 12 segments maps each segment's vectors as one part of the index: no copy into
    a new matrix (that cost a pass over all vectors, 280 ms for 200k x 384), no id lookup built."""
    db = open_store(merge_fan=0)  # 12 segments kept as they are
    x = np.random.default_rng(4).standard_normal((12 * 50, DIM)).astype(np.float32)
    for s in range(0, len(x), 50):  # 12 commits, 12 segments
        db.add_vectors(x[s : s + 50], ids=[f"v{i}" for i in range(s, s + 50)])
    db.close()
    again = open_store()
    assert len(again.storage.state.segments) == 12
    table = again.core.table
    index = table.indexes["embedding"]
    assert index.nparts == 12
    for _, mat, _ in index.parts():
        assert is_mapped(mat)
    assert table._row_of_map is None and table._id_chunks  # ids not read yet
    assert hits(again.vector_search(x[599], k=1)) == [("v599", 1.0)]
    assert index.nbytes < 1.1 * x.nbytes + 4096
    assert again.read("v7") is not None and table._row_of_map is not None  # built on first lookup
    assert again.count() == 600


def test_corrupt_row_in_the_middle_is_named(open_store: Callable[..., Any], tmp_path: Path) -> None:
    db = open_store()
    db.create_batch([Record({"n": i, "embedding": VectorField(vec(i))}, id=f"r{i}") for i in range(10)])
    db.close()
    seg = manifest(tmp_path / "s")["segments"][0]["name"]
    rows = tmp_path / "s" / "segments" / f"{seg}.rows.jsonl"
    lines = rows.read_bytes().split(b"\n")
    lines[4] = b'{"d": {"n": 4}, "m": {}, "v"'  # same number of lines, one broken
    rows.write_bytes(b"\n".join(lines))
    again = open_store()
    # the rows file's checksum no longer matches: the whole object is refused, by name (a
    # format-2 table, which has no checksums, names the row: tests/test_integrity.py)
    with pytest.raises(StorageError, match="checksum") as err:
        again.read("r4")
    assert str(rows) in str(err.value)
    with pytest.raises(StorageError) as err2:
        again.verify()
    assert str(rows) in str(err2.value)


# --- 5. compaction, vacuum, config -------------------------------------------------------------


def test_automatic_compaction_keeps_results(open_store: Callable[..., Any], tmp_path: Path) -> None:
    db = open_store(max_segments=4)
    mem = DatabaseFactory().create(backend="memory", vector_enabled=True)
    recs = rich_records()
    max_seen = 0
    compactions = 0
    for i, r in enumerate(recs):
        for store in (db, mem):
            store.create(r)
            if i % 4 == 3:
                store.update(
                    recs[i - 2].id, Record({"title": f"v{i}", "embedding": VectorField(vec(i + 50))})
                )
            if i % 6 == 5:
                store.delete(recs[i - 5].id)
        n = len(db.storage.state.segments)
        max_seen = max(max_seen, n)
        compactions += n == 1 and i > 0
        assert n <= 4
        assert searches(db) == searches(mem)
    assert compactions >= 3 and max_seen == 4
    assert snapshot(db) == snapshot(mem)
    assert manifest(tmp_path / "s")["segments"][0]["clear"] is True
    db.close()
    again = open_store(max_segments=4)
    assert searches(again) == searches(mem) and snapshot(again) == snapshot(mem)
    again.compact()
    assert again.verify()["rows"] == again.count() == 25  # a compacted table holds no dead rows
    assert searches(again) == searches(mem)


def test_compact_and_vacuum_spare_earlier_readers(open_store: Callable[..., Any], tmp_path: Path) -> None:
    writer = open_store(keep_versions=1)
    recs = rich_records()
    for r in recs:
        writer.create(r)
    writer.delete_batch(["r00", "r01"])
    reader = open_store()  # lazily loaded: its rows still live in the old segments
    early_hits = searches(reader)
    before = {p.name for p in (tmp_path / "s" / "segments").iterdir()}

    writer.compact()
    assert len(writer.storage.state.segments) == 1
    assert searches(writer) == early_hits
    removed = writer.vacuum(grace_s=0)
    after = {p.name for p in (tmp_path / "s" / "segments").iterdir()}
    assert removed >= len(before) and not (before & after)
    assert len(list((tmp_path / "s" / "manifests").iterdir())) == 1

    assert searches(reader) == early_hits  # the old reader still searches (and reads rows)
    assert snapshot(reader) == snapshot(writer)
    assert reader.verify()["rows"] == 28
    assert open_store().count() == 28


def test_vacuum_keeps_what_recent_versions_name(open_store: Callable[..., Any], tmp_path: Path) -> None:
    db = open_store(keep_versions=3, merge_fan=0)  # the versions below are counted without merges
    for r in rich_records()[:10]:
        db.create(r)
    db.compact()
    db.create(Record({"x": 1}, id="late"))
    # versions 11 (compacted) and 12 name only new segments; 10 still names the old ones
    assert db.vacuum(grace_s=0) == 9  # manifests 1..9
    assert open_store().count() == 11
    db.create(Record({"x": 2}, id="later"))
    assert db.vacuum(grace_s=0) > 10  # version 10 dropped out: the old segments go
    assert open_store().count() == 12 and db.verify()["live"] == 12


def test_config_errors(tmp_path: Path) -> None:
    f = DatabaseFactory()
    with pytest.raises(ConfigError, match="'path'"):
        f.create(backend="file", vector_enabled=True)
    with pytest.raises(ConfigError, match="bogus") as err:
        f.create(backend="file", path=str(tmp_path / "s"), bogus=1)
    assert "max_segments" in str(err.value)  # the accepted keys are listed
    with pytest.raises(ConfigError, match="max_segments"):
        f.create(backend="file", path=str(tmp_path / "s"), max_segments=-1)
    with pytest.raises(ConfigError, match="fsync"):
        f.create(backend="file", path=str(tmp_path / "s"), fsync="yes")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError, match="afile"):
        f.create(backend="file", path=str(tmp_path / "afile"))
    # a PathLike works
    db = f.create(backend="file", path=tmp_path / "p", vector_enabled=True)
    assert isinstance(db, FileDatabase)
    db.close()


# --- 6. async --------------------------------------------------------------------------------


async def test_async_crud_and_search_parity(tmp_path: Path) -> None:
    adb = AsyncDatabaseFactory().create(backend="file", path=str(tmp_path / "a"), vector_enabled=True)
    sdb = DatabaseFactory().create(backend="file", path=str(tmp_path / "s"), vector_enabled=True)
    assert isinstance(adb, AsyncFileDatabase)
    try:
        recs = rich_records()
        assert await adb.create_batch(recs[:20]) == sdb.create_batch(recs[:20])
        for r in recs[20:]:
            assert await adb.create(r) == sdb.create(r)
        assert await adb.update("r01", Record({"title": "u", "embedding": VectorField(vec(9))}))
        sdb.update("r01", Record({"title": "u", "embedding": VectorField(vec(9))}))
        assert await adb.delete("r02") and sdb.delete("r02")
        assert await adb.upsert(Record({"n": 5}, id="z")) == sdb.upsert(Record({"n": 5}, id="z"))
        assert await adb.count() == sdb.count() == 30
        assert await adb.read("r05") == sdb.read("r05")
        assert await adb.exists("z") and not await adb.exists("r02")
        for seed in range(4):
            q = vec(300 + seed)
            a = await adb.vector_search(q, k=8, filter={"kind": "c"})
            assert hits(a) == hits(sdb.vector_search(q, k=8, filter={"kind": "c"}))
            a = await adb.vector_search(vec(40 + seed, 4), vector_field="image", k=3, metric="dot_product")
            assert hits(a) == hits(
                sdb.vector_search(vec(40 + seed, 4), vector_field="image", k=3, metric="dot_product")
            )
        batch = await adb.vector_search_batch(np.stack([vec(1), vec(2)]), k=4)
        assert [hits(b) for b in batch] == [
            hits(b) for b in sdb.vector_search_batch(np.stack([vec(1), vec(2)]), k=4)
        ]
        assert (await adb.verify())["live"] == 30
        await adb.compact()
        assert hits(await adb.vector_search(vec(1), k=5)) == hits(sdb.vector_search(vec(1), k=5))
        assert await adb.clear() == 30 and await adb.count() == 0
    finally:
        await adb.close()
        sdb.close()
    again = AsyncDatabaseFactory().create(backend="file", path=str(tmp_path / "a"), vector_enabled=True)
    assert await again.count() == 0
    await again.close()


async def test_async_ingest_does_not_block_the_loop(tmp_path: Path) -> None:
    adb = AsyncDatabaseFactory().create(backend="file", path=str(tmp_path / "a"), vector_enabled=True)
    n, dim, batch = 120_000, 128, 10_000
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.002)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    try:
        for s in range(0, n, batch):
            await adb.add_vectors(x[s : s + batch], ids=[f"v{i}" for i in range(s, s + batch)])
        hits_ = await adb.vector_search(x[123], k=3)
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        await task
        await adb.close()
    assert hits_[0].id == "v123"
    during = [t for t in ticks if t >= t0]
    gaps = np.diff(during)
    # The ingest took a while and the ticker kept running all along: at least one tick per 50 ms
    # on average, and no stall of the loop longer than a fraction of the whole ingest.
    # (add_vectors validates its matrix on the loop, then does the rest in a worker thread.)
    assert elapsed > 0.1
    assert len(during) >= elapsed / 0.05, (len(during), elapsed)
    assert gaps.max() < max(0.4, elapsed / 3), (gaps.max(), elapsed)


# --- 5. the format's newer parts -------------------------------------------------------------


def test_writer_keeps_no_reference_to_the_callers_array(open_store: Callable[..., Any]) -> None:
    """add_vectors does not copy a float32 batch before writing it (the store then maps the file
    it wrote): changing the caller's array afterwards must not change what is stored."""
    db = open_store()
    x = np.random.default_rng(5).standard_normal((3000, DIM)).astype(np.float32)
    ids = [f"c{i}" for i in range(len(x))]
    db.add_vectors(x, ids=ids)
    want = hits(db.vector_search(x[7].copy(), k=3))
    index = db.core.table.indexes["embedding"]
    assert any(is_mapped(mat) for _, mat, _ in index.parts())
    original = x.copy()
    x[:] = 0.0
    assert hits(db.vector_search(original[7], k=3)) == want
    np.testing.assert_array_equal(np.asarray(db.read("c7")["embedding"]), original[7])
    assert hits(open_store().vector_search(original[7], k=3)) == want


def test_ids_with_line_breaks_round_trip(open_store: Callable[..., Any], tmp_path: Path) -> None:
    """Ids are stored one per line; a batch holding an id with a line break uses JSON instead."""
    db = open_store()
    odd = ["a\nb", "c\r\nd", "plain", "ünï"]
    db.add_vectors(np.stack([vec(i) for i in range(4)]), ids=odd)
    db.add_vectors(np.stack([vec(i) for i in range(4, 6)]), ids=["x", "y"])
    m = manifest(tmp_path / "s")
    assert [s["ids"] for s in m["segments"]] == ["json", "txt"]
    again = open_store()
    assert sorted(r.id for r in again.all()) == sorted([*odd, "x", "y"])
    assert again.read("a\nb") is not None
    assert hits(again.vector_search(vec(1), k=1))[0][0] == "c\r\nd"
    assert again.verify()["live"] == 6


def test_wrong_stored_norms_are_found_by_verify(open_store: Callable[..., Any], tmp_path: Path) -> None:
    db = open_store()
    db.add_vectors(np.stack([vec(i) for i in range(20)]), ids=[f"n{i}" for i in range(20)])
    seg = manifest(tmp_path / "s")["segments"][0]
    path = tmp_path / "s" / "segments" / f"{seg['name']}.{seg['fields']['embedding']['key']}.sq.npy"
    sq = np.load(path)
    sq[3] *= 4.0
    np.save(path, sq)
    with pytest.raises(StorageError) as err:
        open_store().verify()
    assert str(path) in str(err.value)


def test_fresh_segments_open_without_an_id_lookup(open_store: Callable[..., Any], tmp_path: Path) -> None:
    """A store written by bulk loads opens without reading ids; the first lookup builds the map,
    and an upsert of a stored id afterwards still replaces the old row."""
    db = open_store()
    for s in range(0, 40, 10):
        db.add_vectors(np.stack([vec(i) for i in range(s, s + 10)]), ids=[f"f{i}" for i in range(s, s + 10)])
    assert all(s["fresh"] for s in manifest(tmp_path / "s")["segments"])
    again = open_store()
    table = again.core.table
    assert table._row_of_map is None
    assert again.count() == 40 and table._row_of_map is None  # counting needs no ids
    assert hits(again.vector_search(vec(33), k=1))[0][0] == "f33"
    again.add_vectors(np.stack([vec(100)]), ids=["f33"])  # an upsert: not fresh
    assert again.count() == 40
    assert hits(open_store().vector_search(vec(100), k=1))[0][0] == "f33"
    assert np.asarray(open_store().read("f33")["embedding"]).tolist() == vec(100).tolist()


def _downgrade_to_format_1(root: Path) -> None:
    """Rewrite a table's files the way format 1 laid them out (ids and deletes in one JSON file,
    no stored norms, a rows file for every segment, no ``fresh``/``ids``/``data`` keys)."""
    segs = root / "segments"
    manifests = [root / "LATEST.json", *sorted((root / "manifests").glob("*.json"))]
    done: set[str] = set()
    for path in manifests:
        m = json.loads(path.read_text())
        m["format"] = 1
        for e in m["segments"]:
            base = segs / e["name"]
            if e["name"] not in done and e.get("ids") == "txt":
                ids = Path(f"{base}.ids.txt").read_text().split("\n")[:-1]
                dels_path = Path(f"{base}.deletes.json")
                dels = json.loads(dels_path.read_text()) if dels_path.exists() else []
                Path(f"{base}.ids.json").write_text(json.dumps({"ids": ids, "deletes": dels}))
                Path(f"{base}.ids.txt").unlink()
                dels_path.unlink(missing_ok=True)
                if e["rows"] and not e.get("data", True):
                    Path(f"{base}.rows.jsonl").write_bytes(b'{"d": {}, "m": {}, "v": {}}\n' * e["rows"])
                for f in e["fields"].values():
                    Path(f"{base}.{f['key']}.sq.npy").unlink()
            done.add(e["name"])
            for key in ("fresh", "ids", "data"):
                e.pop(key, None)
            for f in e["fields"].values():
                f.pop("sq", None)
        path.write_text(json.dumps(m))


def test_format_1_tables_are_read(open_store: Callable[..., Any], tmp_path: Path) -> None:
    db = open_store()
    db.create_batch(rich_records())
    db.add_vectors(np.stack([vec(i) for i in range(50, 60)]), ids=[f"v{i}" for i in range(10)])
    db.delete("r02")
    db.upsert(Record({"title": "again", "embedding": VectorField(vec(3))}, id="r01"))
    want_search, want_all = searches(db), snapshot(db)
    db.close()
    _downgrade_to_format_1(tmp_path / "s")
    old = open_store()
    assert searches(old) == want_search and snapshot(old) == want_all
    assert old.verify()["live"] == len(want_all)
    old.add_vectors(np.stack([vec(70)]), ids=["new"])  # writing on top: a format 2 segment
    assert manifest(tmp_path / "s")["format"] == FORMAT_VERSION
    assert hits(open_store().vector_search(vec(70), k=1))[0][0] == "new"


def test_load_vectors_false_answers_alike(open_store: Callable[..., Any]) -> None:
    db = open_store()
    db.create_batch(rich_records())
    db.delete("r02")
    want_search, want_all = searches(db), snapshot(db)
    lazy = open_store(load_vectors=False)
    assert lazy.read("r05") == db.read("r05")
    assert searches(lazy) == want_search and snapshot(lazy) == want_all


def test_listing_skips_a_file_removed_while_it_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clean-up lists segments while other writers create and remove temporary files: an entry
    gone before its ``stat`` is skipped, not an error (it failed automatic clean-up)."""
    from dk_vector_plugins.storage import local
    from dk_vector_plugins.storage.ops import List

    store = local.LocalObjectStore(tmp_path)
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "kept.npy").write_bytes(b"x")
    (tmp_path / "segments" / "gone.tmp").write_bytes(b"y")
    real = os.scandir

    def racing(path: Any) -> Any:
        entries = list(real(path))
        (tmp_path / "segments" / "gone.tmp").unlink()  # removed between listing and stat
        return iter(entries)

    monkeypatch.setattr(local.os, "scandir", racing)
    assert [x.key for x in store.do(List("segments/"))] == ["segments/kept.npy"]


def test_small_durable_writes_of_a_commit_run_in_parallel(tmp_path: Path) -> None:
    from dk_vector_plugins.storage.local import LocalObjectStore
    from dk_vector_plugins.storage.ops import Get, Put

    store = LocalObjectStore(tmp_path / "s")
    small = [Put(f"segments/a{i}", b"x" * 1000) for i in range(3)]
    assert store.parallel_ops(small)  # their fsyncs share the journal's commits
    big = [Put("segments/big", b"x" * (store.PARALLEL_PUT_BYTES + 1)), *small]
    assert not store.parallel_ops(big)  # a bulk load: one file at a time
    assert not store.parallel_ops([Get("segments/a0"), *small])  # reads come from the page cache
    assert not LocalObjectStore(tmp_path / "t", fsync=False).parallel_ops(small)  # nothing to wait for
    # a commit of several objects written by the pool: every file complete, readable again
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "db"), inline_bytes=0)
    db.create_batch([Record({"n": i, "embedding": VectorField(np.full(4, i, dtype=np.float32))}, id=f"r{i}") for i in range(5)])
    again = DatabaseFactory().create(backend="file", path=str(tmp_path / "db"))
    assert again.verify()["live"] == 5 and again.read("r3")["n"] == 3  # type: ignore[index]


def test_a_closed_file_store_still_writes_several_objects(tmp_path: Path) -> None:
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "s"), inline_bytes=0)
    db.create(Record({"n": 0, "embedding": VectorField(np.ones(3, dtype=np.float32))}, id="a"))
    db.close()  # its I/O threads stop; a later commit writes its objects on the calling thread
    db.create(Record({"n": 1, "embedding": VectorField(np.ones(3, dtype=np.float32))}, id="b"))
    assert DatabaseFactory().create(backend="file", path=str(tmp_path / "s")).count() == 2
