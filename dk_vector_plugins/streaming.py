"""The streaming write vocabulary of dataknobs-data 0.11 (its ``streaming`` module).

:class:`ConflictPolicy` says what a batched write does with an id that already exists,
:class:`StreamConfig` configures a streamed read or write, :class:`StreamResult` counts what one
did, and :func:`resolve_conflict_write` maps a policy to the write functions that carry it out.
These are value types: they hold no store and do no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["ConflictPolicy", "StreamConfig", "StreamResult", "resolve_conflict_write"]


class ConflictPolicy(str, enum.Enum):
    """What a batched write does with a record whose id already exists.

    ``INSERT`` (the default) fails it, as ``create`` does; ``UPSERT`` overwrites the stored record;
    ``SKIP`` leaves the stored record and counts the id as skipped.
    """

    INSERT = "insert"
    UPSERT = "upsert"
    SKIP = "skip"


def _policy(value: ConflictPolicy | str) -> ConflictPolicy:
    try:
        return ConflictPolicy(value)
    except ValueError:
        choices = ", ".join(p.value for p in ConflictPolicy)
        raise ValueError(f"unknown conflict policy {value!r}; expected one of {choices}") from None


def _positive(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attr.name} must be positive, got {value!r}")


def _non_negative(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attr.name} must be non-negative, got {value!r}")


def _timeout(_inst: object, attr: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"timeout must be positive if given, got {value!r}")


@attrs.frozen
class StreamConfig:
    """How a streamed read or write runs.

    :param batch_size: records per batch (> 0).
    :param prefetch: batches read ahead (>= 0).
    :param timeout: seconds (> 0), or ``None``.
    :param on_error: ``on_error(error, record_or_None) -> bool``: whether to go on after a failure.
    :param on_conflict: a :class:`ConflictPolicy` (or its value) for ids that already exist.
    :raises ValueError: a value out of range, or an unknown policy.
    """

    batch_size: int = attrs.field(default=1000, validator=_positive)
    prefetch: int = attrs.field(default=2, validator=_non_negative)
    timeout: float | None = attrs.field(default=None, validator=_timeout)
    on_error: Callable[[Exception, Any], bool] | None = None
    on_conflict: ConflictPolicy = attrs.field(default=ConflictPolicy.INSERT, converter=_policy)


@attrs.define
class StreamResult:
    """What a streamed write did: counts, errors (dicts with ``record_id``, ``error``, ``type``,
    ``index``), the failed positions, batches and duration in seconds."""

    total_processed: int = 0
    successful: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[dict[str, Any]] = attrs.field(factory=list)
    duration: float = 0.0
    total_batches: int = 0
    failed_indices: list[int] = attrs.field(factory=list)

    @property
    def success_rate(self) -> float:
        """Successful records as a percentage of those processed (0.0 when none were)."""
        return 0.0 if self.total_processed == 0 else self.successful / self.total_processed * 100

    def add_error(self, record_id: str | None, error: Exception, index: int | None = None) -> None:
        """Record a failure of record ``record_id`` (at position ``index``, if known)."""
        self.errors.append(
            {"record_id": record_id, "error": str(error), "type": type(error).__name__, "index": index}
        )
        if index is not None:
            self.failed_indices.append(index)

    def merge(self, other: StreamResult) -> None:
        """Add ``other``'s counts, errors and duration to this result."""
        self.total_processed += other.total_processed
        self.successful += other.successful
        self.failed += other.failed
        self.skipped += other.skipped
        self.errors.extend(other.errors)
        self.duration += other.duration
        self.total_batches += other.total_batches
        self.failed_indices.extend(other.failed_indices)


_Write = Callable[..., Any]


def resolve_conflict_write(
    on_conflict: ConflictPolicy | str,
    *,
    insert_batch_func: _Write | None,
    single_create_func: _Write,
    upsert_func: _Write,
    upsert_batch_func: _Write | None = None,
) -> tuple[_Write | None, _Write, bool]:
    """The ``(batch_write, single_write, skip_on_duplicate)`` functions that carry out a policy.

    ``INSERT``: the batch insert and ``create`` (a colliding id fails). ``UPSERT``: the batch
    upsert (``None`` when not given: every record is upserted one by one) and ``upsert``.
    ``SKIP``: no batch, ``create``, and a duplicate counts as skipped.
    """
    policy = _policy(on_conflict)
    if policy is ConflictPolicy.UPSERT:
        return upsert_batch_func, upsert_func, False
    if policy is ConflictPolicy.SKIP:
        return None, single_create_func, True
    return insert_batch_func, single_create_func, False
