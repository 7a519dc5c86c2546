"""The built-in ``memory`` backend plugin: the embedded default.

Records live in the process; vectors in one contiguous float32 matrix per vector field. Nothing
is persisted. Thread-safe (sync) and task-safe (async). Search and bulk embedding are the
built-in ``defaults`` plugin's, as for every store on the shared core.
"""

from __future__ import annotations

from ..core import StoreCore
from ..database import AsyncDatabase, SyncDatabase
from ..factory import StoreConfig
from ..hookspecs import hookimpl
from ..memtable import RecordTable
from ..types import BackendSpec

__all__ = ["AsyncMemoryDatabase", "MemoryDatabase"]


class _MemoryCore:
    backend_name = "memory"
    _config: StoreConfig

    def _make_core(self) -> StoreCore:
        return StoreCore(RecordTable(self._config.get("vector_dimensions")))


class MemoryDatabase(_MemoryCore, SyncDatabase):
    """In-memory store, sync API. ``DatabaseFactory().create(backend="memory", vector_enabled=True)``."""


class AsyncMemoryDatabase(_MemoryCore, AsyncDatabase):
    """In-memory store, async API. ``AsyncDatabaseFactory().create(backend="memory", ...)``."""


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
