"""``dataknobs_data.database``: the store base classes (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import AsyncDatabase, SyncDatabase

__all__ = ["AsyncDatabase", "SyncDatabase"]
