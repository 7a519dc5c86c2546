"""dataknobs-data's streaming on the stores: ``stream_read``, ``stream_write``, ``stream_transform``.

Every test runs on each backend, sync and async (an async store's ``stream_read`` is an async
iterator: :func:`collect` drains it on the adapter's loop). Reads go batch by batch
(``StreamConfig.batch_size`` records per read of the store); writes take ``batch_size`` records
from the source at a time and write each batch as one write, falling back to one write per record
when a batch fails, to say which record failed (dataknobs-data's accounting).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest

from dk_vector_plugins import (
    AsyncDatabase,
    AsyncDatabaseFactory,
    ConflictPolicy,
    DatabaseFactory,
    InvalidRequestError,
    Query,
    Record,
    StreamConfig,
    StreamResult,
    SyncDatabase,
)


def is_async(db: Any) -> bool:
    return hasattr(db, "wrapped")


def collect(db: Any, stream: Any) -> list[Any]:
    """The items of a stream: a sync iterator, or (async store) an async one run on its loop."""
    if hasattr(stream, "__aiter__"):

        async def drain() -> list[Any]:
            return [item async for item in stream]

        return db.run(drain())  # type: ignore[no-any-return]
    return list(stream)


def source(db: Any, records: Iterable[Record]) -> Any:
    """What the store's stream_write takes: an iterator, or (async store) an async iterator."""
    if not is_async(db):
        return iter(list(records))
    items = list(records)

    async def gen() -> AsyncIterator[Record]:
        for rec in items:
            await asyncio.sleep(0)
            yield rec

    return gen()


def seed(db: Any, n: int) -> list[str]:
    return db.create_batch(  # type: ignore[no-any-return]
        [Record({"n": i, "kind": "even" if i % 2 == 0 else "odd"}, id=f"r{i:02d}") for i in range(n)]
    )


# --- stream_read ------------------------------------------------------------------------------


def test_stream_read_yields_every_record_with_its_id(make_store_for: Any) -> None:
    db = make_store_for()
    ids = seed(db, 7)
    got = collect(db, db.stream_read(config=StreamConfig(batch_size=3)))
    assert sorted(r.id for r in got) == ids
    assert {r.id: r["n"] for r in got} == {f"r{i:02d}": i for i in range(7)}
    assert collect(db, db.stream_read()) and collect(db, db.stream_read(None, StreamConfig(batch_size=100)))


def test_stream_read_takes_a_query_a_dict_or_a_filter_and_keeps_its_order_and_paging(make_store_for: Any) -> None:
    db = make_store_for()
    seed(db, 10)
    q = Query().filter("kind", "==", "odd").sort_by("n", "desc")
    assert [r["n"] for r in collect(db, db.stream_read(q, StreamConfig(batch_size=2)))] == [9, 7, 5, 3, 1]
    q = Query().filter("kind", "==", "even").sort_by("n").offset(1).limit(3).select("n")
    got = collect(db, db.stream_read(q, StreamConfig(batch_size=2)))
    assert [(r.id, r.data) for r in got] == [("r02", {"n": 2}), ("r04", {"n": 4}), ("r06", {"n": 6})]
    assert sorted(r.id for r in collect(db, db.stream_read({"kind": "odd"}))) == ["r01", "r03", "r05", "r07", "r09"]


def test_stream_read_reads_the_store_one_batch_at_a_time(make_store_for: Any) -> None:
    """The ids are taken when the stream starts; each batch is read when it is reached: a record
    deleted before its batch is read is not yielded, one changed comes in its new state, one that
    no longer matches the query is left out."""
    db = make_store_for()
    seed(db, 8)
    stream = db.stream_read(Query().filter("n", "<", 100).sort_by("n"), StreamConfig(batch_size=2))
    if is_async(db):
        it = stream.__aiter__()

        def nxt() -> Record:
            return db.run(it.__anext__())  # type: ignore[no-any-return]

        def rest() -> list[Record]:
            return collect(db, it)

    else:
        it = iter(stream)

        def nxt() -> Record:
            return next(it)

        def rest() -> list[Record]:
            return list(it)

    first = [nxt(), nxt()]
    assert [r.id for r in first] == ["r00", "r01"]
    db.delete("r03")
    db.update("r04", Record({"n": 4, "kind": "changed"}))
    db.update("r05", Record({"n": 500}))  # no longer matches
    db.create(Record({"n": 1}, id="late"))  # not in the stream: it started before
    tail = rest()
    assert [r.id for r in tail] == ["r02", "r04", "r06", "r07"]
    assert tail[1]["kind"] == "changed"


def test_stream_read_can_stop_early(make_store_for: Any) -> None:
    db = make_store_for()
    seed(db, 5)
    stream = db.stream_read(config=StreamConfig(batch_size=2))
    if is_async(db):

        async def first_two() -> list[str]:
            out = []
            async for r in stream:
                out.append(r.id)
                if len(out) == 2:
                    break
            await stream.aclose()
            return out

        assert len(db.run(first_two())) == 2
    else:
        out = []
        for r in stream:
            out.append(r.id)
            if len(out) == 2:
                break
        stream.close()
        assert len(out) == 2
    assert db.count() == 5


def test_stream_read_of_an_empty_store_and_a_bad_config(make_store_for: Any) -> None:
    db = make_store_for()
    assert collect(db, db.stream_read()) == []
    with pytest.raises(InvalidRequestError, match="StreamConfig"):
        collect(db, db.stream_read(config={"batch_size": 2}))  # type: ignore[arg-type]


def test_stream_transform_maps_and_drops(make_store_for: Any) -> None:
    db = make_store_for()
    seed(db, 6)

    def double_evens(rec: Record) -> Record | None:
        if rec["kind"] != "even":
            return None
        out = rec.copy()
        out["n"] = rec["n"] * 2
        return out

    got = collect(db, db.stream_transform(Query().sort_by("n"), double_evens, StreamConfig(batch_size=4)))
    assert [r["n"] for r in got] == [0, 4, 8]
    assert len(collect(db, db.stream_transform())) == 6  # no transform: the records themselves


def test_an_async_store_awaits_an_async_transform() -> None:
    async def main() -> list[int]:
        db = AsyncDatabaseFactory().create(backend="memory")
        await db.create_batch([Record({"n": i}, id=str(i)) for i in range(3)])

        async def plus_one(rec: Record) -> Record:
            await asyncio.sleep(0)
            rec["n"] += 1
            return rec

        return sorted([r["n"] async for r in db.stream_transform(transform=plus_one)])

    assert asyncio.run(main()) == [1, 2, 3]


def test_a_sync_store_refuses_an_async_transform() -> None:
    db = DatabaseFactory().create(backend="memory")
    db.create(Record({"n": 1}))

    async def plus_one(rec: Record) -> Record:
        return rec

    with pytest.raises(InvalidRequestError, match="awaitable"):
        list(db.stream_transform(transform=plus_one))


def test_the_stream_methods_are_generators_of_their_facade() -> None:
    for name in ("stream_read", "stream_transform"):
        assert inspect.isasyncgenfunction(getattr(AsyncDatabase, name)), name
        assert inspect.isgeneratorfunction(getattr(SyncDatabase, name)), name
        sync_db = DatabaseFactory().create(backend="memory")
        async_db = AsyncDatabaseFactory().create(backend="memory")
        bound_s, bound_a = getattr(sync_db, name), getattr(async_db, name)
        assert bound_s.__doc__ == bound_a.__doc__ and bound_s.__doc__
        assert list(inspect.signature(bound_s).parameters) == list(inspect.signature(bound_a).parameters)
        assert isinstance(bound_s(), Iterator)
        agen = bound_a()
        assert hasattr(agen, "__anext__")
        asyncio.run(agen.aclose())
    assert inspect.iscoroutinefunction(AsyncDatabase.stream_write)
    assert not inspect.iscoroutinefunction(SyncDatabase.stream_write)


# --- stream_write -----------------------------------------------------------------------------


def test_stream_write_writes_in_batches_and_counts(make_store_for: Any) -> None:
    db = make_store_for()
    result = db.stream_write(source(db, [Record({"name": f"u{i}"}) for i in range(5)]))
    assert isinstance(result, StreamResult)
    assert (result.successful, result.failed, result.total_processed, result.total_batches) == (5, 0, 5, 1)
    assert db.count() == 5
    result = db.stream_write(source(db, [Record({"name": f"b{i}"}) for i in range(7)]), StreamConfig(batch_size=3))
    assert (result.successful, result.failed, result.total_processed, result.total_batches) == (7, 0, 7, 3)
    assert result.success_rate == 100.0 and result.duration >= 0
    assert db.count() == 12
    assert db.stream_write(source(db, [])).total_processed == 0


def test_stream_write_writes_each_batch_once(make_store_for: Any) -> None:
    """Each batch is one write of the store (on file and S3 one commit), not one per record."""
    db = make_store_for()
    writes: list[int] = []
    core = db.core
    put = core.put

    def counting(records: Any, mode: str) -> Any:
        writes.append(len(records))
        return put(records, mode)

    core.put = counting
    db.stream_write(source(db, [Record({"i": i}) for i in range(10)]), StreamConfig(batch_size=4))
    assert writes == [4, 4, 2]


def test_stream_write_insert_stops_at_the_first_failure_without_an_error_handler(make_store_for: Any) -> None:
    db = make_store_for()
    db.create(Record({"v": "old"}, id="dup"))
    recs = [Record({"v": i}, id=f"a{i}") for i in range(3)] + [Record({"v": "new"}, id="dup")]
    recs += [Record({"v": i}, id=f"b{i}") for i in range(3)]
    result = db.stream_write(source(db, recs), StreamConfig(batch_size=5))
    # the first batch fails as one write, then goes record by record and stops at "dup"
    assert (result.successful, result.failed, result.total_processed) == (3, 1, 4)
    assert result.failed_indices == [3]
    assert result.errors[0]["record_id"] == "dup" and result.errors[0]["type"] == "DuplicateRecordError"
    assert sorted(db.list_all()) == ["a0", "a1", "a2", "dup"]
    assert db.read("dup")["v"] == "old"


def test_stream_write_goes_on_when_the_error_handler_says_so(make_store_for: Any) -> None:
    db = make_store_for()
    db.create(Record({"v": "old"}, id="dup"))
    seen: list[tuple[str, Any]] = []

    def handler(error: Exception, record: Any) -> bool:
        seen.append((type(error).__name__, getattr(record, "id", record)))
        return True

    recs: list[Any] = [Record({"v": 0}, id="a"), Record({"v": "new"}, id="dup"), None, Record({"v": 1}, id="b")]
    recs += [Record({"v": 2}, id="c")]
    result = db.stream_write(source(db, recs), StreamConfig(batch_size=2, on_error=handler))
    assert (result.successful, result.failed, result.total_processed, result.total_batches) == (3, 2, 5, 3)
    assert result.failed_indices == [1, 2]
    assert [e["record_id"] for e in result.errors] == ["dup", None]
    assert seen == [("DuplicateRecordError", "dup"), ("InvalidRequestError", None)]
    assert sorted(db.list_all()) == ["a", "b", "c", "dup"]


def test_stream_write_upsert_overwrites(make_store_for: Any) -> None:
    db = make_store_for()
    db.create(Record({"v": "old"}, id="a"))
    recs = [Record({"v": "new-a"}, id="a"), Record({"v": "b"}, id="b"), Record({"v": "c"}, id="c")]
    result = db.stream_write(source(db, recs), StreamConfig(batch_size=10, on_conflict=ConflictPolicy.UPSERT))
    assert (result.successful, result.failed, result.total_processed) == (3, 0, 3)
    assert [db.read(i)["v"] for i in "abc"] == ["new-a", "b", "c"]


def test_stream_write_skip_leaves_existing_records_and_counts_them(make_store_for: Any) -> None:
    db = make_store_for()
    db.create(Record({"v": "old"}, id="a"))
    recs = [
        Record({"v": "new-a"}, id="a"),
        Record({"v": "b"}, id="b"),
        Record({"v": "b-again"}, id="b"),
        Record({"v": "no id"}),
    ]
    result = db.stream_write(source(db, recs), StreamConfig(batch_size=10, on_conflict="skip"))
    assert (result.successful, result.skipped, result.failed, result.total_processed) == (2, 2, 0, 4)
    assert db.read("a")["v"] == "old" and db.read("b")["v"] == "b" and db.count() == 3


def test_stream_write_embeds_the_text_of_a_store_with_an_embedder(make_store_for: Any) -> None:
    db = make_store_for(text_field="body", vector_dimensions=16)
    recs = [Record({"body": f"text number {i}"}, id=str(i)) for i in range(4)]
    result = db.stream_write(source(db, recs), StreamConfig(batch_size=3))
    assert result.successful == 4
    assert db.vector_search("text number 2", k=1)[0].record.id == "2"


def test_an_async_store_takes_a_sync_iterable_too_and_a_sync_store_refuses_an_async_one() -> None:
    async def main() -> int:
        db = AsyncDatabaseFactory().create(backend="memory")
        result = await db.stream_write([Record({"n": i}) for i in range(3)])
        return result.successful

    assert asyncio.run(main()) == 3
    db = DatabaseFactory().create(backend="memory")

    async def gen() -> AsyncIterator[Record]:
        yield Record({"n": 1})

    agen = gen()
    with pytest.raises(InvalidRequestError, match="async iterable"):
        db.stream_write(agen)
    asyncio.run(agen.aclose())
    with pytest.raises(InvalidRequestError, match="iterable"):
        db.stream_write(42)  # type: ignore[arg-type]


def test_stream_write_with_a_progress_bar(make_store_for: Any, capsys: pytest.CaptureFixture[str]) -> None:
    db = make_store_for()
    result = db.stream_write(source(db, [Record({"n": i}) for i in range(5)]), StreamConfig(batch_size=2), progress=True)
    assert result.successful == 5
    assert "writing" in capsys.readouterr().err


def test_a_stream_copies_one_store_into_another(make_store_for: Any) -> None:
    """dataknobs-data's migration idiom: stream_write(stream_read()) between two stores."""
    src = make_store_for()
    seed(src, 9)
    dst = make_store_for()
    if is_async(src):  # the two adapters run different loops: the records pass through a list
        result = dst.stream_write(source(dst, collect(src, src.stream_read())), StreamConfig(batch_size=4))
    else:
        result = dst.stream_write(src.stream_read(config=StreamConfig(batch_size=4)), StreamConfig(batch_size=4))
    assert result.successful == 9 and sorted(dst.list_all()) == sorted(src.list_all())


def test_an_async_stream_copies_one_store_into_another() -> None:
    async def main() -> tuple[int, int]:
        src = AsyncDatabaseFactory().create(backend="memory")
        await src.create_batch([Record({"n": i}) for i in range(9)])
        dst = AsyncDatabaseFactory().create(backend="memory")
        result = await dst.stream_write(src.stream_read(config=StreamConfig(batch_size=4)), StreamConfig(batch_size=4))
        return result.successful, await dst.count()

    assert asyncio.run(main()) == (9, 9)
