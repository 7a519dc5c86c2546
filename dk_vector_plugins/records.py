"""The record model: :class:`Record`, :class:`Field`, :class:`VectorField` (search results are in :mod:`dk_vector_plugins.types`).

Names and signatures follow dataknobs-data 0.11 so that code written against it runs with only the
import changed: ``Record(data, metadata, id)``, ``record.id``, ``record["field"]`` (the value),
``record.get_value("a.b", default)``, ``record.fields["embedding"]`` (the field object),
``VectorField(value, name=None, dimensions=None, source_field=None, model_name=None,
model_version=None)`` holding a 1-D float32 array.

A field holds a vector when its value is a :class:`VectorField` or a 1-D numeric ``numpy`` array;
everything else is ordinary (filterable) data, of the types :mod:`dk_vector_plugins.values`
describes (checked when a store writes the record, the same way on every backend).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from .errors import DimensionMismatchError

__all__ = ["Field", "Record", "VectorField", "new_id"]

_MISSING = object()


def new_id() -> str:
    """A fresh random record id (a UUID4 string)."""
    return str(uuid.uuid4())


@attrs.define(eq=False)
class Field:
    """A named value of a record (dataknobs-data's ``Field``); records store plain values."""

    name: str
    value: Any
    type: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Field):
            return NotImplemented
        return self.name == other.name and _values_equal(self.value, other.value)


class VectorField:
    """A vector value of a record: a 1-D float32 array plus where it came from.

    :param value: a sequence of numbers or a 1-D array (copied to float32).
    :param name: the field name (defaults to ``"embedding"``, or the record key it is stored under).
    :param dimensions: the expected length; a mismatch raises :class:`DimensionMismatchError`.
    :param source_field: the text field the vector was computed from.
    :param model_name: the embedding model's name; ``model_version`` its version.
    """

    __slots__ = ("metadata", "model_name", "model_version", "name", "source_field", "value")
    type = "vector"

    def __init__(
        self,
        value: npt.ArrayLike,
        name: str | None = None,
        dimensions: int | None = None,
        source_field: str | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        from .vectors import as_vector

        vec = as_vector(value, what=f"vector field {name or 'embedding'!r}")
        if dimensions is not None and vec.shape[0] != dimensions:
            raise DimensionMismatchError(
                f"vector field {name or 'embedding'!r} has {vec.shape[0]} dimensions, expected {dimensions}"
            )
        self.name: str = name or "embedding"
        self.value: npt.NDArray[np.float32] = vec
        self.source_field = source_field
        self.model_name = model_name
        self.model_version = model_version
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def dimensions(self) -> int:
        """The vector's length."""
        return int(self.value.shape[0])

    def to_list(self) -> list[float]:
        """The vector as a list of Python floats."""
        return [float(x) for x in self.value]

    def info(self) -> dict[str, Any]:
        """Everything but the vector, JSON-ready (what the table format stores beside it)."""
        out: dict[str, Any] = {}
        for key in ("source_field", "model_name", "model_version"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.metadata:
            out["metadata"] = self.metadata
        return out

    @classmethod
    def from_info(cls, value: npt.ArrayLike, name: str, info: Mapping[str, Any]) -> VectorField:
        """Rebuild a field from a vector and :meth:`info`."""
        return cls(
            value,
            name=name,
            source_field=info.get("source_field"),
            model_name=info.get("model_name"),
            model_version=info.get("model_version"),
            metadata=info.get("metadata"),
        )

    @classmethod
    def _stored(cls, value: npt.NDArray[np.float32], name: str, info: Mapping[str, Any]) -> VectorField:
        """:meth:`from_info` for a store's own copy of a vector it validated when storing it
        (taken as it is: building search results does not validate every hit again)."""
        field = cls.__new__(cls)
        field.name = name
        field.value = value
        field.source_field = info.get("source_field")
        field.model_name = info.get("model_name")
        field.model_version = info.get("model_version")
        field.metadata = dict(info.get("metadata") or {})
        return field

    def copy(self) -> VectorField:
        """A deep copy."""
        return VectorField.from_info(self.value, self.name, copy.deepcopy(self.info()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorField):
            return NotImplemented
        return (
            np.array_equal(self.value, other.value)
            and self.source_field == other.source_field
            and self.model_name == other.model_name
            and self.model_version == other.model_version
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(f"{x:.4g}" for x in self.value[:4])
        more = ", ..." if self.dimensions > 4 else ""
        return f"VectorField([{head}{more}], name={self.name!r}, dimensions={self.dimensions})"


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return bool(a == b)


def is_vector_value(value: Any) -> bool:
    """Whether a field value is stored as a vector (a VectorField or a 1-D numeric ndarray)."""
    return isinstance(value, VectorField) or (
        isinstance(value, np.ndarray) and value.ndim == 1 and np.issubdtype(value.dtype, np.number)
    )


class Record:
    """A record: an id, data fields (some of them vectors) and free-form metadata.

    ``Record(data=None, metadata=None, id=None)``. When ``id`` is not given it is taken from a
    data field ``"id"`` or ``metadata["id"]`` (as dataknobs-data does); a store assigns a fresh
    UUID to a record that still has none. Values of :class:`Field` objects in ``data`` are
    unwrapped; :class:`VectorField` values are kept (with their name set to the key).
    """

    __slots__ = ("_data", "_id", "metadata")

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        id: str | None = None,
        storage_id: str | None = None,
    ) -> None:
        self._data: dict[str, Any] = {}
        for key, value in (data or {}).items():
            self._set(str(key), value)
        self.metadata: dict[str, Any] = dict(metadata or {})
        rid = id if id is not None else storage_id
        if rid is None:
            rid = self._data.get("id", self.metadata.get("id"))
        self._id: str | None = None if rid is None else str(rid)

    # -- identity -----------------------------------------------------------------------------
    @property
    def id(self) -> str | None:
        """The record's id (``None`` until a store assigns one)."""
        return self._id

    @id.setter
    def id(self, value: str | None) -> None:
        self._id = None if value is None else str(value)

    storage_id = id

    # -- field access -------------------------------------------------------------------------
    def _set(self, key: str, value: Any) -> None:
        if isinstance(value, VectorField):
            if value.name != key:
                value = value.copy()
                value.name = key
        elif isinstance(value, Field):
            value = value.value
        self._data[key] = value

    @property
    def data(self) -> dict[str, Any]:
        """Field name -> value (vectors as float32 arrays). A new dict; values are not copied."""
        return {k: (v.value if isinstance(v, VectorField) else v) for k, v in self._data.items()}

    @property
    def fields(self) -> dict[str, Field | VectorField]:
        """Field name -> :class:`Field` (or the :class:`VectorField`), as in dataknobs-data."""
        return {k: (v if isinstance(v, VectorField) else Field(k, v)) for k, v in self._data.items()}

    def vector_fields(self) -> dict[str, VectorField]:
        """The fields that hold vectors, as :class:`VectorField` objects."""
        out: dict[str, VectorField] = {}
        for k, v in self._data.items():
            if isinstance(v, VectorField):
                out[k] = v
            elif is_vector_value(v):
                out[k] = VectorField(v, name=k)
        return out

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        return value.value if isinstance(value, VectorField) else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._set(key, value)

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of field ``key`` (exact name), or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def get_value(self, name: str, default: Any = None) -> Any:
        """The value at ``name``, following dotted paths into nested dicts.

        ``"id"`` is the record id; ``"metadata.x"`` reads :attr:`metadata` unless a data field
        called ``metadata`` exists.
        """
        value = lookup(self._id, self._data, self.metadata, name)
        if value is _MISSING:
            return default
        return value.value if isinstance(value, VectorField) else value

    def set_value(self, name: str, value: Any) -> None:
        """Set field ``name`` to ``value``."""
        self._set(name, value)

    # -- conversion ---------------------------------------------------------------------------
    def to_dict(self, include_metadata: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: the data fields (vectors as lists), ``_id``, and ``_metadata`` if asked."""
        out: dict[str, Any] = {}
        for k, v in self._data.items():
            out[k] = (
                v.to_list()
                if isinstance(v, VectorField)
                else (v.tolist() if isinstance(v, np.ndarray) else v)
            )
        if self._id is not None:
            out["_id"] = self._id
        if include_metadata:
            out["_metadata"] = dict(self.metadata)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        """The inverse of :meth:`to_dict` (vectors come back as plain lists)."""
        d = dict(d)
        rid = d.pop("_id", None)
        metadata = d.pop("_metadata", None)
        return cls(d, metadata=metadata, id=rid)

    def copy(self, deep: bool = True) -> Record:
        """A copy; with ``deep`` (the default) nothing is shared with this record."""
        rec = Record.__new__(Record)
        if deep:
            rec._data = {
                k: (v.copy() if isinstance(v, VectorField) else copy.deepcopy(v))
                for k, v in self._data.items()
            }
            rec.metadata = copy.deepcopy(self.metadata)
        else:
            rec._data = dict(self._data)
            rec.metadata = dict(self.metadata)
        rec._id = self._id
        return rec

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (
            self._id == other._id
            and self.metadata == other.metadata
            and self._data.keys() == other._data.keys()
            and all(_values_equal(v, other._data[k]) for k, v in self._data.items())
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Record(id={self._id!r}, data={self._data!r})"


def lookup(rid: str | None, data: Mapping[str, Any], metadata: Mapping[str, Any], name: str) -> Any:
    """Resolve a field path against a record's parts; returns the module's MISSING sentinel if absent."""
    if name == "id":
        return rid if rid is not None else data.get("id", _MISSING)
    if name in data:
        return data[name]
    if "." not in name:
        return _MISSING
    head, _, rest = name.partition(".")
    if head == "metadata" and "metadata" not in data:
        base: Any = metadata
    elif head == "fields":
        return lookup(rid, data, metadata, rest)
    elif head in data:
        base = data[head]
    else:
        return _MISSING
    for part in rest.split("."):
        if isinstance(base, Mapping) and part in base:
            base = base[part]
        else:
            return _MISSING
    return base


MISSING = _MISSING
