"""The filter language: table masks against per-record evaluation and a naive reference.

Property tests generate records (ints, floats incl. NaN/inf/huge ints, bools, strings, None,
lists, missing fields, nested dicts, metadata) and filters over all 16 operators combined with
AND/OR/NOT, and the dict shorthand. The column mask of a :class:`RecordTable` must equal
``[expr.evaluate(record)]`` and a naive reference written from the documented semantics (the
module docstring of ``query.py``), also after updates, deletes, compaction and with warm caches.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dk_vector_plugins import DatabaseFactory, Filter, FilterError, Operator, Query, Record, compile_filter
from dk_vector_plugins.memtable import RecordTable
from dk_vector_plugins.query import (
    And,
    Cond,
    DistanceMetric,
    Expr,
    Not,
    Or,
    SortOrder,
    SortSpec,
    VectorQuery,
    coerce_operator,
    coerce_sort_order,
)

# --- the naive reference ---------------------------------------------------------------------

_ABSENT = object()


def naive_lookup(rid: str, data: dict[str, Any], metadata: dict[str, Any], path: str) -> Any:
    if path == "id":
        return rid
    if path in data:
        return data[path]
    head, _, rest = path.partition(".")
    if not rest:
        return _ABSENT
    if head == "metadata" and "metadata" not in data:
        base: Any = metadata
    elif head in data:
        base = data[head]
    else:
        return _ABSENT
    for part in rest.split("."):
        if not isinstance(base, dict) or part not in base:
            return _ABSENT
        base = base[part]
    return base


def like_regex(pattern: str) -> str:
    return "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)


def naive_iso(a: Any, b: Any) -> tuple[Any, Any]:
    """An ISO-8601 string facing a date or datetime, read as one (documented in query.py)."""
    if isinstance(a, str) and isinstance(b, dt.date):
        got = dt.datetime.fromisoformat(a.replace("Z", "+00:00"))  # ValueError: no match
        return (got if isinstance(b, dt.datetime) else got.date()), b
    if isinstance(b, str) and isinstance(a, dt.date):
        y, x = naive_iso(b, a)
        return x, y
    return a, b


def naive_positive(op: str, operand: Any, v: Any) -> bool:
    try:
        if op in (">", ">=", "<", "<="):
            v, operand = naive_iso(v, operand)
        if op == "between":
            lo_v, lo = naive_iso(v, operand[0])
            hi_v, hi = naive_iso(v, operand[1])
            return bool(lo <= lo_v) and bool(hi_v <= hi)
        if op == "=":
            return bool(v == operand)
        if op == ">":
            return bool(v > operand)
        if op == ">=":
            return bool(v >= operand)
        if op == "<":
            return bool(v < operand)
        if op == "<=":
            return bool(v <= operand)
        if op == "in":
            return any(bool(v == x) for x in operand)
        if op == "like":
            return isinstance(v, str) and re.fullmatch(like_regex(operand), v, re.I | re.S) is not None
        if op == "regex":
            return isinstance(v, str) and re.search(operand, v) is not None
        if op == "starts_with":
            return isinstance(v, str) and v.startswith(operand)
    except (TypeError, ValueError):
        return False
    raise AssertionError(op)


_NEG = {"!=": "=", "not_in": "in", "not_like": "like", "not_between": "between"}


def naive_predicate(op: str, operand: Any, v: Any) -> bool:
    present = v is not _ABSENT and v is not None
    if op == "exists":
        return present
    if op == "not_exists":
        return not present
    if not present:
        return False
    if op in _NEG:
        return not naive_positive(_NEG[op], operand, v)
    return naive_positive(op, operand, v)


def naive_tree(expr: Expr, rid: str, data: dict[str, Any], meta: dict[str, Any]) -> bool:
    if isinstance(expr, Cond):
        f = expr.filter
        return naive_predicate(f.operator.value, f.value, naive_lookup(rid, data, meta, f.field))
    if isinstance(expr, And):
        return all(naive_tree(p, rid, data, meta) for p in expr.parts)
    if isinstance(expr, Or):
        return any(naive_tree(p, rid, data, meta) for p in expr.parts)
    if isinstance(expr, Not):
        return not naive_tree(expr.part, rid, data, meta)
    raise AssertionError(expr)


_DOLLAR = {
    "$eq": "=",
    "$ne": "!=",
    "$gt": ">",
    "$gte": ">=",
    "$lt": "<",
    "$lte": "<=",
    "$in": "in",
    "$nin": "not_in",
    "$like": "like",
    "$not_like": "not_like",
    "$regex": "regex",
    "$starts_with": "starts_with",
    "$between": "between",
    "$not_between": "not_between",
}


def naive_dict(spec: dict[str, Any], rid: str, data: dict[str, Any], meta: dict[str, Any]) -> bool:
    """The documented meaning of the dict shorthand, evaluated directly."""
    for key, value in spec.items():
        if key == "$and":
            ok = all(naive_dict(s, rid, data, meta) for s in value)
        elif key == "$or":
            ok = any(naive_dict(s, rid, data, meta) for s in value)
        elif key == "$not":
            ok = not naive_dict(value, rid, data, meta)
        elif isinstance(value, dict) and value and all(k.startswith("$") for k in value):
            v = naive_lookup(rid, data, meta, key)
            ok = True
            for op, operand in value.items():
                if op == "$exists":
                    ok = ok and naive_predicate("exists" if operand else "not_exists", None, v)
                else:
                    ok = ok and naive_predicate(_DOLLAR[op], operand, v)
        else:
            ok = naive_predicate("=", value, naive_lookup(rid, data, meta, key))
        if not ok:
            return False
    return True


# --- strategies ------------------------------------------------------------------------------

_TEXT = st.text(alphabet="aAbB._%x", max_size=4)
_NUMBERS = st.one_of(
    st.integers(-4, 4),
    st.sampled_from([2**53, 2**53 + 1, -(2**60), 10**30]),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.5, -3.5, math.nan, math.inf, -math.inf, 1e300]),
    st.floats(-5, 5),
)
# datetimes, dates and ISO-8601 strings (an aware one too): ordering reads a string facing a date as one
_DATES = st.sampled_from(
    [
        dt.datetime(2025, 1, 15, 12),
        dt.date(2025, 1, 14),
        "2025-01-15T12:00:00",
        "2025-01-15",
        "2025-01-14T23:59:59Z",
    ]
)
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXT, _DATES)
VALUES = st.one_of(_SCALARS, _SCALARS, st.lists(st.integers(0, 2) | _TEXT, max_size=2))

FIELDS = ["a", "b", "d", "d.x", "d.y.z", "id", "metadata.m", "m", "nope"]
ALL_OPERATORS = list(Operator)
REGEXES = ["a", "^a", "b$", "a.b", "[AB]", ".*", "x|a", r"\.", "^$"]


@st.composite
def records(draw: Any, prefix: str = "r", min_size: int = 0, max_size: int = 12) -> list[Record]:
    n = draw(st.integers(min_size, max_size))
    out = []
    for i in range(n):
        data: dict[str, Any] = {}
        for f in ("a", "b"):
            if draw(st.booleans()):
                data[f] = draw(VALUES)
        shape = draw(st.integers(0, 3))
        if shape == 1:
            data["d"] = draw(VALUES)
        elif shape >= 2:
            nested: dict[str, Any] = {}
            if draw(st.booleans()):
                nested["x"] = draw(VALUES)
            if draw(st.booleans()):
                nested["y"] = {"z": draw(VALUES)} if draw(st.booleans()) else draw(VALUES)
            data["d"] = nested
        meta = {"m": draw(VALUES)} if draw(st.booleans()) else {}
        if draw(st.integers(0, 5)) == 0:
            data["m"] = draw(VALUES)  # a data field named like the metadata key
        out.append(Record(data, metadata=meta, id=f"{prefix}{i}"))
    return out


def operand_for(op: Operator) -> st.SearchStrategy[Any]:
    if op in (Operator.EXISTS, Operator.NOT_EXISTS):
        return st.none()
    if op in (Operator.IN, Operator.NOT_IN):
        return st.lists(_SCALARS, max_size=3)
    if op in (Operator.BETWEEN, Operator.NOT_BETWEEN):
        return st.tuples(_NUMBERS | _TEXT | _DATES, _NUMBERS | _TEXT | _DATES).map(list)
    if op in (Operator.LIKE, Operator.NOT_LIKE, Operator.STARTS_WITH):
        return _TEXT
    if op is Operator.REGEX:
        return st.sampled_from(REGEXES)
    if op in (Operator.EQ, Operator.NEQ):
        return VALUES
    return st.one_of(st.booleans(), _NUMBERS, _TEXT, _DATES)


@st.composite
def conditions(draw: Any) -> Expr:
    op = draw(st.sampled_from(ALL_OPERATORS))
    field = draw(st.sampled_from(FIELDS))
    return Cond(Filter(field, op, draw(operand_for(op))))


EXPRS = st.recursive(
    conditions(),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda ps: And(tuple(ps))),
        st.lists(children, max_size=3).map(lambda ps: Or(tuple(ps))),
        children.map(Not),
    ),
    max_leaves=6,
)

_DOLLAR_OPS = sorted(_DOLLAR)


@st.composite
def dict_leaf(draw: Any) -> dict[str, Any]:
    field = draw(st.sampled_from(FIELDS))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        value = draw(_SCALARS | st.lists(st.integers(0, 2), max_size=2))
        return {field: value}
    if kind == 1:
        return {field: {"$exists": draw(st.booleans())}}
    ops = draw(st.lists(st.sampled_from(_DOLLAR_OPS), min_size=1, max_size=2, unique=True))
    return {field: {op: draw(operand_for(Operator.coerce(op))) for op in ops}}


DICTS = st.recursive(
    dict_leaf(),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda ps: {"$and": ps}),
        st.lists(children, max_size=3).map(lambda ps: {"$or": ps}),
        children.map(lambda c: {"$not": c}),
        st.tuples(children, children).map(lambda t: {**t[0], **t[1]}),
    ),
    max_leaves=5,
)


# --- helpers ---------------------------------------------------------------------------------


def table_of(recs: list[Record]) -> RecordTable:
    table = RecordTable()
    add(table, recs)
    return table


def add(table: RecordTable, recs: list[Record]) -> None:
    rows, batches = table.prepare(recs)
    table.append(rows, batches)


def masked_ids(table: RecordTable, expr: Expr | None) -> list[str]:
    return sorted(r.id for r in table.query(None, expr))


def evaluated_ids(live: dict[str, Record], expr: Expr) -> list[str]:
    return sorted(rid for rid, r in live.items() if expr.evaluate(rid, r._data, r.metadata))


def naive_ids(live: dict[str, Record], expr: Expr) -> list[str]:
    return sorted(rid for rid, r in live.items() if naive_tree(expr, rid, r.data, r.metadata))


def check(table: RecordTable, live: dict[str, Record], exprs: list[Expr]) -> None:
    for expr in exprs:
        want = naive_ids(live, expr)
        assert evaluated_ids(live, expr) == want, expr
        assert masked_ids(table, expr) == want, expr
        assert table.count(expr) == len(want)


# --- properties ------------------------------------------------------------------------------


@given(recs=records(), exprs=st.lists(EXPRS, min_size=1, max_size=4))
def test_mask_equals_evaluate_and_reference(recs: list[Record], exprs: list[Expr]) -> None:
    table = table_of(recs)
    live = {r.id: r for r in recs}
    check(table, live, exprs)
    check(table, live, exprs)  # again: the cached lookup tables must give the same answer


@given(spec=DICTS, recs=records())
def test_dict_shorthand_matches_reference(spec: dict[str, Any], recs: list[Record]) -> None:
    expr = compile_filter(spec)
    table = table_of(recs)
    want = sorted(r.id for r in recs if naive_dict(spec, r.id, r.data, r.metadata))
    if expr is None:
        assert want == sorted(r.id for r in recs)
        return
    assert masked_ids(table, expr) == want
    assert sorted(r.id for r in recs if expr.matches(r)) == want


@given(
    first=records(prefix="r", min_size=1),
    second=records(prefix="r"),  # the same ids: replaces records of the first batch
    third=records(prefix="n"),  # new ids: new rows and possibly new distinct values
    exprs=st.lists(EXPRS, min_size=1, max_size=3),
    data=st.data(),
)
def test_columns_follow_updates_deletes_and_compaction(
    first: list[Record], second: list[Record], third: list[Record], exprs: list[Expr], data: Any
) -> None:
    table = table_of(first)
    live = {r.id: r for r in first}
    check(table, live, exprs)  # builds and caches the columns
    add(table, second)
    live.update({r.id: r for r in second})
    check(table, live, exprs)
    doomed = data.draw(st.lists(st.sampled_from(sorted(live)), max_size=len(live), unique=True))
    table.delete([*doomed, "never-existed"])
    for rid in doomed:
        del live[rid]
    check(table, live, exprs)
    add(table, third)
    live.update({r.id: r for r in third})
    check(table, live, exprs)
    table.compact()
    check(table, live, exprs)
    add(table, second[:2])  # after compaction the columns keep being maintained
    live.update({r.id: r for r in second[:2]})
    check(table, live, exprs)


@given(recs=records(max_size=8), spec=DICTS)
def test_store_count_and_search_use_the_same_semantics(recs: list[Record], spec: dict[str, Any]) -> None:
    db = DatabaseFactory().create(backend="memory")
    db.create_batch(recs)
    want = sorted(r.id for r in recs if naive_dict(spec, r.id, r.data, r.metadata))
    assert db.count(spec) == len(want)
    assert sorted(r.id for r in db.search(spec)) == want
    assert sorted(r.id for r in db.search(Query().and_(spec))) == want
    db.close()


# --- documented semantics --------------------------------------------------------------------

PEOPLE = [
    Record({"name": "Ann", "age": 30, "tags": ["x"], "addr": {"city": "Oslo", "zip": "0150"}}, id="p1"),
    Record({"name": "bob", "age": 30.0, "active": True, "addr": {"city": "Bergen"}}, id="p2"),
    Record({"name": "Cy.d", "age": None, "active": 1}, metadata={"source": "crm"}, id="p3"),
    Record({"name": "Cyxd", "active": False}, metadata={"source": "web"}, id="p4"),
    Record({"name": 42, "age": "30"}, id="p5"),
]


@pytest.fixture(scope="module")
def people() -> RecordTable:
    return table_of(PEOPLE)


def ids_for(table: RecordTable, spec: Any) -> list[str]:
    return masked_ids(table, compile_filter(spec))


def test_missing_and_none_only_satisfy_not_exists(people: RecordTable) -> None:
    assert ids_for(people, Filter("age", "not_exists")) == ["p3", "p4"]
    assert ids_for(people, Filter("age", "exists")) == ["p1", "p2", "p5"]
    for op, value in [
        ("!=", 30),
        ("not_in", [30]),
        ("not_between", [0, 10]),
        ("not_like", "x"),
        ("<", 100),
        ("=", None),
    ]:
        got = ids_for(people, Filter("age", op, value))
        assert "p3" not in got and "p4" not in got, op
    assert ids_for(people, {"age": {"$exists": False}}) == ["p3", "p4"]


def test_negative_operators_are_present_and_not_positive(people: RecordTable) -> None:
    assert ids_for(people, Filter("age", "!=", 30)) == ["p5"]  # "30" != 30
    assert ids_for(people, Filter("name", "not_like", "c%")) == ["p1", "p2", "p5"]  # 42 is not text
    assert ids_for(people, {"$not": {"age": 30}}) == ["p3", "p4", "p5"]  # NOT is not "!="


def test_python_equality_semantics(people: RecordTable) -> None:
    assert ids_for(people, {"age": 30}) == ["p1", "p2"]  # 30 == 30.0, not "30"
    assert ids_for(people, {"active": True}) == ["p2", "p3"]  # True == 1
    assert ids_for(people, {"active": 1}) == ["p2", "p3"]
    assert ids_for(people, {"active": 0}) == ["p4"]
    assert ids_for(people, Filter("age", "in", [30, "x"])) == ["p1", "p2"]
    assert ids_for(people, {"tags": ["x"]}) == ["p1"]


def test_incomparable_types_are_false_not_errors(people: RecordTable) -> None:
    assert ids_for(people, Filter("age", ">", 10)) == ["p1", "p2"]  # "30" > 10 raises: false
    assert ids_for(people, Filter("age", ">", "1")) == ["p5"]
    assert ids_for(people, Filter("name", "<", "C")) == ["p1"]
    assert ids_for(people, Filter("addr", ">", 1)) == []


def test_like_is_case_insensitive_whole_value_and_dot_is_literal(people: RecordTable) -> None:
    assert ids_for(people, Filter("name", "like", "c%")) == ["p3", "p4"]
    assert ids_for(people, Filter("name", "like", "cy.d")) == ["p3"]  # '.' literal: not Cyxd
    assert ids_for(people, Filter("name", "like", "cy_d")) == ["p3", "p4"]
    assert ids_for(people, Filter("name", "like", "an")) == []  # whole value
    assert ids_for(people, Filter("name", "like", "%N%")) == ["p1"]
    assert ids_for(people, Filter("name", "like", "%")) == ["p1", "p2", "p3", "p4"]  # not 42


def test_regex_and_starts_with_are_case_sensitive(people: RecordTable) -> None:
    assert ids_for(people, Filter("name", "regex", "^C")) == ["p3", "p4"]
    assert ids_for(people, Filter("name", "regex", "^c")) == []
    assert ids_for(people, Filter("name", "regex", r"y\.d")) == ["p3"]
    assert ids_for(people, Filter("name", "regex", "o")) == ["p2"]  # search, not match
    assert ids_for(people, Filter("name", "starts_with", "Cy")) == ["p3", "p4"]
    assert ids_for(people, Filter("name", "starts_with", "cy")) == []
    assert ids_for(people, Filter("name", "regex", "4")) == []  # 42 is not text


def test_between_is_inclusive(people: RecordTable) -> None:
    assert ids_for(people, Filter("age", "between", [30, 30])) == ["p1", "p2"]
    assert ids_for(people, Filter("age", "between", (29.5, 30))) == ["p1", "p2"]
    # "30" vs numbers raises TypeError: BETWEEN is false, so NOT_BETWEEN (present, not BETWEEN) holds
    assert ids_for(people, Filter("age", "not_between", [31, 40])) == ["p1", "p2", "p5"]
    assert ids_for(people, Filter("name", "between", ["A", "Cz"])) == ["p1", "p3", "p4"]


def test_id_field_dotted_paths_and_metadata(people: RecordTable) -> None:
    assert ids_for(people, {"id": "p2"}) == ["p2"]
    assert ids_for(people, Filter("id", "in", ["p1", "p5", "zz"])) == ["p1", "p5"]
    assert ids_for(people, {"addr.city": "Oslo"}) == ["p1"]
    assert ids_for(people, Filter("addr.zip", "exists")) == ["p1"]
    assert ids_for(people, Filter("addr.city.x", "exists")) == []
    assert ids_for(people, {"metadata.source": "crm"}) == ["p3"]
    assert ids_for(people, Filter("metadata.source", "not_exists")) == ["p1", "p2", "p5"]
    r = PEOPLE[0]
    assert r.get_value("addr.city") == "Oslo"
    assert PEOPLE[2].get_value("metadata.source") == "crm"


def test_data_field_named_metadata_wins() -> None:
    table = table_of([Record({"metadata": {"k": 1}}, metadata={"k": 2}, id="a")])
    assert masked_ids(table, compile_filter({"metadata.k": 1})) == ["a"]
    assert masked_ids(table, compile_filter({"metadata.k": 2})) == []


def test_and_or_not_identities(people: RecordTable) -> None:
    everyone = ["p1", "p2", "p3", "p4", "p5"]
    assert masked_ids(people, And(())) == everyone
    assert masked_ids(people, Or(())) == []
    assert masked_ids(people, Not(Or(()))) == everyone
    assert ids_for(people, {"$or": []}) == []
    assert ids_for(people, {"$and": []}) == everyone
    assert ids_for(people, []) == everyone
    assert ids_for(people, None) == everyone


def test_query_builders_compile_like_dicts(people: RecordTable) -> None:
    q = Query().filter("age", ">=", 30).or_({"name": "bob"}, Filter("active", "=", True))
    assert masked_ids(people, q.expression()) == ["p2"]
    q = Query().not_({"age": 30}, {"active": False})
    assert masked_ids(people, q.expression()) == ["p3", "p5"]
    assert Query().expression() is None
    assert Query().filter("id", "=", "p1").matches(PEOPLE[0])


@pytest.mark.parametrize(
    "alias, op",
    [
        ("=", Operator.EQ),
        ("==", Operator.EQ),
        ("$eq", Operator.EQ),
        ("!=", Operator.NEQ),
        ("<>", Operator.NEQ),
        ("$ne", Operator.NEQ),
        ("$gte", Operator.GTE),
        (">=", Operator.GTE),
        (" >= ", Operator.GTE),
        ("IN", Operator.IN),
        ("NOT BETWEEN", Operator.NOT_BETWEEN),
        ("$nin", Operator.NOT_IN),
        ("not in", Operator.NOT_IN),
        ("NOT_IN", Operator.NOT_IN),
        ("like", Operator.LIKE),
        ("$regex", Operator.REGEX),
        ("starts_with", Operator.STARTS_WITH),
        ("$between", Operator.BETWEEN),
        ("not_between", Operator.NOT_BETWEEN),
        ("$exists", Operator.EXISTS),
        ("not_exists", Operator.NOT_EXISTS),
        (Operator.LT, Operator.LT),
    ],
)
def test_operator_coerce_aliases(alias: Any, op: Operator) -> None:
    assert Operator.coerce(alias) is op
    assert coerce_operator(alias) is op
    assert Query().filter("f", alias, 1).filters[0].operator is op


@pytest.mark.parametrize("spelling", ["eq", "EQ", "gte", "ne", "gt", "contains", "", "  ", "$bogus", 7, None])
def test_operator_names_that_are_not_values_are_refused(spelling: Any) -> None:
    """dataknobs-data 0.11's vocabulary: ``"ne"`` is no spelling of ``!=``, so it fails loudly."""
    with pytest.raises(FilterError, match="Unknown query operator") as err:
        Query().filter("f", spelling, 1)
    assert "!=" in str(err.value)
    with pytest.raises(ValueError, match="operator"):
        coerce_operator(spelling)


@pytest.mark.parametrize(
    "order, want", [("asc", SortOrder.ASC), (" DESC ", SortOrder.DESC), (SortOrder.DESC, SortOrder.DESC)]
)
def test_coerce_sort_order(order: Any, want: SortOrder) -> None:
    assert coerce_sort_order(order) is want
    assert Query().sort_by("f", order).sort_specs == [SortSpec("f", want)]


@pytest.mark.parametrize("order", ["ascending", "up", "", 1, None])
def test_unknown_sort_order_is_refused(order: Any) -> None:
    with pytest.raises(FilterError, match="sort order"):
        coerce_sort_order(order)


def test_all_sixteen_operators_exist() -> None:
    assert len(Operator) == 16
    assert {o.value for o in Operator} >= {"=", "!=", ">", ">=", "<", "<=", "in", "not_in", "like"}


@pytest.mark.parametrize(
    "build",
    [
        lambda: Filter("a", "~~", 1),
        lambda: Filter("a", None, 1),
        lambda: Filter("", "=", 1),
        lambda: Filter(None, "=", 1),
        lambda: Query().filter("a", "eq", 1),
        lambda: Filter.from_dict({"operator": "="}),
        lambda: compile_filter({"$foo": 1}),
        lambda: compile_filter({"a": {"$foo": 1}}),
        lambda: compile_filter({"a": {"$exists": "yes"}}),
        lambda: compile_filter({"$or": {"a": 1}}),
        lambda: compile_filter({1: "a"}),
        lambda: compile_filter(42),
        lambda: compile_filter("a = 1"),
        lambda: compile_filter([{"a": 1}, 3]),
        lambda: Query().sort_by("a", "sideways"),
        lambda: Query().limit(-1),
        lambda: Query().offset(1.5),
    ],
)
def test_malformed_filters_raise_filter_error_when_built(build: Any) -> None:
    with pytest.raises(FilterError):
        build()
    assert issubclass(FilterError, ValueError)


BAD_OPERANDS = [
    ("between", [1]),
    ("between", [1, 2, 3]),
    ("between", "ab"),
    ("between", 5),
    ("not_between", 5),
    ("in", "abc"),
    ("not_in", 5),
    ("like", 5),
    ("not_like", None),
    ("regex", "(unclosed"),
    ("starts_with", None),
    (">", None),
]


@pytest.mark.parametrize("op, operand", BAD_OPERANDS)
def test_bad_operands_build_and_raise_when_used(op: str, operand: Any) -> None:
    """As in dataknobs-data, a filter stores its operand unchecked; the first use checks it, so a
    search never runs with it: compiling, evaluating, or searching raises FilterError."""
    flt = Filter("a", op, operand)  # builds
    query = Query().filter("a", op, operand)  # builds
    assert query.filters[0].operator is Operator.coerce(op) and query.filters[0].value == operand
    assert query.to_dict()["filters"] == [
        {"field": "a", "operator": Operator.coerce(op).value, "value": operand}
    ]
    for use in (
        lambda: flt.operand,
        lambda: flt.matches(1),
        query.expression,
        lambda: compile_filter(query),
        lambda: compile_filter(flt),
        lambda: compile_filter({"a": {"$" + Operator.coerce(op).name.lower(): operand}}),
        lambda: Query().or_(flt),
        lambda: Query(filters=[flt]).matches(Record({"a": 1})),
    ):
        with pytest.raises(FilterError, match="'a'"):
            use()
    db = DatabaseFactory().create(backend="memory")
    db.create(Record({"a": 1}, id="r1"))
    with pytest.raises(FilterError):
        db.search(query)
    with pytest.raises(FilterError):
        db.count(Query(filters=[flt]))


def test_filter_round_trips_through_dict() -> None:
    f = Filter("age", ">=", 3)
    assert Filter.from_dict(f.to_dict()) == f
    assert f.to_dict() == {"field": "age", "operator": ">=", "value": 3}


def test_mask_cache_is_extended_for_new_values() -> None:
    table = table_of([Record({"a": i}, id=f"r{i}") for i in range(5)])
    expr = compile_filter({"a": {"$gte": 3}})
    assert masked_ids(table, expr) == ["r3", "r4"]
    add(table, [Record({"a": v}, id=f"s{j}") for j, v in enumerate([10, -1, "x", 3.5, None, True])])
    assert masked_ids(table, expr) == ["r3", "r4", "s0", "s3"]
    table.delete(["r4", "s0"])
    assert masked_ids(table, expr) == ["r3", "s3"]
    add(table, [Record({"a": 0}, id="r3")])  # an update that stops matching
    assert masked_ids(table, expr) == ["s3"]


def test_equal_operands_of_different_types_are_not_confused() -> None:
    """Lookup tables are cached per condition: a list operand and a tuple one differ in Python."""
    table = table_of([Record({"a": [1, 2]}, id="list"), Record({"a": (1, 2)}, id="tuple")])
    assert masked_ids(table, compile_filter(Filter("a", "=", [1, 2]))) == ["list"]
    assert masked_ids(table, compile_filter(Filter("a", "=", (1, 2)))) == ["tuple"]
    assert masked_ids(table, compile_filter(Filter("a", "=", [1, 2]))) == ["list"]


# --- dataknobs-data's Query API: serialization, fluent helpers, vector queries -------------------


def test_query_fluent_helpers_and_properties() -> None:
    q = Query().filter("a", "=", 1).filter("b", "=", 2).sort_by("c").sort("d", "DESC").limit(10).offset(20)
    assert (q.limit_property, q.offset_property, q.sort_property) == (10, 20, q.sort_specs)
    assert q.clear_filters() is q and q.filters == [] and len(q.sort_specs) == 2
    assert q.clear_sort().sort_specs == []
    assert Query().select().fields is None and Query().fields is None
    assert Query().select("a", "b").fields == ["a", "b"]
    assert Query().filter("f", "=", None).filters[0].value is None


def test_query_and_sort_spec_round_trip_through_dicts() -> None:
    q = (
        Query()
        .filter("age", ">=", 18)
        .filter("dept", "IN", ["eng", "sales"])
        .sort("dept")
        .sort("salary", "desc")
        .limit(100)
        .offset(200)
        .select("id", "name")
        .similar_to([0.1, 0.2], k=5, score_threshold=0.9, metric=DistanceMetric.DOT_PRODUCT)
    )
    d = q.to_dict()
    assert d["filters"][1] == {"field": "dept", "operator": "in", "value": ["eng", "sales"]}
    assert d["sort"] == [{"field": "dept", "order": "asc"}, {"field": "salary", "order": "desc"}]
    assert (d["limit"], d["offset"], d["fields"]) == (5, 200, ["id", "name"])  # similar_to set the limit
    assert d["vector_query"]["metric"] == "dot_product"
    back = Query.from_dict(json.loads(json.dumps(d)))
    assert back.filters == q.filters and back.sort_specs == q.sort_specs and back.fields == q.fields
    assert back.vector_query is not None and back.vector_query.metric is DistanceMetric.DOT_PRODUCT
    again = back.to_dict()
    assert np.allclose(again["vector_query"].pop("vector"), d["vector_query"].pop("vector"))  # float32
    assert again == d
    assert Query().to_dict() == {"filters": [], "sort": []}
    assert Query.from_dict({"filters": [{"field": "a", "operator": ">", "value": 1}]}).sort_specs == []
    assert SortSpec.from_dict(SortSpec("s", SortOrder.DESC).to_dict()) == SortSpec("s", SortOrder.DESC)
    assert SortSpec.from_dict({"field": "s"}).order is SortOrder.ASC
    with pytest.raises(ValueError, match="sort order"):
        SortSpec.from_dict({"field": "s", "order": "up"})
    with pytest.raises(FilterError):
        Query.from_dict({"limit": -1})


def test_vector_query_and_query_vector_helpers() -> None:
    vq = VectorQuery([0.1, 0.2], field_name="vec", k=5, metric="euclidean")
    assert vq.vector == [0.1, 0.2] and vq.include_source and vq.score_threshold is None
    d = VectorQuery(
        np.array([0.5, 0.25], dtype=np.float32), rerank=True, rerank_k=3, metadata={"a": 1}
    ).to_dict()
    assert d == {
        "vector": [0.5, 0.25],
        "field": "embedding",
        "k": 10,
        "metric": "cosine",
        "include_source": True,
        "rerank": True,
        "rerank_k": 3,
        "metadata": {"a": 1},
    }
    back = VectorQuery.from_dict(d)
    assert back.vector.dtype == np.float32 and back.metric is DistanceMetric.COSINE and back.rerank_k == 3
    assert VectorQuery.from_dict({"vector": [1], "metric": "mystery"}).metric == "mystery"
    q = Query().near_text("abc", lambda t: [float(len(t))] * 2, field="te", k=4)
    assert q.vector_query is not None and q.vector_query.vector == [3.0, 3.0] and q.limit_value == 4
    q.with_reranking()
    assert q.vector_query.rerank and q.vector_query.rerank_k == 8
    c = q.copy()
    c.vector_query.k = 99  # type: ignore[union-attr]
    assert q.vector_query.k == 4
    assert q.clear_vector().vector_query is None
    h = Query().hybrid("important doc", [0.1, 0.2], alpha=0.7, k=25)
    assert h.filters == [Filter("content", "like", "%important doc%")]
    assert (
        h.vector_query is not None
        and h.vector_query.metadata == {"hybrid_alpha": 0.7}
        and h.limit_value == 25
    )
    assert Query().hybrid(text_query="t").vector_query is None
    assert DistanceMetric.DOT_PRODUCT.get_aliases() == ["inner_product", "ip"]


def test_distance_metric_is_accepted_by_vector_search() -> None:
    db = DatabaseFactory().create(backend="memory", vector_enabled=True, vector_dimensions=2)
    db.add_vectors(np.array([[1.0, 0.0], [0.0, 1.0]]), ids=["x", "y"])
    hits = db.vector_search([1.0, 0.1], k=1, metric=DistanceMetric.COSINE)
    assert [h.id for h in hits] == ["x"]


def test_datetimes_compare_with_iso_strings() -> None:
    base = dt.datetime(2025, 1, 15, 12)
    db = DatabaseFactory().create(backend="memory")
    db.create_batch(
        [Record({"ts": (base + dt.timedelta(days=d)).isoformat()}, id=str(d)) for d in (-1, 0, 1)]
        + [Record({"ts": "not a date"}, id="bad"), Record({"ts": base}, id="dt")]
    )

    def ids(flt: Filter) -> list[str]:
        return sorted(r.id for r in db.search(Query(filters=[flt])))  # type: ignore[type-var]

    assert ids(Filter("ts", ">", base)) == ["1"]
    assert ids(Filter("ts", "<=", base)) == ["-1", "0", "dt"]
    lo, hi = base - dt.timedelta(hours=1), base + dt.timedelta(days=3)
    assert ids(Filter("ts", "between", [lo, hi])) == ["0", "1", "dt"]
    assert ids(Filter("ts", "between", [lo.isoformat(), hi.isoformat()])) == ["0", "1", "dt"]
    assert ids(Filter("ts", ">=", dt.date(2025, 1, 15))) == ["0", "1"]  # a date compares dates
    assert ids(Filter("ts", "=", base)) == ["dt"]  # equality is not ordering: no conversion
