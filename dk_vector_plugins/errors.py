"""The exception hierarchy of dk_vector_plugins.

Every error raised on purpose by the package is a :class:`DkvError`. Where a caller would
naturally expect a built-in exception type, the error subclasses it too (``ValueError`` for bad
arguments, ``KeyError`` for a missing record), so ``except ValueError`` keeps working.

A call that raises one of these has changed nothing: validation happens before any write.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConflictError",
    "DimensionMismatchError",
    "DkvError",
    "DkvPerformanceWarning",
    "DuplicateRecordError",
    "FilterError",
    "InvalidRequestError",
    "InvalidVectorError",
    "PluginError",
    "RecordNotFoundError",
    "SchemaMismatchError",
    "StorageError",
    "VersionNotFoundError",
]


class DkvError(Exception):
    """Base class of every error raised by dk_vector_plugins."""


class ConfigError(DkvError, ValueError):
    """A configuration key is unknown, has the wrong type, or names something not installed."""


class PluginError(DkvError):
    """A plugin failed to load or register, or no plugin handled a hook call."""


class InvalidVectorError(DkvError, ValueError):
    """A vector is empty, has the wrong shape, is not numeric, or holds NaN or infinity."""


class DimensionMismatchError(InvalidVectorError):
    """A vector's length differs from the dimension of the store's vector field.

    ``DimensionMismatchError(message)``, or (as dataknobs-data's ``VectorDimensionError``)
    ``DimensionMismatchError(expected=768, actual=512, field_name="embedding")``, which writes
    the message; :attr:`expected`, :attr:`actual` and :attr:`field_name` are kept either way.
    """

    def __init__(
        self,
        *args: object,
        expected: int | None = None,
        actual: int | None = None,
        field_name: str | None = None,
    ) -> None:
        if not args and (expected is not None or actual is not None):
            where = f" for field {field_name!r}" if field_name else ""
            args = (f"vector dimension mismatch{where}: expected {expected}, got {actual}",)
        super().__init__(*args)
        self.expected = expected
        self.actual = actual
        self.field_name = field_name


class FilterError(DkvError, ValueError):
    """A filter is malformed: unknown operator, wrong operand, or bad structure."""


class InvalidRequestError(DkvError, ValueError):
    """A call's argument is out of range or of the wrong type (``k <= 0``, an unknown vector field)."""


class DuplicateRecordError(DkvError, ValueError):
    """``create`` was given an id that the store already holds (use ``upsert`` to replace).

    ``DuplicateRecordError(message, id=None)``; :attr:`id` is the colliding record id (as in
    dataknobs-data) when the raiser gives it.
    """

    def __init__(self, *args: object, id: str | None = None) -> None:
        super().__init__(*args)
        self.id = id

    def __reduce__(self) -> tuple[object, ...]:
        return (_duplicate_record_error, (self.args, self.id))


class RecordNotFoundError(DkvError, KeyError):
    """No record has the given id."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class ConflictError(DkvError):
    """A commit lost the race against concurrent writers more often than its retry budget allows."""


class StorageError(DkvError):
    """The storage under a store is unreachable, missing, corrupt, or refused an operation."""


class VersionNotFoundError(StorageError, InvalidRequestError):
    """A version asked for (``checkout``, ``restore``, ``tag``, ``as_of=``) is not stored: it was
    never committed, or clean-up removed it (``keep_versions``; a tag keeps one). Both a
    :class:`StorageError` and an :class:`InvalidRequestError` (a ``ValueError``)."""


class SchemaMismatchError(ConfigError):
    """A setting given when opening a store contradicts the schema stored with its table
    (dimensions, metric, embedder, source text field); the message names both values."""


def _duplicate_record_error(args: tuple[object, ...], id: str | None) -> DuplicateRecordError:
    return DuplicateRecordError(*args, id=id)


class DkvPerformanceWarning(UserWarning):
    """An operation is about to be much more expensive than usual (e.g. a large cold load)."""
