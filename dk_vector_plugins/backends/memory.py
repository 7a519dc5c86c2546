"""The built-in ``memory`` backend plugin: the embedded default.

Records live in the process; vectors in one contiguous float32 matrix per vector field. Nothing
is persisted. Thread-safe (sync) and task-safe (async).
"""

from __future__ import annotations

from typing import Any

from ..core import StoreCore
from ..database import AsyncDatabase, SyncDatabase, default_search, default_search_async
from ..embed import BulkEmbedRequest, run_bulk_embed, run_bulk_embed_async
from ..factory import BackendSpec
from ..hookspecs import hookimpl
from ..search import SearchRequest
from ..table import RecordTable

__all__ = ["AsyncMemoryDatabase", "MemoryDatabase"]


class _MemoryCore:
    backend_name = "memory"
    config: Any

    def _make_core(self) -> StoreCore:
        return StoreCore(RecordTable(self.config.get("vector_dimensions")))


class MemoryDatabase(_MemoryCore, SyncDatabase):
    """In-memory store, sync API. ``DatabaseFactory().create(backend="memory", vector_enabled=True)``."""


class AsyncMemoryDatabase(_MemoryCore, AsyncDatabase):
    """In-memory store, async API. ``AsyncDatabaseFactory().create(backend="memory", ...)``."""


def _ours(db: Any) -> bool:
    return isinstance(db, (MemoryDatabase, AsyncMemoryDatabase))


@hookimpl
def dkv_register_backends() -> list[BackendSpec]:
    """The ``memory`` backend."""
    return [
        BackendSpec(
            name="memory",
            sync_class=MemoryDatabase,
            async_class=AsyncMemoryDatabase,
            description="in-process store; nothing persisted",
        )
    ]


@hookimpl(trylast=True)
def dkv_vector_search(db: Any, request: SearchRequest) -> Any:
    """Exact search for memory stores; declines for others."""
    return default_search(db, request) if isinstance(db, MemoryDatabase) else None


@hookimpl(trylast=True)
def dkv_vector_search_async(db: Any, request: SearchRequest) -> Any:
    """Exact search for async memory stores; declines for others."""
    return default_search_async(db, request) if isinstance(db, AsyncMemoryDatabase) else None


@hookimpl(trylast=True)
def dkv_bulk_embed(db: Any, request: BulkEmbedRequest) -> Any:
    """Batched embed-and-store for memory stores; declines for others."""
    return run_bulk_embed(db, request) if isinstance(db, MemoryDatabase) else None


@hookimpl(trylast=True)
def dkv_bulk_embed_async(db: Any, request: BulkEmbedRequest) -> Any:
    """Batched embed-and-store for async memory stores; declines for others."""
    return run_bulk_embed_async(db, request) if isinstance(db, AsyncMemoryDatabase) else None
