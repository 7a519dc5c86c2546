"""Atomic batches (``with db.batch()`` / ``async with``) and writes by filter: one commit each,
all or nothing, on every backend, sync and async."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import DuplicateRecordError, InvalidRequestError, Record, VectorField


def rec(rid: str, n: int, v: float | None = None) -> Record:
    data: dict[str, Any] = {"n": n, "tag": "a" if n % 2 else "b"}
    if v is not None:
        data["embedding"] = VectorField(np.array([v, 1.0, 0.0], dtype=np.float32))
    return Record(data, id=rid)


def in_batch(store: Any, fill: Callable[[Any], None]) -> Any:
    """Run ``fill(b)`` inside ``db.batch()`` (``async with`` for an async store); returns ``b``."""
    db = getattr(store, "wrapped", store)
    if db._is_async:

        async def go() -> Any:
            async with db.batch() as b:
                fill(b)
            return b

        return store.run(go())
    with db.batch() as b:
        fill(b)
    return b


def version(store: Any) -> int | None:
    return getattr(getattr(store, "wrapped", store), "version", None)


def state(store: Any) -> dict[str, int]:
    return {r.id: r["n"] for r in store.all()}


def test_a_batch_is_one_commit_in_order(store: Any) -> None:
    store.create_batch([rec("x", 1, 1.0), rec("y", 2, 2.0)])
    before = version(store)

    def fill(b: Any) -> None:
        assert b.create(rec("a", 3, 3.0)) == "a"
        b.update("x", rec("ignored", 10, 1.5))
        b.update("missing", rec("m", 0))
        b.delete("y")
        b.delete("nothing")
        b.upsert(rec("y", 20))  # deleted, then created again in the same batch
        b.upsert("z", rec("ignored", 30, 0.5))
        b.delete("a")  # created above: never visible

    b = in_batch(store, fill)
    assert b.results == ["a", True, False, True, False, "y", "z", True]
    assert state(store) == {"x": 10, "y": 20, "z": 30}
    if before is not None:
        assert version(store) == before + 1  # one commit
    assert [h.id for h in store.vector_search([1.5, 1.0, 0.0], k=1)] == ["x"]


def test_an_exception_or_a_duplicate_stores_nothing(store: Any) -> None:
    store.create(rec("x", 1, 1.0))
    before = state(store)

    def boom(b: Any) -> None:
        b.create(rec("a", 2))
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        in_batch(store, boom)

    def duplicate(b: Any) -> None:
        b.create(rec("b", 3))
        b.create(rec("x", 4))  # exists: the whole batch fails at commit

    with pytest.raises(DuplicateRecordError):
        in_batch(store, duplicate)
    assert state(store) == before
    with pytest.raises(InvalidRequestError):
        in_batch(store, lambda b: b.create({"not": "a record"}))


def test_delete_and_update_by_filter_are_one_write(store: Any) -> None:
    store.create_batch([rec(f"r{i}", i, float(i)) for i in range(10)])
    before = version(store)
    assert store.delete(filter={"tag": "a"}) == 5  # the odd ones
    assert sorted(state(store)) == ["r0", "r2", "r4", "r6", "r8"]
    assert store.update(filter={"n": {"$gte": 4}}, values={"tag": "big"}) == 3
    assert store.count({"tag": "big"}) == 3
    assert store.get("r4").fields["embedding"].value[0] == 4.0  # other fields kept
    if before is not None:
        assert version(store) == before + 2
    assert store.delete(filter={"tag": "none"}) == 0
    with pytest.raises(InvalidRequestError):
        store.delete("r0", filter={"tag": "b"})
    with pytest.raises(InvalidRequestError):
        store.update(filter={"tag": "b"})


def test_batch_embeds_source_text(make_store_for: Any) -> None:
    db = make_store_for(text_field="text")
    in_batch(db, lambda b: [b.upsert(Record({"text": t}, id=t)) for t in ("coffee beans", "green tea")])
    assert [h.id for h in db.vector_search("coffee", k=1)] == ["coffee beans"]
    db.update(filter={"text": "green tea"}, values={"text": "black coffee"})
    assert [h.id for h in db.vector_search("black coffee", k=1)] == ["green tea"]  # re-embedded
