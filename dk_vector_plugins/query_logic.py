"""Boolean queries built from conditions (dataknobs-data 0.11's ``query_logic``), compiled to the
one filter language of :mod:`dk_vector_plugins.query`.

``FilterCondition(filter)`` and ``LogicCondition(operator, conditions)`` are the mutable trees that
dataknobs-data's API builds (``QueryBuilder`` appends to them); each compiles to the expression tree
of :mod:`~dk_vector_plugins.query` (:class:`~dk_vector_plugins.query.Cond`,
:class:`~dk_vector_plugins.query.And`, :class:`~dk_vector_plugins.query.Or`,
:class:`~dk_vector_plugins.query.Not`), which alone evaluates them, per record and per table: a
condition adds no semantics of its own. :class:`ComplexQuery` is a
:class:`~dk_vector_plugins.query.Query` whose condition is such a tree, so every store searches and
counts with it as with any query (sort, offset, limit and projection included)::

    query = QueryBuilder().where("age", ">", 30).or_(Filter("vip", "=", True)).sort_by("name").build()
    db.search(query)

Semantics: ``AND`` of no conditions is true, ``OR`` of none is false, ``NOT`` of several is "none of
them"; a :class:`ComplexQuery` without a condition matches every record.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .errors import FilterError
from .query import (
    MAX_FILTER_DEPTH,
    And,
    Cond,
    DistanceMetric,
    Expr,
    Filter,
    Not,
    Operator,
    Or,
    Query,
    SortSpec,
    VectorQuery,
    coerce_operator,
    coerce_sort_order,
    compile_filter,
    expr_from_dict,
)
from .records import Record

__all__ = [
    "ComplexQuery",
    "Condition",
    "FilterCondition",
    "LogicCondition",
    "LogicOperator",
    "QueryBuilder",
    "condition_from_dict",
]


class LogicOperator(enum.Enum):
    """How a :class:`LogicCondition` combines its conditions."""

    AND = "and"
    OR = "or"
    NOT = "not"


class Condition(Expr):
    """A boolean condition: a node of a :class:`ComplexQuery`'s tree.

    It is an :class:`~dk_vector_plugins.query.Expr` that evaluates as its compiled expression
    (:meth:`compiled`), built afresh on each use since a condition may still be changed.
    """

    def compiled(self) -> Expr:
        """The condition as the query module's expression tree.

        :raises FilterError: a filter's operand does not suit its operator, or the tree nests
            deeper than :data:`~dk_vector_plugins.query.MAX_FILTER_DEPTH`.
        """
        return self._compile(0)

    def _compile(self, depth: int) -> Expr:
        raise NotImplementedError  # pragma: no cover - abstract

    def evaluate(self, rid: str | None, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
        return self.compiled().evaluate(rid, data, metadata)

    def mask(self, columns: Any, nrows: int) -> Any:
        return self.compiled().mask(columns, nrows)

    def fields(self) -> set[str]:
        return self.compiled().fields()

    def matches(self, record: Any) -> bool:
        """Whether ``record`` satisfies the condition: a :class:`~dk_vector_plugins.records.Record`
        (``"id"`` is its id), a dict (dotted paths read nested dicts), or any object (its attributes)."""
        expr = self.compiled()
        if isinstance(record, Record):
            return expr.matches(record)
        if isinstance(record, Mapping):
            return expr.evaluate(None, record, {})
        heads = {f.partition(".")[0] for f in expr.fields()}
        return expr.evaluate(None, {h: getattr(record, h) for h in heads if hasattr(record, h)}, {})

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover - abstract

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        """A condition from its dict (see :func:`condition_from_dict`)."""
        return condition_from_dict(data)


@attrs.define
class FilterCondition(Condition):
    """One filter as a condition."""

    filter: Filter

    def _compile(self, depth: int) -> Expr:
        return Cond(self.filter)

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "filter", "filter": {"field", "operator", "value"}}``."""
        return {"type": "filter", "filter": self.filter.to_dict()}


def _logic_operator(op: LogicOperator | str) -> LogicOperator:
    return LogicOperator(op)


@attrs.define
class LogicCondition(Condition):
    """``conditions`` combined by ``operator`` (AND: all; OR: any; NOT: none)."""

    operator: LogicOperator = attrs.field(converter=_logic_operator)
    conditions: list[Condition] = attrs.field(factory=list)

    def _compile(self, depth: int) -> Expr:
        if depth > MAX_FILTER_DEPTH:
            raise FilterError(f"the condition is nested more than {MAX_FILTER_DEPTH} levels deep")
        parts = tuple(
            c._compile(depth + 1) if isinstance(c, Condition) else _expr_of(c) for c in self.conditions
        )
        if self.operator is LogicOperator.AND:
            return And(parts)
        if self.operator is LogicOperator.OR:
            return Or(parts)
        return Not(parts[0] if len(parts) == 1 else Or(parts))

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "logic", "operator": "and"|"or"|"not", "conditions": [...]}``."""
        return {
            "type": "logic",
            "operator": self.operator.value,
            "conditions": [c.to_dict() for c in self.conditions],
        }


def _expr_of(item: Any) -> Expr:
    expr = compile_filter(item)
    return And(()) if expr is None else expr


def as_condition(expr: Expr) -> Condition:
    """``expr`` (an expression of the query module, or a condition) as a :class:`Condition` tree."""
    if isinstance(expr, Condition):
        return expr
    out: list[Condition] = []
    # iterative: an expression tree may be as deep as MAX_FILTER_DEPTH
    todo: list[tuple[Expr, list[Condition]]] = [(expr, out)]
    while todo:
        node, into = todo.pop()
        if isinstance(node, Condition):
            into.append(node)
        elif isinstance(node, Cond):
            into.append(FilterCondition(node.filter))
        elif isinstance(node, (And, Or, Not)):
            if isinstance(node, And):
                kind = LogicOperator.AND
            else:
                kind = LogicOperator.OR if isinstance(node, Or) else LogicOperator.NOT
            cond = LogicCondition(kind)
            into.append(cond)
            children = node.parts if isinstance(node, (And, Or)) else (node.part,)
            todo.extend((child, cond.conditions) for child in reversed(children))
        else:
            raise FilterError(f"cannot express {type(node).__name__} as a condition")
    return out[0]


def condition_from_dict(data: Mapping[str, Any]) -> Condition:
    """The condition of a dict in dataknobs-data's format (``{"type": "filter", ...}`` or
    ``{"type": "logic", ...}``); raises :class:`FilterError` for a malformed one."""
    return as_condition(expr_from_dict(data))


def _condition_of(item: Any) -> Condition | None:
    """What ``QueryBuilder`` combines: a builder (its root), a filter, a condition, or any filter
    form the query module compiles (a query, a dict, an expression)."""
    if isinstance(item, QueryBuilder):
        return item.root_condition
    if isinstance(item, Condition):
        return item
    if isinstance(item, Filter):
        return FilterCondition(item)
    expr = compile_filter(item)
    return None if expr is None else as_condition(expr)


def _query_condition(query: Any) -> Condition | None:
    """A query's conditions as one condition: its filters (ANDed) and its boolean condition."""
    if not isinstance(query, Query):
        return _condition_of(query)
    parts: list[Condition] = [FilterCondition(f) for f in query.filters]
    if query.condition is not None:
        parts.append(as_condition(query.condition))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else LogicCondition(LogicOperator.AND, parts)


class ComplexQuery(Query):
    """A :class:`~dk_vector_plugins.query.Query` whose condition is a boolean tree of conditions.

    ``ComplexQuery(condition=None, sort_specs=None, limit_value=None, offset_value=None,
    fields=None, vector_query=None)``, dataknobs-data's constructor. Stores search and count with it
    like any query; the fluent methods of :class:`~dk_vector_plugins.query.Query` work too (a
    filter added with :meth:`filter` is ANDed with the condition).
    """

    __slots__ = ()

    def __init__(
        self,
        condition: Expr | None = None,
        sort_specs: Iterable[SortSpec] | None = None,
        limit_value: int | None = None,
        offset_value: int | None = None,
        fields: Iterable[str] | None = None,
        vector_query: VectorQuery | None = None,
        filters: Iterable[Filter] | None = None,
    ) -> None:
        super().__init__(
            filters=list(filters or []),
            sort_specs=list(sort_specs or []),
            limit_value=limit_value,
            offset_value=offset_value,
            fields=None if fields is None else list(fields),
            vector_query=vector_query,
            condition=condition,
        )

    @classmethod
    def AND(cls, queries: Iterable[Any]) -> ComplexQuery:
        """All of ``queries`` (each :class:`Query`'s filters ANDed; filters, dicts and conditions
        are accepted too)."""
        return cls(condition=LogicCondition(LogicOperator.AND, _conditions(queries)))

    @classmethod
    def OR(cls, queries: Iterable[Any]) -> ComplexQuery:
        """Any of ``queries``: a record matches when it satisfies all the filters of one of them.

        (dataknobs-data 0.11 ORs every filter of every query instead; the two agree for queries
        of one filter each, the documented use.) ``OR([])`` matches nothing.
        """
        return cls(condition=LogicCondition(LogicOperator.OR, _conditions(queries)))

    def to_simple_query(self) -> Query:
        """The same query as a plain :class:`~dk_vector_plugins.query.Query` of ANDed filters.

        :raises FilterError: (a ``ValueError``) the condition holds an OR or a NOT.
        """
        filters = list(self.filters)
        todo = [] if self.condition is None else [self.condition]
        while todo:
            node = todo.pop(0)
            if isinstance(node, (FilterCondition, Cond)):
                filters.append(node.filter)
            elif isinstance(node, LogicCondition) and node.operator is LogicOperator.AND:
                todo[:0] = node.conditions
            elif isinstance(node, And):
                todo[:0] = node.parts
            else:
                raise FilterError(
                    "Cannot convert complex boolean logic to simple Query (it holds an OR or a NOT)"
                )
        return Query(
            filters=filters,
            sort_specs=list(self.sort_specs),
            limit_value=self.limit_value,
            offset_value=self.offset_value,
            fields=None if self.fields is None else list(self.fields),
            vector_query=self.vector_query,
        )

    def root(self) -> Condition | None:
        """The whole condition of the query: :attr:`condition` ANDed with any :attr:`filters`."""
        return _query_condition(self)

    def to_dict(self) -> dict[str, Any]:
        """dataknobs-data's form: ``condition`` (see :meth:`Condition.to_dict`), and ``sort``,
        ``limit``, ``offset``, ``fields``, ``vector_query`` when set."""
        out: dict[str, Any] = {}
        root = self.root()
        if root is not None:
            out["condition"] = root.to_dict()
        if self.sort_specs:
            out["sort"] = [s.to_dict() for s in self.sort_specs]
        if self.limit_value is not None:
            out["limit"] = self.limit_value
        if self.offset_value is not None:
            out["offset"] = self.offset_value
        if self.fields is not None:
            out["fields"] = list(self.fields)
        if self.vector_query is not None:
            out["vector_query"] = self.vector_query.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComplexQuery:
        """The inverse of :meth:`to_dict` (also reads the ``filters`` of a plain query's dict)."""
        plain = Query.from_dict({k: v for k, v in data.items() if k != "condition"})
        condition = None if data.get("condition") is None else condition_from_dict(data["condition"])
        return cls(
            condition=condition,
            sort_specs=plain.sort_specs,
            limit_value=plain.limit_value,
            offset_value=plain.offset_value,
            fields=plain.fields,
            vector_query=plain.vector_query,
            filters=plain.filters,
        )


def _conditions(items: Iterable[Any]) -> list[Condition]:
    return [c for c in (_query_condition(q) for q in items) if c is not None]


class QueryBuilder:
    """Builds a :class:`ComplexQuery` step by step (dataknobs-data's ``QueryBuilder``).

    ``where`` ANDs a filter; ``and_``/``or_``/``not_`` combine builders, filters and conditions
    (``or_`` makes the whole condition so far one branch of an OR); ``build()`` returns the query.
    """

    def __init__(self) -> None:
        self.root_condition: Condition | None = None
        self.sort_specs: list[SortSpec] = []
        self.limit_value: int | None = None
        self.offset_value: int | None = None
        self.fields: list[str] | None = None
        self.vector_query: VectorQuery | None = None

    def _and(self, conditions: list[Condition]) -> None:
        root = self.root_condition
        if root is None:
            self.root_condition = (
                conditions[0] if len(conditions) == 1 else LogicCondition(LogicOperator.AND, conditions)
            )
        elif isinstance(root, LogicCondition) and root.operator is LogicOperator.AND:
            root.conditions.extend(conditions)
        else:
            self.root_condition = LogicCondition(LogicOperator.AND, [root, *conditions])

    def where(self, field: str, operator: Operator | str, value: Any = None) -> QueryBuilder:
        """AND the filter ``field operator value`` (the operator read by :func:`coerce_operator`)."""
        self._and([FilterCondition(Filter(field, coerce_operator(operator), value))])
        return self

    def and_(self, *conditions: Any) -> QueryBuilder:
        """AND all of ``conditions`` (builders, filters, conditions, queries or dicts)."""
        parts = [c for c in map(_condition_of, conditions) if c is not None]
        if self.root_condition is None:
            self.root_condition = LogicCondition(LogicOperator.AND, parts)
        else:
            self._and(parts)
        return self

    def or_(self, *conditions: Any) -> QueryBuilder:
        """OR the condition so far with each of ``conditions``."""
        parts = [c for c in map(_condition_of, conditions) if c is not None]
        root = self.root_condition
        if root is None:
            self.root_condition = LogicCondition(LogicOperator.OR, parts)
        elif isinstance(root, LogicCondition) and root.operator is LogicOperator.OR:
            root.conditions.extend(parts)
        else:
            self.root_condition = LogicCondition(LogicOperator.OR, [root, *parts])
        return self

    def not_(self, condition: Any) -> QueryBuilder:
        """AND the negation of ``condition`` (a builder, filter, condition, query or dict)."""
        inner = _condition_of(condition)
        self._and([LogicCondition(LogicOperator.NOT, [] if inner is None else [inner])])
        return self

    def sort_by(self, field: str, order: str = "asc") -> QueryBuilder:
        """Sort by ``field`` (``"asc"`` or ``"desc"``)."""
        self.sort_specs.append(SortSpec(field, coerce_sort_order(order)))
        return self

    def limit(self, value: int) -> QueryBuilder:
        """Return at most ``value`` records."""
        self.limit_value = value
        return self

    def offset(self, value: int) -> QueryBuilder:
        """Skip the first ``value`` records."""
        self.offset_value = value
        return self

    def select(self, *fields: str) -> QueryBuilder:
        """Return only these fields (none: every field)."""
        self.fields = list(fields) if fields else None
        return self

    def similar_to(
        self,
        vector: Any,
        field: str = "embedding",
        k: int = 10,
        metric: DistanceMetric | str = "cosine",
        include_source: bool = True,
        score_threshold: float | None = None,
    ) -> QueryBuilder:
        """Hold a vector query (see :meth:`Query.similar_to`); the limit becomes ``k`` unless set."""
        held = Query().similar_to(vector, field, k, metric, include_source, score_threshold)
        self.vector_query = held.vector_query
        if self.limit_value is None:
            self.limit_value = k
        return self

    def build(self) -> ComplexQuery:
        """The query built so far (later calls on the builder do not change it)."""
        return ComplexQuery(
            condition=copy.deepcopy(self.root_condition),
            sort_specs=self.sort_specs,
            limit_value=self.limit_value,
            offset_value=self.offset_value,
            fields=self.fields,
            vector_query=None if self.vector_query is None else self.vector_query.copy(),
        )
