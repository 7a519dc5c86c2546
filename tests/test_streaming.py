"""The streaming write vocabulary (dataknobs-data 0.11's ``streaming`` names)."""

from __future__ import annotations

from typing import Any

import pytest

from dk_vector_plugins import ConflictPolicy, StreamConfig, StreamResult
from dk_vector_plugins.streaming import resolve_conflict_write


def test_stream_config_defaults_validation_and_policy() -> None:
    c = StreamConfig()
    assert (c.batch_size, c.prefetch, c.timeout, c.on_error, c.on_conflict) == (
        1000,
        2,
        None,
        None,
        ConflictPolicy.INSERT,
    )
    assert StreamConfig(batch_size=3, on_conflict="upsert").on_conflict is ConflictPolicy.UPSERT  # type: ignore[arg-type]
    assert ConflictPolicy.SKIP == "skip"
    for bad in ({"batch_size": 0}, {"prefetch": -1}, {"timeout": 0}, {"on_conflict": "merge"}):
        with pytest.raises(ValueError):
            StreamConfig(**bad)
    with pytest.raises(AttributeError):
        c.batch_size = 5  # type: ignore[misc]  # frozen


def test_stream_result_counts_and_merges() -> None:
    r = StreamResult(total_processed=4, successful=3)
    r.add_error("r1", ValueError("boom"), index=2)
    assert r.errors == [{"record_id": "r1", "error": "boom", "type": "ValueError", "index": 2}]
    assert r.failed_indices == [2] and r.success_rate == 75.0
    other = StreamResult(total_processed=1, successful=1, skipped=1, total_batches=1, duration=0.5)
    r.merge(other)
    assert (r.total_processed, r.successful, r.skipped, r.total_batches, r.duration) == (5, 4, 1, 1, 0.5)
    assert StreamResult().success_rate == 0.0


def test_resolve_conflict_write() -> None:
    def f(name: str) -> Any:
        return lambda *a: name

    funcs = {"insert_batch_func": f("ib"), "single_create_func": f("c"), "upsert_func": f("u")}
    batch, single, skip = resolve_conflict_write(ConflictPolicy.INSERT, **funcs)
    assert (batch() if batch else None, single(), skip) == ("ib", "c", False)
    batch, single, skip = resolve_conflict_write("upsert", **funcs)
    assert (batch, single(), skip) == (None, "u", False)  # no batch upsert given: one by one
    batch, single, skip = resolve_conflict_write(ConflictPolicy.UPSERT, upsert_batch_func=f("ub"), **funcs)
    assert (batch() if batch else None, single(), skip) == ("ub", "u", False)
    batch, single, skip = resolve_conflict_write(ConflictPolicy.SKIP, **funcs)
    assert (batch, single(), skip) == (None, "c", True)
