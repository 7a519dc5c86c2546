"""The value model: what a record can hold, checked once, the same way for every backend.

A store holds what JSON carries -- ``None``, ``bool``, ``int`` (of at most 4300 digits, the most
Python converts to and from text by default), ``float`` (NaN and the infinities included),
``str`` (Unicode text: no lone surrogates, which UTF-8 cannot encode), ``list`` and ``dict`` with
``str`` keys -- plus ``datetime.datetime``, ``datetime.date``, ``bytes`` and ``tuple``. A few
other inputs are stored as the equal value of one of these types (what every backend reads back,
so also what the memory backend keeps):

* ``bytearray`` as ``bytes``; numpy bool, integer, floating and string scalars as the Python
  scalar; subclasses of ``str``, ``int``, ``float``, ``list``, ``tuple`` and ``dict`` (enums,
  named tuples, ``OrderedDict``, any ``Mapping``) as the base type;
* an aware ``datetime`` as the datetime with its fixed UTC offset (what ISO 8601 text keeps: a
  ``zoneinfo`` zone becomes ``datetime.timezone(offset)``, still equal to the original).

A :class:`~dk_vector_plugins.records.Field` object is stored as its value (its type and metadata
belong to the record object, not to the store).

A 1-D numeric numpy array or a :class:`~dk_vector_plugins.records.VectorField` is a vector when it
is a field of its own (:func:`~dk_vector_plugins.records.is_vector_value`); an array anywhere else,
and every other type (sets, complex numbers, ``Decimal``, arbitrary objects, ``dict`` keys that are
not ``str``), raises :class:`InvalidRequestError` naming the record and the field path when the
write is planned: before anything is stored, on memory exactly as on file and S3.

The common case costs little: a batch of flat dicts of scalars is checked with a few passes over
all their keys and values at once (type sets, not a Python call per value), and copied with
``dict``. Only a batch that holds anything else is walked value by value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from .errors import InvalidRequestError
from .records import Field

__all__ = ["MAX_INT_DIGITS", "check_ids", "check_names", "normalize_dicts"]

#: Types stored as they are, with nothing inside them to check but text and int size.
_FLAT = frozenset({str, int, float, bool, type(None)})
#: A lone surrogate: a ``str`` can hold one (``"\ud800"``), UTF-8 cannot encode it.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Python converts ints of at most this many digits to text and back (``sys.int_info``).
MAX_INT_DIGITS = 4300
_INT_LIMIT = 10**MAX_INT_DIGITS
_NOT_TEXT = "is not valid Unicode text (it holds a lone surrogate, which UTF-8 cannot encode)"


class _Unstorable(Exception):
    """A value no store holds: where (``path``, outermost first) and why."""

    def __init__(self, problem: str, key: Any = None, is_key: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.key = key
        self.is_key = is_key
        self.path: list[str | int] = []

    def message(self, rid: str, part: str) -> str:
        """The error text for record ``rid``, whose ``part`` ("data", "metadata"...) held it."""
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path).lstrip(".")
        if self.is_key:
            what = f"{part} field {path!r} has the key" if path else f"{part} has the field name"
            return f"record {rid!r}: {what} {self.key!r} ({type(self.key).__name__}), which {self.problem}"
        return f"record {rid!r}: {part} field {path!r} {self.problem}"


def _is_text(s: str) -> bool:
    return s.isascii() or _SURROGATE.search(s) is None


def _flat_ok(values: Sequence[Any], types: set[type]) -> bool:
    """Whether ``values`` (of ``types``, all flat) are stored as they are: text is valid and ints
    are short enough (one pass per type present, no Python call per value)."""
    if str in types:
        texts = [v for v in values if v.__class__ is str]
        if not all(map(str.isascii, texts)) and not all(map(_is_text, texts)):
            return False
    if int in types:
        ints = [v for v in values if v.__class__ is int]
        if max(ints) >= _INT_LIMIT or min(ints) <= -_INT_LIMIT:
            return False
    return True


def _keys_ok(keys: Iterable[Any]) -> bool:
    ks = keys if isinstance(keys, (set, frozenset)) else set(keys)
    return set(map(type, ks)) <= {str} and (all(map(str.isascii, ks)) or all(map(_is_text, ks)))


def _key(k: Any) -> str:
    if type(k) is str:
        if _is_text(k):
            return k
    elif isinstance(k, str):
        return _key(str.__str__(k))
    else:
        raise _Unstorable("is not a str: keys and field names must be str", k, is_key=True)
    raise _Unstorable(_NOT_TEXT, k, is_key=True)


def _dict(d: Mapping[Any, Any]) -> dict[str, Any]:
    if type(d) is dict and _keys_ok(d):
        values = list(d.values())
        types = set(map(type, values))
        if _flat_ok(values, types):
            return dict(d) if types <= _FLAT else _with_nested(d)
    out: dict[str, Any] = {}  # something to convert or reject: key by key
    at: str | None = None  # the key whose value is being checked
    try:
        for k, v in d.items():
            at = None
            key = _key(k)
            at = key
            out[key] = _value(v)
    except _Unstorable as e:
        if at is not None:
            e.path.insert(0, at)
        raise
    return out


def _with_nested(d: Mapping[str, Any]) -> dict[str, Any]:
    """A dict whose keys and flat values are known to be stored as they are: the others converted."""
    out = dict(d)
    k = ""
    try:
        for k, v in d.items():
            if v.__class__ not in _FLAT:
                out[k] = _value(v)
    except _Unstorable as e:
        e.path.insert(0, k)
        raise
    return out


def _items(seq: list[Any] | tuple[Any, ...]) -> list[Any]:
    types = set(map(type, seq))
    if types <= _FLAT and _flat_ok(seq, types):
        return list(seq)
    out: list[Any] = []
    try:
        for v in seq:
            out.append(_value(v))
    except _Unstorable as e:
        e.path.insert(0, len(out))  # the index of the item that failed
        raise
    return out


def _datetime(v: dt.datetime) -> dt.datetime:
    if type(v) is dt.datetime and (v.tzinfo is None or v.tzinfo is dt.timezone.utc) and not v.fold:
        return v
    plain = dt.datetime(
        v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.tzinfo, fold=v.fold
    )
    return dt.datetime.fromisoformat(plain.isoformat())  # what ISO text keeps


def _value(v: Any) -> Any:
    """``v`` as the store holds it (owned: no mutable container is shared with ``v``)."""
    t = type(v)
    if t is str:
        if _is_text(v):
            return v
        raise _Unstorable(f"holds the string {v!r}, which {_NOT_TEXT}")
    if t is int:
        if -_INT_LIMIT < v < _INT_LIMIT:
            return v
        raise _Unstorable(f"holds an int of more than {MAX_INT_DIGITS} digits: store it as a str")
    if t is float or t is bool or v is None or t is bytes or t is dt.date:
        return v
    if t is dict:
        return _dict(v)
    if t is list:
        return _items(v)
    if t is tuple:
        return tuple(_items(v))
    if t is dt.datetime:
        return _datetime(v)
    return _converted(v)


def _converted(v: Any) -> Any:
    """A value of another type: the equal value of a stored type, or :class:`_Unstorable`."""
    if isinstance(v, Field):
        return _value(v.value)
    if isinstance(v, np.generic) and not isinstance(v, (np.str_, np.bytes_)):  # those: str, bytes
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.integer) and not isinstance(v, np.timedelta64):  # that one has a unit
            return _value(int(v))
        if isinstance(v, np.floating):
            return float(v)
        raise _Unstorable(f"holds a numpy {v.dtype} scalar, which no store holds")
    if isinstance(v, str):
        return _value(str.__str__(v))
    if isinstance(v, int):  # IntEnum, IntFlag and other subclasses
        return _value(int(v))
    if isinstance(v, float):
        return float(v)
    if isinstance(v, Mapping):
        return _dict(v)
    if isinstance(v, (list, tuple)):
        return _items(v) if isinstance(v, list) else tuple(_items(v))
    if isinstance(v, dt.datetime):
        return _datetime(v)
    if isinstance(v, dt.date):
        return dt.date(v.year, v.month, v.day)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, np.ndarray):
        raise _Unstorable(_array_problem(v))
    name = type(v).__name__
    raise _Unstorable(f"holds a value of type {name}, which no store holds{_HINTS.get(name, _HINT)}")


_HINT = ": use a str, number, bool, None, list, tuple, dict, bytes, date or datetime"
_HINTS = {
    "set": ": use a list (or a sorted one)",
    "frozenset": ": use a list (or a sorted one)",
    "complex": ": store its real and imag parts",
    "Decimal": ": store it as a str (or a float)",
    "VectorField": ": a vector is a field of its own, not part of another value",
}


def _array_problem(a: np.ndarray[Any, Any]) -> str:
    if a.ndim == 1 and np.issubdtype(a.dtype, np.number):
        return (
            f"holds a vector (a 1-D numeric numpy array of {a.dtype}) where plain data is expected: a "
            "vector is a field of its own of a Record (create or upsert it); call .tolist() to keep "
            "the numbers as plain data"
        )
    return (
        f"holds a {a.ndim}-D numpy array of {a.dtype} (shape {a.shape}), which is not a vector: a "
        "vector field holds one 1-D numeric array (or a VectorField); store one field per vector, or "
        "call .tolist() to keep the numbers as plain data"
    )


def normalize_dicts(dicts: Sequence[Any], ids: Sequence[str], part: str) -> list[dict[str, Any]]:
    """The record parts ``dicts`` (of records ``ids``) as every backend holds them: new dicts
    sharing nothing mutable with the given ones. ``part`` names them in errors ("data",
    "metadata", ...). Raises :class:`InvalidRequestError` naming the record and the field path.
    """
    convert = _dict
    if set(map(type, dicts)) <= {dict} and _keys_ok(chain.from_iterable(dicts)):
        values = list(chain.from_iterable(map(dict.values, dicts)))
        types = set(map(type, values))
        if _flat_ok(values, types):
            if types <= _FLAT:  # the common case: flat dicts of scalars
                return list(map(dict, dicts))
            convert = _with_nested  # keys and flat values are fine: only the others to see
    out: list[dict[str, Any]] = []
    for d, rid in zip(dicts, ids):
        if not isinstance(d, Mapping):
            raise InvalidRequestError(f"record {rid!r}: {part} must be a dict, got {type(d).__name__}")
        try:
            out.append(convert(d))
        except _Unstorable as e:
            raise InvalidRequestError(e.message(rid, part)) from None
    return out


def check_names(names: Iterable[str], owner: Mapping[str, str], part: str) -> None:
    """Field names kept apart from a record's dicts (its vector fields') are valid text;
    ``owner`` maps a name to the id of a record that holds it (named in the error)."""
    names = list(names)
    if not _keys_ok(names):
        for name in names:
            try:
                _key(name)
            except _Unstorable as e:
                raise InvalidRequestError(e.message(owner[name], part)) from None


def check_ids(ids: Sequence[Any], what: str = "records") -> None:
    """Record ids are non-empty ``str`` of valid text; raises :class:`InvalidRequestError` naming
    the bad one and its position in ``what``."""
    if set(map(type, ids)) <= {str} and "" not in ids and "".join(ids).isascii():
        return
    for i, rid in enumerate(ids):
        if not isinstance(rid, str) or not rid:
            raise InvalidRequestError(f"record ids must be non-empty strings; {what}[{i}] has the id {rid!r}")
        if not _is_text(rid):
            raise InvalidRequestError(f"record id {rid!r} ({what}[{i}]) {_NOT_TEXT}")
