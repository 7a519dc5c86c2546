"""``dataknobs_data.backends``: the backend registries and the memory stores (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins.registry import async_backends, sync_backends

from .memory import AsyncMemoryDatabase, SyncMemoryDatabase

__all__ = ["AsyncMemoryDatabase", "SyncMemoryDatabase", "async_backends", "sync_backends"]
