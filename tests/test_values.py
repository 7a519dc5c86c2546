"""One value model for every backend (``dk_vector_plugins.values``).

What a store holds reads back equal, with the same types, on memory, file and S3 (after reopening
the table); everything else is rejected when the write is planned, the same way on every backend,
with an :class:`InvalidRequestError` naming the record and the field path, and changes nothing.
User dicts shaped like the row codec's tags (``{"$date": ...}``) are data like any other.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dk_vector_plugins import (
    DatabaseFactory,
    DkvError,
    Field,
    FieldType,
    InvalidRequestError,
    Record,
    VectorField,
)
from dk_vector_plugins.storage import row_codec
from dk_vector_plugins.storage.row_codec import LazyRows, decode_rows, encode_row

KINDS = ["memory", "file", "s3"]
DIM = 3


# --- helpers ---------------------------------------------------------------------------------


class Table:
    """One table of a backend: ``open()`` gives a handle on it; every call after the first gives a
    fresh handle that reads the table from storage (memory: the same store, it has no storage)."""

    def __init__(self, kind: str, root: Path, s3: Any = None) -> None:
        self.kind = kind
        if kind == "memory":
            self.config: dict[str, Any] = {}
        elif kind == "file":
            self.config = {"path": str(root / f"t-{uuid.uuid4().hex[:12]}")}
        else:
            self.config = s3.config()
        self.handles: list[Any] = []

    def open(self) -> Any:
        if self.kind == "memory" and self.handles:
            return self.handles[0]
        db = DatabaseFactory().create(backend=self.kind, vector_enabled=True, **self.config)
        self.handles.append(db)
        return db

    def close(self) -> None:
        for db in reversed(self.handles):
            db.close()


@pytest.fixture(params=KINDS)
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Table]:
    s3 = request.getfixturevalue("s3_server") if request.param == "s3" else None
    t = Table(request.param, tmp_path, s3)
    yield t
    t.close()


def vec(i: int) -> np.ndarray:
    return np.array([1.0 + i, 0.5, -float(i % 3)], dtype=np.float32)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (NaN equals NaN; -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dt.datetime):
        return a == b and (a.tzinfo is None) == (b.tzinfo is None) and a.utcoffset() == b.utcoffset()
    return bool(a == b)


def snapshot(db: Any) -> list[tuple[str, Any]]:
    """Everything a store holds, comparable (records with their types, and the vectors)."""
    out = []
    for r in db.all():
        data = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.data.items()}
        out.append((r.id, repr(data), repr(r.metadata)))
    return sorted(out)


def state(table: Table) -> tuple[Any, ...]:
    """The table as a fresh handle reads it: records and committed version."""
    db = table.open()
    return snapshot(db), getattr(db, "version", None), db.count()


def seeded(table: Table) -> Any:
    db = table.open()
    db.upsert_batch([Record({"n": i, "embedding": VectorField(vec(i))}, id=k) for i, k in enumerate("abc")])
    return db


# --- 1. dicts shaped like the codec's tags are data --------------------------------------------

#: (case id, value) stored as a field, as metadata, in a VectorField's metadata, via add_vectors.
TAG_SHAPED: list[tuple[str, Any]] = [
    ("date-garbage", {"$date": "garbage"}),
    ("datetime-garbage", {"$datetime": "garbage"}),
    ("bytes-not-base64", {"$bytes": "@@@"}),
    ("datetime-valid", {"$datetime": "2024-01-01T00:00:00"}),
    ("date-valid", {"$date": "2024-01-01"}),
    ("bytes-valid", {"$bytes": "AAAA"}),
    ("dict-tag", {"$dict": [["a", 1]]}),
    ("tuple-tag", {"$tuple": [1, 2]}),
    ("unknown-tag", {"$x": 1}),
    ("bare-dollar", {"$": None}),
    ("double-dollar", {"$$date": "garbage"}),
    ("multi-key", {"$date": "garbage", "other": 1}),
    ("nested", {"a": {"$date": "garbage"}}),
    ("in-list", [{"$bytes": "@@@"}, {"$datetime": 5}]),
    ("tag-in-tag", {"$date": {"$bytes": "@@@"}}),
    ("datetime-none", {"$datetime": None}),
    ("tuple-of-tag", ({"$tuple": []},)),
    ("empty-dict-tag", {"$dict": []}),
]


def tag_records() -> list[Record]:
    out = []
    for i, (_, value) in enumerate(TAG_SHAPED):
        out.append(
            Record(
                {"x": value, "kind": "tag", "embedding": VectorField(vec(i), metadata={"vm": value})},
                metadata={"m": value},
                id=f"t{i:02d}",
            )
        )
    # the tag shape at the top level: a field, a metadata key and a vector field named like a tag
    out.append(Record({"$date": "garbage", "kind": "top"}, metadata={"$bytes": "@@@"}, id="top"))
    out.append(Record({"$date": VectorField(vec(99), model_name="m"), "kind": "vf"}, id="vf"))
    return out


def check_tag_records(db: Any) -> None:
    for i, (name, value) in enumerate(TAG_SHAPED):
        got = db.get(f"t{i:02d}")
        assert same(got["x"], value), name
        assert same(got.metadata["m"], value), name
        assert same(got.fields["embedding"].metadata["vm"], value), name
        added = db.get(f"av{i:02d}")
        assert same(added["x"], value), name
    top = db.get("top")
    assert same(top["$date"], "garbage") and same(top.metadata, {"$bytes": "@@@"})
    assert db.get("vf").fields["$date"].model_name == "m"


def test_tag_shaped_user_dicts_read_back_equal_after_reopen(table: Table) -> None:
    db = table.open()
    db.create_batch(tag_records())
    db.add_vectors(
        np.stack([vec(50 + i) for i in range(len(TAG_SHAPED))]),
        ids=[f"av{i:02d}" for i in range(len(TAG_SHAPED))],
        metadata=[{"x": value} for _, value in TAG_SHAPED],
    )
    check_tag_records(db)  # the writer's handle
    want = snapshot(db)

    again = table.open()  # a fresh handle reads the table from storage
    check_tag_records(again)
    assert snapshot(again) == want
    hits = again.vector_search(vec(3), k=len(TAG_SHAPED) + 1, filter={"kind": "tag"})
    assert len(hits) == len(TAG_SHAPED)
    for h in hits:
        assert same(h.record["x"], TAG_SHAPED[int(h.id[1:])][1])
    assert again.count({"kind": "tag"}) == len(TAG_SHAPED)
    assert again.count({"x.a": "x"}) == 0  # a filter over the nested dicts reads every row
    again.delete("t00")
    again.compact()
    if table.kind != "memory":
        assert again.verify()["live"] == len(want) - 1
    third = table.open()
    assert snapshot(third) == [row for row in want if row[0] != "t00"]


def test_tables_written_by_earlier_versions_read_tag_shaped_dicts_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows written before the escape held such dicts as they were; those whose content is no
    valid tag payload (the ones that made every reopened handle fail) read back as the dicts."""
    root = tmp_path / "old"
    with monkeypatch.context() as patch:
        patch.setattr(row_codec, "_escaped", lambda value: value)  # the earlier encoder
        db = DatabaseFactory().create(backend="file", path=str(root), inline_bytes=0)  # a rows file
        db.create_batch(
            [
                Record({"x": {"$date": "garbage"}, "y": {"$bytes": "@@@"}, "z": {"$x": [1]}}, id="a"),
                Record({"when": dt.date(2024, 1, 2), "blob": b"\x00\xff"}, id="b"),
            ]
        )
        db.close()
    (rows,) = (root / "segments").glob("*.rows.jsonl")
    assert rows.read_bytes() == (  # the lines the earlier encoder wrote for these very records
        b'{"d": {"x": {"$date": "garbage"}, "y": {"$bytes": "@@@"}, "z": {"$x": [1]}}, "m": {}, "v": {}}\n'
        b'{"d": {"when": {"$date": "2024-01-02"}, "blob": {"$bytes": "AP8="}}, "m": {}, "v": {}}\n'
    )
    old = DatabaseFactory().create(backend="file", path=str(root), inline_bytes=0)  # compacts to files
    assert same(old.get("a").data, {"x": {"$date": "garbage"}, "y": {"$bytes": "@@@"}, "z": {"$x": [1]}})
    assert same(old.get("b").data, {"when": dt.date(2024, 1, 2), "blob": b"\x00\xff"})
    assert old.verify()["live"] == 2
    old.delete("b")
    old.compact()  # the live rows rewritten in the current encoding: the same values
    old.close()
    again = DatabaseFactory().create(backend="file", path=str(root))
    assert same(again.get("a").data, {"x": {"$date": "garbage"}, "y": {"$bytes": "@@@"}, "z": {"$x": [1]}})
    written = [p.read_bytes() for p in (root / "segments").glob("*.rows.jsonl")]
    assert any(b'{"$dict": [["$date", "garbage"]]}' in w for w in written)  # the compacted segment
    again.close()


# --- 2. the codec ----------------------------------------------------------------------------


def _old_decode(obj: dict[str, Any]) -> Any:
    """The decoder of the earlier versions (format 1 and 2 before the escape), verbatim."""
    if len(obj) == 1:
        key, value = next(iter(obj.items()))
        if key == "$datetime":
            return dt.datetime.fromisoformat(value)
        if key == "$date":
            return dt.date.fromisoformat(value)
        if key == "$bytes":
            return base64.b64decode(value)
    return obj


def test_rows_without_tag_shaped_dicts_encode_as_before() -> None:
    data = {
        "t": "ünï ✓",
        "n": 1,
        "f": 0.5,
        "b": True,
        "z": None,
        "when": dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc),
        "day": dt.date(2023, 5, 1),
        "blob": b"\x00\xff",
        "nested": {"l": [1, {"deep": 2}], "$multi": 1, "other": 2},
    }
    line = encode_row("r", data, {"m": [1]}, {"embedding": {"model_name": "m"}})
    assert line == (
        b'{"d": {"t": "\xc3\xbcn\xc3\xaf \xe2\x9c\x93", "n": 1, "f": 0.5, "b": true, "z": null, '
        b'"when": {"$datetime": "2024-01-01T12:00:00+00:00"}, "day": {"$date": "2023-05-01"}, '
        b'"blob": {"$bytes": "AP8="}, "nested": {"l": [1, {"deep": 2}], "$multi": 1, "other": 2}}, '
        b'"m": {"m": [1]}, "v": {"embedding": {"model_name": "m"}}}\n'
    )
    assert decode_rows(line, "x") == [(data, {"m": [1]}, {"embedding": {"model_name": "m"}})]
    assert json.loads(line, object_hook=_old_decode)["d"] == data  # the earlier decoder agrees


@pytest.mark.parametrize("value", [v for _, v in TAG_SHAPED], ids=[n for n, _ in TAG_SHAPED])
def test_codec_round_trips_tag_shaped_dicts_and_old_decoders_read_them(value: Any) -> None:
    line = encode_row("r", {"x": value}, {"m": value}, {})
    (got,) = decode_rows(line, "x")
    assert same(got, ({"x": value}, {"m": value}, {}))
    assert same(LazyRows(line, "x")[0], got)
    json.loads(line, object_hook=_old_decode)  # an earlier reader parses it (as other dicts)


def test_codec_round_trips_tuples_and_escapes_keys_exactly() -> None:
    values: list[Any] = [(), (1,), (1, (2, "a")), [(1,)], {"t": (None, b"x")}, {"$a": (1,)}]
    for value in values:
        line = encode_row("r", {"x": value}, {}, {})
        assert same(decode_rows(line, "x")[0][0], {"x": value}), value


# --- 3. the backends agree on every value ------------------------------------------------------


class Colour(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


Point = collections.namedtuple("Point", "x y")

#: (case id, value written, value every backend reads back)
NORMALIZED: list[tuple[str, Any, Any]] = [
    ("np-float32", np.float32(0.5), 0.5),
    ("np-float64", np.float64(0.1), 0.1),
    ("np-int64", np.int64(7), 7),
    ("np-uint8", np.uint8(255), 255),
    ("np-bool", np.bool_(True), True),
    ("np-str", np.str_("s"), "s"),
    ("np-in-list", [np.int32(1), np.float16(0.5)], [1, 0.5]),
    ("tuple", (1, "a", (2,)), (1, "a", (2,))),
    ("namedtuple", Point(1, 2), (1, 2)),
    ("bytearray", bytearray(b"ab"), b"ab"),
    ("str-enum", Colour.RED, "red"),
    ("int-enum", Level.HIGH, 3),
    ("ordered-dict", collections.OrderedDict([("b", 1), ("a", 2)]), {"b": 1, "a": 2}),
    (
        "fixed-offset",
        dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET")),
        dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    ),
    ("naive", dt.datetime(2024, 1, 1, 12, 30, 1, 5), dt.datetime(2024, 1, 1, 12, 30, 1, 5)),
    ("nan", float("nan"), float("nan")),
    ("inf", float("-inf"), float("-inf")),
    ("big-int", 2**100, 2**100),
    ("empty", {}, {}),
    # a Field object is stored as its value (its type and metadata belong to the record object)
    ("field", Field("f", 5, FieldType.FLOAT, {"unit": "kg"}), 5),
    ("field-nested", {"k": [Field("g", "a")]}, {"k": ["a"]}),
]


def test_typed_fields_are_stored_as_their_values(table: Table) -> None:
    db = table.open()
    rec = Record({"plain": 1}, id="t1")
    rec.set_field("temp", 25.5, FieldType.FLOAT, {"unit": "celsius"})
    rec.fields["n"] = Field("n", 3, FieldType.INTEGER)
    db.create(rec)
    for handle in (db, table.open()):
        got = handle.get("t1")
        assert got.data == {"plain": 1, "temp": 25.5, "n": 3}
        assert handle.search({"temp": {"$gt": 20}, "n": 3})[0].id == "t1"
    assert rec.get_field("temp").metadata == {"unit": "celsius"}  # the caller's record keeps them


def test_every_backend_reads_back_the_same_value(table: Table) -> None:
    db = table.open()
    records = [
        Record({"x": value}, metadata={"m": value}, id=f"n{i:02d}")
        for i, (_, value, _) in enumerate(NORMALIZED)
    ]
    db.create_batch(records)
    db.add_vectors(
        np.stack([vec(i) for i in range(len(NORMALIZED))]),
        ids=[f"v{i:02d}" for i in range(len(NORMALIZED))],
        metadata=[{"x": value} for _, value, _ in NORMALIZED],
    )
    for handle in (db, table.open()):  # memory: right after writing; file and S3: also reopened
        for i, (name, _, want) in enumerate(NORMALIZED):
            got = handle.get(f"n{i:02d}")
            assert same(got["x"], want), (name, got["x"])
            assert same(got.metadata["m"], want), name
            assert same(handle.get(f"v{i:02d}")["x"], want), name


# --- 4. unstorable values are rejected at write time and change nothing ----------------------------


#: (case id, value, the path below the field ``x`` that the error names)
UNSTORABLE: list[tuple[str, Any, str]] = [
    ("object", object(), "x"),
    ("set", {1, 2}, "x"),
    ("frozenset", frozenset(), "x"),
    ("complex", 1j, "x"),
    ("np-complex", np.complex64(1), "x"),
    ("decimal", Decimal("1.5"), "x"),
    ("np-datetime64", np.datetime64("2024-01-01"), "x"),
    ("int-key", {1: "a"}, "x"),
    ("tuple-key", {(1,): "a"}, "x"),
    ("none-key", {None: 1}, "x"),
    ("nested-set", [1, [2, {3}]], "x[1][1]"),
    ("nested-int-key", {"a": {2: "b"}}, "x.a"),
    ("range", range(3), "x"),
    ("memoryview", memoryview(b"ab"), "x"),
    ("function", len, "x"),
    ("type", int, "x"),
    ("vector-field-nested", {"v": VectorField([1.0, 2.0])}, "x.v"),
    ("array-nested", {"a": np.array([1.0, 2.0])}, "x.a"),
    ("huge-int", 10**5000, "x"),
    ("set-in-tuple", (1, {2}), "x[1]"),
    ("timedelta", dt.timedelta(days=1), "x"),
    ("np-timedelta64", np.timedelta64(5, "D"), "x"),
    ("deep-object", {"a": [{"b": [1, object()]}]}, "x.a[0].b[1]"),
]

#: (case id, value of field ``x`` or of the vector field) -- arrays that are not vectors
ARRAYS: list[tuple[str, Any]] = [
    ("2d", np.ones((2, 3))),
    ("2d-one-row", np.ones((1, 3), dtype=np.float32)),
    ("3d", np.ones((2, 2, 2))),
    ("0d", np.array(1.5)),
    ("strings", np.array(["a", "b"])),
    ("bools", np.array([True, False])),
]

SURROGATES = ["a\ud800", "\udfff", "x\udc80y"]


def attempts(value: Any, rid: str = "bad") -> list[tuple[str, Callable[[Any], Any]]]:
    """Every way of writing ``value`` as field/metadata ``x`` (rid: the id of the new record)."""
    return [
        ("create", lambda db: db.create(Record({"x": value, "embedding": VectorField(vec(9))}, id=rid))),
        ("upsert-existing", lambda db: db.upsert(Record({"x": value}, id="a"))),
        ("update", lambda db: db.update("b", Record({"x": value}))),
        (
            "create_batch",
            lambda db: db.create_batch([Record({"ok": 1}, id="good"), Record({"x": value}, id=rid)]),
        ),
        ("metadata", lambda db: db.create(Record({"ok": 1}, metadata={"x": value}, id=rid))),
        (
            "vector-metadata",
            lambda db: db.create(Record({"embedding": VectorField(vec(1), metadata={"x": value})}, id=rid)),
        ),
        ("add_vectors", lambda db: db.add_vectors([vec(5)], ids=[rid], metadata=[{"x": value}])),
        ("add_vectors-existing", lambda db: db.add_vectors([vec(5)], ids=["c"], metadata=[{"x": value}])),
    ]


def record_of(op: str, rid: str = "bad") -> str:
    return {"upsert-existing": "a", "update": "b", "add_vectors-existing": "c"}.get(op, rid)


def assert_rejected_everywhere(table: Table, value: Any, path: str, *also: str) -> None:
    db = seeded(table)
    before = state(table)
    for op, attempt in attempts(value):
        with pytest.raises(InvalidRequestError) as got:
            attempt(db)
        msg = str(got.value)
        where = f"metadata.{path}" if op == "vector-metadata" else path
        assert repr(record_of(op)) in msg and repr(where) in msg, (op, msg)
        for word in also:
            assert word in msg, (op, msg)
    assert snapshot(db) == before[0]
    assert state(table) == before  # a fresh handle sees the table unchanged by any of them


@pytest.mark.parametrize("value, path", [c[1:] for c in UNSTORABLE], ids=[c[0] for c in UNSTORABLE])
def test_unstorable_values_are_rejected_alike_and_change_nothing(table: Table, value: Any, path: str) -> None:
    assert_rejected_everywhere(table, value, path)


@pytest.mark.parametrize("value", [c[1] for c in ARRAYS], ids=[c[0] for c in ARRAYS])
def test_arrays_that_are_not_vectors_are_rejected(table: Table, value: Any) -> None:
    assert_rejected_everywhere(table, value, "x", "numpy array", ".tolist()")


@pytest.mark.parametrize("value", [c[1] for c in ARRAYS[:3]], ids=[c[0] for c in ARRAYS[:3]])
def test_a_2d_array_in_the_vector_field_names_it_and_says_what_to_do(table: Table, value: Any) -> None:
    db = seeded(table)
    before = state(table)
    with pytest.raises(
        InvalidRequestError, match=r"record 'bad'.*'embedding'.*-D numpy array.*vector"
    ) as got:
        db.create(Record({"embedding": value, "n": 1}, id="bad"))
    assert "one field per vector" in str(got.value)
    assert state(table) == before


@pytest.mark.parametrize("text", SURROGATES, ids=["trailing", "alone", "inside"])
def test_strings_with_lone_surrogates_are_rejected_alike(table: Table, text: str) -> None:
    assert_rejected_everywhere(table, text, "x", "surrogate")
    assert_rejected_everywhere(table, ["ok", {"k": text}], "x[1].k", "surrogate")
    assert_rejected_everywhere(table, {text: 1}, "x", "surrogate")  # a key


@pytest.mark.parametrize("text", SURROGATES, ids=["trailing", "alone", "inside"])
def test_field_names_with_lone_surrogates_are_rejected_alike(table: Table, text: str) -> None:
    db = seeded(table)
    before = state(table)
    writes: list[Callable[[], Any]] = [
        lambda: db.create(Record({text: 1}, id="bad")),
        lambda: db.create(Record({text: VectorField(vec(1))}, id="bad")),
        lambda: db.create(Record({"ok": 1}, metadata={text: 1}, id="bad")),
        lambda: db.add_vectors([vec(1)], ids=["bad"], metadata=[{text: 1}]),
        lambda: db.create(Record({"embedding": VectorField(vec(1), model_name=text)}, id="bad")),
    ]
    for write in writes:
        with pytest.raises(InvalidRequestError, match=r"record 'bad'.*surrogate"):
            write()
    assert state(table) == before


BAD_IDS = ["", *SURROGATES]


@pytest.mark.parametrize("rid", BAD_IDS, ids=["empty", "trailing", "alone", "inside"])
def test_bad_ids_are_rejected_alike_and_change_nothing(table: Table, rid: str) -> None:
    db = seeded(table)
    before = state(table)
    writes: list[Callable[[], Any]] = [
        lambda: db.create(Record({"n": 1, "embedding": VectorField(vec(1))}, id=rid)),
        lambda: db.create(Record({"id": rid, "n": 1})),
        lambda: db.upsert(Record({"n": 1}, id=rid)),
        lambda: db.upsert(rid, Record({"n": 1})),
        lambda: db.update(rid, Record({"n": 1})),
        lambda: db.create_batch([Record({"n": 1}, id="good"), Record({"n": 2}, id=rid)]),
        lambda: db.upsert_batch([Record({"n": 1}, id=rid)]),
        lambda: db.add_vectors([vec(1)], ids=[rid]),
        lambda: db.add_vectors([vec(1), vec(2)], ids=["good", rid], metadata=[{"n": 1}, {"n": 2}]),
    ]
    for i, write in enumerate(writes):
        with pytest.raises(InvalidRequestError) as got:
            write()
        assert isinstance(got.value, (DkvError, ValueError))
        assert repr(rid) in str(got.value), (i, str(got.value))
    assert state(table) == before


# --- 5. property: arbitrary nested values round-trip on every backend --------------------------

TAG_KEYS = ["$datetime", "$date", "$bytes", "$dict", "$tuple", "$", "$$", "$$date", "$x", "$oid"]
TAG_PAYLOADS = st.one_of(
    st.sampled_from(["garbage", "@@@", "", "2024-01-01", "2024-01-01T00:00:00", "AAAA", "AP8="]),
    st.text(max_size=6),
    st.integers(),
    st.none(),
    st.lists(st.tuples(st.text(max_size=3), st.integers()).map(list), max_size=3),
)
KEYS = st.one_of(st.text(max_size=6), st.sampled_from(TAG_KEYS), st.text(max_size=4).map("$".__add__))
ZONES = [
    None,
    dt.timezone.utc,
    dt.timezone(dt.timedelta(hours=5, minutes=30)),
    dt.timezone(-dt.timedelta(hours=8)),
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.dates(),
    st.datetimes(timezones=st.sampled_from(ZONES)),
)
ONE_KEY_TAGS = st.dictionaries(st.sampled_from(TAG_KEYS), TAG_PAYLOADS, min_size=1, max_size=1)
VALUES = st.recursive(
    st.one_of(SCALARS, ONE_KEY_TAGS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(KEYS, inner, max_size=4),
        st.dictionaries(st.sampled_from(TAG_KEYS), inner, min_size=1, max_size=1),
    ),
    max_leaves=12,
)


def round_trip(table: Table, values: list[Any]) -> None:
    db = table.open()
    n = len(values)
    db.create_batch(
        [
            Record(
                {"v": v, "embedding": VectorField(vec(i), metadata={"v": v})},
                metadata={"v": v},
                id=f"r{i}",
            )
            for i, v in enumerate(values)
        ]
        + [Record(v, id=f"top{i}") for i, v in enumerate(values) if isinstance(v, dict) and "id" not in v]
    )
    db.add_vectors(
        np.stack([vec(i) for i in range(n)]),
        ids=[f"a{i}" for i in range(n)],
        metadata=[{"v": v} for v in values],
    )
    for handle in (db, table.open()):
        for i, v in enumerate(values):
            got = handle.get(f"r{i}")
            assert (
                same(got["v"], v)
                and same(got.metadata["v"], v)
                and same(got.fields["embedding"].metadata["v"], v)
            )
            assert same(handle.get(f"a{i}")["v"], v)
            if isinstance(v, dict) and "id" not in v:
                assert same(handle.get(f"top{i}").data, v)
    table.close()


_PROPERTY = dict(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


@settings(max_examples=60, **_PROPERTY)  # type: ignore[arg-type]
@given(values=st.lists(VALUES, min_size=1, max_size=8))
def test_property_values_round_trip_on_memory(values: list[Any]) -> None:
    round_trip(Table("memory", Path(".")), values)


@settings(max_examples=40, **_PROPERTY)  # type: ignore[arg-type]
@given(values=st.lists(VALUES, min_size=1, max_size=8))
def test_property_values_round_trip_on_file_after_reopen(values: list[Any], tmp_path_factory: Any) -> None:
    round_trip(Table("file", tmp_path_factory.mktemp("prop")), values)


@settings(max_examples=30, **_PROPERTY)  # type: ignore[arg-type]
@given(values=st.lists(VALUES, min_size=1, max_size=8))
def test_property_values_round_trip_on_s3_after_reopen(values: list[Any], s3_server: Any) -> None:
    round_trip(Table("s3", Path("."), s3_server), values)
