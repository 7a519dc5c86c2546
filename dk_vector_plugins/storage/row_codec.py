"""The row codec: a segment's ``rows.jsonl`` (one JSON object per row: data, metadata, vector info).

:func:`encode_row` writes a row; :func:`decode_rows` and :class:`LazyRows` read them (the latter
one row at a time, on access). The values are those of :mod:`dk_vector_plugins.values`. The ones
JSON cannot carry natively are written as one-key objects whose key is a tag::

    {"$datetime": "2024-01-01T12:00:00+00:00"}   {"$date": "2024-01-01"}   {"$bytes": "AP8="}
    {"$tuple": [1, "a"]}                         {"$dict": [["$date", "garbage"]]}

A one-key object whose key starts with ``$`` is reserved for tags: a user's dict of that shape is
written as ``$dict`` (its items as ``[key, value]`` pairs, so that nothing in it is read as a tag),
and any other dict as it is. Rows without tuples or such dicts are written exactly as by earlier
versions, whose readers parse the new tags too (as the plain dicts they are). Reading is lenient
the other way: a tag whose content does not decode (``{"$date": "garbage"}``, a user's dict that
an earlier version wrote unescaped) reads back as that dict.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import operator
from collections.abc import Mapping, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from ..errors import InvalidRequestError, StorageError

__all__ = ["EMPTY_ROW", "LazyRows", "RowParts", "decode_rows", "encode_row", "line_at", "line_ends"]

#: Values stored as JSON scalars or by :func:`_encode` (nothing inside them to escape).
_LEAVES = frozenset({str, int, float, bool, type(None), dt.datetime, dt.date, bytes})


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"a value of type {type(value).__name__} cannot be stored")


def _escaped(value: Any) -> Any:
    """``value`` with its tuples and its one-key dicts with a ``$`` key written as tags: the
    value itself when it holds none (the common case: a type check per container, no copy)."""
    t = type(value)
    if t is dict:
        if len(value) == 1:
            key = next(iter(value))
            if isinstance(key, str) and key[:1] == "$":
                return {"$dict": [[key, _escaped(value[key])]]}
        if _LEAVES.issuperset(map(type, value.values())):
            return value
        out = None
        for k, v in value.items():
            if type(v) not in _LEAVES and (e := _escaped(v)) is not v:
                if out is None:
                    out = dict(value)
                out[k] = e
        return value if out is None else out
    if t is list:
        if _LEAVES.issuperset(map(type, value)):
            return value
        items = [_escaped(v) for v in value]
        return value if all(map(operator.is_, items, value)) else items
    if t is tuple:
        return {"$tuple": [_escaped(v) for v in value]}
    return value


def _pairs(value: Any) -> bool:
    return type(value) is list and all(type(p) is list and len(p) == 2 and type(p[0]) is str for p in value)


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) != 1:
        return obj
    key, value = next(iter(obj.items()))
    try:
        if key == "$datetime":
            return dt.datetime.fromisoformat(value)
        if key == "$date":
            return dt.date.fromisoformat(value)
        if key == "$bytes":
            return base64.b64decode(value, validate=True)
    except (TypeError, ValueError):  # binascii.Error is a ValueError
        return obj  # not a tag: a user's dict written unescaped by an earlier version
    if key == "$tuple" and type(value) is list:
        return tuple(value)
    if key == "$dict" and _pairs(value):
        return dict(value)
    return obj


def encode_row(rid: str, data: Mapping[str, Any], meta: Mapping[str, Any], vinfo: Mapping[str, Any]) -> bytes:
    """One row as a JSON line; a value JSON cannot hold raises :class:`InvalidRequestError`."""
    try:
        return (
            json.dumps(
                {"d": _escaped(data), "m": _escaped(meta), "v": _escaped(vinfo)},
                default=_encode,
                ensure_ascii=False,
            ).encode()
            + b"\n"
        )
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"record {rid!r} cannot be stored by this backend: {e}") from e


def decode_rows(raw: bytes, where: str) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """Parse a segment's rows."""
    out = []
    try:
        for line in raw.splitlines():
            if line:
                obj = json.loads(line, object_hook=_decode)
                out.append((obj["d"], obj["m"], obj["v"]))
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError(f"corrupt segment rows {where}: {e}") from e
    return out


RowParts = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


def line_ends(raw: bytes) -> npt.NDArray[np.intp]:
    """The offsets of the newlines of ``raw`` (one per complete line), in order."""
    return np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == 10)


def line_at(ends: npt.NDArray[np.intp], i: int) -> tuple[int, int, int]:
    """(index, start, end) of line ``i`` (negative from the end) of a buffer whose newlines are
    at ``ends``; ``end`` is the newline's offset."""
    n = len(ends)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(i)
    return i, int(ends[i - 1]) + 1 if i else 0, int(ends[i])


class LazyRows(Sequence[RowParts]):
    """A segment's rows parsed one at a time on access: opening a big segment to show a few
    search hits parses those rows, not all of them. Only complete (newline-ended) lines count."""

    def __init__(self, raw: bytes, where: str) -> None:
        self._raw = raw
        self._where = where
        self._ends = line_ends(raw)

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, i: int) -> RowParts: ...
    @overload
    def __getitem__(self, i: slice) -> list[RowParts]: ...
    def __getitem__(self, i: int | slice) -> RowParts | list[RowParts]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i, start, end = line_at(self._ends, i)
        line = self._raw[start : end + 1]
        if line == EMPTY_ROW:
            return {}, {}, {}
        try:
            obj = _DECODER.decode(line.decode())
            return obj["d"], obj["m"], obj["v"]
        except (ValueError, KeyError, TypeError) as e:  # UnicodeDecodeError is a ValueError
            raise StorageError(f"corrupt segment rows {self._where} (row {i}): {e}") from e


#: A row with no data, metadata or vector info (vector-only records): encoded once.
EMPTY_ROW = b'{"d": {}, "m": {}, "v": {}}\n'
#: One decoder for every row (``json.loads(..., object_hook=...)`` builds a new one per call).
_DECODER = json.JSONDecoder(object_hook=_decode)
