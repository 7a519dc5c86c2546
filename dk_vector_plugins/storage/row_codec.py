"""The row codec: a segment's ``rows.jsonl`` (one JSON object per row: data, metadata, vector info).

:func:`encode_row` writes a row; :func:`decode_rows` and :class:`LazyRows` read them (the latter
one row at a time, on access). Values JSON cannot carry natively are written as one-key tagged
objects (``{"$datetime": ...}``, ``{"$date": ...}``, ``{"$bytes": ...}``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from ..errors import InvalidRequestError, StorageError

__all__ = ["EMPTY_ROW", "LazyRows", "RowParts", "decode_rows", "encode_row", "line_at"]


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (set, frozenset)):
        raise TypeError("sets are not stored; use a list")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"a value of type {type(value).__name__} cannot be stored")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        key, value = next(iter(obj.items()))
        if key == "$datetime":
            return dt.datetime.fromisoformat(value)
        if key == "$date":
            return dt.date.fromisoformat(value)
        if key == "$bytes":
            return base64.b64decode(value)
    return obj


def encode_row(rid: str, data: Mapping[str, Any], meta: Mapping[str, Any], vinfo: Mapping[str, Any]) -> bytes:
    """One row as a JSON line; a value JSON cannot hold raises :class:`InvalidRequestError`."""
    try:
        return (
            json.dumps({"d": data, "m": meta, "v": vinfo}, default=_encode, ensure_ascii=False).encode()
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
        self._ends = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == 10)

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
