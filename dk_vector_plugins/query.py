"""The filter language and its one compiler: conditions -> a boolean numpy mask over table rows.

Filters are written as dataknobs-data writes them, ``Query(filters=[Filter("year", Operator.GTE,
2020)])`` or ``Query().filter("year", ">=", 2020)``, combined with :meth:`Query.or_`,
:meth:`Query.and_` and :meth:`Query.not_`, or as a plain dict::

    {"category": "a", "year": {"$gte": 2020}, "$or": [{"lang": "en"}, {"lang": "de"}]}

Every form compiles to one expression tree (:class:`Cond`, :class:`And`, :class:`Or`,
:class:`Not`). An expression is evaluated two ways that must always agree: per record
(:meth:`Expr.evaluate`, the reference) and per table (:meth:`Expr.mask`), where each field is a
dictionary-encoded column (row -> code of a distinct value): a condition is decided once per
*distinct* value (vectorized for numbers, cached per condition) and gathered to rows with one
numpy take. No Python loop runs over rows.

Semantics (as in dataknobs-data, with the differences noted):

* the field ``"id"`` is the record id; dotted paths read nested dicts; ``"metadata.x"`` reads the
  record's metadata;
* a missing field or a ``None`` value satisfies only ``NOT_EXISTS``; every other operator,
  the negative ones included, is false for it (SQL-like);
* comparisons are Python's (``30 == 30.0``, ``True == 1``); a comparison that raises
  ``TypeError`` (``"a" > 1``) is false;
* the negative operators (``NEQ``, ``NOT_IN``, ``NOT_LIKE``, ``NOT_BETWEEN``) are "present and
  the positive operator is false" (dataknobs-data makes ``NOT_LIKE`` false on non-strings);
* ``LIKE``: ``%`` any run, ``_`` one character, case-insensitive, whole value; other characters
  are literal (dataknobs-data leaves regex metacharacters such as ``.`` active);
* ``REGEX``: ``re.search``, case-sensitive; ``STARTS_WITH``: case-sensitive prefix; ``LIKE``,
  ``REGEX`` and ``STARTS_WITH`` are false on non-strings;
* ``BETWEEN``: inclusive on both ends;
* an ordering comparison (``GT``, ``GTE``, ``LT``, ``LTE``, ``BETWEEN``) between a ``datetime`` or
  ``date`` and an ISO-8601 string compares them as datetimes (as dataknobs-data does), on either
  side; a string that is not ISO-8601 does not match;
* an unknown operator spelling raises :class:`FilterError` when the filter is built; a bad operand
  (``IN`` with a scalar, ``LIKE`` with a number, an invalid regular expression) raises it when the
  filter is first compiled or evaluated (:meth:`Query.expression`, :func:`compile_filter`, a
  search, :meth:`Filter.matches`): dataknobs-data stores operands unchecked and reads them only
  then. A search never runs with a malformed filter.

Names shared with dataknobs-data 0.11's ``query`` module: :func:`coerce_operator` and
:func:`coerce_sort_order` (the one reading of an operator or sort order spelling),
:class:`VectorQuery` and :class:`DistanceMetric`. Boolean queries built from conditions
(``ComplexQuery``, ``QueryBuilder``) are in :mod:`dk_vector_plugins.query_logic` and compile to the
same expression tree.
"""

from __future__ import annotations

import copy
import datetime as dt
import enum
import json
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from .errors import FilterError
from .records import MISSING, Record, lookup

__all__ = [
    "And",
    "Column",
    "Cond",
    "DistanceMetric",
    "Expr",
    "Filter",
    "Not",
    "Operator",
    "Or",
    "Query",
    "SortOrder",
    "SortSpec",
    "VectorQuery",
    "coerce_operator",
    "coerce_sort_order",
    "compile_filter",
    "expr_from_dict",
]

BoolArray = npt.NDArray[np.bool_]


class Operator(enum.Enum):
    """Filter operators (dataknobs-data's names and values)."""

    EQ = "="
    NEQ = "!="
    GT = ">"
    GTE = ">="
    LT = "<"
    LTE = "<="
    IN = "in"
    NOT_IN = "not_in"
    LIKE = "like"
    NOT_LIKE = "not_like"
    REGEX = "regex"
    STARTS_WITH = "starts_with"
    EXISTS = "exists"
    NOT_EXISTS = "not_exists"
    BETWEEN = "between"
    NOT_BETWEEN = "not_between"

    @classmethod
    def coerce(cls, op: Operator | str) -> Operator:
        """The same as :func:`coerce_operator`."""
        return coerce_operator(op)


#: Spellings that are no member's value in any case or spacing: ``==`` and ``<>``, and the
#: ``$`` forms of the dict shorthand (``{"year": {"$gte": 2020}}``).
_ALIASES: dict[str, Operator] = {
    "==": Operator.EQ,
    "<>": Operator.NEQ,
    "$eq": Operator.EQ,
    "$ne": Operator.NEQ,
    "$neq": Operator.NEQ,
    "$gt": Operator.GT,
    "$gte": Operator.GTE,
    "$lt": Operator.LT,
    "$lte": Operator.LTE,
    "$in": Operator.IN,
    "$nin": Operator.NOT_IN,
    "$not_in": Operator.NOT_IN,
    "$like": Operator.LIKE,
    "$not_like": Operator.NOT_LIKE,
    "$nlike": Operator.NOT_LIKE,
    "$regex": Operator.REGEX,
    "$starts_with": Operator.STARTS_WITH,
    "$between": Operator.BETWEEN,
    "$not_between": Operator.NOT_BETWEEN,
    "$exists": Operator.EXISTS,
    "$not_exists": Operator.NOT_EXISTS,
}
_BY_VALUE: dict[str, Operator] = {m.value: m for m in Operator}


def coerce_operator(operator: Operator | str) -> Operator:
    """The one reading of a filter operator, whatever spelling it arrives in.

    Accepts an :class:`Operator`, any member's value (``"!="``, ``"not_like"``), case and space
    variants of those (``"IN"``, ``"NOT BETWEEN"``), ``"=="`` and ``"<>"``, and the ``$`` forms of
    the dict shorthand (``"$gte"``, ``"$nin"``). A member's *name* that is not a value (``"eq"``,
    ``"gte"``, ``"ne"``) is refused, as in dataknobs-data 0.11: a guessed spelling fails rather than
    meaning something else.

    :raises FilterError: (a ``ValueError``) for any other spelling, or a non-string; the message
        lists the accepted values.
    """
    if isinstance(operator, Operator):
        return operator
    if isinstance(operator, str):
        key = operator.strip().lower().replace(" ", "_")
        found = _BY_VALUE.get(key) or _ALIASES.get(key)
        if found is not None:
            return found
    known = ", ".join(sorted(set(_BY_VALUE) | {"==", "<>"}))
    raise FilterError(
        f"Unknown query operator {operator!r}; expected one of: {known} "
        "(or a '$' form such as '$gte' in a dict filter)"
    )


_NEGATIVE = {
    Operator.NEQ: Operator.EQ,
    Operator.NOT_IN: Operator.IN,
    Operator.NOT_LIKE: Operator.LIKE,
    Operator.NOT_BETWEEN: Operator.BETWEEN,
}
_ORDERING = {Operator.GT, Operator.GTE, Operator.LT, Operator.LTE, Operator.BETWEEN}
_STRING_OPS = {Operator.LIKE, Operator.REGEX, Operator.STARTS_WITH}


def _like_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _validate(field: Any, op: Operator, value: Any) -> Any:
    """Check an operand; return the prepared form used by the predicate."""
    if not isinstance(field, str) or not field:
        raise FilterError(f"filter field must be a non-empty string, got {field!r}")
    base = _NEGATIVE.get(op, op)
    if base in (Operator.IN,):
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise FilterError(
                f"operator {op.value!r} on field {field!r} needs a list of values, got {value!r}"
            )
        return tuple(value)
    if base is Operator.BETWEEN:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise FilterError(
                f"operator {op.value!r} on field {field!r} needs a [low, high] pair, got {value!r}"
            )
        return (value[0], value[1])
    if base in _STRING_OPS:
        if not isinstance(value, str):
            raise FilterError(f"operator {op.value!r} on field {field!r} needs a string, got {value!r}")
        if base is Operator.LIKE:
            return _like_regex(value)
        if base is Operator.REGEX:
            try:
                return re.compile(value)
            except re.error as e:
                raise FilterError(f"invalid regular expression {value!r} for field {field!r}: {e}") from e
        return value
    if base in _ORDERING and value is None:
        raise FilterError(f"operator {op.value!r} on field {field!r} needs a value, got None")
    return value


def _as_datetime(text: str, like: dt.date) -> dt.date | None:
    """ISO-8601 ``text`` as a value comparable with ``like`` (a ``datetime`` or a ``date``), or
    ``None`` when it is not ISO-8601 (a trailing ``Z`` means UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if isinstance(like, dt.datetime) else parsed.date()


def _ordered(v: Any, operand: Any) -> tuple[Any, Any] | None:
    """``v`` and ``operand`` for an ordering comparison: an ISO-8601 string facing a ``date`` or
    ``datetime`` is read as one (``None``: it is not ISO-8601, so nothing matches)."""
    if isinstance(v, str) and isinstance(operand, dt.date):
        parsed = _as_datetime(v, operand)
        return None if parsed is None else (parsed, operand)
    if isinstance(operand, str) and isinstance(v, dt.date):
        parsed = _as_datetime(operand, v)
        return None if parsed is None else (v, parsed)
    return v, operand


def _compare(op: Operator, v: Any, operand: Any) -> bool:
    pair = _ordered(v, operand)
    if pair is None:
        return False
    a, b = pair
    if op is Operator.GT:
        return bool(a > b)
    if op is Operator.GTE:
        return bool(a >= b)
    if op is Operator.LT:
        return bool(a < b)
    return bool(a <= b)


def _positive(op: Operator, operand: Any, v: Any) -> bool:
    """Python semantics of a positive operator on a present, non-None value ``v``."""
    try:
        if op is Operator.EQ:
            return bool(v == operand)
        if op in (Operator.GT, Operator.GTE, Operator.LT, Operator.LTE):
            return _compare(op, v, operand)
        if op is Operator.BETWEEN:
            return _compare(Operator.GTE, v, operand[0]) and _compare(Operator.LTE, v, operand[1])
        if op is Operator.IN:
            return any(bool(v == x) for x in operand)
        if op is Operator.LIKE:
            return isinstance(v, str) and operand.fullmatch(v) is not None
        if op is Operator.REGEX:
            return isinstance(v, str) and operand.search(v) is not None
        if op is Operator.STARTS_WITH:
            return isinstance(v, str) and v.startswith(operand)
    except (TypeError, ValueError):  # incomparable types, or arrays' ambiguous truth
        return False
    raise FilterError(f"operator {op!r} has no predicate")  # pragma: no cover


def _predicate(op: Operator, operand: Any, v: Any) -> bool:
    if op is Operator.EXISTS:
        return v is not MISSING and v is not None
    if op is Operator.NOT_EXISTS:
        return v is MISSING or v is None
    if v is MISSING or v is None:
        return False
    if op in _NEGATIVE:
        return not _positive(_NEGATIVE[op], operand, v)
    return _positive(op, operand, v)


@attrs.frozen(init=False)
class Filter:
    """One condition: ``Filter(field, operator, value=None)``; the operator may be given as a string.

    The field and the operator are checked when the filter is built (an unknown operator spelling
    raises :class:`FilterError` at once); the operand is checked when the filter is first used
    (:attr:`operand`, :meth:`matches`, or compiling a query that holds it), as dataknobs-data only
    reads it then: ``Query().filter("f", "in", 1)`` builds, and searching with it raises.
    """

    field: str
    operator: Operator
    value: Any = None
    # (the checked operand,) once read; None before (a plain value: copies and pickles keep it)
    _operand: tuple[Any] | None = attrs.field(default=None, eq=False, repr=False, alias="_operand")

    def __init__(self, field: str, operator: Operator | str = Operator.EQ, value: Any = None) -> None:
        if not isinstance(field, str) or not field:
            raise FilterError(f"filter field must be a non-empty string, got {field!r}")
        self.__attrs_init__(field, coerce_operator(operator), value, None)  # type: ignore[attr-defined]

    @property
    def operand(self) -> Any:
        """The operand checked and prepared for the predicate (a tuple for ``IN``, a compiled
        pattern for ``LIKE``/``REGEX``); the first read checks it.

        :raises FilterError: the operand does not suit the operator.
        """
        checked = self._operand
        if checked is None:
            checked = (_validate(self.field, self.operator, self.value),)
            object.__setattr__(self, "_operand", checked)
        return checked[0]

    def check(self) -> Filter:
        """Check the operand now (see :attr:`operand`); returns the filter."""
        _ = self.operand
        return self

    def matches(self, value: Any) -> bool:
        """Whether a field value (``records.MISSING`` for an absent field) satisfies the condition."""
        return _predicate(self.operator, self.operand, value)

    def to_dict(self) -> dict[str, Any]:
        """``{"field", "operator", "value"}``."""
        return {"field": self.field, "operator": self.operator.value, "value": self.value}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Filter:
        """The inverse of :meth:`to_dict`."""
        try:
            return cls(d["field"], d.get("operator", "="), d.get("value"))
        except KeyError as e:
            raise FilterError(f"filter dict needs a 'field' key: {dict(d)!r}") from e


# --- expressions -----------------------------------------------------------------------------


class Expr:
    """A compiled filter expression."""

    def evaluate(self, rid: str | None, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
        """The reference: whether one record satisfies the expression."""
        raise NotImplementedError  # pragma: no cover - abstract

    def mask(self, columns: Callable[[str], Column], nrows: int) -> BoolArray:
        """A boolean mask over ``nrows`` rows; ``columns(field)`` gives a field's column."""
        raise NotImplementedError  # pragma: no cover - abstract

    def fields(self) -> set[str]:
        """The fields the expression reads."""
        raise NotImplementedError  # pragma: no cover - abstract

    def matches(self, record: Record) -> bool:
        """Whether ``record`` satisfies the expression."""
        return self.evaluate(record.id, record._data, record.metadata)

    def compiled(self) -> Expr:
        """The expression as a tree of :class:`Cond`, :class:`And`, :class:`Or` and :class:`Not`
        (itself for those; a boolean condition of :mod:`~dk_vector_plugins.query_logic` compiles
        to one)."""
        return self

    def to_dict(self) -> dict[str, Any]:
        """The expression in dataknobs-data's condition format: ``{"type": "filter", "filter":
        {...}}`` or ``{"type": "logic", "operator": "and"|"or"|"not", "conditions": [...]}``
        (read back by :func:`expr_from_dict`)."""
        raise NotImplementedError  # pragma: no cover - abstract


@attrs.frozen
class Cond(Expr):
    """A single :class:`Filter` (its operand is checked when the condition is made)."""

    filter: Filter = attrs.field(validator=lambda _self, _attr, flt: flt.check())

    def evaluate(self, rid: str | None, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
        return self.filter.matches(lookup(rid, data, metadata, self.filter.field))

    def mask(self, columns: Callable[[str], Column], nrows: int) -> BoolArray:
        return columns(self.filter.field).mask(self.filter, nrows)

    def fields(self) -> set[str]:
        return {self.filter.field}

    def to_dict(self) -> dict[str, Any]:
        return {"type": "filter", "filter": self.filter.to_dict()}


@attrs.frozen
class And(Expr):
    """All of the parts (true when there are none)."""

    parts: tuple[Expr, ...]

    def evaluate(self, rid: str | None, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
        return all(p.evaluate(rid, data, metadata) for p in self.parts)

    def mask(self, columns: Callable[[str], Column], nrows: int) -> BoolArray:
        out = np.ones(nrows, dtype=np.bool_)
        for p in self.parts:
            out &= p.mask(columns, nrows)
        return out

    def fields(self) -> set[str]:
        return set().union(*(p.fields() for p in self.parts)) if self.parts else set()

    def to_dict(self) -> dict[str, Any]:
        return {"type": "logic", "operator": "and", "conditions": [p.to_dict() for p in self.parts]}


@attrs.frozen
class Or(Expr):
    """Any of the parts (false when there are none)."""

    parts: tuple[Expr, ...]

    def evaluate(self, rid: str | None, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
        return any(p.evaluate(rid, data, metadata) for p in self.parts)

    def mask(self, columns: Callable[[str], Column], nrows: int) -> BoolArray:
        out = np.zeros(nrows, dtype=np.bool_)
        for p in self.parts:
            out |= p.mask(columns, nrows)
        return out

    def fields(self) -> set[str]:
        return set().union(*(p.fields() for p in self.parts)) if self.parts else set()

    def to_dict(self) -> dict[str, Any]:
        return {"type": "logic", "operator": "or", "conditions": [p.to_dict() for p in self.parts]}


@attrs.frozen
class Not(Expr):
    """The negation of ``part``."""

    part: Expr

    def evaluate(self, rid: str | None, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
        return not self.part.evaluate(rid, data, metadata)

    def mask(self, columns: Callable[[str], Column], nrows: int) -> BoolArray:
        return ~self.part.mask(columns, nrows)

    def fields(self) -> set[str]:
        return self.part.fields()

    def to_dict(self) -> dict[str, Any]:
        # "not" of several conditions is "none of them": one part that is an Or says the same
        part = self.part
        subs = part.parts if isinstance(part, Or) and len(part.parts) != 1 else (part,)
        return {"type": "logic", "operator": "not", "conditions": [p.to_dict() for p in subs]}


def expr_from_dict(data: Mapping[str, Any], _depth: int = 0) -> Expr:
    """The expression of a condition in dataknobs-data's format (see :meth:`Expr.to_dict`).

    ``"not"`` of several conditions is true when none of them is. Raises :class:`FilterError` for
    a malformed dict, or one nested deeper than :data:`MAX_FILTER_DEPTH`.
    """
    if _depth > MAX_FILTER_DEPTH:
        raise FilterError(f"the condition is nested more than {MAX_FILTER_DEPTH} levels deep")
    if not isinstance(data, Mapping):
        raise FilterError(f"a condition must be a dict, got {type(data).__name__}: {data!r}")
    kind = data.get("type")
    if kind == "filter":
        spec = data.get("filter")
        if not isinstance(spec, Mapping):
            raise FilterError(f"a filter condition needs a 'filter' dict, got {dict(data)!r}")
        return Cond(Filter.from_dict(spec))
    if kind == "logic":
        conditions = data.get("conditions", [])
        if not isinstance(conditions, (list, tuple)):
            raise FilterError(f"a logic condition needs a list of 'conditions', got {conditions!r}")
        parts = tuple(expr_from_dict(c, _depth + 1) for c in conditions)
        op = str(data.get("operator", "")).lower()
        if op == "and":
            return And(parts)
        if op == "or":
            return Or(parts)
        if op == "not":
            return Not(parts[0] if len(parts) == 1 else Or(parts))
        raise FilterError(f"unknown logic operator {data.get('operator')!r}; expected 'and', 'or' or 'not'")
    raise FilterError(f"unknown condition type {kind!r}; expected 'filter' or 'logic'")


# --- Query -----------------------------------------------------------------------------------


class SortOrder(enum.Enum):
    """Sort direction."""

    ASC = "asc"
    DESC = "desc"


def coerce_sort_order(order: SortOrder | str) -> SortOrder:
    """The one reading of a sort order: a :class:`SortOrder`, or ``"asc"``/``"desc"`` in any case.

    :raises FilterError: (a ``ValueError``) for any other spelling (``"ascending"`` included).
    """
    if isinstance(order, SortOrder):
        return order
    if isinstance(order, str):
        try:
            return SortOrder(order.strip().lower())
        except ValueError:
            pass
    raise FilterError(f"Unknown sort order {order!r}; expected one of: asc, desc")


@attrs.frozen
class SortSpec:
    """Sort by ``field`` in ``order``."""

    field: str
    order: SortOrder = SortOrder.ASC

    def to_dict(self) -> dict[str, str]:
        """``{"field", "order"}`` (the order's value)."""
        return {"field": self.field, "order": self.order.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SortSpec:
        """The inverse of :meth:`to_dict`; ``order`` defaults to ascending.

        :raises FilterError: no ``field``, or an unknown order.
        """
        if "field" not in data:
            raise FilterError(f"a sort dict needs a 'field' key: {dict(data)!r}")
        return cls(data["field"], coerce_sort_order(data.get("order", "asc")))


class DistanceMetric(enum.Enum):
    """A vector distance metric (dataknobs-data's names and values); accepted wherever a metric
    is (``vector_search(metric=DistanceMetric.DOT_PRODUCT)``)."""

    COSINE = "cosine"
    EUCLIDEAN = "euclidean"
    DOT_PRODUCT = "dot_product"
    INNER_PRODUCT = "inner_product"
    L2 = "l2"
    L1 = "l1"

    def get_aliases(self) -> list[str]:
        """Other names of this metric."""
        return list(_METRIC_ALIASES.get(self.value, ()))


_METRIC_ALIASES: dict[str, tuple[str, ...]] = {
    "cosine": ("cosine_similarity", "cos"),
    "euclidean": ("l2", "euclidean_distance"),
    "dot_product": ("inner_product", "ip"),
    "l1": ("manhattan", "l1_distance"),
}


@attrs.define
class VectorQuery:
    """A vector similarity search held by a :class:`Query` (dataknobs-data's ``VectorQuery``).

    ``vector`` is kept as given (a list or an array); ``metric`` a :class:`DistanceMetric` or a
    name. The store's search operations take these values as their arguments
    (``db.vector_search(vq.vector, vq.field_name, vq.k, metric=...)``).
    """

    vector: Any
    field_name: str = "embedding"
    k: int = 10
    metric: DistanceMetric | str = "cosine"
    include_source: bool = True
    score_threshold: float | None = None
    rerank: bool = False
    rerank_k: int | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``vector`` (a list), ``field``, ``k``, ``metric`` (its value),
        ``include_source``, and ``score_threshold``, ``rerank``, ``rerank_k``, ``metadata`` when set."""
        vector = self.vector.tolist() if isinstance(self.vector, np.ndarray) else list(self.vector)
        metric = self.metric.value if isinstance(self.metric, DistanceMetric) else self.metric
        out: dict[str, Any] = {
            "vector": vector,
            "field": self.field_name,
            "k": self.k,
            "metric": metric,
            "include_source": self.include_source,
        }
        if self.score_threshold is not None:
            out["score_threshold"] = self.score_threshold
        if self.rerank:
            out["rerank"] = True
            if self.rerank_k is not None:
                out["rerank_k"] = self.rerank_k
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VectorQuery:
        """The inverse of :meth:`to_dict`: the vector becomes a float32 array, a known metric
        name a :class:`DistanceMetric`."""
        if "vector" not in data:
            raise FilterError(f"a vector query dict needs a 'vector' key: {sorted(data)!r}")
        metric: DistanceMetric | str = data.get("metric", "cosine")
        if isinstance(metric, str):
            try:
                metric = DistanceMetric(metric)
            except ValueError:
                pass
        return cls(
            vector=np.asarray(data["vector"], dtype=np.float32),
            field_name=data.get("field", "embedding"),
            k=data.get("k", 10),
            metric=metric,
            include_source=data.get("include_source", True),
            score_threshold=data.get("score_threshold"),
            rerank=data.get("rerank", False),
            rerank_k=data.get("rerank_k"),
            metadata=dict(data.get("metadata") or {}),
        )

    def copy(self) -> VectorQuery:
        """A deep copy."""
        return copy.deepcopy(self)


def _check_count(what: str, n: int | None) -> int | None:
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise FilterError(f"{what} must be a non-negative int, got {n!r}")
    return n


@attrs.define
class Query:
    """Filters (ANDed), an optional OR/NOT condition, sorting, paging, projection and a vector query.

    The builder methods change the query and return it, as in dataknobs-data:
    ``Query().filter("year", ">=", 2020).sort_by("year", "desc").limit(10)``.
    """

    filters: list[Filter] = attrs.field(factory=list)
    sort_specs: list[SortSpec] = attrs.field(factory=list)
    limit_value: int | None = None
    offset_value: int | None = None
    fields: list[str] | None = None
    vector_query: VectorQuery | None = None
    condition: Expr | None = None

    def filter(self, field: str, operator: Operator | str = "=", value: Any = None) -> Query:
        """Add a condition (ANDed with the others). The operator is read by
        :func:`coerce_operator`; the operand is checked when the query is first compiled."""
        self.filters.append(Filter(field, operator, value))
        return self

    where = filter

    def sort_by(self, field: str, order: SortOrder | str = "asc") -> Query:
        """Sort the results by ``field`` (``"asc"`` or ``"desc"``); several calls sort by several keys."""
        self.sort_specs.append(SortSpec(field, coerce_sort_order(order)))
        return self

    sort = sort_by

    def limit(self, n: int | None) -> Query:
        """Return at most ``n`` records."""
        self.limit_value = _check_count("limit", n)
        return self

    set_limit = limit

    def offset(self, n: int | None) -> Query:
        """Skip the first ``n`` records."""
        self.offset_value = _check_count("offset", n)
        return self

    set_offset = offset

    def select(self, *fields: str) -> Query:
        """Return only these fields of each record (no fields: every field)."""
        self.fields = list(fields) if fields else None
        return self

    def clear_filters(self) -> Query:
        """Remove every filter (the list built by :meth:`filter`)."""
        self.filters = []
        return self

    def clear_sort(self) -> Query:
        """Remove every sort key."""
        self.sort_specs = []
        return self

    @property
    def sort_property(self) -> list[SortSpec]:
        """The sort keys (dataknobs-data's accessor of :attr:`sort_specs`)."""
        return self.sort_specs

    @property
    def limit_property(self) -> int | None:
        """The limit (dataknobs-data's accessor of :attr:`limit_value`)."""
        return self.limit_value

    @property
    def offset_property(self) -> int | None:
        """The offset (dataknobs-data's accessor of :attr:`offset_value`)."""
        return self.offset_value

    # -- vector query (held for the caller; search operations take their own arguments) --------
    def similar_to(
        self,
        vector: Any,
        field: str = "embedding",
        k: int = 10,
        metric: DistanceMetric | str = "cosine",
        include_source: bool = True,
        score_threshold: float | None = None,
    ) -> Query:
        """Set :attr:`vector_query` to a search for the ``k`` nearest to ``vector``, and the limit to ``k``."""
        self.vector_query = VectorQuery(
            vector=vector,
            field_name=field,
            k=k,
            metric=metric,
            include_source=include_source,
            score_threshold=score_threshold,
        )
        self.limit_value = k
        return self

    def near_text(
        self,
        text: str,
        embedding_fn: Callable[[str], Any],
        field: str = "embedding",
        k: int = 10,
        metric: DistanceMetric | str = "cosine",
        include_source: bool = True,
        score_threshold: float | None = None,
    ) -> Query:
        """:meth:`similar_to` the vector ``embedding_fn(text)``."""
        return self.similar_to(embedding_fn(text), field, k, metric, include_source, score_threshold)

    def hybrid(
        self,
        text_query: str | None = None,
        vector: Any = None,
        text_field: str = "content",
        vector_field: str = "embedding",
        alpha: float = 0.5,
        k: int = 10,
        metric: DistanceMetric | str = "cosine",
    ) -> Query:
        """Add ``text_field LIKE %text_query%`` (when given) and a vector query for ``vector``
        (when given, its ``metadata["hybrid_alpha"]`` is ``alpha``); the limit becomes ``k``
        unless set."""
        if text_query:
            self.filter(text_field, Operator.LIKE, f"%{text_query}%")
        if vector is not None:
            self.vector_query = VectorQuery(
                vector=vector, field_name=vector_field, k=k, metric=metric, metadata={"hybrid_alpha": alpha}
            )
        if self.limit_value is None:
            self.limit_value = k
        return self

    def with_reranking(self, rerank_k: int | None = None) -> Query:
        """Ask the vector query (if any) to rerank its best ``rerank_k`` (default ``2 * k``)."""
        if self.vector_query is not None:
            self.vector_query.rerank = True
            self.vector_query.rerank_k = rerank_k or self.vector_query.k * 2
        return self

    def clear_vector(self) -> Query:
        """Remove the vector query."""
        self.vector_query = None
        return self

    # -- boolean conditions ----------------------------------------------------------------------
    def _extend(self, expr: Expr) -> Query:
        self.condition = expr if self.condition is None else And((self.condition, expr))
        return self

    def or_(self, *items: Any) -> Query:
        """AND the query with "any of ``items``" (filters, queries, dicts or expressions).

        An item that holds no condition (an empty query) is left out, and so is an empty call:
        ``Query().or_()`` matches every record, as in dataknobs-data.
        """
        parts = tuple(e for e in (_compile(i) for i in items) if e is not None)
        return self._extend(Or(parts)) if parts else self

    def and_(self, *items: Any) -> Query:
        """AND the query with all of ``items``."""
        return self._extend(And(tuple(_as_expr(i) for i in items)))

    def not_(self, *items: Any) -> Query:
        """AND the query with "none of ``items``"."""
        return self._extend(Not(Or(tuple(_as_expr(i) for i in items))))

    def expression(self) -> Expr | None:
        """The compiled condition of the query, or ``None`` when it has none.

        :raises FilterError: a filter's operand does not suit its operator.
        """
        parts: list[Expr] = [Cond(f) for f in self.filters]
        if self.condition is not None:
            parts.append(self.condition.compiled())
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def matches(self, record: Record) -> bool:
        """Whether ``record`` satisfies the query's conditions."""
        expr = self.expression()
        return True if expr is None else expr.matches(record)

    def copy(self) -> Query:
        """A copy whose lists, condition and vector query can be changed independently."""
        out = copy.copy(self)
        out.filters = list(self.filters)
        out.sort_specs = list(self.sort_specs)
        out.fields = None if self.fields is None else list(self.fields)
        out.vector_query = None if self.vector_query is None else self.vector_query.copy()
        out.condition = copy.deepcopy(self.condition)
        return out

    # -- serialization ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``filters``, ``sort``, and ``limit``, ``offset``, ``fields``,
        ``vector_query``, ``condition`` (see :meth:`Expr.to_dict`) when set."""
        out: dict[str, Any] = {
            "filters": [f.to_dict() for f in self.filters],
            "sort": [s.to_dict() for s in self.sort_specs],
        }
        if self.limit_value is not None:
            out["limit"] = self.limit_value
        if self.offset_value is not None:
            out["offset"] = self.offset_value
        if self.fields is not None:
            out["fields"] = list(self.fields)
        if self.vector_query is not None:
            out["vector_query"] = self.vector_query.to_dict()
        if self.condition is not None:
            out["condition"] = self.condition.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Query:
        """The inverse of :meth:`to_dict` (every key optional)."""
        query = cls()
        query.filters = [Filter.from_dict(f) for f in data.get("filters", [])]
        query.sort_specs = [SortSpec.from_dict(s) for s in data.get("sort", [])]
        query.limit_value = _check_count("limit", data.get("limit"))
        query.offset_value = _check_count("offset", data.get("offset"))
        fields = data.get("fields")
        query.fields = None if fields is None else list(fields)
        if data.get("vector_query") is not None:
            query.vector_query = VectorQuery.from_dict(data["vector_query"])
        if data.get("condition") is not None:
            query.condition = expr_from_dict(data["condition"])
        return query


def _as_expr(item: Any) -> Expr:
    expr = _compile(item)
    return And(()) if expr is None else expr


#: How deep a filter may nest (``$and``/``$or``/``$not``, lists, expression trees). Real filters
#: stay far below it; a deeper one would exhaust Python's recursion on the way to a mask.
MAX_FILTER_DEPTH = 200


def _nesting(spec: Any) -> int:
    """How deep ``spec`` nests (dicts, lists and expressions), counted without recursion and
    stopping once past :data:`MAX_FILTER_DEPTH`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(spec, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_FILTER_DEPTH:
            return depth
        deepest = max(deepest, depth)
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        elif isinstance(node, (And, Or)):
            children = node.parts
        elif isinstance(node, Not):
            children = (node.part,)
        elif isinstance(node, Query):
            children = (node.expression(),)
        elif isinstance(node, Expr) and not isinstance(node, Cond):
            compiled = node.compiled()  # a boolean condition of query_logic
            if compiled is node:
                continue
            children = (compiled,)
        else:
            continue
        stack.extend((child, depth + 1) for child in children)
    return deepest


def compile_filter(spec: Any) -> Expr | None:
    """Compile any accepted filter form to an expression (``None`` means no condition).

    Accepts ``None``, a :class:`Query`, a :class:`Filter`, an :class:`Expr`, a dict (the shorthand),
    or a list/tuple of these (ANDed). Anything else raises :class:`FilterError`, and so does a
    filter nested deeper than :data:`MAX_FILTER_DEPTH` levels.
    """
    if spec is None:
        return None
    if not isinstance(spec, (Cond, Filter)) and _nesting(spec) > MAX_FILTER_DEPTH:
        raise FilterError(
            f"the filter is nested more than {MAX_FILTER_DEPTH} levels deep: flatten it "
            "(an $and or $or takes any number of conditions)"
        )
    return _compile(spec)


def _compile(spec: Any) -> Expr | None:
    if spec is None:
        return None
    if isinstance(spec, Expr):
        return spec.compiled()
    if isinstance(spec, Filter):
        return Cond(spec)
    if isinstance(spec, Query):
        return spec.expression()
    if isinstance(spec, Mapping):
        return _compile_dict(spec)
    if isinstance(spec, (list, tuple)):
        parts = [e for e in (_compile(s) for s in spec) if e is not None]
        return None if not parts else parts[0] if len(parts) == 1 else And(tuple(parts))
    raise FilterError(
        f"a filter must be a Query, Filter, dict or list of them, got {type(spec).__name__}: {spec!r}"
    )


def _compile_dict(spec: Mapping[str, Any]) -> Expr | None:
    parts: list[Expr] = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise FilterError(f"filter dict keys must be strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)):
                raise FilterError(f"{key} needs a list of filters, got {value!r}")
            subs = tuple(_as_expr(v) for v in value)
            parts.append(And(subs) if key == "$and" else Or(subs))
        elif key == "$not":
            parts.append(Not(_as_expr(value)))
        elif key.startswith("$"):
            raise FilterError(f"unknown filter key {key!r}; expected a field name, '$and', '$or' or '$not'")
        elif (
            isinstance(value, Mapping)
            and value
            and all(isinstance(k, str) and k.startswith("$") for k in value)
        ):
            for op_key, operand in value.items():
                op = Operator.coerce(op_key)
                if op in (Operator.EXISTS, Operator.NOT_EXISTS) and operand is not None:
                    if not isinstance(operand, bool):
                        raise FilterError(f"{op_key} on field {key!r} takes true or false, got {operand!r}")
                    if not operand:
                        op = Operator.NOT_EXISTS if op is Operator.EXISTS else Operator.EXISTS
                    operand = None
                parts.append(Cond(Filter(key, op, operand)))
        else:
            parts.append(Cond(Filter(key, Operator.EQ, value)))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(tuple(parts))


# --- columns ---------------------------------------------------------------------------------

_MAX_EXACT = 2**53


def _value_key(v: Any) -> Any:
    """A hashable key grouping values that every operator treats alike."""
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, (int, float)):
        if isinstance(v, float) and math.isnan(v):
            return ("nan",)
        return ("n", v)
    if isinstance(v, str):
        return ("s", v)
    try:
        hash(v)
        return ("h", type(v).__name__, v)
    except TypeError:
        try:
            return ("j", json.dumps(v, sort_keys=True, default=repr))
        except (TypeError, ValueError):
            return ("r", repr(v))


class Column:
    """A dictionary-encoded column of one field: row -> code of a distinct value (-1: absent).

    Built by the owning table from its rows and kept up to date on writes; masks are computed by
    deciding each condition once per distinct value (cached) and gathering by code.
    """

    def __init__(self) -> None:
        self._codes = np.full(0, -1, dtype=np.int32)
        self._n = 0
        self._keys: dict[Any, int] = {}
        self._values: list[Any] = []
        self._num = np.empty(0, dtype=np.float64)  # numeric value per distinct (NaN: not a number)
        self._is_num = np.empty(0, dtype=np.bool_)
        self._exact = True  # every numeric distinct value is exactly a float64
        self._cache: dict[Any, BoolArray] = {}

    def __len__(self) -> int:
        return self._n

    def _code(self, v: Any) -> int:
        if v is MISSING or v is None:
            return -1
        key = _value_key(v)
        code = self._keys.get(key)
        if code is None:
            code = len(self._values)
            self._keys[key] = code
            self._values.append(v)
            is_num = isinstance(v, numbers.Real) and not isinstance(v, np.ndarray)
            if len(self._num) <= code:
                grow = max(16, 2 * len(self._num))
                self._num = np.concatenate([self._num, np.full(grow, np.nan)])
                self._is_num = np.concatenate([self._is_num, np.zeros(grow, dtype=np.bool_)])
            if is_num:
                if isinstance(v, (bool, int, float)):
                    f = float(v)
                    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > _MAX_EXACT:
                        self._exact = False
                    self._num[code] = f
                    self._is_num[code] = True
                else:  # Decimal, Fraction, numpy scalars: decide with Python
                    self._exact = False
        return code

    def set(self, rows: Sequence[int] | npt.NDArray[np.int64], values: Sequence[Any]) -> None:
        """Set the value of each of ``rows`` (``records.MISSING`` for absent)."""
        if len(rows) == 0:
            return
        top = int(max(rows)) + 1
        if top > len(self._codes):
            new = np.full(max(top, int(len(self._codes) * 1.25) + 16), -1, dtype=np.int32)
            new[: self._n] = self._codes[: self._n]
            self._codes = new
        self._codes[np.asarray(rows, dtype=np.int64)] = [self._code(v) for v in values]
        self._n = max(self._n, top)

    def extend_to(self, nrows: int) -> None:
        """Make the column span ``nrows`` rows (new rows absent)."""
        if nrows > self._n:
            self.set([nrows - 1], [MISSING])

    def take(self, keep: npt.NDArray[np.int64]) -> Column:
        """A compacted column of rows ``keep`` (distinct values and caches are kept)."""
        out = Column.__new__(Column)
        out.__dict__.update(self.__dict__)
        out._codes = self._codes[keep[keep < self._n]].copy()
        out._n = len(out._codes)
        out._cache = dict(self._cache)
        return out

    def mask(self, flt: Filter, nrows: int) -> BoolArray:
        """Rows ``0..nrows-1`` whose value satisfies ``flt``."""
        lut = self._lut(flt)
        codes = (
            self._codes[:nrows]
            if nrows <= self._n
            else np.concatenate([self._codes[: self._n], np.full(nrows - self._n, -1, dtype=np.int32)])
        )
        return lut[codes]  # code -1 indexes the last slot: the absent / None result

    # The lookup table has one entry per distinct value, plus one (last) for absent/None.
    def _lut(self, flt: Filter) -> BoolArray:
        key = (
            flt.operator,
            _value_key(flt.value)
            if not isinstance(flt.value, (list, tuple))
            # the sequence type is part of the key: [1, 2] == (1, 2) is False in Python
            else ("t", type(flt.value).__name__, tuple(_value_key(x) for x in flt.value)),
        )
        nd = len(self._values)
        cached = self._cache.get(key)
        if cached is not None and len(cached) == nd + 1:
            return cached
        start = 0 if cached is None else len(cached) - 1
        part = self._decide(flt, start, nd)
        absent = np.array([_predicate(flt.operator, flt.operand, None)], dtype=np.bool_)
        lut = np.concatenate([cached[:-1] if cached is not None else np.empty(0, np.bool_), part, absent])
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[key] = lut
        return lut

    def _decide(self, flt: Filter, start: int, stop: int) -> BoolArray:
        """The condition for distinct values ``start..stop-1``."""
        op, operand = flt.operator, flt.operand
        out = np.zeros(stop - start, dtype=np.bool_)
        if stop == start:
            return out
        if op is Operator.EXISTS:
            return ~out
        if op is Operator.NOT_EXISTS:
            return out
        is_num = self._is_num[start:stop]
        num = self._num[start:stop]
        fast = self._exact and _numeric_operand(op, operand)
        if fast:
            out[is_num] = _numeric_decide(op, operand, num[is_num])
            todo = np.flatnonzero(~is_num)
        else:
            todo = np.arange(stop - start)
        if op is Operator.EQ and isinstance(operand, str):
            code = self._keys.get(("s", operand))
            if code is not None and start <= code < stop:
                out[code - start] = True
            return out
        values = self._values
        for j in todo:  # once per distinct value, cached: not per row
            out[j] = _predicate(op, operand, values[start + int(j)])
        return out


def _numeric_operand(op: Operator, operand: Any) -> bool:
    def ok(x: Any) -> bool:
        return isinstance(x, (int, float)) and (not isinstance(x, int) or abs(x) <= _MAX_EXACT)

    base = _NEGATIVE.get(op, op)
    if base in (Operator.EQ, Operator.GT, Operator.GTE, Operator.LT, Operator.LTE):
        return ok(operand)
    if base in (Operator.BETWEEN, Operator.IN):
        return len(operand) > 0 and all(ok(x) for x in operand)
    return False


def _numeric_decide(op: Operator, operand: Any, num: npt.NDArray[np.float64]) -> BoolArray:
    negate = op in _NEGATIVE
    base = _NEGATIVE.get(op, op)
    with np.errstate(invalid="ignore"):
        if base is Operator.EQ:
            res = num == float(operand)
        elif base is Operator.GT:
            res = num > float(operand)
        elif base is Operator.GTE:
            res = num >= float(operand)
        elif base is Operator.LT:
            res = num < float(operand)
        elif base is Operator.LTE:
            res = num <= float(operand)
        elif base is Operator.BETWEEN:
            res = (num >= float(operand[0])) & (num <= float(operand[1]))
        else:  # IN
            res = np.isin(num, np.array([float(x) for x in operand]))
    out: BoolArray = ~res if negate else res
    return out
