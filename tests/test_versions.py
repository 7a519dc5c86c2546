"""Versions and time travel on file and S3, sync and async: versions(), tags, checkout, restore,
and clean-up keeping what tags name."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from s3_server import S3Server

from dk_vector_plugins import (
    DatabaseFactory,
    InvalidRequestError,
    Record,
    StorageError,
    VectorField,
    VersionNotFoundError,
)
from dk_vector_plugins.backends.tabled import TableDatabase
from dk_vector_plugins.storage.log_format import manifest_key
from dk_vector_plugins.storage.ops import Delete, Get, Many, Op, Program

T = TypeVar("T")


def rec(rid: str, n: int) -> Record:
    return Record({"n": n, "embedding": VectorField(np.array([1.0, float(n), 0.0], dtype=np.float32))}, id=rid)


def ids(store: Any) -> list[str]:
    return sorted(r.id for r in store.all())


def missing(store: Any, version: Any) -> None:
    """Checking out ``version`` fails when the store loads it (a sync one at once)."""
    got = None
    try:
        with pytest.raises(StorageError, match="does not exist or was cleaned up"):
            got = checkout(store, version)
            got.count()
    finally:
        if got is not None:
            got.close()


def checkout(store: Any, version: Any) -> Any:
    """``store.checkout(version)``, driven like ``store`` (an async store's through its adapter)."""
    got = store.checkout(version)
    return type(store)(got) if hasattr(store, "wrapped") else got


def test_checkout_tag_and_restore(reopen_at: Any) -> None:
    db = reopen_at()
    db.create_batch([rec(f"r{i}", i) for i in range(5)])
    first = db.version
    assert db.tag("golden") == first
    db.delete("r0")
    db.upsert(rec("r1", 100))
    db.create(rec("r9", 9))
    listed = db.versions()
    assert [v["version"] for v in listed] == list(range(first, first + 4))
    assert [v["operation"] for v in listed] == ["write", "delete", "write", "write"]
    assert listed[0]["tags"] == ["golden"] and listed[0]["added"] == 5 and listed[1]["deleted"] == 1
    assert db.tags() == {"golden": first}

    old = checkout(db, "golden")  # a read-only store as of then
    assert ids(old) == [f"r{i}" for i in range(5)] and old.get("r1")["n"] == 1
    assert [h.id for h in old.vector_search([1.0, 1.0, 0.0], k=1)] == ["r1"]
    with pytest.raises(StorageError, match="read-only"):
        old.create(rec("x", 0))
    old.close()
    older = checkout(db, first + 1)
    assert older.count() == 4
    older.close()

    new = db.restore("golden")  # a new commit equal to the tagged state
    assert new == first + 4 and ids(db) == [f"r{i}" for i in range(5)] and db.get("r1")["n"] == 1
    assert db.verify()["live"] == 5
    again = reopen_at()
    assert ids(again) == ids(db) and again.versions()[-1]["operation"] == "restore"
    db.restore(first + 3)  # later versions stay restorable
    assert "r9" in ids(db)


def test_bad_versions_and_tags_change_nothing(reopen_at: Any) -> None:
    db = reopen_at()
    db.create(rec("a", 1))
    before = db.version
    missing(db, 999)
    with pytest.raises(InvalidRequestError, match="no tag 'nope'"):
        checkout(db, "nope")
    with pytest.raises(InvalidRequestError, match="does not exist"):
        db.restore(999)
    with pytest.raises(InvalidRequestError, match="tag name"):
        db.tag("../escape")
    with pytest.raises(InvalidRequestError, match="nothing to tag"):
        db.tag("later", 999)
    assert db.untag("never") is False
    assert db.version == before and db.count() == 1


def test_cleanup_keeps_tagged_versions(reopen_at: Any) -> None:
    db = reopen_at(keep_versions=1, inline_bytes=0)
    db.create_batch([rec(f"r{i}", i) for i in range(3)])
    db.tag("v1")
    for i in range(3):
        db.delete(f"r{i}")
    db.compact()
    assert db.vacuum(grace_s=0) > 0
    kept = [v["version"] for v in db.versions()]
    assert kept[0] == db.tags()["v1"] and len(kept) == 2  # the tagged one and the newest
    tagged = checkout(db, "v1")
    assert ids(tagged) == ["r0", "r1", "r2"]
    tagged.close()
    db.untag("v1")
    db.vacuum(grace_s=0)
    missing(db, 1)


def test_search_as_of_a_version_or_tag(reopen_at: Any) -> None:
    """``as_of=`` on vector and text search: the table as it was then (the same answers as a
    checkout of that version), while the store itself stays current; the stores of earlier
    versions are kept open for later searches and closed with the store."""
    db = reopen_at()
    db.create_batch([Record({"n": i, "body": f"word{i} common", "embedding": rec("x", i)["embedding"]}, id=f"r{i}") for i in range(5)])
    first = db.tag("golden")
    db.delete("r1")
    db.upsert(Record({"n": 50, "body": "word1 fresh", "embedding": rec("x", 50)["embedding"]}, id="r5"))
    q = [1.0, 1.0, 0.0]
    old = checkout(db, first)
    want = [(h.id, h.score) for h in old.vector_search(q, k=3)]
    want_text = [(h.id, h.score) for h in old.text_search("word1 common", k=3)]
    old.close()
    assert want[0][0] == "r1" and want_text[0][0] == "r1"
    for as_of in (first, "golden"):
        assert [(h.id, h.score) for h in db.vector_search(q, k=3, as_of=as_of)] == want
        assert [(h.id, h.score) for h in db.text_search("word1 common", k=3, as_of=as_of)] == want_text
        batch = db.vector_search_batch([q, q], k=3, as_of=as_of)
        assert [[(h.id, h.score) for h in hits] for hits in batch] == [want, want]
        assert [[h.id for h in hits] for hits in db.text_search_batch(["word1"], k=2, as_of=as_of)] == [["r1"]]
    assert db.vector_search(q, k=3)[0].id != "r1"  # the store itself is current
    assert db.text_search("word1", k=1)[0].id == "r5"
    assert db.vector_search(q, k=1, as_of=first + 1)[0].id != "r1"  # after the delete
    with pytest.raises(InvalidRequestError, match="no tag 'nope'"):
        db.vector_search(q, as_of="nope")
    with pytest.raises(InvalidRequestError, match="versions start at 1, got 0"):
        db.text_search("word1", as_of=0)
    db.close()


def test_as_of_on_a_store_without_versions() -> None:
    from dk_vector_plugins import DatabaseFactory

    db = DatabaseFactory().create(backend="memory")
    db.create(rec("a", 1))
    with pytest.raises(InvalidRequestError, match="as_of=3: a memory store keeps no earlier versions"):
        db.vector_search([1.0, 1.0, 0.0], as_of=3)


@pytest.mark.parametrize(
    "config",
    [{}, {"keep_versions": 2}, {"keep_versions": 3, "gc_every": 5, "grace_s": 0}, {"inline_bytes": 0}],
    ids=["defaults", "keep-2", "automatic", "objects"],
)
def test_clean_up_keeps_the_manifests_after_the_one_latest_names(tmp_path: Path, config: dict[str, Any]) -> None:
    # a file store advances LATEST.json every 16 versions; readers walk from it to the newest
    # manifest, so clean-up keeps that walk (it deleted it: a reopen failed or showed an old version)
    root = tmp_path / "s"
    db = DatabaseFactory().create(backend="file", path=str(root), **config)
    for i in range(40):
        db.create(Record({"n": i}, id=f"r{i}"))
    db.vacuum(grace_s=0)
    again = DatabaseFactory().create(backend="file", path=str(root))
    assert (again.version, again.count()) == (db.version, 40)
    assert again.verify()["live"] == 40


@pytest.mark.parametrize("then_write", [False, True])
def test_another_store_sees_a_restore_of_rows_later_segments_retired(tmp_path: Path, then_write: bool) -> None:
    # a store that had loaded the later segments kept their deletes and replacements of the
    # restored rows: it saw no records, and its compaction then deleted them for good
    root = str(tmp_path / "s")
    a = DatabaseFactory().create(backend="file", path=root)
    b = DatabaseFactory().create(backend="file", path=root)
    a.create(Record({"n": 1}, id="x"))
    a.create(Record({"n": 2}, id="y"))
    a.delete("x")
    a.upsert(Record({"n": 20}, id="y"))
    assert sorted((r.id, r["n"]) for r in b.all()) == [("y", 20)]
    a.restore(2)
    if then_write:
        a.create(Record({"n": 3}, id="z"))  # a restore, then more commits
    want = [("x", 1), ("y", 2)] + ([("z", 3)] if then_write else [])
    assert sorted((r.id, r["n"]) for r in b.all()) == want
    b.create(Record({"n": 4}, id="w"))
    b.compact()
    fresh = DatabaseFactory().create(backend="file", path=root)
    assert sorted((r.id, r["n"]) for r in fresh.all()) == sorted([*want, ("w", 4)])


@pytest.mark.parametrize("lost", ["missing", "empty"])
def test_a_lost_latest_hint_loses_no_version(tmp_path: Path, lost: str) -> None:
    # LATEST.json is written without fsync: a power failure may leave it missing or empty. A
    # store then walked from version 1; clean-up, keeping only the newest manifests, cut that
    # walk, and a fresh store saw an empty table (its next write re-created manifest 1)
    root = tmp_path / "s"
    db = DatabaseFactory().create(backend="file", path=str(root), keep_versions=2)
    for i in range(3):
        db.create(Record({"n": i}, id=f"r{i}"))
    db.close()
    hint = root / "LATEST.json"
    hint.unlink() if lost == "missing" else hint.write_bytes(b"")
    db = DatabaseFactory().create(backend="file", path=str(root), keep_versions=2)
    assert db.count() == 3
    for i in range(3, 10):
        db.create(Record({"n": i}, id=f"r{i}"))
    db.vacuum(grace_s=0)
    again = DatabaseFactory().create(backend="file", path=str(root))
    assert (again.version, again.count()) == (db.version, 10)
    hint.unlink()  # lost again, after the clean-up removed the first manifests
    fresh = DatabaseFactory().create(backend="file", path=str(root))
    assert (fresh.version, fresh.count()) == (db.version, 10)
    fresh.create(Record({"n": 99}, id="new"))
    assert DatabaseFactory().create(backend="file", path=str(root)).count() == 11


def _open(location: dict[str, Any]) -> TableDatabase:
    """A store of the table at ``location``: no automatic clean-up, no merges (the segments stay
    as committed, so what a restore names is what a clean-up may delete)."""
    db = DatabaseFactory().create(**location, keep_versions=2, gc_every=0, merge_fan=0)
    assert isinstance(db, TableDatabase)
    return db


def _history(location: dict[str, Any]) -> TableDatabase:
    """A store (2 versions kept) whose versions 1-2 hold x and y in segments that a compaction
    (3) and two later commits (4, 5) left unreferenced: version 2's manifest and segments are
    what a clean-up with ``grace_s=0`` deletes."""
    db = _open(location)
    db.create(Record({"n": 1}, id="x"))
    db.create(Record({"n": 2}, id="y"))
    db.delete("x")
    db.compact()
    db.create(Record({"n": 3}, id="z"))
    return db


def _paused(program: Program[T], at: int | Callable[[Op], bool], hook: Callable[[], None]) -> Program[T]:
    """``program``, with ``hook()`` run before its operation number ``at`` (from 0), or before
    each operation that ``at`` accepts."""
    sent: Any = None  # (what each operation answered)
    done = 0
    while True:
        try:
            op = program.send(sent)
        except StopIteration as stop:
            return stop.value
        if (done == at) if isinstance(at, int) else at(op):
            hook()
        done += 1
        sent = yield op


def _deletes(op: Op) -> bool:
    """Whether ``op`` is a clean-up's deletes."""
    return isinstance(op, Many) and bool(op.ops) and isinstance(op.ops[0], Delete)


def test_a_clean_up_spares_what_a_restore_committed_after_its_listing(location: dict[str, Any]) -> None:
    # a clean-up decided from its listing of the manifests: a restore of an old version that
    # committed after that listing named segments the clean-up then deleted (the newest
    # version, unreadable for good)
    a = _history(location)
    b = _open(location)
    assert b.count() == 2
    restored: list[int] = []

    def restore() -> None:
        restored.append(a.restore(2))

    b.storage.run(_paused(b.storage.logic.gc(b.storage.state, grace_s=0), 1, restore))
    assert restored  # the restore ran between the clean-up's listing and its deletes
    fresh = _open(location)
    assert fresh.verify()["live"] == 2
    assert sorted((r.id, r["n"]) for r in fresh.all()) == [("x", 1), ("y", 2)]
    b.vacuum(grace_s=0)  # and once the restore is seen, it stays whole
    assert sorted(r.id for r in _open(location).all()) == ["x", "y"]


def test_a_restore_undoes_itself_when_a_clean_up_deleted_what_it_names(
    location: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a clean-up between a restore's check of the old segments and its commit deleted them:
    # the restore committed a version naming missing objects and returned as if it had worked
    a = _history(location)
    b = _open(location)
    checked = a.storage.version_segments

    def then_clean_up(version: int) -> list[dict[str, Any]]:
        got = checked(version)
        b.vacuum(grace_s=0)
        return got

    monkeypatch.setattr(a.storage, "version_segments", then_clean_up)
    with pytest.raises(StorageError, match="version 6 is undone by version 7, which holds the table as it was"):
        a.restore(2)
    fresh = _open(location)
    assert fresh.verify()["live"] == 2  # the newest version is readable: the table as before
    assert sorted((r.id, r["n"]) for r in fresh.all()) == [("y", 2), ("z", 3)]
    assert sorted(r.id for r in a.all()) == ["y", "z"]
    assert fresh.versions()[-1]["operation"] == "restore"  # the undo: a restore of version 5
    monkeypatch.undo()
    with pytest.raises(InvalidRequestError, match="does not exist or was cleaned up"):
        a.restore(2)  # as the error said: version 2 is gone
    a.create(Record({"n": 4}, id="w"))
    assert sorted(r.id for r in _open(location).all()) == ["w", "y", "z"]


def test_a_restore_that_cannot_be_undone_names_the_intact_version(
    location: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # what the fix leaves open: a clean-up that read the manifests last before the restore
    # committed deletes after the restore's commit, and another writer commits on top of the
    # restore before it can be undone; the error says so, and names the version still whole
    a = _history(location)
    b, c = _open(location), _open(location)
    assert c.count() == 2
    paused, go = threading.Event(), threading.Event()

    def hold() -> None:  # b's clean-up, held just before it deletes
        paused.set()
        go.wait(30)

    clean_up = threading.Thread(
        target=b.storage.run, args=(_paused(b.storage.logic.gc(b.storage.state, grace_s=0), _deletes, hold),)
    )
    clean_up.start()
    assert paused.wait(30)
    logic = a.storage.logic
    real = logic.missing_objects
    calls: list[int] = []

    def after_commit(segments: Sequence[Mapping[str, Any]]) -> Program[list[str]]:
        calls.append(1)
        if len(calls) == 2:  # the check after the restore's commit
            c.create(Record({"n": 4}, id="w"))  # on top of the restore
            go.set()
            clean_up.join(30)
        return (yield from real(segments))

    monkeypatch.setattr(logic, "missing_objects", after_commit)
    try:
        with pytest.raises(StorageError, match="version 6 and the versions after it cannot be read; the objects of version 5"):
            a.restore(2)
    finally:
        go.set()
        clean_up.join(30)


def test_a_failed_check_after_a_restore_is_a_warning(location: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # the restore committed; its check failing (a listing refused) is no reason to report that
    # the restore failed
    a = _history(location)
    logic = a.storage.logic
    real = logic.missing_objects
    calls: list[int] = []

    def flaky(segments: Sequence[Mapping[str, Any]]) -> Program[list[str]]:
        calls.append(1)
        if len(calls) == 2:  # the check after the commit
            raise StorageError("listing failed: SlowDown")
        return (yield from real(segments))

    monkeypatch.setattr(logic, "missing_objects", flaky)
    with pytest.warns(RuntimeWarning, match="the restore is committed, but checking .* failed: listing failed"):
        assert a.restore(2) == 6
    assert sorted(r.id for r in _open(location).all()) == ["x", "y"]


def _stored(key: str) -> Program[bool]:
    """Whether the object ``key`` is stored."""
    got = yield Get(key, missing_ok=True)
    return got is not None


def test_a_clean_up_spares_versions_committed_after_a_gap(location: dict[str, Any]) -> None:
    # the clean-up read the versions committed since its listing one by one up to the first
    # missing manifest: another clean-up had removed the restore's own manifest, and the later
    # versions, which name the restored segments too, were never read
    a = _history(location)
    b, c = _open(location), _open(location)
    assert b.count() == c.count() == 2

    def meanwhile() -> None:
        assert a.restore(2) == 6
        for i in range(10):  # to version 16, where a file store's LATEST.json hint moves on too
            a.create(Record({"n": 10 + i}, id=f"w{i}"))
        c.vacuum(grace_s=0)  # removes the manifest of the restore (6), no longer among the newest
        assert not a.storage.run(_stored(manifest_key(6)))

    b.storage.run(_paused(b.storage.logic.gc(b.storage.state, grace_s=0), 1, meanwhile))
    fresh = _open(location)
    assert sorted(r.id for r in fresh.all()) == sorted([*(f"w{i}" for i in range(10)), "x", "y"])
    assert fresh.verify()["live"] == 12


def test_a_clean_up_spares_a_version_tagged_after_it_read_the_tags(location: dict[str, Any]) -> None:
    a = _history(location)
    b = _open(location)
    assert b.count() == 2
    b.storage.run(_paused(b.storage.logic.gc(b.storage.state, grace_s=0), 3, lambda: a.tag("keep", 2)))
    old = checkout(a, "keep")
    assert sorted(r.id for r in old.all()) == ["x", "y"]
    old.close()
    assert a.restore("keep") == 6


def test_a_tag_of_digits_only_is_refused(tmp_path: Path) -> None:
    # "2" read as a tag in Python (checkout("2")) and as version 2 on the command line
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "s"))
    db.create(rec("a", 1))
    with pytest.raises(InvalidRequestError, match="digits only, '2', would read as a version number"):
        db.tag("2")
    assert db.tags() == {}
    assert db.tag("v2") == 1


def test_a_version_not_stored_is_one_error_type_everywhere(tmp_path: Path) -> None:
    # restore(999) raised InvalidRequestError (a ValueError), checkout(999) and as_of=999 a
    # StorageError: `except ValueError` caught one and not the other
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "s"))
    db.create(rec("a", 1))
    for call in (
        lambda: db.restore(999),
        lambda: db.checkout(999),
        lambda: db.vector_search(np.ones(3, dtype=np.float32), as_of=999),
        lambda: db.tag("t", 999),
    ):
        with pytest.raises(VersionNotFoundError, match=r"version 999 .*does not exist or was cleaned up") as got:
            call()
        assert isinstance(got.value, ValueError) and isinstance(got.value, StorageError)
    with pytest.raises(InvalidRequestError, match="versions start at 1, got 0"):
        db.restore(0)


def test_a_tag_moves_only_when_asked(tmp_path: Path) -> None:
    # tag("rel") again after a write silently moved the name: the version it named lost its
    # protection from clean-up
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "s"))
    db.create(rec("a", 1))
    assert db.tag("rel") == 1
    assert db.tag("rel") == 1  # the same version again: a no-op
    db.create(rec("b", 2))
    with pytest.raises(InvalidRequestError, match="tag 'rel' names version 1: pass move=True to move it to version 2"):
        db.tag("rel")
    assert db.tags() == {"rel": 1}
    assert db.tag("rel", move=True) == 2
    assert db.tags() == {"rel": 2}
    assert [(v["version"], v["tags"]) for v in db.versions()] == [(1, []), (2, ["rel"])]


def test_a_text_searched_as_of_a_version_is_embedded_as_that_version_embedded(tmp_path: Path) -> None:
    # vector_search(text, as_of=1) embedded the text with the store's current embedder, after a
    # reembed another one than version 1's vectors were made with: silently wrong results
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "s"), text_field="body")
    db.create_batch([Record({"body": t}, id=f"d{i}") for i, t in enumerate(
        ["the moon orbits the earth", "bread dough rises", "a full moon tonight", "tea and coffee"]
    )])
    first = db.version
    then = [(h.id, h.score) for h in checkout(db, first).vector_search("moon", k=4)]
    db.reembed(embedder="hashing", embedder_options={"seed": 12345}, progress=False)
    assert [(h.id, h.score) for h in db.vector_search("moon", k=4, as_of=first)] == then
    assert [[(h.id, h.score) for h in hits] for hits in db.vector_search_batch(["moon"], k=4, as_of=first)] == [then]


def test_a_tag_written_by_another_store_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    # tag() read the tag, then wrote it unconditionally: another store's tag of the same name in
    # between was overwritten without move=True
    root = str(tmp_path / "s")
    a = DatabaseFactory().create(backend="file", path=root)
    a.create(rec("x", 1))
    a.create(rec("y", 2))
    b = DatabaseFactory().create(backend="file", path=root)
    b.count()
    program = a.storage.logic.tag("rel", 1)
    b_tagged: list[int] = []
    with pytest.raises(InvalidRequestError, match="tag 'rel' names version 2: pass move=True"):
        a.storage.run(_paused(program, 1, lambda: b_tagged.append(b.tag("rel", 2))))
    assert b_tagged == [2]
    assert a.tags() == {"rel": 2}  # b's tag stands: a's write was refused, and it looked again


def test_a_kept_version_store_in_use_is_closed_only_when_its_searches_are_done(tmp_path: Path) -> None:
    # more as_of= versions than are kept open: the oldest was closed at once, even while
    # another search (an async task, a thread) still ran on it
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "s"))
    for i in range(6):
        db.create(rec(f"r{i}", i))
    first = db._drive(db._as_of({"as_of": 1}))  # a search on version 1 begins
    closed: list[int] = []
    real_close = first.close
    first.close = lambda: (closed.append(1), real_close())[1]  # type: ignore[method-assign]
    for v in range(2, 7):  # more versions than are kept: version 1's store is retired
        db._drive(db._done_with(db._drive(db._as_of({"as_of": v}))))
    assert not closed and first.count() == 1  # still usable by the search that holds it
    db._drive(db._done_with(first))  # that search ends
    assert closed == [1]
    db.close()


async def test_concurrent_searches_of_more_versions_than_are_kept(s3_server: S3Server) -> None:
    # async S3: the evicted store's client was closed under a search still running on it
    # ("Session is closed")
    from dk_vector_plugins import AsyncDatabaseFactory

    db = AsyncDatabaseFactory().create(backend="s3", **s3_server.config(), text_field="body")
    versions = []
    for i in range(8):
        await db.create(Record({"body": f"moon number {i}"}, id=f"d{i}"))
        versions.append(db.version)
    for _ in range(2):
        got = await asyncio.gather(*[db.vector_search("moon", k=10, as_of=v) for v in versions])
        assert [len(hits) for hits in got] == [i + 1 for i in range(8)]
    await db.close()
