"""The record model: :class:`Record`, :class:`Field`, :class:`VectorField` (search results are in :mod:`dk_vector_plugins.types`).

Names and signatures follow dataknobs-data 0.11 so that code written against it runs with only the
import changed: ``Record(data, metadata, id)``, ``record.id``, ``record["field"]`` (the value),
``record.get_value("a.b", default)``, ``record.fields["embedding"]`` (the field object),
``VectorField(value, name=None, dimensions=None, source_field=None, model_name=None,
model_version=None)`` holding a 1-D float32 array.

A field holds a vector when its value is a :class:`VectorField` or a 1-D numeric ``numpy`` array;
everything else is ordinary (filterable) data, of the types :mod:`dk_vector_plugins.values`
describes (checked when a store writes the record, the same way on every backend).

dataknobs-data's record API is here too: ``record.get_field(name)`` (a :class:`Field` with a
:class:`FieldType` and metadata), ``set_field``, ``has_field``, ``remove_field``, ``field_names``,
``merge``, ``project``, ``validate``, ``record.name`` for a field's value, ``record[0]`` for the
first :class:`Field`, ``to_dict(flatten=False)`` and its structured form in ``from_dict``. A
field's type and metadata live with the record object; a store keeps the values (what every backend
reads back is the plain value).
"""

from __future__ import annotations

import copy
import datetime as dt
import enum
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import numpy.typing as npt

from .errors import DimensionMismatchError

__all__ = [
    "Field",
    "FieldType",
    "Record",
    "RecordFields",
    "VectorField",
    "VectorMetadata",
    "detect_field_type",
    "is_number_list",
    "new_id",
]

_MISSING = object()


def new_id() -> str:
    """A fresh random record id (a UUID4 string)."""
    return str(uuid.uuid4())


class FieldType(str, enum.Enum):
    """The type of a :class:`Field`'s value (dataknobs-data's names and values); a member equals
    its value (``FieldType.VECTOR == "vector"``)."""

    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    JSON = "json"
    BINARY = "binary"
    TEXT = "text"
    VECTOR = "vector"
    SPARSE_VECTOR = "sparse_vector"


#: A string longer than this is TEXT rather than STRING.
_SHORT_TEXT = 1000


def detect_field_type(value: Any) -> FieldType:
    """The :class:`FieldType` of ``value``, as dataknobs-data detects it (``None`` is a STRING; a
    string of more than 1000 characters TEXT; a vector VECTOR; anything unlisted JSON)."""
    if value is None:
        return FieldType.STRING
    if isinstance(value, bool):
        return FieldType.BOOLEAN
    if isinstance(value, int):
        return FieldType.INTEGER
    if isinstance(value, float):
        return FieldType.FLOAT
    if isinstance(value, dt.datetime):
        return FieldType.DATETIME
    if isinstance(value, (bytes, bytearray)):
        return FieldType.BINARY
    if isinstance(value, str):
        return FieldType.TEXT if len(value) > _SHORT_TEXT else FieldType.STRING
    if isinstance(value, VectorField):
        return FieldType.VECTOR
    return FieldType.JSON


def _field_type(value: FieldType | str | None) -> FieldType | None:
    if value is None or isinstance(value, FieldType):
        return value
    try:
        return FieldType(str(value).lower())
    except ValueError:
        choices = ", ".join(t.value for t in FieldType)
        raise ValueError(f"unknown field type {value!r}; expected one of {choices}") from None


def _field_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    return metadata if isinstance(metadata, dict) else dict(metadata or {})


_VALIDATORS: dict[FieldType, Callable[[Any], bool]] = {
    FieldType.STRING: lambda v: isinstance(v, str),
    FieldType.TEXT: lambda v: isinstance(v, str),
    FieldType.INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool),
    FieldType.FLOAT: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    FieldType.BOOLEAN: lambda v: isinstance(v, bool),
    FieldType.DATETIME: lambda v: isinstance(v, dt.datetime),
    FieldType.JSON: lambda v: isinstance(v, (dict, list)),
    FieldType.BINARY: lambda v: isinstance(v, bytes),
}

_CONVERTERS: dict[tuple[FieldType, FieldType], Callable[[Any], Any]] = {
    (FieldType.INTEGER, FieldType.STRING): str,
    (FieldType.INTEGER, FieldType.FLOAT): float,
    (FieldType.FLOAT, FieldType.STRING): str,
    (FieldType.FLOAT, FieldType.INTEGER): int,
    (FieldType.BOOLEAN, FieldType.STRING): lambda v: "true" if v else "false",
    (FieldType.BOOLEAN, FieldType.INTEGER): int,
    (FieldType.STRING, FieldType.INTEGER): int,
    (FieldType.STRING, FieldType.FLOAT): float,
    (FieldType.STRING, FieldType.BOOLEAN): lambda v: v.lower() in ("true", "1", "yes"),
    (FieldType.STRING, FieldType.TEXT): lambda v: v,
    (FieldType.TEXT, FieldType.STRING): lambda v: v,
}


@attrs.define(eq=False)
class Field:
    """A named value of a record with a :class:`FieldType` and metadata (dataknobs-data's ``Field``).

    ``Field(name, value, type=None, metadata=None)``; without a type it is detected from the value
    (:func:`detect_field_type`). A type may be given by its value (``"integer"``). Two fields are
    equal when their names and values are.
    """

    name: str
    value: Any
    type: FieldType | None = attrs.field(default=None, converter=_field_type)
    metadata: dict[str, Any] = attrs.field(factory=dict, converter=_field_metadata)

    def __attrs_post_init__(self) -> None:
        if self.type is None:
            self.type = detect_field_type(self.value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Field):
            return NotImplemented
        return self.name == other.name and _values_equal(self.value, other.value)

    __hash__ = None  # type: ignore[assignment]

    def validate(self) -> bool:
        """Whether the value suits the type (``None`` suits every type)."""
        if self.value is None or self.type is None:
            return True
        check = _VALIDATORS.get(self.type)
        return True if check is None else check(self.value)

    def convert_to(self, target_type: FieldType | str) -> Field:
        """A new field with the value converted to ``target_type`` (this field if it has that type).

        :raises ValueError: no conversion between the two types, or the value does not convert.
        """
        target = _field_type(target_type)
        if target is None or self.type is None:
            raise ValueError(f"cannot convert field {self.name!r} from {self.type} to {target}")
        if self.type is target:
            return self
        convert = _CONVERTERS.get((self.type, target))
        if convert is None:
            raise ValueError(f"no conversion of field {self.name!r} from {self.type.value} to {target.value}")
        try:
            value = convert(self.value)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"cannot convert field {self.name!r} from {self.type.value} to {target.value}: {e}"
            ) from e
        return Field(self.name, value, target, dict(self.metadata))

    def copy(self) -> Field:
        """A deep copy."""
        return Field(self.name, copy.deepcopy(self.value), self.type, copy.deepcopy(self.metadata))

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "value", "type" (its value), "metadata"}``."""
        return {
            "name": self.name,
            "value": self.value,
            "type": None if self.type is None else self.type.value,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Field | VectorField:
        """The inverse of :meth:`to_dict` (a ``"vector"`` type gives a :class:`VectorField`)."""
        ftype = _field_type(data.get("type"))
        if ftype in (FieldType.VECTOR, FieldType.SPARSE_VECTOR):
            return VectorField.from_dict(data)
        return cls(data["name"], data["value"], ftype, data.get("metadata"))


#: The keys a vector field's metadata answers from the field itself (dataknobs-data's).
_DERIVED_KEYS = ("dimensions", "source_field", "model")


class VectorMetadata(dict[str, Any]):
    """A :class:`VectorField`'s metadata: the keys given to it, plus dataknobs-data's
    ``dimensions``, ``source_field`` and ``model`` (``{"name", "version"}``, or ``None``), which
    it answers from the field itself (``in``, ``[key]``, ``get``) without holding them.

    It compares, iterates, copies and serializes as the keys given only (what a store keeps), so
    ``VectorField([1, 2], metadata={"k": 1}).metadata == {"k": 1}``; a key given with one of those
    names wins.
    """

    __slots__ = ("_derived",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[str, Any] = {}

    def _answered(self) -> dict[str, Any]:
        return getattr(self, "_derived", None) or {}  # unset only in a copy made without __init__

    def __missing__(self, key: str) -> Any:
        derived = self._answered()
        if key in derived:
            return derived[key]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self._answered()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (a derived key's too), else ``default``."""
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        return self._answered().get(key, default)


class VectorField:
    """A vector value of a record: a 1-D float32 array plus where it came from.

    :param value: a sequence of numbers or a 1-D array (copied to float32); a ``str``, ``bytes``
        or ``None`` is a ``TypeError`` (an :class:`InvalidVectorError` too).
    :param name: the field name (defaults to ``"embedding"``, or the record key it is stored under).
    :param dimensions: the expected length; a mismatch raises :class:`DimensionMismatchError`.
    :param source_field: the text field the vector was computed from.
    :param model_name: the embedding model's name; ``model_version`` its version.
    :param metadata: the vector's own metadata (:attr:`metadata`).
    """

    __slots__ = ("_metadata", "model_name", "model_version", "name", "source_field", "value")
    type = FieldType.VECTOR

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
                f"vector field {name or 'embedding'!r}: dimension mismatch: it has {vec.shape[0]} "
                f"dimensions, expected {dimensions}"
            )
        self.name: str = name or "embedding"
        self.value: npt.NDArray[np.float32] = vec
        self.source_field = source_field
        self.model_name = model_name
        self.model_version = model_version
        self._metadata = VectorMetadata(metadata or ())

    @property
    def metadata(self) -> VectorMetadata:
        """The vector's metadata: the keys given (what a store keeps with the vector), and, as in
        dataknobs-data, ``dimensions``, ``source_field`` and ``model`` answered from the field
        (see :class:`VectorMetadata`)."""
        meta = self._metadata
        model = None if self.model_name is None else {"name": self.model_name, "version": self.model_version}
        meta._derived = {"dimensions": int(self.value.shape[0]), "source_field": self.source_field, "model": model}
        return meta

    @metadata.setter
    def metadata(self, value: Mapping[str, Any] | None) -> None:
        self._metadata = VectorMetadata(value or ())

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
        if self._metadata:
            out["metadata"] = dict(self._metadata)
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
    def _stored_all(
        cls, values: Sequence[npt.NDArray[np.float32]], name: str, infos: Sequence[Mapping[str, Any]]
    ) -> list[VectorField]:
        """:meth:`from_info` for a store's own copies of vectors of field ``name`` it validated
        when storing them (taken as they are: building search results does not validate every
        hit again), in one loop rather than a call each."""
        out: list[VectorField] = []
        new_field, new_meta, update = cls.__new__, VectorMetadata.__new__, dict.update
        for value, info in zip(values, infos):
            field = new_field(cls)
            field.name = name
            field.value = value
            meta = new_meta(VectorMetadata)  # (its derived keys are set when read)
            field._metadata = meta
            if not info:  # the common case: a vector stored without any of these
                field.source_field = field.model_name = field.model_version = None
            else:
                field.source_field = info.get("source_field")
                field.model_name = info.get("model_name")
                field.model_version = info.get("model_version")
                given = info.get("metadata")
                if given:
                    update(meta, given)
            out.append(field)
        return out

    def copy(self) -> VectorField:
        """A deep copy."""
        return VectorField.from_info(self.value, self.name, copy.deepcopy(self.info()))

    def validate(self) -> bool:
        """Whether the value is a 1-D numeric array (``None`` is valid, as for :class:`Field`)."""
        value: Any = self.value
        return value is None or is_vector_value(value)

    def cosine_similarity(self, other: VectorField | npt.ArrayLike) -> float:
        """The cosine of the angle to ``other`` (0.0 when either vector is zero)."""
        a, b = self.value.astype(np.float64), _other_vector(other)
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        return 0.0 if na == 0.0 or nb == 0.0 else float(np.dot(a, b) / (na * nb))

    def euclidean_distance(self, other: VectorField | npt.ArrayLike) -> float:
        """The Euclidean distance to ``other``."""
        return float(np.linalg.norm(self.value.astype(np.float64) - _other_vector(other)))

    def to_dict(self) -> dict[str, Any]:
        """dataknobs-data's form: ``name``, ``value`` (a list), ``type`` (``"vector"``),
        ``dimensions``, and ``metadata`` holding the vector's metadata plus ``dimensions``,
        ``source_field`` and ``model`` (``{"name", "version"}``, or ``None``)."""
        model = None if self.model_name is None else {"name": self.model_name, "version": self.model_version}
        return {
            "name": self.name,
            "value": self.to_list(),
            "type": FieldType.VECTOR.value,
            "metadata": {
                **self._metadata,
                "dimensions": self.dimensions,
                "source_field": self.source_field,
                "model": model,
            },
            "dimensions": self.dimensions,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VectorField:
        """The inverse of :meth:`to_dict`."""
        meta = dict(data.get("metadata") or {})
        dims = data.get("dimensions") or meta.pop("dimensions", None)
        meta.pop("dimensions", None)
        source = meta.pop("source_field", None)
        model = meta.pop("model", None) or {}
        return cls(
            data["value"],
            name=data.get("name"),
            dimensions=dims,
            source_field=source,
            model_name=model.get("name"),
            model_version=model.get("version"),
            metadata=meta,
        )

    @classmethod
    def from_text(
        cls,
        text: str,
        embedding_fn: Callable[[str], npt.ArrayLike],
        name: str | None = None,
        dimensions: int | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
        **kwargs: Any,
    ) -> VectorField:
        """The field of the vector ``embedding_fn(text)`` (its ``source_field`` is ``"text"``)."""
        kwargs.setdefault("source_field", "text")
        return cls(
            embedding_fn(text),
            name=name,
            dimensions=dimensions,
            model_name=model_name,
            model_version=model_version,
            **kwargs,
        )

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


def _other_vector(other: Any) -> npt.NDArray[np.float64]:
    value = other.value if isinstance(other, VectorField) else other
    return np.asarray(value, dtype=np.float64)


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return bool(a == b)


def is_vector_value(value: Any) -> bool:
    """Whether a field value is stored as a vector (a VectorField or a 1-D numeric ndarray)."""
    return isinstance(value, VectorField) or (
        isinstance(value, np.ndarray) and value.ndim == 1 and np.issubdtype(value.dtype, np.number)
    )


def is_number_list(value: Any) -> bool:
    """Whether a value is a non-empty ``list`` or ``tuple`` of real numbers (``int``, ``float`` and
    numpy's; not ``bool``): what a store's ``vector_field`` holds as a vector besides a
    :class:`VectorField` or an array (the list itself stays the field's value)."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    for x in value:
        t = type(x)
        if t is float or t is int:
            continue
        if t is bool or not isinstance(x, (int, float, np.integer, np.floating)) or isinstance(x, (bool, np.bool_)):
            return False
    return True


def _plain(value: Any) -> Any:
    """A stored entry's value: a :class:`Field`'s value, or the entry itself."""
    return value.value if isinstance(value, Field) else value


def _payload_id(data: Mapping[str, Any], metadata: Mapping[str, Any]) -> Any:
    """The id a record's payload carries: ``data["id"]``, ``metadata["id"]``, then
    ``data["record_id"]`` (the first that is not ``None``), as dataknobs-data resolves it."""
    for value in (data.get("id"), metadata.get("id"), data.get("record_id")):
        value = _plain(value)
        if value is not None:
            return value
    return None


class RecordFields(MutableMapping[str, "Field | VectorField"]):
    """The live mapping ``record.fields``: field name -> :class:`Field` (or :class:`VectorField`).

    Setting or deleting an entry changes the record. An entry read here is kept as that
    :class:`Field` object, so ``record.fields["n"].value = 2`` changes the record too.
    """

    __slots__ = ("_record",)

    def __init__(self, record: Record) -> None:
        self._record = record

    def __getitem__(self, key: str) -> Field | VectorField:
        data = self._record._data
        value = data[key]
        if isinstance(value, (Field, VectorField)):
            return value
        if is_vector_value(value):
            return VectorField(value, name=key)
        field = data[key] = Field(key, value)
        return field

    def __setitem__(self, key: str, value: Any) -> None:
        self._record._set(str(key), value)

    def __delitem__(self, key: str) -> None:
        del self._record._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._record._data)

    def __len__(self) -> int:
        return len(self._record._data)

    def __contains__(self, key: object) -> bool:
        return key in self._record._data

    def __repr__(self) -> str:
        return f"RecordFields({dict(self)!r})"


class Record:
    """A record: an id, data fields (some of them vectors) and free-form metadata.

    ``Record(data=None, metadata=None, id=None, storage_id=None)``. When no id is given it is
    taken from the payload as dataknobs-data does: a data field ``"id"``, then ``metadata["id"]``,
    then a data field ``"record_id"`` (the field stays in the data, the metadata is not touched); a
    store assigns a fresh UUID to a record that still has none. :class:`Field` objects in ``data``
    keep their type and metadata (``record.get_field(name)``); :class:`VectorField` values are kept
    (with their name set to the key).

    Field values are read with ``record["name"]``, ``record.get_value("a.b")`` or ``record.name``
    (an attribute that is not the record's own; names starting with ``_`` are never fields), and
    set with ``record["name"] = v`` or ``set_field`` (``record.name = v`` raises
    ``AttributeError``: unlike dataknobs-data, fields are not set as attributes).
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
            rid = _payload_id(self._data, self.metadata)
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

    def has_storage_id(self) -> bool:
        """Whether the record has an id (every record a store returns has one)."""
        return self._id is not None

    def generate_id(self) -> str:
        """Give the record a fresh UUID id and return it (data and metadata are not touched)."""
        self._id = new_id()
        return self._id

    def get_user_id(self) -> str | None:
        """The data field ``"id"`` as a string (not the record id), or ``None``."""
        value = _plain(self._data.get("id"))
        return None if value is None else str(value)

    # -- field access -------------------------------------------------------------------------
    def _set(self, key: str, value: Any) -> None:
        if isinstance(value, VectorField):
            if value.name != key:
                value = value.copy()
                value.name = key
        elif isinstance(value, Field):
            inner = value.value
            if isinstance(inner, (Field, VectorField)) or is_vector_value(inner):
                self._set(key, inner)
                return
            if value.name != key:
                value = attrs.evolve(value, name=key)
        self._data[key] = value

    @property
    def data(self) -> dict[str, Any]:
        """Field name -> value (vectors as float32 arrays). A new dict; values are not copied."""
        return {k: (v.value if isinstance(v, (VectorField, Field)) else v) for k, v in self._data.items()}

    @property
    def fields(self) -> RecordFields:
        """Field name -> :class:`Field` (or the :class:`VectorField`), as in dataknobs-data: a live
        mapping (see :class:`RecordFields`)."""
        return RecordFields(self)

    @fields.setter
    def fields(self, value: Mapping[str, Any]) -> None:
        self._data = {}
        for key, item in value.items():
            self._set(str(key), item)

    def vector_fields(self) -> dict[str, VectorField]:
        """The fields that hold vectors, as :class:`VectorField` objects."""
        out: dict[str, VectorField] = {}
        for k, v in self._data.items():
            if isinstance(v, VectorField):
                out[k] = v
            elif is_vector_value(v):
                out[k] = VectorField(v, name=k)
        return out

    def __getitem__(self, key: str | int) -> Any:
        """The value of field ``key``; an ``int`` gives the :class:`Field` at that position."""
        if isinstance(key, int):
            names = list(self._data)
            if not 0 <= key < len(names):
                raise IndexError(f"field index {key} out of range (the record has {len(names)} fields)")
            return self.fields[names[key]]
        value = self._data[key]
        return value.value if isinstance(value, (VectorField, Field)) else value

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

    if not TYPE_CHECKING:  # attribute access to fields: dynamic, so hidden from type checkers

        def __getattr__(self, name: str) -> Any:
            # only reached for a name that is no attribute of the record
            if name.startswith("_"):
                raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}")
            try:
                data = object.__getattribute__(self, "_data")
            except AttributeError:  # not initialised (unpickling)
                raise AttributeError(name) from None
            if name in data:
                value = data[name]
                return value.value if isinstance(value, (VectorField, Field)) else value
            raise AttributeError(f"'{type(self).__name__}' object has no field or attribute {name!r}")

    # No __setattr__ for fields (``record.name = v``, which dataknobs-data has): a Python-level
    # __setattr__ would cost every record a store builds about a microsecond. Assigning an
    # attribute that is not the record's own raises AttributeError; use ``record["name"] = v``.

    def get(self, key: str, default: Any = None) -> Any:
        """The value of field ``key`` (exact name), or ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def get_value(self, name: str, default: Any = None) -> Any:
        """The value at ``name``, following dotted paths into nested dicts.

        An exact field name wins; ``"id"`` is the record id unless the data has an ``"id"`` field
        (its value, as given); ``"metadata.x"`` reads :attr:`metadata` unless a data field called
        ``metadata`` exists.
        """
        if name in self._data:
            value = self._data[name]
        else:
            value = lookup(self._id, self._data, self.metadata, name)
            if value is _MISSING:
                return default
        return value.value if isinstance(value, (VectorField, Field)) else value

    def set_value(self, name: str, value: Any) -> None:
        """Set field ``name`` to ``value`` (a :class:`Field` entry keeps its type and metadata)."""
        entry = self._data.get(name)
        if (
            isinstance(entry, Field)
            and not isinstance(value, (Field, VectorField))
            and not is_vector_value(value)
        ):
            entry.value = value
        else:
            self._set(name, value)

    def get_field(self, name: str) -> Field | VectorField | None:
        """The :class:`Field` (or :class:`VectorField`) named ``name``, or ``None``."""
        return self.fields[name] if name in self._data else None

    def get_field_object(self, name: str) -> Field | VectorField:
        """The :class:`Field` named ``name``; raises ``KeyError`` when there is none."""
        if name not in self._data:
            raise KeyError(f"Field {name!r} not found")
        return self.fields[name]

    def set_field(
        self,
        name: str,
        value: Any,
        field_type: FieldType | str | None = None,
        field_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Set field ``name`` to ``value`` with a type (detected when ``None``) and metadata."""
        self._set(name, Field(name, value, field_type, dict(field_metadata or {})))

    def has_field(self, name: str) -> bool:
        """Whether the record has a field ``name``."""
        return name in self._data

    def remove_field(self, name: str) -> bool:
        """Remove field ``name``; whether there was one."""
        return self._data.pop(name, _MISSING) is not _MISSING

    def field_names(self) -> list[str]:
        """The field names, in order."""
        return list(self._data)

    def field_count(self) -> int:
        """How many fields the record has."""
        return len(self._data)

    def validate(self) -> bool:
        """Whether every field's value suits its type (see :meth:`Field.validate`)."""
        return all(v.validate() for v in self._data.values() if isinstance(v, (Field, VectorField)))

    def project(self, field_names: Sequence[str]) -> Record:
        """A new record with only the fields ``field_names`` (that exist), the same id and a copy
        of the metadata; field values are shared, not copied."""
        rec = Record(metadata=self.metadata, id=self._id)
        rec._data = {k: self._data[k] for k in field_names if k in self._data}
        return rec

    def merge(self, other: Record, overwrite: bool = True) -> Record:
        """A new record with this record's fields and ``other``'s: ``other`` wins a name both have
        (and its metadata is merged in) when ``overwrite``, else this record does. The id is this
        record's, or ``other``'s when this one has none. Field values are shared, not copied."""
        rec = Record(metadata=self.metadata, id=self._id if self._id is not None else other.id)
        rec._data = dict(self._data)
        for key, value in other._data.items():
            if overwrite or key not in rec._data:
                rec._data[key] = value
        if overwrite:
            rec.metadata.update(other.metadata)
        return rec

    # -- conversion ---------------------------------------------------------------------------
    def to_dict(
        self,
        include_metadata: bool = False,
        flatten: bool = True,
        include_field_objects: bool = True,
    ) -> dict[str, Any]:
        """A dict of the record (vectors and arrays as lists).

        Flat (the default): the field values, ``"_id"`` (when the record has an id) and
        ``"_metadata"`` if asked. Structured (``flatten=False``, dataknobs-data's form):
        ``{"fields": {name: field dict (:meth:`Field.to_dict`) or, without
        ``include_field_objects``, the value}, "id": ..., "metadata": ...}``. :meth:`from_dict`
        reads both.
        """
        if flatten:
            out: dict[str, Any] = {k: _listed(_plain(v)) for k, v in self._data.items()}
            if self._id is not None:
                out["_id"] = self._id
            if include_metadata:
                out["_metadata"] = dict(self.metadata)
            return out
        fields: dict[str, Any] = {}
        for key in self._data:
            if include_field_objects:
                fd = self.fields[key].to_dict()
                fd["value"] = _listed(fd["value"])
                fields[key] = fd
            else:
                fields[key] = _listed(_plain(self._data[key]))
        out = {"fields": fields}
        if self._id is not None:
            out["id"] = self._id
        if include_metadata:
            out["metadata"] = dict(self.metadata)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        """The inverse of :meth:`to_dict`, of either form (vectors come back as plain lists, or as
        :class:`VectorField` from a structured field dict of type ``"vector"``).

        A dict is read as the structured form when its ``"fields"`` is a dict and its other keys
        are among ``id``, ``_id``, ``metadata``, ``_metadata``.
        """
        if isinstance(d.get("fields"), Mapping) and set(d) <= _STRUCTURED_KEYS:
            data: dict[str, Any] = {}
            for name, fd in d["fields"].items():
                if isinstance(fd, Mapping) and "value" in fd:
                    data[name] = Field.from_dict({"name": name, **fd})
                else:
                    data[name] = fd
            rid = d.get("id", d.get("_id"))
            return cls(data, metadata=d.get("metadata", d.get("_metadata")), id=rid)
        flat = dict(d)
        rid = flat.pop("_id", None)
        metadata = flat.pop("_metadata", None)
        return cls(flat, metadata=metadata, id=rid)

    def copy(self, deep: bool = True) -> Record:
        """A copy; with ``deep`` (the default) nothing is shared with this record."""
        rec = Record.__new__(Record)
        if deep:
            rec._data = {
                k: (v.copy() if isinstance(v, (VectorField, Field)) else copy.deepcopy(v))
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
            and all(_values_equal(_plain(v), _plain(other._data[k])) for k, v in self._data.items())
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Record(id={self._id!r}, data={ {k: _plain(v) for k, v in self._data.items()}!r})"


_STRUCTURED_KEYS = frozenset({"fields", "id", "_id", "metadata", "_metadata"})


def _listed(value: Any) -> Any:
    """A vector or an array as a list (JSON-ready); anything else as it is."""
    if isinstance(value, VectorField):
        return value.to_list()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def lookup(rid: str | None, data: Mapping[str, Any], metadata: Mapping[str, Any], name: str) -> Any:
    """Resolve a field path against a record's parts; returns the module's MISSING sentinel if absent."""
    if name == "id":
        return rid if rid is not None else _plain(data.get("id", _MISSING))
    if name in data:
        value = data[name]
        return value.value if isinstance(value, Field) else value
    if "." not in name:
        return _MISSING
    head, _, rest = name.partition(".")
    if head == "metadata" and "metadata" not in data:
        base: Any = metadata
    elif head == "fields":
        return lookup(rid, data, metadata, rest)
    elif head in data:
        base = _plain(data[head])
    else:
        return _MISSING
    for part in rest.split("."):
        if isinstance(base, Mapping) and part in base:
            base = base[part]
        else:
            return _MISSING
    return base


MISSING = _MISSING
