"""Boolean queries (query_logic): ComplexQuery, QueryBuilder and the conditions, on every path.

The property test draws records and condition trees and checks that a table's mask, the
per-record evaluation and a store's search all equal a naive evaluation: the boolean tree written
here from dataknobs-data's documented semantics (AND of nothing is true, OR of nothing false, NOT
of several is "none of them"), each filter by the naive reference of ``test_filters.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_filters import naive_predicate  # the naive reference of the filter semantics

from dk_vector_plugins import (
    AsyncDatabaseFactory,
    ComplexQuery,
    DatabaseFactory,
    Filter,
    FilterCondition,
    FilterError,
    LogicCondition,
    LogicOperator,
    Operator,
    Query,
    QueryBuilder,
    Record,
    SortOrder,
    SortSpec,
    VectorQuery,
    compile_filter,
)
from dk_vector_plugins.memtable import RecordTable
from dk_vector_plugins.query import And, Cond, Not, Or
from dk_vector_plugins.query_logic import Condition, as_condition, condition_from_dict

PEOPLE = [
    Record({"name": "Alice", "age": 30, "city": "New York", "active": True}, id="1"),
    Record({"name": "Bob", "age": 25, "city": "Los Angeles", "active": False}, id="2"),
    Record({"name": "Charlie", "age": 35, "city": "New York", "active": True}, id="3"),
    Record({"name": "David", "age": 28, "city": "Chicago", "active": True}, id="4"),
    Record({"name": "Eve", "age": 32, "city": "Los Angeles", "active": False}, id="5"),
]


@pytest.fixture
def db() -> Any:
    store = DatabaseFactory().create(backend="memory")
    store.create_batch([r.copy() for r in PEOPLE])
    yield store
    store.close()


def names(records: list[Record]) -> set[str]:
    return {r["name"] for r in records}


def where(field: str, op: str, value: Any) -> FilterCondition:
    return FilterCondition(Filter(field, op, value))


# --- the API as dataknobs-data publishes it -----------------------------------------------------


def test_query_or_and_not_search(db: Any) -> None:
    q = (
        Query()
        .filter("active", "=", True)
        .or_(Filter("city", "=", "New York"), Filter("city", "=", "Chicago"))
    )
    assert names(db.search(q)) == {"Alice", "Charlie", "David"}
    assert names(db.search(Query().filter("active", "=", True).not_(Filter("city", "=", "New York")))) == {
        "David"
    }
    assert len(db.search(Query().or_())) == 5  # an OR of nothing adds no condition (dataknobs-data)
    assert len(db.search(Query().or_(Query()))) == 5  # nor does an empty query in it
    simple = Query().filter("age", ">", 30).filter("active", "=", True)
    assert {r.id for r in db.search(simple.copy().or_())} == {r.id for r in db.search(simple)} == {"3"}


def test_builder_nested_groups_sort_limit_select(db: Any) -> None:
    g1 = QueryBuilder().where("age", Operator.GT, 30).where("city", "=", "New York")
    g2 = QueryBuilder().where("age", "<", 30).where("active", "==", True)
    q = QueryBuilder().or_(g1, g2).build()
    assert isinstance(q, ComplexQuery) and isinstance(q, Query)
    assert names(db.search(q)) == {"Charlie", "David"}
    assert db.count(q) == 2
    q = (
        QueryBuilder()
        .or_(Filter("age", ">=", 30), Filter("city", "=", "Chicago"), Filter("active", "=", False))
        .sort_by("name", "desc")
        .offset(1)
        .limit(2)
        .select("name")
        .build()
    )
    assert [r.data for r in db.search(q)] == [{"name": "David"}, {"name": "Charlie"}]
    b = QueryBuilder().not_(Filter("city", "=", "New York")).not_(Filter("active", "=", False))
    assert names(db.search(b.build())) == {"David"}


def test_builder_where_appends_to_an_and_root() -> None:
    b = QueryBuilder().where("a", "=", 1).where("b", "IN", [1, 2])
    assert isinstance(b.root_condition, LogicCondition) and b.root_condition.operator is LogicOperator.AND
    assert [c.filter.operator for c in b.root_condition.conditions] == [Operator.EQ, Operator.IN]  # type: ignore[attr-defined]
    assert (
        QueryBuilder().where("f", "NOT BETWEEN", [1, 2]).root_condition.filter.operator
        is Operator.NOT_BETWEEN
    )  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="Unknown query operator"):
        QueryBuilder().where("colour", "contains", "blue")
    with pytest.raises(FilterError, match="sort order"):
        QueryBuilder().sort_by("a", "ascending")


def test_build_is_a_snapshot() -> None:
    b = QueryBuilder().where("a", "=", 1)
    q = b.build()
    b.where("b", "=", 2)
    assert q.to_dict()["condition"] == {
        "type": "filter",
        "filter": {"field": "a", "operator": "=", "value": 1},
    }


def test_complex_query_and_or_of_queries(db: Any) -> None:
    q = ComplexQuery.OR([Query().filter("name", "=", "Bob"), Query().filter("city", "=", "Chicago")])
    assert names(db.search(q)) == {"Bob", "David"}
    # each query's own filters stay ANDed
    q = ComplexQuery.OR(
        [Query().filter("city", "=", "New York").filter("age", ">", 30), Query().filter("name", "=", "Eve")]
    )
    assert names(db.search(q)) == {"Charlie", "Eve"}
    q = ComplexQuery.AND([Query().filter("city", "=", "New York"), Query().filter("name", "!=", "Alice")])
    assert names(db.search(q)) == {"Charlie"}
    assert db.search(ComplexQuery.OR([])) == []  # an OR of no condition is false
    assert len(db.search(ComplexQuery.AND([]))) == 5
    assert len(db.search(ComplexQuery())) == 5


def test_complex_query_fluent_filter_is_anded(db: Any) -> None:
    q = ComplexQuery.OR([Query().filter("city", "=", "New York"), Query().filter("city", "=", "Chicago")])
    q.filter("age", "<", 33).sort_by("age")
    assert [r["name"] for r in db.search(q)] == ["David", "Alice"]
    assert q.to_dict()["condition"]["operator"] == "and"  # the filter joins the condition
    assert names(db.search(ComplexQuery.from_dict(q.to_dict()))) == {"David", "Alice"}


@pytest.mark.parametrize("backend", ["memory", "file"])
async def test_async_and_file_stores_search_complex_queries(backend: str, tmp_path: Any) -> None:
    config = {"path": str(tmp_path / "t")} if backend == "file" else {}
    q = ComplexQuery.OR([Query().filter("name", "=", "Bob"), Query().filter("age", ">=", 35)]).sort_by("age")
    db = DatabaseFactory().create(backend=backend, **config)
    try:
        db.create_batch([r.copy() for r in PEOPLE])
        assert [r["name"] for r in db.search(q)] == ["Bob", "Charlie"]
        assert db.count(q) == 2
    finally:
        db.close()
    adb = AsyncDatabaseFactory().create(backend=backend, **config)
    try:
        if backend == "memory":
            await adb.create_batch([r.copy() for r in PEOPLE])
        assert [r["name"] for r in await adb.search(q)] == ["Bob", "Charlie"]
        assert await adb.count(q) == 2
    finally:
        await adb.close()


def test_conditions_match_records_dicts_and_objects() -> None:
    cond = LogicCondition(
        LogicOperator.AND,
        [LogicCondition("or", [where("age", ">", 30), where("vip", "=", True)]), where("active", "=", True)],
    )
    assert cond.matches(Record({"age": 35, "vip": False, "active": True}))
    assert cond.matches({"age": 25, "vip": True, "active": True})
    assert not cond.matches({"age": 25, "vip": False, "active": True})

    class Obj:
        age = 40
        active = True

    assert cond.matches(Obj())
    assert where("id", "=", "r1").matches(Record({"id": "data-id"}, id="r1"))  # "id" is the record id
    assert LogicCondition(LogicOperator.NOT, [where("a", "=", 1), where("b", "=", 1)]).matches(
        {"a": 2, "b": 2}
    )
    assert not LogicCondition(LogicOperator.NOT, [where("a", "=", 1), where("b", "=", 1)]).matches({"a": 1})
    assert where("missing", "not_exists", None).matches({})
    assert not where("missing", "!=", 1).matches({})


def test_to_simple_query() -> None:
    vq = VectorQuery([0.1, 0.2], k=5)
    cq = ComplexQuery(
        condition=LogicCondition(LogicOperator.AND, [where("a", "=", 1), where("b", "in", ["x"])]),
        vector_query=vq,
        limit_value=5,
        sort_specs=[SortSpec("a", SortOrder.DESC)],
    )
    simple = cq.to_simple_query()
    assert type(simple) is Query
    assert [f.field for f in simple.filters] == ["a", "b"]
    assert (
        simple.vector_query is vq
        and simple.limit_value == 5
        and simple.sort_specs == [SortSpec("a", SortOrder.DESC)]
    )
    assert ComplexQuery(condition=where("a", "=", 1)).to_simple_query().filters == [Filter("a", "=", 1)]
    with pytest.raises(ValueError, match="Cannot convert"):
        ComplexQuery.OR([Query().filter("a", "=", 1)]).to_simple_query()


def test_serialization_round_trip() -> None:
    q = (
        QueryBuilder()
        .where("status", "=", "active")
        .or_(Filter("priority", ">", 5), Filter("urgent", "=", True))
        .not_(Filter("deleted", "exists"))
        .sort_by("name")
        .limit(3)
        .offset(1)
        .select("name", "priority")
        .similar_to([0.5, 0.5], k=7, score_threshold=0.2)
        .build()
    )
    d = q.to_dict()
    assert set(d) == {"condition", "sort", "limit", "offset", "fields", "vector_query"}
    back = ComplexQuery.from_dict(d)
    assert back.to_dict() == d
    assert back.vector_query is not None and back.vector_query.k == 7 and back.limit_value == 3
    assert isinstance(back.condition, LogicCondition)
    assert isinstance(Condition.from_dict(d["condition"]), LogicCondition)
    with pytest.raises(FilterError):
        condition_from_dict({"type": "logic", "operator": "xor", "conditions": []})
    with pytest.raises(FilterError):
        condition_from_dict({"type": "nope"})
    # a plain Query with a boolean condition round-trips too
    plain = Query().filter("a", ">", 1).or_({"b": 2}, Filter("c", "=", 3))
    again = Query.from_dict(plain.to_dict())
    recs = [Record({"a": 2, "b": 2}, id="x"), Record({"a": 2}, id="y"), Record({"a": 0, "c": 3}, id="z")]
    assert [again.matches(r) for r in recs] == [plain.matches(r) for r in recs] == [True, False, False]


def test_bad_operand_in_a_condition_raises_when_used(db: Any) -> None:
    q = QueryBuilder().where("age", "in", 30).build()  # builds, as in dataknobs-data
    with pytest.raises(FilterError, match="needs a list"):
        db.search(q)
    with pytest.raises(FilterError, match="needs a list"):
        q.matches(PEOPLE[0])


def test_deep_condition_is_refused_not_a_recursion_error() -> None:
    cond: Condition = where("a", "=", 1)
    for _ in range(300):
        cond = LogicCondition(LogicOperator.NOT, [cond])
    with pytest.raises(FilterError, match="nested"):
        ComplexQuery(condition=cond).expression()
    with pytest.raises(FilterError, match="nested"):
        compile_filter(ComplexQuery(condition=cond))


def test_as_condition_mirrors_expressions() -> None:
    expr = And((Cond(Filter("a", "=", 1)), Or((Cond(Filter("b", ">", 2)), Not(Cond(Filter("c", "exists")))))))
    cond = as_condition(expr)
    assert cond.compiled() == expr
    assert cond.to_dict() == expr.to_dict()


# --- property: every evaluation path agrees with a naive one --------------------------------------

FIELDS = ["a", "b", "n.x", "id"]
_VALUES = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["x", "y", "xy", ""]), st.booleans())
OPS = [
    "=",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "in",
    "not_in",
    "exists",
    "not_exists",
    "like",
    "starts_with",
    "between",
]


def naive_value(rec: Record, field: str) -> Any:
    if field == "id":
        return rec.id
    if field == "n.x":
        n = rec.data.get("n")
        return n.get("x") if isinstance(n, dict) else None
    return rec.data.get(field)


def naive(cond: Condition, rec: Record) -> bool:
    if isinstance(cond, FilterCondition):
        f = cond.filter
        return naive_predicate(f.operator.value, f.value, naive_value(rec, f.field))
    assert isinstance(cond, LogicCondition)
    results = [naive(c, rec) for c in cond.conditions]
    if cond.operator is LogicOperator.AND:
        return all(results)
    if cond.operator is LogicOperator.OR:
        return any(results)
    return not any(results)


def operand(op: str) -> st.SearchStrategy[Any]:
    if op in ("exists", "not_exists"):
        return st.none()
    if op in ("in", "not_in"):
        return st.lists(_VALUES.filter(lambda v: v is not None), max_size=3)
    if op == "between":
        return st.one_of(
            st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
            st.tuples(st.sampled_from(["x", "y"]), st.sampled_from(["x", "y"])),
        ).map(list)
    if op in ("like", "starts_with"):
        return st.sampled_from(["x", "X", "xy", "y", ""])
    if op in (">", ">=", "<", "<="):
        return st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y"]))
    return _VALUES


@st.composite
def leaf(draw: Any) -> Condition:
    op = draw(st.sampled_from(OPS))
    return where(draw(st.sampled_from(FIELDS)), op, draw(operand(op)))


CONDITIONS = st.recursive(
    leaf(),
    lambda kids: st.builds(LogicCondition, st.sampled_from(list(LogicOperator)), st.lists(kids, max_size=3)),
    max_leaves=8,
)


@st.composite
def records(draw: Any) -> list[Record]:
    out = []
    for i in range(draw(st.integers(0, 8))):
        data: dict[str, Any] = {}
        for f in ("a", "b"):
            if draw(st.booleans()):
                data[f] = draw(_VALUES)
        if draw(st.booleans()):
            data["n"] = {"x": draw(_VALUES)} if draw(st.booleans()) else draw(_VALUES)
        if draw(st.integers(0, 4)) == 0:
            data["id"] = draw(st.sampled_from(["x", "r1"]))  # a data field "id" never shadows the record id
        out.append(Record(data, id=f"r{i}"))
    return out


@settings(max_examples=300, deadline=None)
@given(records(), CONDITIONS, st.booleans())
def test_complex_query_results_equal_naive_evaluation(
    recs: list[Record], cond: Condition, via_dict: bool
) -> None:
    query = ComplexQuery(condition=cond)
    if via_dict:
        query = ComplexQuery.from_dict(query.to_dict())
    want = sorted(r.id for r in recs if naive(cond, r))  # type: ignore[type-var]
    assert sorted(r.id for r in recs if cond.matches(r)) == want  # type: ignore[type-var]
    assert sorted(r.id for r in recs if query.matches(r)) == want  # type: ignore[type-var]
    table = RecordTable()
    rows, batches = table.prepare(recs)
    table.append(rows, batches)
    assert sorted(r.id for r in table.query(query)) == want  # type: ignore[type-var]


@settings(max_examples=40, deadline=None)
@given(records(), CONDITIONS)
def test_store_search_equals_naive_evaluation(recs: list[Record], cond: Condition) -> None:
    db = DatabaseFactory().create(backend="memory")
    try:
        db.create_batch(recs)
        want = sorted(r.id for r in recs if naive(cond, r))  # type: ignore[type-var]
        assert sorted(r.id for r in db.search(ComplexQuery(condition=cond))) == want
        assert db.count(ComplexQuery(condition=cond)) == len(want)
    finally:
        db.close()
